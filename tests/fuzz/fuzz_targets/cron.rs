//! The cron.d checker (`cron::check`): the file name (first part, cut at a NUL byte), the
//! content (the rest), and an owner and mode picked by the name's first byte.
//!
//! Asserts: no panic; every problem is one escaped line of bounded length; a file with no
//! problem ends with a newline and is UTF-8.

#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rolecall::cron;
use rolecall_fuzz::{assert_line, parts, TOML_ERROR_MAX};

const OWNERS: [&str; 4] = ["root", "0", "www-data", ""];
const MODES: [u32; 4] = [0o644, 0o600, 0o664, 0o4777];

fuzz_target!(|data: &[u8]| {
    let (name, content) = match parts(data, 2)[..] {
        [name, content] => (name, content),
        [content] => (&b"rolecall-videos"[..], content),
        _ => return,
    };
    let pick = usize::from(name.first().copied().unwrap_or(0));
    let path = Path::new(cron::CRON_DIR).join(OsStr::from_bytes(name));
    let problems = cron::check(&path, content, OWNERS[pick % 4], MODES[(pick / 4) % 4]);
    for problem in &problems {
        assert_line("cron problem", problem, TOML_ERROR_MAX);
    }
    if problems.is_empty() {
        assert!(content.ends_with(b"\n") && std::str::from_utf8(content).is_ok());
    }
});
