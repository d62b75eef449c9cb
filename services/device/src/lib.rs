//! device-service: uploads, devices, deletions and their per-portal receipts.
//!
//! Layout: `domain` (the rules, no I/O: uploads, deletions and their portal states, and
//! `domain::accounts`, which targets an upload may go to, over the account-directory
//! port), `grpc` (the edge: parse, decide, persist, convert; `grpc::accounts` is the
//! directory, customer-service asked over gRPC), `postgres` (uploads by COPY, deletions,
//! receipts; events through the outbox; its SQL in `.sql` files beside it), `events`
//! (what it publishes, and `events::receipts`, the consumer folding portal receipts),
//! `module` (wiring into a program).

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
