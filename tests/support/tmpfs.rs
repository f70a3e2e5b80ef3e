//! A small tmpfs mounted over a directory: a real ENOSPC for the writers under test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Prefix of the files that fill a [`Tmpfs`]: tests that list a tree skip them.
pub const FILLER: &str = "zz-filler";

/// A tmpfs of a given size mounted over `dir` (its files copied in first), lazily
/// unmounted on drop, which shows the original directory again.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mount it; panics with mount's output if that fails (the tests run as root).
    pub fn over(dir: &Path, size: &str) -> Tmpfs {
        let saved = tempfile::tempdir().expect("tempdir");
        crate::fixture::copy_dir(dir, saved.path());
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount: {}",
            super::describe_output(&out)
        );
        let mounted = Tmpfs {
            dir: dir.to_path_buf(),
        };
        crate::fixture::copy_dir(saved.path(), dir);
        mounted
    }

    /// Fill it to the last byte: whole blocks, then byte by byte; a one-byte probe fails.
    pub fn fill(&self) {
        for (bs, n) in [("4096", 1), ("1", 2)] {
            let _ = Command::new("dd")
                .args(["if=/dev/zero", &format!("bs={bs}")])
                .arg(format!("of={}", self.filler(&n.to_string()).display()))
                .output()
                .expect("dd");
        }
        let probe = std::fs::write(self.filler("-probe"), b"x");
        assert!(
            probe.is_err(),
            "the tmpfs over {} is not full",
            self.dir.display()
        );
    }

    /// Remove what [`Tmpfs::fill`] wrote.
    pub fn empty(&self) {
        for name in ["1", "2", "-probe"] {
            let _ = std::fs::remove_file(self.filler(name));
        }
    }

    fn filler(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{FILLER}{suffix}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
