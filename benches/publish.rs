//! Benchmark of issue 5: what `map publish` and `map promote` compute before the upload, on
//! a 10,000-host / 500-product map: parse and validate the file, raise the generation in the
//! text, validate again, diff in words and as unified text against the published map, and
//! sign the bytes (Ed25519). Target: under 1 s per publish.
//!
//! `cargo bench --bench publish` runs the full size; under `cargo test` (no `--bench`
//! argument) it runs a small map once, as a smoke test.

use std::time::{Duration, Instant};

use rolecall::rolemap::{prepare, promote};
use rolecall::source::verify;

#[path = "../tests/support/fleet.rs"]
mod fleet;
use fleet::fleet;

fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (hosts, products, rounds) = if full {
        (10_000, 500, 15)
    } else {
        (200, 10, 1)
    };
    let published = fleet(hosts, products);
    let edited = published.replace(
        "docroot = \"/srv/p7/current/public\"",
        "docroot = \"/srv/p7/next/public\"",
    );
    let (secret, public) = verify::generate().expect("a key pair");
    let publish_once = || {
        let prepared = prepare::prepare(&edited, Some(&published)).expect("valid map");
        let signature = verify::sign(&prepared.bytes, &secret).expect("signed");
        (prepared, signature)
    };
    let (prepared, signature) = publish_once();
    verify::verify(&prepared.bytes, &signature, &public).expect("verifies");
    assert_eq!(prepared.changes.len(), 2, "generation and one docroot");
    let (median, max) = time(rounds, publish_once);
    let promote_once = || {
        let promoted = promote::promote_text(&published, "p7", None).expect("promotes");
        let current = prepare::Published {
            text: &published,
            map: Some(&promoted.original),
        };
        let prepared = prepare::prepare_loaded(&promoted.text, promoted.map.clone(), Some(current))
            .expect("valid");
        verify::sign(&prepared.bytes, &secret).expect("signed")
    };
    let (p_median, p_max) = time(rounds, promote_once);
    let verify_once = || verify::verify(&prepared.bytes, &signature, &public);
    let (v_median, _) = time(rounds, verify_once);
    report(
        hosts,
        products,
        published.len(),
        [median, max, p_median, p_max, v_median],
    );
    if full {
        breakdown(&edited, &published, &secret);
    }
}

/// Median time of each step of a publish, to see where the time goes.
#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
fn breakdown(edited: &str, published: &str, secret: &[u8]) {
    let parsed = (
        rolecall::rolemap::types::parse(published).expect("parses"),
        rolecall::rolemap::types::parse(edited).expect("parses"),
    );
    let steps: [(&str, &dyn Fn()); 7] = [
        ("parse + validate (rolemap::load)", &|| {
            rolecall::rolemap::load(edited.as_bytes())
                .map(|_| ())
                .expect("valid");
        }),
        ("parse without validation (types::parse)", &|| {
            rolecall::rolemap::types::parse(edited)
                .map(|_| ())
                .expect("parses");
        }),
        ("generation read leniently", &|| {
            std::hint::black_box(prepare::generation_of(published));
        }),
        ("generation edit (toml_edit)", &|| {
            prepare::with_generation(edited, 2)
                .map(|_| ())
                .expect("edits");
        }),
        ("diff in words", &|| {
            std::hint::black_box(rolecall::rolemap::diff::diff(&parsed.0, &parsed.1));
        }),
        ("unified diff", &|| {
            std::hint::black_box(prepare::unified(published, edited));
        }),
        ("sign", &|| {
            verify::sign(edited.as_bytes(), secret)
                .map(|_| ())
                .expect("signs");
        }),
    ];
    for (name, step) in steps {
        let (median, _) = time(5, step);
        println!("  {name}: {median:?}");
    }
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
fn report(hosts: usize, products: usize, bytes: usize, t: [Duration; 5]) {
    println!("map: {hosts} hosts, {products} products, {bytes} bytes");
    println!(
        "publish (validate file, parse current, bump, diff, unified diff, sign): median {:?}, max {:?}",
        t[0], t[1]
    );
    println!(
        "promote (validate, edit text, read back, validate, bump, diff, sign):   median {:?}, max {:?}",
        t[2], t[3]
    );
    println!(
        "verify (agent side):                                                    median {:?}",
        t[4]
    );
}
