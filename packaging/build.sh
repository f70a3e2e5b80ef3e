#!/usr/bin/env bash
# Build rolecall's .deb (cargo-deb) and .rpm (cargo-generate-rpm).
#
# Usage: packaging/build.sh [--no-build] [--fast]   (from the repo root)
#   --no-build     reuse the built binary instead of running `cargo build`
#   --fast         quick, larger packages for tests: the `release` profile's
#                  binary (the one `cargo build --release` and CI build) instead
#                  of the `dist` profile's (fat LTO, own code for speed,
#                  dependencies for size, ~15 min on two cores), gzip instead
#                  of xz/zstd compression; same files
#
# Steps: cargo build --profile dist (or release); `rolecall manpage --out-dir target/man` (its
# rolecall.1 and one page per subcommand, then gzipped) and `rolecall
# completions --out-dir target/completions` (hidden subcommands of the binary
# just built: a build whose docs fail is not packaged; `--strict-docs`, which
# once refused placeholder docs, is accepted and changes nothing); install
# cargo-deb and cargo-generate-rpm with
# `cargo install --locked` when missing; `cargo deb --no-build`;
# `cargo generate-rpm`. The package paths are printed last, one per line.
#
# Packaging metadata comes from Cargo.toml ([package.metadata.deb] and
# [package.metadata.generate-rpm], see packaging/cargo-metadata.toml).
# Exit: 0 built, 1 a build step failed, 2 bad usage or wrong directory.
set -euo pipefail

# Versions this packaging was written and tested against; used only when the
# tool is missing (an installed one is used as it is).
CARGO_DEB_VERSION="${CARGO_DEB_VERSION:-3.8.0}"
CARGO_GENERATE_RPM_VERSION="${CARGO_GENERATE_RPM_VERSION:-0.21.1}"

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$1" >&2; exit "${2:-1}"; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

no_build=0
fast=0
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) no_build=1 ;;
        --strict-docs) ;;
        --fast) fast=1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" 2 ;;
    esac
    shift
done

check_repo_root() {
    if ! { [ -f Cargo.toml ] && [ -d packaging ] && grep -q '^name = "rolecall"' Cargo.toml; }; then
        die "run from the rolecall repository root (no Cargo.toml for rolecall here: $PWD)" 2
    fi
    grep -q '^\[package\.metadata\.deb\]' Cargo.toml \
        || die "Cargo.toml has no [package.metadata.deb]: paste packaging/cargo-metadata.toml into it" 2
    grep -q '^\[package\.metadata\.generate-rpm\]' Cargo.toml \
        || die "Cargo.toml has no [package.metadata.generate-rpm]: paste packaging/cargo-metadata.toml into it" 2
}

generate_manpage() {
    # Start empty: a page left by an older build (a renamed subcommand) must not ship.
    rm -rf target/man
    mkdir -p target/man
    "$bin" manpage --out-dir target/man || die "'rolecall manpage --out-dir target/man' failed"
    [ -f target/man/rolecall.1 ] || die "'rolecall manpage --out-dir target/man' wrote no target/man/rolecall.1"
    # `rolecall manpage` writes rolecall.1 plus one page per subcommand
    # (rolecall-sync.1, rolecall-map-promote.1, ...), uncompressed. Debian
    # policy §12.1: man pages are shipped gzip-compressed (-n: no timestamp, so
    # the package is reproducible). The packages ship target/man/*.1.gz.
    gzip -9 -n -f target/man/*.1
}

# clap_complete's file names for bash, zsh and fish.
COMPLETIONS=(rolecall.bash _rolecall rolecall.fish)

generate_completions() {
    local f
    mkdir -p target/completions
    for f in "${COMPLETIONS[@]}"; do rm -f "target/completions/$f"; done
    "$bin" completions --out-dir target/completions \
        || die "'rolecall completions --out-dir target/completions' failed"
    for f in "${COMPLETIONS[@]}"; do
        [ -f "target/completions/$f" ] || die "'rolecall completions' wrote no target/completions/$f"
    done
}

# cargo subcommand $1 from crate $2 at version $3, installed when missing.
ensure_cargo_tool() {
    local cmd="$1" crate="$2" version="$3"
    if cargo "$cmd" --version >/dev/null 2>&1; then
        log "using $(cargo "$cmd" --version 2>&1 | head -n1)"
        return
    fi
    log "installing $crate $version (cargo install --locked)"
    cargo install --locked "$crate" --version "$version"
}

# Cargo's real target directory (CARGO_TARGET_DIR or build.target-dir in a
# cargo config may move it away from ./target).
cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

check_repo_root
target_dir="$(cargo_target_dir)"
[ -n "$target_dir" ] || die "cannot find cargo's target directory (cargo metadata failed)"
profile=dist
[ "$fast" = 0 ] || profile=release
bin="$target_dir/$profile/rolecall"

if [ "$no_build" = 0 ]; then
    log "cargo build --profile $profile"
    cargo build --profile "$profile"
fi
[ -x "$bin" ] || die "$bin not found: build it first (or drop --no-build)"

generate_manpage
generate_completions

ensure_cargo_tool deb cargo-deb "$CARGO_DEB_VERSION"
ensure_cargo_tool generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

deb_flags=(--no-build --profile "$profile")
rpm_flags=(--profile "$profile")
if [ "$fast" = 1 ]; then
    deb_flags+=(--fast)
    rpm_flags+=(--payload-compress gzip)
fi

log "cargo deb ${deb_flags[*]}"
deb_path="$(cargo deb "${deb_flags[@]}" | tail -n1)"
[ -f "$deb_path" ] || die "cargo deb did not report a package file (got: '$deb_path')"

log "cargo generate-rpm ${rpm_flags[*]}"
rm -f "$target_dir"/generate-rpm/*.rpm
# --target-dir: cargo-generate-rpm ignores build.target-dir of cargo configs.
cargo generate-rpm --target-dir "$target_dir" "${rpm_flags[@]}"
rpms=("$target_dir"/generate-rpm/*.rpm)
[ -f "${rpms[0]}" ] || die "cargo generate-rpm produced no .rpm in $target_dir/generate-rpm"
rpm_path="${rpms[0]}"

log "built:"
printf '%s\n' "$deb_path" "$rpm_path"
