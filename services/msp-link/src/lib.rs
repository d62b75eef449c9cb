//! msp-link-service: MSP links, management modes, device moves and the MSP portal.
//!
//! Layout: `domain` (rules, no I/O), `postgres` (links, moves, the MSP portal; events
//! through the outbox), `events` (what it publishes, and `portal`: the consumer that
//! keeps every live registration with its secondary identifiers, and answers deletions
//! with the MSP portal's receipt), `grpc` (the edge, and `grpc::accounts`: asks
//! customer-service what an account is), `module` (wiring into a program).

#![forbid(unsafe_code)]

pub mod domain;
mod events;
mod grpc;
mod module;
mod postgres;

pub use events::portal::MspPortal;
pub use module::{MspLinkModule, portal_consumer};

/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "msp";

/// The service's migrations (schema `msp`, history `msp._sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
