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

pub mod accounts;
pub(crate) mod apply;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod cron;
pub(crate) mod daemon;
pub mod error;
pub mod fleet;
pub(crate) mod hooks;
pub mod identity;
pub(crate) mod metrics;
pub(crate) mod pipeline;
pub mod plan;
pub(crate) mod publish;
pub mod render;
pub(crate) mod report;
pub mod rolemap;
pub(crate) mod rollback;
pub mod secrets;
pub(crate) mod services;
pub(crate) mod smoke;
pub(crate) mod snapshot;
pub mod source;
pub(crate) mod sys;
pub mod text;
pub(crate) mod threads;
