//! msp-link-service: MSP links, management modes, device moves and the MSP portal.
//!
//! Issue #2 runs it as a service (health, migrations, outbox relay, its events
//! consumer); its RPCs answer `UNIMPLEMENTED` until issue #4 fills them.

#![forbid(unsafe_code)]

mod grpc;
mod module;
mod projection;

pub use module::MspLinkModule;

/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "msp";

/// The service's migrations (schema `msp`, history `msp._sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
