//! Debian's headless Chromium for the pages rolecall writes (`fleet status --html`): the DOM
//! as the browser built it, and a screenshot. No network: background services, component
//! updates and sync are off, and each run gets a profile directory of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one Chromium run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// `chromium`, or a failure saying how to install it.
fn program() -> PathBuf {
    super::require_program(
        "chromium",
        "the HTML page tests need Debian's headless browser: `apt-get install chromium` \
         (bash tests/run.sh installs it)",
    )
}

fn run(page: &Path, action: &[String]) -> std::process::Output {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let mut cmd = Command::new("timeout");
    cmd.arg(RUN_TIMEOUT.as_secs().to_string())
        .arg(program())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(action)
        .arg(format!("file://{}", page.display()));
    let output = cmd.output().expect("running chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        super::describe_output(&output)
    );
    output
}

/// The page's DOM after Chromium loaded it.
pub fn dump_dom(page: &Path) -> String {
    let out = run(page, &["--dump-dom".to_string()]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PNG of the page in a `width`×`height` window, written to `png`.
pub fn screenshot(page: &Path, png: &Path, width: u32, height: u32) {
    let action = [
        format!("--screenshot={}", png.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_string(),
    ];
    run(page, &action);
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1000,
        "no screenshot at {} ({size} bytes)",
        png.display()
    );
}

/// Where tests keep what they produce for people to look at: the CI artifacts directory
/// when it can be written, else cargo's temporary directory for tests.
pub fn artifacts_dir() -> PathBuf {
    let ci = PathBuf::from("/var/cache/rolecall-ci/artifacts");
    if std::fs::create_dir_all(&ci).is_ok() && tempfile::tempfile_in(&ci).is_ok() {
        return ci;
    }
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}
