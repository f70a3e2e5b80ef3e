#!/usr/bin/env bash
# Verify the systemd units shipped in packaging/systemd/ (STYLE.md §3.13):
#   1. `systemd-analyze verify` on rolecall.service and rolecall-ready.target
#      with each distro's drop-ins (debian, rhel) and on
#      examples/register-in-lb.service;
#   2. the unit's contract: required directives, a comment above every
#      dependency/hardening line, ReadWritePaths= covering agent.toml's
#      allowed_roots and state directory;
#   3. the ready point's contract (README "First boot"): the daemon starts
#      rolecall-ready.target itself, nothing else pulls it in, it depends on
#      rolecall only by ordering, the example orders itself after it, and each
#      distro's target drop-in names the same services as its Before= drop-in;
#   4. the preset really enables the unit (systemctl --root preset in a scratch
#      root whose catch-all preset disables everything else).
#
# systemd-analyze refuses a unit whose ExecStart= binary does not exist, and
# /usr/bin/rolecall is not installed where this runs, so the units are checked
# as copies in a temp dir with Exec*= paths pointed at a stub; drop-ins sit in
# <unit>.d/ next to the copy, where systemd-analyze loads them from.
#
# Usage: packaging/verify-unit.sh [--install-missing]
#   --install-missing  apt-get install systemd when systemd-analyze is missing
# Exit: 0 all checks passed, 1 a check failed, 2 bad usage or missing tools.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
units_src="$here/systemd"
agent_toml="$here/config/agent.toml"
unit_src="$units_src/rolecall.service"
target_src="$units_src/rolecall-ready.target"
example_src="$units_src/examples/register-in-lb.service"

passed=0
failed=0

log() { printf 'verify-unit: %s\n' "$*" >&2; }
pass() { passed=$((passed + 1)); log "ok: $*"; }
fail() { failed=$((failed + 1)); log "FAILED: $*"; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

install_missing=0
while [ $# -gt 0 ]; do
    case "$1" in
        --install-missing) install_missing=1 ;;
        -h | --help) usage; exit 0 ;;
        *) log "unknown argument: $1 (see --help)"; exit 2 ;;
    esac
    shift
done

ensure_tools() {
    if command -v systemd-analyze >/dev/null && command -v systemctl >/dev/null; then
        return 0
    fi
    if [ "$install_missing" = 1 ] && command -v apt-get >/dev/null; then
        log "systemd-analyze missing: installing Debian package 'systemd'"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd >&2
    fi
    if ! command -v systemd-analyze >/dev/null || ! command -v systemctl >/dev/null; then
        log "systemd-analyze/systemctl not found: apt-get install systemd (or rerun with --install-missing)"
        exit 2
    fi
}

# Copy a unit, pointing the Exec*= binaries that do not exist here at the stub.
# Fails when a rewrite did not happen (the unit changed under us).
stage_unit() {
    local src="$1" dst="$2" from to
    shift 2
    cp "$src" "$dst"
    while [ $# -gt 0 ]; do
        from="$1" to="$2"
        shift 2
        if ! grep -q "=$from\( \|\$\)" "$dst"; then
            fail "$(basename "$src"): expected an Exec line running $from"
            continue
        fi
        sed -i "s#=$from\( \|\$\)#=$to\1#" "$dst"
    done
}

# Run systemd-analyze verify on units in $1; only warnings about these units
# count (--recursive-errors=no), other units' noise is shown but ignored.
analyze() {
    local dir="$1" label="$2" out rc=0
    shift 2
    local flags=(--man=no)
    if systemd-analyze --help 2>/dev/null | grep -- '--recursive-errors' >/dev/null; then
        flags+=(--recursive-errors=no)
    fi
    out="$(cd "$dir" && systemd-analyze verify "${flags[@]}" "$@" 2>&1)" || rc=$?
    [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    systemd-analyze: /' >&2
    if [ "$rc" -ne 0 ] || printf '%s\n' "$out" | grep -e "$dir" -e 'rolecall' -e 'register-in-lb' -e 'cycle' >/dev/null; then
        fail "systemd-analyze verify ($label), exit $rc"
    else
        pass "systemd-analyze verify ($label)"
    fi
}

verify_flavour() {
    local flavour="$1" dir="$tmp/$1"
    mkdir -p "$dir/rolecall.service.d" "$dir/rolecall-ready.target.d"
    stage_unit "$unit_src" "$dir/rolecall.service" /usr/bin/rolecall "$tmp/bin/rolecall"
    cp "$units_src/$flavour/rolecall.service.d/before-services.conf" "$dir/rolecall.service.d/"
    cp "$target_src" "$dir/"
    cp "$units_src/$flavour/rolecall-ready.target.d/after-services.conf" "$dir/rolecall-ready.target.d/"
    stage_unit "$example_src" "$dir/register-in-lb.service" \
        /usr/local/sbin/register-in-lb "$tmp/bin/register-in-lb"
    analyze "$dir" "rolecall.service + rolecall-ready.target + $flavour drop-ins, register-in-lb.service" \
        rolecall.service rolecall-ready.target register-in-lb.service
}

# Directive lines (Key=value) of a unit file, with line numbers.
directives() { grep -n -E '^[A-Za-z]+=' "$1" || true; }

check_required() {
    local want missing=()
    # shellcheck disable=SC2016 # $MAINPID is literal unit text, not shell
    for want in 'Type=notify' 'ExecStart=/usr/bin/rolecall run --ready-target rolecall-ready.target' \
        'ExecReload=/bin/kill -HUP $MAINPID' 'NotifyAccess=main' 'WatchdogSec=' \
        'Restart=on-failure' 'RestartSec=5' 'RestartPreventExitStatus=2' \
        'Wants=network-online.target' 'After=network-online.target' \
        'TimeoutStartSec=' 'TimeoutStopSec=' 'StateDirectory=rolecall' \
        'ConfigurationDirectory=rolecall' 'ProtectSystem=strict' 'PrivateTmp=yes' \
        'NoNewPrivileges=yes' 'WantedBy=multi-user.target'; do
        # "Key=" only needs the key; anything else must be the whole line.
        awk -v w="$want" '$0 == w || (w ~ /=$/ && index($0, w) == 1) { found = 1 }
            END { exit !found }' "$unit_src" || missing+=("$want")
    done
    for want in PrivateNetwork PrivateUsers SystemCallFilter; do
        if directives "$unit_src" | grep ":$want=" >/dev/null; then missing+=("no $want= (breaks reloads/tools)"); fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        pass "rolecall.service has the required directives"
    else
        fail "rolecall.service: missing or forbidden: ${missing[*]}"
    fi
}

# STYLE.md §3.13: a one-line comment above every dependency or hardening line.
check_comments() {
    local file="$1" keys='Wants|Requires|After|Before|BindsTo|PartOf|Protect[A-Za-z]*|Private[A-Za-z]*|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|Restrict[A-Za-z]*|NoNewPrivileges|LockPersonality|SystemCall[A-Za-z]*|Capability[A-Za-z]*|MemoryDenyWriteExecute|Timeout[A-Za-z]*|Restart[A-Za-z]*|Watchdog[A-Za-z]*|KillMode|NotifyAccess|StateDirectory[A-Za-z]*|ConfigurationDirectory|UMask|DevicePolicy|DeviceAllow'
    local bad=() n prev
    while IFS=: read -r n _; do
        prev="$(sed -n "$((n - 1))p" "$file")"
        case "$prev" in \#*) ;; *) bad+=("line $n") ;; esac
    done < <(grep -n -E "^($keys)=" "$file" || true)
    if [ ${#bad[@]} -eq 0 ]; then
        pass "${file#"$units_src"/}: comment above every dependency/hardening line"
    else
        fail "${file#"$units_src"/}: no comment above ${bad[*]}"
    fi
}

# The values of directive $2 in unit file $1, one per line (space-separated
# lists split).
values_of() { sed -n "s/^$2=//p" "$1" | tr ' ' '\n' | sed '/^$/d'; }

# README "First boot": READY=1 comes before the smoke tests, so "serving" is
# rolecall-ready.target, which only the daemon starts.
check_ready_target() {
    local bad=() unit key flavour
    values_of "$target_src" After | grep -x rolecall.service >/dev/null \
        || bad+=("rolecall-ready.target: no After=rolecall.service")
    for key in Requires Requisite BindsTo PartOf Upholds Wants; do
        if values_of "$target_src" "$key" | grep . >/dev/null; then
            bad+=("rolecall-ready.target: $key= (an agent restart must not stop it; ordering only)")
        fi
    done
    if grep -q '^\[Install\]' "$target_src"; then
        bad+=("rolecall-ready.target: [Install] (nothing may enable it into the boot)")
    fi
    for unit in "$unit_src" "$example_src" "$units_src"/*/*.d/*.conf; do
        for key in Wants Requires Requisite BindsTo Upholds; do
            if values_of "$unit" "$key" | grep -x rolecall-ready.target >/dev/null; then
                bad+=("$(basename "$unit"): $key=rolecall-ready.target (would reach it at READY=1, before the smoke tests)")
            fi
        done
    done
    values_of "$example_src" After | grep -x rolecall-ready.target >/dev/null \
        || bad+=("register-in-lb.service: no After=rolecall-ready.target")
    values_of "$example_src" WantedBy | grep -x rolecall-ready.target >/dev/null \
        || bad+=("register-in-lb.service: not WantedBy=rolecall-ready.target")
    if values_of "$example_src" WantedBy | grep -x multi-user.target >/dev/null; then
        bad+=("register-in-lb.service: WantedBy=multi-user.target (would run on a host that failed its smoke tests)")
    fi
    if values_of "$example_src" After | grep -x rolecall.service >/dev/null; then
        bad+=("register-in-lb.service: After=rolecall.service means after READY=1, not after the smoke tests")
    fi
    for flavour in debian rhel; do
        if [ "$(values_of "$units_src/$flavour/rolecall.service.d/before-services.conf" Before | sort)" \
            != "$(values_of "$units_src/$flavour/rolecall-ready.target.d/after-services.conf" After | sort)" ]; then
            bad+=("$flavour: the target's After= services differ from rolecall.service's Before= services")
        fi
    done
    if [ ${#bad[@]} -eq 0 ]; then
        pass "rolecall-ready.target: started by the daemon only, ordering-only on rolecall, example after it"
    else
        local b
        for b in "${bad[@]}"; do fail "$b"; done
    fi
}

# ReadWritePaths= must cover paths.allowed_roots and paths.state of the default
# agent.toml ("-" prefix allowed: optional paths).
# covered_by " RW-LIST " PATH: PATH or one of its parent directories is in RW-LIST.
covered_by() {
    local entry
    for entry in $1; do
        entry=${entry#-}
        case "$2" in "$entry" | "$entry"/*) return 0 ;; esac
    done
    return 1
}

check_write_paths() {
    local rw roots path missing=()
    rw=" $(grep -E '^ReadWritePaths=' "$unit_src" | cut -d= -f2- | tr '\n' ' ') "
    # The default, shown commented out in agent.toml (rolecall defines it), or a
    # setting that replaces it.
    roots="$(sed 's/^# \{0,1\}//' "$agent_toml" \
        | awk '!done&&/^allowed_roots *= *\[/{on=1} on{print} on&&/\]/{on=0; done=1}' \
        | grep -o '"/[^"]*"' | tr -d '"')"
    roots+=$'\n'"$(sed -n 's/^state *= *"\(.*\)".*/\1/p' "$agent_toml")"
    [ -n "$roots" ] || { fail "no allowed_roots found in $agent_toml"; return; }
    while IFS= read -r path; do
        [ -n "$path" ] || continue
        covered_by "$rw" "$path" || missing+=("$path")
    done <<<"$roots"
    if [ ${#missing[@]} -eq 0 ]; then
        pass "ReadWritePaths= covers agent.toml allowed_roots and state"
    else
        fail "ReadWritePaths= misses: ${missing[*]}"
    fi
}

# The preset must enable the unit even where the distro's catch-all preset
# disables everything (Fedora/RHEL 99-default-disable.preset).
check_preset() {
    local root="$tmp/preset-root" state
    mkdir -p "$root/usr/lib/systemd/system" "$root/usr/lib/systemd/system-preset"
    cp "$unit_src" "$root/usr/lib/systemd/system/"
    cp "$units_src/90-rolecall.preset" "$root/usr/lib/systemd/system-preset/"
    echo 'disable *' >"$root/usr/lib/systemd/system-preset/99-default-disable.preset"
    systemctl --root="$root" preset rolecall.service >/dev/null 2>&1 || true
    state="$(systemctl --root="$root" is-enabled rolecall.service 2>/dev/null || true)"
    if [ "$state" = enabled ] && [ -L "$root/etc/systemd/system/multi-user.target.wants/rolecall.service" ]; then
        pass "90-rolecall.preset enables rolecall.service"
    else
        fail "90-rolecall.preset: systemctl preset left the unit '$state'"
    fi
}

ensure_tools
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/rolecall"
cp "$tmp/bin/rolecall" "$tmp/bin/register-in-lb"
chmod 0755 "$tmp/bin/rolecall" "$tmp/bin/register-in-lb"

verify_flavour debian
verify_flavour rhel
check_required
check_comments "$unit_src"
check_comments "$target_src"
check_comments "$example_src"
for drop_in in "$units_src"/*/*.d/*.conf; do
    check_comments "$drop_in"
done
check_write_paths
check_ready_target
check_preset

printf 'verify-unit: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
