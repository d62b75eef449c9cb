//! device-service: uploads, devices, deletions and their per-portal receipts.
//!
//! Layout: `domain` (rules, no I/O), `postgres` (uploads by COPY, deletions, receipts;
//! events through the outbox), `events` (what it publishes), `receipts` (the consumer
//! folding portal receipts), `directory` (asks customer-service about targets), `grpc`
//! (the edge), `module` (wiring into a program).

#![forbid(unsafe_code)]

pub mod domain;
mod events;
mod grpc;
mod module;
mod postgres;

pub use module::DeviceModule;

/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "device";

/// The service's migrations (schema `device`, history `device._sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
