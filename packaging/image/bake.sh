#!/usr/bin/env bash
# Bake rolecall into a machine image. Run inside the image build (a Packer
# shell provisioner, as root), or against a scratch root with --root.
#
# Usage: bake.sh --map-url URL [options]
#   --map-url URL          where the fleet's role map lives (required):
#                          s3://bucket/key, https://host/path or file:///path
#   --package PATH         rolecall .deb or .rpm to install first (without it,
#                          rolecall must already be installed)
#   --poll-interval DUR    map poll interval, e.g. 30s, 5m (default 30s)
#   --jitter DUR           random extra delay per poll, e.g. 10s (default 10s)
#   --verify-key PATH      public key for map signatures; copied to
#                          /etc/rolecall/map.pub and set as map.verify_key
#   --identity imds|static identity source (default imds). "static" is for
#                          per-host installs (physical servers), never for a
#                          shared image, and needs all four of:
#     --static-id ID --static-address ADDR --static-az AZ --static-region REGION
#   --root DIR             act on DIR instead of / (image trees, tests): the
#                          package is unpacked (dpkg-deb -x, or rpm2cpio|cpio)
#                          without maintainer scripts, and systemctl --root
#                          enables the unit
#   -h, --help             this text
#
# It installs the package, rewrites the map and identity keys of
# /etc/rolecall/agent.toml (every other line, comments included, is kept),
# enables rolecall.service for the next boot, and empties /var/lib/rolecall so
# the image carries no cached map, managed-file records, status or lock from
# the build host. It never runs the agent (and stops it if something did).
# Running it again with the same arguments changes nothing.
#
# Exit: 0 done, 1 a step failed, 2 bad usage (the message names the argument).
set -euo pipefail
# Byte-wise character ranges in the validation regexes below.
export LC_ALL=C

prog="bake.sh"
log() { printf '%s: %s\n' "$prog" "$*" >&2; }
warn() { printf '%s: WARNING: %s\n' "$prog" "$*" >&2; }
die() { printf '%s: error: %s\n' "$prog" "$1" >&2; exit "${2:-1}"; }
usage_error() { printf '%s: %s (see --help)\n' "$prog" "$*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# --- arguments ---------------------------------------------------------------

map_url="" package="" poll_interval="30s" jitter="10s" verify_key=""
identity="imds" static_id="" static_address="" static_az="" static_region=""
root="/"

# Options come as "--name VALUE" or "--name=VALUE".
parse_args() {
    local opt val
    while [ $# -gt 0 ]; do
        opt="$1"
        case "$opt" in
            -h | --help) usage; exit 0 ;;
            --*=*) val="${opt#*=}"; opt="${opt%%=*}"; shift ;;
            --*)
                [ $# -ge 2 ] || usage_error "$opt needs a value"
                val="$2"; shift 2 ;;
            *) usage_error "unexpected argument: $opt" ;;
        esac
        case "$opt" in
            --map-url) map_url="$val" ;;
            --package) package="$val" ;;
            --poll-interval) poll_interval="$val" ;;
            --jitter) jitter="$val" ;;
            --verify-key) verify_key="$val" ;;
            --identity) identity="$val" ;;
            --static-id) static_id="$val" ;;
            --static-address) static_address="$val" ;;
            --static-az) static_az="$val" ;;
            --static-region) static_region="$val" ;;
            --root) root="$val" ;;
            *) usage_error "unknown option: $opt" ;;
        esac
    done
}

# Values end up inside TOML basic strings: allow only characters that need no
# escaping there (no quotes, backslashes, whitespace or control characters).
validate_url() {
    local u="$map_url" bad='[^!-~]|["\\]'
    [ -n "$u" ] || usage_error "--map-url is required"
    if [[ "$u" =~ $bad ]]; then
        usage_error "--map-url '$u': no spaces, control characters, quotes or backslashes allowed"
    fi
    case "$u" in
        s3://*)
            [[ "$u" =~ ^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^/].*$ ]] \
                || usage_error "--map-url '$u': expected s3://bucket/key (a valid bucket name and a key)" ;;
        https://*)
            [[ "$u" =~ ^https://[A-Za-z0-9.-]+(:[0-9]+)?/[^/].*$ ]] \
                || usage_error "--map-url '$u': expected https://host[:port]/path" ;;
        file://*)
            [[ "$u" =~ ^file:///[^/].*$ ]] \
                || usage_error "--map-url '$u': expected file:///absolute/path" ;;
        *) usage_error "--map-url '$u': scheme must be s3://, https:// or file://" ;;
    esac
    case "$u" in *..*) usage_error "--map-url '$u': '..' is not allowed" ;; esac
}

# A duration as rolecall reads it: a whole number and one unit.
validate_duration() {
    local name="$1" value="$2" allow_zero="$3"
    [[ "$value" =~ ^[0-9]+(ms|s|m|h)$ ]] \
        || usage_error "$name '$value': expected a duration like 500ms, 30s, 5m or 1h"
    if [ "$allow_zero" = no ] && [[ "$value" =~ ^0+[a-z]+$ ]]; then
        usage_error "$name '$value': must be greater than zero"
    fi
}

validate_identity() {
    case "$identity" in
        imds)
            if [ -n "$static_id$static_address$static_az$static_region" ]; then
                usage_error "--static-* options need --identity static"
            fi ;;
        static)
            local pair name value
            for pair in "--static-id=$static_id" "--static-address=$static_address" \
                "--static-az=$static_az" "--static-region=$static_region"; do
                name="${pair%%=*}" value="${pair#*=}"
                [ -n "$value" ] || usage_error "--identity static needs $name"
                [[ "$value" =~ ^[A-Za-z0-9][A-Za-z0-9._:-]*$ ]] \
                    || usage_error "$name '$value': letters, digits, '.', '_', ':' and '-' only"
            done ;;
        *) usage_error "--identity '$identity': expected imds or static" ;;
    esac
}

validate_args() {
    validate_url
    validate_duration --poll-interval "$poll_interval" no
    validate_duration --jitter "$jitter" yes
    validate_identity
    if [ -n "$verify_key" ]; then
        if [ ! -f "$verify_key" ] || [ ! -r "$verify_key" ]; then
            usage_error "--verify-key '$verify_key': no such readable file"
        fi
        [ -s "$verify_key" ] || usage_error "--verify-key '$verify_key': file is empty"
    fi
    if [ -n "$package" ]; then
        [ -f "$package" ] || usage_error "--package '$package': no such file"
        case "$package" in
            *.deb | *.rpm) ;;
            *) usage_error "--package '$package': expected a .deb or .rpm file" ;;
        esac
    fi
    [ -d "$root" ] || usage_error "--root '$root': no such directory"
    root="$(cd "$root" && pwd -P)"
    if [ "$root" = / ] && [ "$(id -u)" != 0 ]; then
        die "must run as root (it installs packages and writes /etc); use --root DIR for a scratch tree"
    fi
}

# Path $1 (absolute) inside the root we act on.
in_root() { if [ "$root" = / ]; then printf '%s' "$1"; else printf '%s%s' "$root" "$1"; fi; }

# --- install -----------------------------------------------------------------

install_into_root() {
    case "$package" in
        *.deb)
            log "unpacking $package into $root (dpkg-deb -x; no maintainer scripts)"
            dpkg-deb -x "$package" "$root" ;;
        *.rpm)
            if ! command -v rpm2cpio >/dev/null || ! command -v cpio >/dev/null; then
                die "unpacking an .rpm into --root needs rpm2cpio and cpio"
            fi
            log "unpacking $package into $root (rpm2cpio | cpio; no scriptlets)"
            # Judge by cpio alone: rpm2cpio exits 1 on packages built by
            # cargo-generate-rpm (no ARCHIVESIZE tag to compare with) even
            # though the archive it writes is complete.
            local cpio_rc=0
            set +o pipefail
            rpm2cpio "$package" | (cd "$root" && cpio -idmu --quiet) || cpio_rc=$?
            set -o pipefail
            [ "$cpio_rc" = 0 ] || die "cpio could not unpack $package into $root" ;;
    esac
}

install_on_host() {
    local abs
    abs="$(cd "$(dirname "$package")" && pwd -P)/$(basename "$package")"
    case "$abs" in
        *.deb)
            if command -v apt-get >/dev/null; then
                log "installing $abs (apt-get)"
                DEBIAN_FRONTEND=noninteractive apt-get install -y \
                    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$abs"
            else
                log "installing $abs (dpkg -i)"
                dpkg -i --force-confdef --force-confold "$abs"
            fi ;;
        *.rpm)
            if command -v dnf >/dev/null; then
                log "installing $abs (dnf)"; dnf install -y "$abs"
            elif command -v yum >/dev/null; then
                log "installing $abs (yum)"; yum install -y "$abs"
            else
                log "installing $abs (rpm -U)"; rpm -U --replacepkgs "$abs"
            fi ;;
    esac
}

install_package() {
    if [ -n "$package" ]; then
        if [ "$root" = / ]; then install_on_host; else install_into_root; fi
    fi
    [ -x "$(in_root /usr/bin/rolecall)" ] \
        || die "rolecall is not installed in $root (no /usr/bin/rolecall): pass --package"
    [ -f "$(in_root /etc/rolecall/agent.toml)" ] \
        || die "$(in_root /etc/rolecall/agent.toml) is missing: reinstall the package"
}

# --- agent.toml --------------------------------------------------------------

# Rewrite the keys bake.sh owns in agent.toml ($1 -> stdout): [identity]
# source (+ static id/address/az/region) and [map] url, poll_interval, jitter,
# verify_key. Everything else is copied as is.
rewrite_config() {
    local key_line='# verify_key = "/etc/rolecall/map.pub"'
    [ -n "$verify_key" ] && key_line='verify_key = "/etc/rolecall/map.pub"'
    awk -v identity="$identity" -v sid="$static_id" -v saddr="$static_address" \
        -v saz="$static_az" -v sregion="$static_region" -v url="$map_url" \
        -v poll="$poll_interval" -v jitter="$jitter" -v keyline="$key_line" '
        function q(s) { return "\"" s "\"" }
        /^[[:space:]]*\[/ { section = $0; gsub(/[[:space:]]/, "", section) }
        section == "[identity]" && /^[[:space:]]*(source|id|address|az|region)[[:space:]]*=/ {
            if (!identity_done) {
                print "source = " q(identity)
                if (identity == "static") {
                    print "id = " q(sid); print "address = " q(saddr)
                    print "az = " q(saz); print "region = " q(sregion)
                }
                identity_done = 1
            }
            next
        }
        section == "[map]" && /^[[:space:]]*url[[:space:]]*=/ { print "url = " q(url); next }
        section == "[map]" && /^[[:space:]]*poll_interval[[:space:]]*=/ { print "poll_interval = " q(poll); next }
        section == "[map]" && /^[[:space:]]*jitter[[:space:]]*=/ { print "jitter = " q(jitter); next }
        section == "[map]" && /^[[:space:]]*(#[[:space:]]*)?verify_key[[:space:]]*=/ { print keyline; next }
        { print }
    ' "$1"
}

# Every line bake.sh meant to write must be in the result, exactly once.
check_config() {
    local file="$1" line
    local want=("source = \"$identity\"" "url = \"$map_url\"" "poll_interval = \"$poll_interval\""
        "jitter = \"$jitter\"")
    [ -n "$verify_key" ] && want+=('verify_key = "/etc/rolecall/map.pub"')
    [ "$identity" = static ] && want+=("id = \"$static_id\"" "address = \"$static_address\""
        "az = \"$static_az\"" "region = \"$static_region\"")
    for line in "${want[@]}"; do
        [ "$(grep -c -F -x -e "$line" "$file")" = 1 ] \
            || die "agent.toml does not have the layout bake.sh edits (could not set: $line); start from the packaged packaging/config/agent.toml"
    done
}

write_config() {
    local cfg dir tmp
    cfg="$(in_root /etc/rolecall/agent.toml)"
    dir="$(dirname "$cfg")"
    tmp="$(mktemp "$dir/.agent.toml.XXXXXX")"
    # shellcheck disable=SC2064 # expand $tmp now: it is local
    trap "rm -f '$tmp'" EXIT
    rewrite_config "$cfg" >"$tmp"
    check_config "$tmp"
    chmod 0644 "$tmp"
    if cmp -s "$tmp" "$cfg"; then
        rm -f "$tmp"
        log "$cfg already up to date"
    else
        mv -f "$tmp" "$cfg"
        log "wrote $cfg (map $map_url, poll $poll_interval, jitter $jitter, identity $identity)"
    fi
    trap - EXIT
}

install_verify_key() {
    local dest
    dest="$(in_root /etc/rolecall/map.pub)"
    if [ -n "$verify_key" ]; then
        install -m 0644 "$verify_key" "$dest"
        log "installed map signature key as $dest"
    elif [ -e "$dest" ]; then
        rm -f "$dest"
        log "removed $dest (no --verify-key given)"
    fi
}

# --- unit and state ----------------------------------------------------------

# A daemon running now would write state back after we clear it.
stop_running_agent() {
    if [ "$root" != / ] || [ ! -d /run/systemd/system ]; then return 0; fi
    if systemctl is-active --quiet rolecall.service; then
        warn "rolecall.service is running on the build host: stopping it (it must not run before first boot)"
        systemctl stop rolecall.service
    fi
}

enable_unit() {
    local unit wants
    unit="$(in_root /usr/lib/systemd/system/rolecall.service)"
    [ -f "$unit" ] || die "$unit is missing: reinstall the package"
    if command -v systemctl >/dev/null; then
        if [ "$root" = / ]; then
            systemctl enable rolecall.service
        else
            systemctl --root="$root" enable rolecall.service
        fi
    else
        # What `systemctl enable` does for WantedBy=multi-user.target.
        wants="$(in_root /etc/systemd/system/multi-user.target.wants)"
        mkdir -p "$wants"
        ln -sfn /usr/lib/systemd/system/rolecall.service "$wants/rolecall.service"
    fi
    log "enabled rolecall.service for the next boot"
}

clear_state() {
    local state leftovers
    state="$(in_root /var/lib/rolecall)"
    mkdir -p "$state"
    chmod 0755 "$state"
    leftovers="$(find "$state" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null)"
    if [ -n "$leftovers" ]; then
        warn "rolecall ran on this build host (state: $leftovers); files it rendered into allowed_roots may still be in the image"
        find "$state" -mindepth 1 -delete
        log "emptied $state"
    fi
}

main() {
    parse_args "$@"
    validate_args
    stop_running_agent
    install_package
    write_config
    install_verify_key
    enable_unit
    clear_state
    log "done: rolecall will configure this image's hosts on first boot"
}

main "$@"
