#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the integration tests start (SPEC §8),
# then runs the format check, clippy and every test. Extra arguments go to `cargo test`,
# e.g. `bash tests/run.sh support_tests`.
#
# Environment:
#   ROLECALL_VENV         virtualenv holding moto (default /var/cache/rolecall-ci/venv)
#   ROLECALL_MOTO_SERVER  moto_server to start (default: the one in ROLECALL_VENV)
#   CARGO_TARGET_DIR      cargo's target dir (default /var/cache/rolecall-ci/target)
#   FUZZ_TARGET_DIR       the fuzz targets' (nightly, instrumented) target dir
#                         (default /var/cache/rolecall-ci/fuzz-target)
set -euo pipefail

readonly MOTO_VERSION=5.2.5
readonly CACHE_DIR=/var/cache/rolecall-ci

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*"
        return 1
    fi
}

# Debian packages whose programs the tests start, for each one that is missing.
missing_packages() {
    local -A needs=(
        [/usr/sbin/apache2]=apache2
        [/usr/sbin/mariadbd]=mariadb-server
        [/usr/bin/mariadb]=mariadb-client
        [/usr/bin/mariadb-install-db]=mariadb-server
        # tests/real_configs.rs: the rendered memcached.conf and munin-node.conf, served.
        [/usr/bin/memcached]=memcached
        [/usr/sbin/munin-node]=munin-node
        [/usr/bin/systemd-analyze]=systemd
        # tests/packaging.rs: a Debian 12 root for the .deb, the .rpm's file list and
        # bake.sh's rpm unpacking, and the packaging scripts' lint.
        [/usr/sbin/debootstrap]=debootstrap
        [/usr/bin/rpm]=rpm
        [/usr/bin/rpm2cpio]=rpm2cpio
        [/usr/bin/cpio]=cpio
        [/usr/bin/shellcheck]=shellcheck
        # tests/boot.rs: a Debian 12 root booted by systemd in its own namespaces
        # (debootstrap above; systemctl --root from systemd above).
        [/usr/bin/unshare]=util-linux
        [/usr/bin/nsenter]=util-linux
        [/usr/bin/setpriv]=util-linux
        [/usr/bin/timeout]=coreutils
        [/usr/sbin/ip]=iproute2
        # tests/fleet.rs: the `fleet status --html` page loaded in a headless browser.
        [/usr/bin/chromium]=chromium
        # tests/faults.rs and tests/writer.rs: errors and kills injected at file-system
        # calls, syscall counts.
        [/usr/bin/strace]=strace
        # tests/hardening.rs: an address-space limit on one run.
        [/usr/bin/prlimit]=util-linux
    )
    local program
    for program in "${!needs[@]}"; do
        [ -x "$program" ] || echo "${needs[$program]}"
    done
    if ! command -v python3 >/dev/null; then
        echo python3
        echo python3-venv
    elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        echo python3-venv
    fi
    # tests/hardening.rs: a FUSE mount that hangs (tests/support/hung_fs.py), on Debian's
    # Python and its fusepy.
    /usr/bin/python3 -c 'import fusepy' 2>/dev/null || echo python3-fusepy
}

install_packages() {
    local -a packages
    mapfile -t packages < <(missing_packages | sort -u)
    [ "${#packages[@]}" -gt 0 ] || return 0
    log "installing ${packages[*]}"
    # Keep apt from starting the distro's servers: the tests start their own.
    local policy=/usr/sbin/policy-rc.d status=0
    local created_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created_policy=yes
    fi
    as_root apt-get update || status=$?
    if [ "$status" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${packages[@]}" || status=$?
    fi
    [ -z "$created_policy" ] || as_root rm -f "$policy"
    return "$status"
}

# The distro services are not used by the tests (each test starts its own servers on random
# ports); stop them if something started them, so they hold no ports, memory or CPU.
stop_distro_services() {
    local service
    for service in apache2 mariadb memcached munin-node; do
        if [ -d /run/systemd/system ]; then
            if systemctl is-active --quiet "$service"; then
                log "stopping the distro's $service service"
                as_root systemctl stop "$service"
            fi
        elif [ -x "/etc/init.d/$service" ] && "/etc/init.d/$service" status >/dev/null 2>&1; then
            log "stopping the distro's $service service"
            as_root "/etc/init.d/$service" stop >/dev/null
        fi
    done
}

install_moto() {
    local venv=${ROLECALL_VENV:-$CACHE_DIR/venv}
    local check="import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')"
    if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
        log "installing moto[server]==$MOTO_VERSION into $venv"
        as_root mkdir -p "$(dirname "$venv")"
        python3 -m venv --clear "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    fi
    export ROLECALL_MOTO_SERVER=${ROLECALL_MOTO_SERVER:-$venv/bin/moto_server}
}

ensure_rust_components() {
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        log "adding rustfmt and clippy"
        rustup component add rustfmt clippy
    fi
}

main() {
    install_packages
    stop_distro_services
    install_moto
    ensure_rust_components
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
    log "cargo fmt --check"
    cargo fmt --check
    log "cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets -- -D warnings
    # tests/packaging.rs packages the release binary (packaging/build.sh); building it here,
    # before the tests start, keeps a long release compile from starving the timed tests.
    # (With a test filter, the packaging tests build it themselves if they run.)
    if [ "$#" -eq 0 ]; then
        log "cargo build --release"
        cargo build --release
    fi
    log "cargo test --all-targets $*"
    cargo test --all-targets "$@"
    # Issue 15: every fuzz target for 20 s from the committed seed corpus (about 2 minutes
    # once built; the first instrumented build takes longer). Needs the nightly toolchain;
    # installs cargo-fuzz if missing. Not with a test filter.
    if [ "$#" -eq 0 ]; then
        log "bash tests/fuzz/run.sh --seconds 20"
        FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$CACHE_DIR/fuzz-target} bash tests/fuzz/run.sh --seconds 20
    fi
}

main "$@"
