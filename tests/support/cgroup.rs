//! A pids cgroup: a task limit that refuses the threads a process asks for.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A pids cgroup (v1 `/sys/fs/cgroup/pids`, or v2 with the pids controller) that lets its
/// processes have at most `max` tasks, threads included. Removed when dropped.
pub struct PidsCgroup {
    dir: PathBuf,
}

impl PidsCgroup {
    pub fn new(max: u32) -> PidsCgroup {
        let v2 = Path::new("/sys/fs/cgroup");
        let parent = if Path::new("/sys/fs/cgroup/pids/pids.max").exists()
            || Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists()
        {
            PathBuf::from("/sys/fs/cgroup/pids")
        } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
        {
            v2.to_path_buf()
        } else {
            panic!(
                "this test needs the pids cgroup controller (cgroup v1 at /sys/fs/cgroup/pids, \
                 or cgroup v2 at /sys/fs/cgroup listing pids) and root; neither is here"
            );
        };
        let dir = parent.join(format!("rolecall-test-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating {} (run as root): {e}", dir.display()));
        std::fs::write(dir.join("pids.max"), max.to_string()).expect("setting pids.max");
        PidsCgroup { dir }
    }

    /// `command` run to completion inside the cgroup (its program and arguments; its
    /// environment changes are not carried over).
    pub fn output(&self, command: &Command) -> Output {
        let join = format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            self.dir.display()
        );
        Command::new("sh")
            .arg("-c")
            .arg(join)
            .arg(command.get_program())
            .args(command.get_args())
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .output()
            .expect("running a command in the cgroup")
    }

    /// How many times a task was refused for the limit.
    pub fn refused(&self) -> u64 {
        let events = std::fs::read_to_string(self.dir.join("pids.events")).unwrap_or_default();
        events
            .lines()
            .find_map(|l| l.strip_prefix("max "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
