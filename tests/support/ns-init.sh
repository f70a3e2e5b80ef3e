#!/usr/bin/env bash
# Boots ROOT's systemd as PID 1 of its own PID, mount, UTS, IPC, network and cgroup
# namespaces (tests/support/systemd.rs; the boot tests of issue 16).
#
# Usage: ns-init.sh enter CGROUP ROOT
#   Moves itself into CGROUP (an empty cgroup2 directory the caller made, which
#   becomes the namespace's cgroup root), then runs `ns-init.sh init ROOT` in new
#   namespaces (unshare). That process is PID 1 there: it mounts /proc, a
#   read-only /sys with the cgroup2 tree, a fresh /dev, /run and /tmp inside ROOT,
#   brings up loopback, pivots into ROOT and execs /lib/systemd/systemd. Every
#   mount lives in the new mount namespace (private propagation), so nothing
#   leaks to the host and all of it goes when the namespace's PID 1 dies.
set -euo pipefail

mode="${1:-}"
case "$mode" in
    enter)
        cgroup="$2" root="$3"
        # Refuse to run in the caller's cgroup: systemd would take over its tree.
        [ -f "$cgroup/cgroup.procs" ] || { echo "ns-init: $cgroup is not a cgroup" >&2; exit 2; }
        echo $$ >"$cgroup/cgroup.procs"
        # --pdeathsig: if the test dies, so does unshare; --kill-child: if unshare dies,
        # so does the namespace's PID 1, and with it every process of the namespace.
        exec setpriv --pdeathsig KILL -- unshare --pid --fork --kill-child --mount \
            --propagation private --uts --ipc --net --cgroup -- \
            bash "${BASH_SOURCE[0]}" init "$root"
        ;;
    init) root="$2" ;;
    *) echo "usage: ns-init.sh enter CGROUP ROOT" >&2; exit 2 ;;
esac

[ "$$" = 1 ] || { echo "ns-init: init must be PID 1 of its namespace" >&2; exit 2; }
# pivot_root needs the new root to be a mount point.
mount --bind "$root" "$root"
cd "$root"
mount -t proc -o nosuid,nodev,noexec proc proc
# Read-only /sys tells systemd it runs in a container (no udev, no hardware).
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs sys
# The cgroup namespace shows CGROUP as the root of this cgroup2 tree.
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 sys/fs/cgroup
mount -t tmpfs -o mode=0755,nosuid tmpfs dev
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<<"$node"
    mknod -m 0666 "dev/$name" c "$major" "$minor"
done
mkdir -m 0755 dev/pts
mkdir -m 1777 dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts dev/pts
ln -s pts/ptmx dev/ptmx
ln -s /proc/self/fd dev/fd
ln -s /proc/self/fd/0 dev/stdin
ln -s /proc/self/fd/1 dev/stdout
ln -s /proc/self/fd/2 dev/stderr
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs tmp
ip link set lo up
mkdir run/.oldroot
pivot_root . run/.oldroot
cd /
umount -l /run/.oldroot
rmdir /run/.oldroot
# container=: what systemd-nspawn sets; systemd then skips what a container cannot do.
exec env -i container=rolecall-test /lib/systemd/systemd --system
