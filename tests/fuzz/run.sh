#!/usr/bin/env bash
# Runs the fuzz targets (issue 15; README "Fuzzing and soak") with cargo-fuzz on the nightly
# toolchain, one after the other, from the committed seed corpus (corpus/TARGET) and the
# crashes found before (regressions/TARGET). What a run adds to the corpus goes to a scratch
# directory (work/TARGET, git-ignored), never to corpus/. Fails on the first crash, panic,
# output over its bound or timeout; libFuzzer leaves the input in artifacts/TARGET/.
#
#   bash tests/fuzz/run.sh [--seconds N] [--runs N] [TARGET...]
#
# Default: every target for 20 s (tests/run.sh runs this as the test command's short pass).
# --runs N stops a target after N executions (whichever limit comes first, with both);
# libFuzzer's last line, "Done N runs in S second(s)", is the count to report.
#
# Environment:
#   FUZZ_TARGET_DIR   cargo's target dir for the instrumented build (default tests/fuzz/target)
#   FUZZ_JOBS_NICE    niceness of the fuzzing processes (default 0)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
readonly FUZZ_DIR=$PWD
readonly TARGETS=(map catalog cron diff signature)
# No sanitizer: rolecall forbids unsafe code, and ASan would halve the executions;
# debug assertions on, so that arithmetic overflow panics as in a test build.
readonly BUILD_FLAGS=(--fuzz-dir "$FUZZ_DIR" --sanitizer none --debug-assertions)

log() { printf '==> %s\n' "$*" >&2; }

die() {
    log "$*"
    exit 1
}

ensure_tools() {
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        die "the fuzz targets need a nightly toolchain (libFuzzer's coverage instrumentation): \
rustup toolchain install nightly --profile minimal"
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
        cargo +nightly install cargo-fuzz --locked ||
            die "cargo-fuzz is missing and could not be installed: cargo install cargo-fuzz --locked"
    fi
}

main() {
    local limit=()
    local targets=()
    while [ "$#" -gt 0 ]; do
        case $1 in
        --seconds) limit+=("-max_total_time=$2"); shift 2 ;;
        --runs) limit+=("-runs=$2"); shift 2 ;;
        -*) die "unknown option $1 (usage: run.sh [--seconds N] [--runs N] [TARGET...])" ;;
        *) targets+=("$1"); shift ;;
        esac
    done
    [ "${#limit[@]}" -gt 0 ] || limit=(-max_total_time=20)
    [ "${#targets[@]}" -gt 0 ] || targets=("${TARGETS[@]}")
    ensure_tools
    export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}
    log "cargo +nightly fuzz build (target dir $CARGO_TARGET_DIR)"
    cargo +nightly fuzz build "${BUILD_FLAGS[@]}" --target-dir "$CARGO_TARGET_DIR"
    local target
    local -a dict
    for target in "${targets[@]}"; do
        mkdir -p "work/$target" "regressions/$target"
        dict=()
        [ ! -f "dict/$target.dict" ] || dict=("-dict=$FUZZ_DIR/dict/$target.dict")
        log "fuzzing $target (${limit[*]})"
        nice -n "${FUZZ_JOBS_NICE:-0}" \
            cargo +nightly fuzz run "${BUILD_FLAGS[@]}" --target-dir "$CARGO_TARGET_DIR" \
            "$target" "$FUZZ_DIR/work/$target" "$FUZZ_DIR/corpus/$target" \
            "$FUZZ_DIR/regressions/$target" -- \
            "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}"
    done
}

main "$@"
