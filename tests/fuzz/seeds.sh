#!/usr/bin/env bash
# Writes the committed seed corpus (tests/fuzz/corpus/<target>/) from the repository's own
# inputs: the example and golden maps, the shipped catalog, the golden cron files, and the
# example map as `map publish --sign-key tests/fuzz/keys/fuzz.key` signed it. Run it after
# changing those inputs and commit the result; fuzzing adds its finds to another directory
# (README "Fuzzing"), so this corpus stays small.
# shellcheck disable=SC2094 # `seed NAME <FILE` reads FILE and writes corpus/, not FILE
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
readonly REPO=../..
readonly CORPUS=corpus

# `seed TARGET NAME` writes stdin to corpus/TARGET/NAME.
seed() {
    mkdir -p "$CORPUS/$1"
    cat >"$CORPUS/$1/$2"
}

# The parts of a two-part input (map diff, catalog, cron) are cut at a NUL byte.
pair() {
    cat "$1"
    printf '\0'
    cat "$2"
}

rm -rf "${CORPUS:?}"

# map: every map the repository has, valid or not.
seed map example <"$REPO/examples/rolemap.toml"
seed map sample <"$REPO/tests/maps/sample.toml"
seed map golden <"$REPO/tests/golden/map.toml"
seed map golden-fails <"$REPO/tests/golden/fails/map.toml"
for map in "$REPO"/tests/golden/fails/maps/*.toml; do
    seed map "fails-$(basename "$map" .toml)" <"$map"
done
# Issue 15's attacks: an az holding ESC and a forged line, a long line, a stray byte.
sed 's/^az = "us-east-1b"$/az = "\\u001b[2J\\nhost web-9: added as master"/' \
    "$REPO/examples/rolemap.toml" | seed map escape-in-az
printf 'schema = 1\ngeneration = 1\nx = "%s\n' "$(head -c 3000 /dev/zero | tr '\0' y)" |
    seed map long-line-unclosed

# diff: the example against the other maps and against a promoted copy of itself.
pair "$REPO/examples/rolemap.toml" "$REPO/tests/maps/sample.toml" | seed diff example-sample
pair "$REPO/examples/rolemap.toml" "$REPO/tests/golden/map.toml" | seed diff example-golden
pair "$REPO/tests/golden/map.toml" "$REPO/tests/golden/fails/map.toml" | seed diff golden-fails
sed -e 's/^master = "db-1"$/master = "db-2"/' -e 's/^replicas = \["db-2", "db-3"\]$/replicas = ["db-3", "db-1"]/' \
    -e 's/^generation = 7$/generation = 8/' "$REPO/examples/rolemap.toml" >/tmp/rolecall-fuzz-promoted.$$
pair "$REPO/examples/rolemap.toml" /tmp/rolecall-fuzz-promoted.$$ | seed diff promoted
pair "$REPO/examples/rolemap.toml" "$CORPUS/map/escape-in-az" | seed diff escape-in-az
rm -f /tmp/rolecall-fuzz-promoted.$$

# catalog: each shipped role file alone, web with memcached, the golden failures.
for role in "$REPO"/templates/*.toml; do
    seed catalog "$(basename "$role" .toml)" <"$role"
done
pair "$REPO/templates/web.toml" "$REPO/templates/memcached.toml" | seed catalog web-memcached
pair "$REPO/templates/db.toml" "$REPO/templates/db-backup.toml" | seed catalog db-db-backup
for role in "$REPO"/tests/golden/fails/catalog/*.toml; do
    seed catalog "fails-$(basename "$role" .toml)" <"$role"
done

# cron: the golden cron.d files under their names, and lines cron accepts or refuses.
for file in "$REPO"/tests/golden/*/expected/etc/cron.d/*; do
    { printf '%s\0' "$(basename "$file")"; cat "$file"; } | seed cron "golden-$(basename "$file")"
done
printf 'rolecall-x\0# managed\nSHELL=/bin/sh\n*/15 * * * * root rolecall snapshot --product videos\n@daily root true\n0 0 1-15/2 jan-mar mon,fri www-data /usr/bin/x\n' |
    seed cron good
printf 'rolecall.cron\0@sometimes root true\n61 * * * * root true\n*/0 * * * * root\n* * * *\n0 0 * * * r\xc3\xb6ot true' |
    seed cron bad

# signature: a mode byte, the signature's and the key's lengths (u16 LE), the signature,
# the key, the map (fuzz_targets/signature.rs).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=${ROLECALL_BIN:-$REPO/target/debug/rolecall}
"$bin" --root "$tmp/root" map publish --to "file://$tmp/rolemap.toml" \
    --sign-key keys/fuzz.key "$REPO/examples/rolemap.toml" >/dev/null
envelope() { # MODE SIGNATURE-FILE KEY-FILE MAP-FILE
    python3 - "$@" <<'EOF'
import struct, sys
mode, sig, key, body = sys.argv[1:]
read = lambda p: open(p, "rb").read() if p != "-" else b""
s, k = read(sig), read(key)
sys.stdout.buffer.write(bytes([int(mode)]) + struct.pack("<HH", len(s), len(k)) + s + k + read(body))
EOF
}
envelope 1 "$tmp/rolemap.toml.sig" - "$tmp/rolemap.toml" | seed signature published
envelope 0 "$tmp/rolemap.toml.sig" keys/fuzz.pub "$tmp/rolemap.toml" | seed signature any-key
envelope 2 - keys/fuzz.pub "$tmp/rolemap.toml" | seed signature sign-and-tamper
envelope 3 - keys/fuzz.key "$tmp/rolemap.toml" | seed signature secret-key
