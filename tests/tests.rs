//! rolecall's one integration-test binary (STYLE §3.11): real servers on loopback (SPEC §8).

/// Starts the real parts: Apache, MariaDB, moto (S3), the IMDSv2 test server, a notify socket.
mod support;
/// Self-tests of `support`: each server starts, answers and enforces its protocol.
mod support_tests;
