//! Side effects: the only code that writes files (`fs`), spawns processes (`exec`),
//! takes the reconcile lock (`lock`) and talks to systemd (`notify`).

pub mod exec;
pub mod fs;
pub mod lock;
pub mod notify;
