//! rolecall: an on-instance bootstrap and configuration agent.
//!
//! One reconcile, stage by stage (SPEC §7), each stage a module:
//!
//! ```text
//! identity ─► source ─► rolemap ─► render ─► plan ─► apply ─► services ─► smoke ─► report
//! (IMDSv2/    (S3/HTTPS/ (validate,  (Tera)   (diff vs  (per-service (reload  (HTTP,   (status,
//!  static)     file,     resolve                disk +    transaction, once)   TCP,     STATUS=,
//!              cache)    host view)             records)  check)                MySQL)   check)
//!                                                              ▲                   │ failure
//!                                                              └──── rollback ◄────┘
//! ```
//!
//! `pipeline` is the only code that knows the order; `sys` holds every side effect.

pub mod apply;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod cron;
pub mod daemon;
pub mod error;
pub mod hooks;
pub mod identity;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod publish;
pub mod render;
pub mod report;
pub mod rolemap;
pub mod rollback;
pub mod services;
pub mod smoke;
pub mod snapshot;
pub mod source;
pub mod sys;
pub mod text;
