//! msp-link-service: MSP links, management modes, device moves and the MSP portal.
//!
//! Its consumer keeps every live device registration and answers every deletion with
//! the MSP portal's receipt; links, moves and the portal's RPCs arrive with issue #4.

#![forbid(unsafe_code)]

mod grpc;
mod module;
mod projection;

pub use module::MspLinkModule;

/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "msp";

/// The service's migrations (schema `msp`, history `msp._sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
