//! Lays out the packaged binary's code in the order of `packaging/code-order.txt` (issue 13).
//!
//! A sync runs about 1.8 MB of the binary's 10 MB of code, spread over all of it; the
//! kernel maps the pages around each page fault, so most of the code ends up resident
//! and each run pays a fault per scattered piece. The file lists the functions a sync, a
//! quiet poll and the daemon run (`packaging/code-order.sh` writes it), and the linker
//! puts them first and together. It only moves code: a function missing from the file
//! (new, renamed) is placed as before, and one the file names but the binary lacks is
//! ignored.
//!
//! Only the `dist` profile (what the packages ship) on x86_64 Linux, where rustc links
//! with its own lld: the option is lld's, and the order is measured on that build.

use std::path::Path;

const ORDER: &str = "packaging/code-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    let out_dir = std::env::var("OUT_DIR").unwrap_or_default();
    // OUT_DIR is `<target>/<profile>/build/rolecall-<hash>/out`.
    let profile = Path::new(&out_dir)
        .ancestors()
        .nth(3)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str());
    let target = std::env::var("TARGET").unwrap_or_default();
    if profile != Some("dist") || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&manifest).join(ORDER);
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=rolecall=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=rolecall=-Wl,--no-warn-symbol-ordering");
    }
}
