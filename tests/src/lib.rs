//! The test harness: a whole reseller-portal stack per test, on real parts — its own
//! PostgreSQL database, its own `nats-server` with JetStream, and the four services
//! in-process behind real gRPC over TCP on a free port.
//!
//! Settings: `DATABASE_URL` names the server where per-test databases are created
//! (default `postgres://postgres:postgres@127.0.0.1:5432/postgres`); `NATS_SERVER_BIN`
//! the `nats-server` binary (default: `nats-server` on `PATH`, then
//! `/usr/sbin/nats-server`); `PROMETHEUS_BIN` and `PROMTOOL_BIN` Prometheus and promtool
//! (default: on `PATH`; [`prometheus`]). `deploy/local/test.sh` installs them all (and
//! starts PostgreSQL and NATS).

pub mod assert;
pub mod clients;
pub mod cluster;
pub mod db;
pub mod fixtures;
pub mod nats;
pub mod prometheus;
pub mod proxy;
pub mod reflection;
pub mod stack;
pub mod tokens;
pub mod wait;

pub use stack::{StackOptions, TestStack};
pub use wait::{eventually, until_eq};
