//! A FUSE mount whose reads can be made to hang (`hung_fs.py`, on python3-fusepy): a map on
//! a network mount that stopped answering. [`HungFs::hang`] stops the FUSE server, so a
//! reader's `open` or `read` of one of its files waits in the kernel (killably, as on a hard
//! NFS mount whose server went away) until [`HungFs::release`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tempfile::TempDir;

/// The mount, and the directory whose files it shows.
pub struct HungFs {
    /// Where the files are seen.
    pub mount: PathBuf,
    source: PathBuf,
    child: Child,
    _dir: TempDir,
}

/// Debian's Python, which python3-fusepy is installed for (a `python3` earlier on `PATH` may
/// be another).
const PYTHON: &str = "/usr/bin/python3";

const INSTALL: &str = "apt-get install python3-fusepy (tests/run.sh installs it)";

impl HungFs {
    /// Mount a new, empty one; returns once the mount answers.
    pub fn mount() -> HungFs {
        let fusepy = Command::new(PYTHON).args(["-c", "import fusepy"]).output();
        assert!(
            fusepy.is_ok_and(|out| out.status.success()),
            "/usr/bin/python3's fusepy module is missing: {INSTALL}"
        );
        assert!(
            Path::new("/dev/fuse").exists(),
            "no /dev/fuse on this machine"
        );
        let dir = tempfile::Builder::new()
            .prefix("rolecall-fuse-")
            .tempdir()
            .expect("temp dir");
        let (source, mount) = (dir.path().join("source"), dir.path().join("mount"));
        for d in [&source, &mount] {
            std::fs::create_dir(d).expect("fuse dirs");
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/hung_fs.py");
        let child = Command::new(PYTHON)
            .arg(script)
            .args([&source, &mount])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting hung_fs.py");
        let fs = HungFs {
            mount,
            source,
            child,
            _dir: dir,
        };
        let mounted = super::wait_until(Duration::from_secs(20), || fs.is_mounted());
        assert!(mounted, "hung_fs.py did not mount {}", fs.mount.display());
        fs
    }

    fn is_mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let at = format!(" {} ", self.mount.display());
        mounts
            .lines()
            .any(|l| l.contains(&at) && l.contains(" fuse"))
    }

    /// The path under the mount of the file `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mount.join(name)
    }

    /// Write the file `name` that the mount shows (behind the mount, so even while hung).
    pub fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.source.join(name), bytes).expect("writing behind the mount");
    }

    /// From now on, every open and read under the mount waits.
    pub fn hang(&self) {
        self.signal(Signal::SIGSTOP).expect("stopping hung_fs.py");
    }

    /// The waiting opens and reads are answered, and new ones at once.
    pub fn release(&self) {
        let _ = self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) -> nix::Result<()> {
        let pid = i32::try_from(self.child.id()).expect("pid fits in i32");
        nix::sys::signal::kill(Pid::from_raw(pid), signal)
    }
}

impl Drop for HungFs {
    fn drop(&mut self) {
        self.release();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        super::terminate_child(&mut self.child, Duration::from_secs(10));
    }
}
