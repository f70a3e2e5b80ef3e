//! rolecall's one integration-test binary (STYLE §3.11): real servers on loopback (SPEC §8).

/// Issue 14: product accounts on a scratch root with the real shadow tools (`--prefix`):
/// create, converge, conflicts, removal inside the managed range, rollback byte for byte.
mod accounts;
/// Issue 16: the baked .deb booted by a real systemd in its own namespaces (first boot,
/// second boot from the cache, a smoke test failing at boot, a db host).
mod boot;
/// Exit codes of sync, plan, map validate and check through the real binary.
mod cli;
/// Issue 3: the daemon on "EC2": IMDSv2, S3 (moto), notify socket, signals, cache, faults.
mod daemon;
/// Issue 13: a map change that does not change a host's files costs it nothing.
mod efficiency;
/// Issue 5: failover end to end with real MariaDB servers, Apache and daemons.
mod failover;
/// Issue 15: the fault matrix: an error or a kill -9 at every file-system call of a real
/// apply (strace), kills at random moments, a full managed root; old or new, truthful
/// status, converged next time.
mod faults;
/// The agent under test: temp dirs, agent.toml, the role map, the sample fleet, running the
/// real binary (one launcher for `rolecall run`, one status reader).
mod fixture;
/// Golden renders of every default-catalog template, and the `fails/` corpus (maps, templates).
mod golden;
/// Issue 15: promises attacked: no write without a journal, bounded errors, oversize maps,
/// escaped map strings.
mod hardening;
/// Issue 5: `map validate|show|lint|diff|keygen` exit codes and output through the binary.
mod map_cli;
/// Issue 5: `map publish`/`promote` against moto: lost updates refused, signed maps.
mod map_publish;
/// Issue 6: the Prometheus textfile, man pages and completions.
mod monitoring;
/// Issue 6: systemd-analyze on the unit, the .deb in a debootstrapped Debian 12, the .rpm's
/// files, bake.sh on a scratch root (the packages are built once per run by build.sh).
mod packaging;
/// The real programs accept the rendered configs: `apache2 -t`, `mariadbd`, memcached and
/// munin-node started with them and serving, cron checks.
mod real_configs;
/// Issue 2: idempotence, removals, restore on a failed check, refusals, the lock.
mod reconcile;
/// Issue 4: real Apache reloads and smoke tests, rollback, MariaDB replication and hooks, cron.
mod services;
/// Issue 14: several products on one database cluster: real replication of both, a
/// failover moving both, `map validate|lint|show|promote` of a shared cluster.
mod shared_db;
/// Issue 5: signed maps refused or applied by the agent.
mod signing;
/// Issue 5: `snapshot` of a real MariaDB streamed to moto, retention, no partial objects.
mod snapshot;
/// Starts the real parts: Apache, MariaDB, memcached, munin-node, moto (S3), the IMDSv2 test
/// server, a notify socket, Debian roots, the packages under test and a booted systemd.
mod support;
/// Self-tests of `support`: each server starts, answers and enforces its protocol.
mod support_tests;
/// Issues 15 and 13: sys::fs attacked through the binary: symlinked parents and allowed
/// roots, hard links, umask 000, symlinked state files and lock, stale temp files, fsyncs.
mod writer;
