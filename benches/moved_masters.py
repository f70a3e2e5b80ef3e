#!/usr/bin/env python3
"""Steady-state moved masters of several rolecall builds, alternated round by round.

Usage: benches/moved_masters.py ROUNDS KEPT_DIR BIN[@VAR=VALUE,...] [BIN...]

KEPT_DIR is a directory the apply benchmark kept (`ROLECALL_APPLY_KEEP=1 cargo bench
--bench apply` prints where): its map, agent.toml and converged root. Each BIN gets a copy
of its own (the render memo is keyed to the build that wrote it). Every round, each BIN runs
one `sync --files-only` after product p7's master and first replica are swapped and the
generation raised; the order of the builds is reversed every other round, so that a
machine getting faster or slower through the run favours none of them. Two warm-up rounds
are not counted. `@VAR=VALUE,...` runs that BIN with those environment variables (for
example `@LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libeatmydata.so` to see what the fsyncs
cost). Prints, per BIN, the median, minimum and first quartile of the wall time, the median
CPU time (user + system, all threads) and the peak RSS (which may count pages the fork
shared with this script: quote the apply benchmark's, whose harness is a small process of
its own). Only the standard library.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

WARM = 2
MASTER = 'master = "db-7-0"\nreplicas = ["db-7-1", "db-7-2"]'
MOVED = 'master = "db-7-1"\nreplicas = ["db-7-0", "db-7-2"]'


def usage(message):
    sys.exit(f"moved_masters.py: {message}\n\n{__doc__}")


def copy_for(kept, i):
    """A copy of `kept` for the i-th build, its agent.toml pointing into the copy."""
    copy = f"{kept}-b{i}"
    shutil.rmtree(copy, ignore_errors=True)
    subprocess.run(["cp", "-a", kept, copy], check=True)
    config = os.path.join(copy, "agent.toml")
    with open(os.path.join(kept, "agent.toml")) as f:
        text = f.read().replace(kept + "/", copy + "/")
    with open(config, "w") as f:
        f.write(text)
    return copy


def move_master(directory):
    """Swap p7's master and first replica in the map, and raise its generation."""
    path = os.path.join(directory, "map.toml")
    with open(path) as f:
        text = f.read()
    if MASTER in text:
        text = text.replace(MASTER, MOVED, 1)
    elif MOVED in text:
        text = text.replace(MOVED, MASTER, 1)
    else:
        usage(f"{path} has no database chain of p7 to move: not an apply benchmark map")
    generation = int(re.search(r"generation = (\d+)", text).group(1)) + 1
    text = re.sub(r"generation = \d+", f"generation = {generation}", text, count=1)
    with open(path, "w") as f:
        f.write(text)


def run(binary, directory):
    """One sync of `binary` in `directory`: wall ms, CPU ms, peak RSS MB."""
    exe, _, assignments = binary.partition("@")
    env = dict(os.environ)
    for assignment in filter(None, assignments.split(",")):
        name, _, value = assignment.partition("=")
        env[name] = value
    args = [exe, "--config", os.path.join(directory, "agent.toml"),
            "--root", os.path.join(directory, "root"), "sync", "--files-only", "--json"]
    # fork and exec, not subprocess: its vfork would hand the child this script's peak RSS.
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.execve(exe, args, env)
    _, status, usage_ = os.wait4(pid, 0)
    wall = (time.perf_counter() - start) * 1000
    if status != 0:
        sys.exit(f"moved_masters.py: {exe} exited with status {status} in {directory}")
    cpu = (usage_.ru_utime + usage_.ru_stime) * 1000
    return wall, cpu, usage_.ru_maxrss / 1024


def main():
    if len(sys.argv) < 4 or not sys.argv[1].isdigit():
        usage("expected ROUNDS KEPT_DIR BIN...")
    rounds, kept, binaries = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3:]
    if not os.path.isfile(os.path.join(kept, "agent.toml")):
        usage(f"{kept} has no agent.toml: not a directory the apply benchmark kept")
    copies = {b: copy_for(kept, i) for i, b in enumerate(binaries)}
    figures = {b: [] for b in binaries}
    for r in range(rounds + WARM):
        for b in binaries if r % 2 == 0 else binaries[::-1]:
            move_master(copies[b])
            measured = run(b, copies[b])
            if r >= WARM:
                figures[b].append(measured)
    for b in binaries:
        wall, cpu, rss = zip(*figures[b])
        print(f"{b}: wall median {statistics.median(wall):.1f} ms (min {min(wall):.1f}, "
              f"q1 {statistics.quantiles(wall)[0]:.1f}), CPU median "
              f"{statistics.median(cpu):.1f} ms, peak RSS median {statistics.median(rss):.1f} "
              f"MB (max {max(rss):.1f})")


if __name__ == "__main__":
    main()
