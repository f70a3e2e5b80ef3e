#!/usr/bin/env bash
# Write packaging/code-order.txt: the functions of the packaged binary that a sync, a
# quiet poll, `status`, `plan` and the idle daemon run, in the order they first run. The
# order counts as well as the set: sorted by name, the same set let a sync peak 1 MB
# higher. Which of two threads' functions runs first changes between runs, so a new file
# reorders some lines even when the set is the same.
# build.rs hands the file to the linker for the `dist` profile, which then places those
# functions first and together, so the code a run touches is a few hundred pages instead
# of pieces of every part of the binary (issue 13: a sync peaks about 3 MB lower, the idle
# daemon about 2 MB).
#
# Usage: packaging/code-order.sh [--check [BIN]]   (from the repo root)
#   --check   only say how many of the file's functions the dist binary BIN has (default
#             target/dist/rolecall): after a dependency or toolchain update most are
#             renamed, and the order no longer helps until the file is written again
#
# Run it after updating dependencies or the toolchain, or when a change moves what a
# sync runs; then rebuild (`cargo build --profile dist`) and commit the file. It builds
# the dist binary, runs it under valgrind's callgrind (so every function that runs is
# seen, not only the hot ones) on a 10,000-host map (first apply, a moved master, a
# quiet sync, a move back, `status`, `plan`), then as a daemon polling moto's S3 a few
# times (identity from instance metadata, as on EC2), and keeps the names the binary
# defines. Needs valgrind (`apt-get install
# valgrind`) and moto_server ($ROLECALL_MOTO_SERVER, else the venv tests/run.sh makes).
# A function missing from the file is laid out as before: the order only moves code.
# Exit: 0 written (or checked), 1 a step failed, 2 bad usage or wrong directory.
set -euo pipefail

ORDER=packaging/code-order.txt
BIN=target/dist/rolecall
HOST=web-bench

log() { printf 'code-order.sh: %s\n' "$*" >&2; }
die() { printf 'code-order.sh: error: %s\n' "$1" >&2; exit "${2:-1}"; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

check=0
case "${1:-}" in
    "") ;;
    --check) check=1; BIN=${2:-$BIN} ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" 2 ;;
esac
if ! { [ -f Cargo.toml ] && [ -f build.rs ] && grep -q '^name = "rolecall"' Cargo.toml; }; then
    die "run from the rolecall repository root" 2
fi

# The text symbols the binary defines, one name a line.
defined() { nm --defined-only "$BIN" | awk 'NF == 3 && $2 ~ /^[tTwW]$/ { print $3 }'; }

if [ "$check" = 1 ]; then
    [ -x "$BIN" ] || die "no $BIN: run \`cargo build --profile dist\` first"
    listed=$(grep -c . "$ORDER" || true)
    found=$(LC_ALL=C comm -12 <(LC_ALL=C sort -u "$ORDER") <(defined | LC_ALL=C sort -u) | grep -c . || true)
    echo "$found of $listed functions of $ORDER are in $BIN"
    exit 0
fi

command -v valgrind >/dev/null || die "valgrind not found: apt-get install valgrind"
moto=${ROLECALL_MOTO_SERVER:-${ROLECALL_VENV:-/var/cache/rolecall-ci/venv}/bin/moto_server}
[ -x "$moto" ] || die "moto_server not found at $moto: run bash tests/run.sh once, or set ROLECALL_MOTO_SERVER"

log "cargo build --profile dist --bin rolecall"
cargo build --profile dist --bin rolecall

work=$(mktemp -d /tmp/rolecall-code-order.XXXXXX)
moto_pid=
imds_pid=
cleanup() {
    [ -z "$moto_pid" ] || kill "$moto_pid" 2>/dev/null || true
    [ -z "$imds_pid" ] || kill "$imds_pid" 2>/dev/null || true
    [ -z "${daemon:-}" ] || kill "$daemon" 2>/dev/null || true
    [ -n "${ROLECALL_KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# The apply bench's map: 500 products of four database hosts each, web hosts up to
# 10,000, and web-bench serving all 500. $1: generation, $2: 1 to move p7's master.
write_map() {
    awk -v gen="$1" -v moved="$2" -v host="$HOST" 'BEGIN {
        printf "schema = 1\ngeneration = %d\n\n", gen
        for (p = 0; p < 500; p++) {
            m = 0; r1 = 1
            if (moved && p == 7) { m = 1; r1 = 0 }
            printf "[products.p%d]\ndomain = \"p%d.example.com\"\naliases = [\"www.p%d.example.com\"]\n", p, p, p
            printf "docroot = \"/srv/p%d/current/public\"\n\n[products.p%d.database]\nname = \"p%d\"\n", p, p, p
            printf "master = \"db-%d-%d\"\nreplicas = [\"db-%d-%d\", \"db-%d-2\"]\n", p, m, p, r1, p
            printf "backup = \"db-%d-3\"\nbackup_url = \"s3://backups/p%d/\"\n\n", p, p
        }
        k = 0
        for (p = 0; p < 500; p++) for (i = 0; i < 4; i++) {
            roles = (i == 3) ? "\"db\", \"db-backup\"" : "\"db\""
            printf "[hosts.db-%d-%d]\naddress = \"10.%d.%d.%d\"\naz = \"us-east-1%s\"\nroles = [%s]\nproducts = []\n\n", p, i, int(k / 65536), int(k / 256) % 256, k % 256, substr("abc", k % 3 + 1, 1), roles
            k++
        }
        for (w = 0; w < 7999; w++) {
            printf "[hosts.web-%d]\naddress = \"10.%d.%d.%d\"\naz = \"us-east-1%s\"\n", w, int(k / 65536), int(k / 256) % 256, k % 256, substr("abc", k % 3 + 1, 1)
            printf "roles = [\"web\", \"memcached\"]\nproducts = [\"p%d\", \"p%d\", \"p%d\"]\n\n", w % 500, (w + 1) % 500, (w + 2) % 500
            k++
        }
        printf "[hosts.%s]\naddress = \"10.250.0.1\"\naz = \"us-east-1a\"\nroles = [\"web\"]\nproducts = [", host
        for (p = 0; p < 500; p++) printf "%s\"p%d\"", (p ? ", " : ""), p
        printf "]\n"
    }' > "$work/map.toml"
}

n=0
grind() {
    n=$((n + 1))
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" --demangle=no \
        --dump-instr=no -q "$BIN" "$@"
}

sync_config() {
    cat > "$work/agent.toml" <<EOF
[identity]
source = "static"
id = "$HOST"
address = "10.250.0.1"
az = "us-east-1a"

[map]
url = "file://$work/map.toml"

[paths]
catalog = "$PWD/templates"
templates = "$PWD/templates"
EOF
}

log "syncs of a 10,000-host map under callgrind"
sync_config
run=(--config "$work/agent.toml" --root "$work/root")
write_map 1 0 && grind "${run[@]}" sync --files-only >/dev/null
write_map 2 1 && grind "${run[@]}" sync --files-only >/dev/null
grind "${run[@]}" sync --files-only >/dev/null
write_map 3 0 && grind "${run[@]}" sync --files-only >/dev/null
grind "${run[@]}" status >/dev/null
grind "${run[@]}" plan >/dev/null || true

log "the daemon polling moto's S3 under callgrind"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
endpoint="http://127.0.0.1:$port"
for _ in $(seq 300); do curl -fsS -o /dev/null "$endpoint/" 2>/dev/null && break; sleep 0.1; done
curl -fsS -X PUT "$endpoint/fleet-config" >/dev/null || die "moto at $endpoint did not answer"
# A memcached host: its smoke test is a TCP connect, pointed at moto's port.
cat > "$work/small.toml" <<EOF
schema = 1
generation = 1

[hosts.cache-1]
address = "127.0.0.1"
az = "us-east-1a"
roles = ["memcached"]
EOF
curl -fsS -T "$work/small.toml" "$endpoint/fleet-config/rolemap.toml" >/dev/null
# Instance metadata as IMDSv2 serves it (token first), for the identity of an EC2 host.
cat > "$work/imds.py" <<'EOF'
import http.server, sys
VALUES = {"instance-id": "cache-1", "placement/availability-zone": "us-east-1a",
          "placement/region": "us-east-1", "local-ipv4": "127.0.0.1",
          "instance-type": "t3.micro", "ami-id": "ami-0123456789abcdef0"}
class Imds(http.server.BaseHTTPRequestHandler):
    def answer(self, code, body, ttl=None):
        self.send_response(code)
        if ttl:
            self.send_header("X-aws-ec2-metadata-token-ttl-seconds", ttl)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_PUT(self):
        self.answer(200, b"code-order-token", self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"))
    def do_GET(self):
        value = VALUES.get(self.path.removeprefix("/latest/meta-data/"))
        if self.headers.get("X-aws-ec2-metadata-token") != "code-order-token":
            self.answer(401, b"")
        elif value is None:
            self.answer(404, b"")
        else:
            self.answer(200, value.encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Imds).serve_forever()
EOF
imds_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 "$work/imds.py" "$imds_port" &
imds_pid=$!
cat > "$work/daemon.toml" <<EOF
[identity]
source = "imds"

[map]
url = "s3://fleet-config/rolemap.toml"
poll_interval = "1s"
jitter = "0s"

[paths]
catalog = "$PWD/templates"
templates = "$PWD/templates"

[vars]
memcached_port = $port

[services.memcached]
restart = "true"
EOF
export AWS_ENDPOINT_URL_S3=$endpoint AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    AWS_REGION=us-east-1 AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$imds_port"
n=$((n + 1))
valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" --demangle=no --dump-instr=no -q \
    "$BIN" --config "$work/daemon.toml" --root "$work/droot" run 2>"$work/daemon.log" &
daemon=$!
# Until it converged and then polled five times without a change (304s in moto's log).
polls() { grep -c 'GET /fleet-config/rolemap.toml.* 304' "$work/moto.log" || true; }
for _ in $(seq 1200); do
    [ "$(polls)" -ge 5 ] && break
    kill -0 "$daemon" 2>/dev/null || die "the daemon ended early: $(tail -5 "$work/daemon.log")"
    sleep 0.1
done
[ "$(polls)" -ge 5 ] || die "the daemon did not poll moto five times: $(tail -5 "$work/daemon.log")"
kill -TERM "$daemon"
wait "$daemon" || true

log "writing $ORDER"
# Each name once, in the order first seen (callgrind names a function at its first
# `fn=`/`cfn=` line with its number), kept only when the binary defines it.
for i in $(seq "$n"); do
    sed -n 's/^c\{0,1\}fn=([0-9]*) \([^ ]*\)$/\1/p' "$work/cg.$i"
done | awk '!seen[$0]++' > "$work/seen.txt"
awk 'NR == FNR { have[$0] = 1; next } have[$0]' <(defined) "$work/seen.txt" > "$ORDER"
log "$(grep -c . "$ORDER") functions, $(grep -c . "$work/seen.txt") seen"
