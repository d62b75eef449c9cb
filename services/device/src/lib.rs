//! device-service: uploads, devices, deletions and their per-portal receipts.
//!
//! Issue #2 runs it as a service (health, migrations, outbox relay, the receipts
//! consumer); its RPCs answer `UNIMPLEMENTED` until issue #3 fills them.

#![forbid(unsafe_code)]

mod grpc;
mod module;
mod receipts;

pub use module::DeviceModule;

/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "device";

/// The service's migrations (schema `device`, history `device._sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
