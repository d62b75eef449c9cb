//! customer-service: enrollment accounts, resellers' customers and their statuses,
//! approvals, and the customer portal.
//!
//! Layout: `domain` (rules, no I/O), `postgres` (the repository; one transaction per
//! command, events through the outbox), `events` (what it publishes, and `portal`: the
//! customer portal projection and its deletion receipts), `grpc` (the edge and its
//! protobuf conversions), `module` (wiring into a program).

#![forbid(unsafe_code)]

pub mod domain;
mod events;
mod grpc;
mod module;
mod postgres;

pub use events::portal::CustomerPortal;
pub use module::{CustomerModule, portal_consumer};

/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "customer";

/// The service's migrations (schema `customer`, history `customer._sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The customer portal's durable consumer name.
pub const PORTAL_CONSUMER: &str = "customer-portal";
