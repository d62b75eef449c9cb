//! reporting-service: the reseller's views (the Customers page with search, keyset paging
//! and the CSV download; later the customer detail), projected from events.
//!
//! Layout: `domain` (rules, no I/O), `projection` (the event handler), `postgres` (the
//! projection's writes and the views' reads), `csv_export` (the CSV format) and `export`
//! (streaming a download), `grpc` (the edge), `module` (wiring into a program).
//!
//! Rules chosen here (DOMAIN.md leaves them open):
//! - Search trims the query and refuses control characters (no searched field holds any,
//!   and the stored search text separates the fields with U+001F, so a match never spans
//!   two fields); `%`, `_`, `\` and quotes match themselves.
//! - Page tokens are tied to their query and order: reusing one with another query or
//!   `order_by` is `INVALID_ARGUMENT` on `page_token`.
//! - `total_size` counts the rows matching the query, from the same snapshot as the page.

#![forbid(unsafe_code)]

mod convert;
pub mod csv_export;
pub mod domain;
mod export;
mod grpc;
mod module;
mod postgres;
mod projection;

pub use module::{CONSUMER, ReportingModule, consumer};
pub use projection::Projection;

/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "reporting";

/// The service's migrations (schema `reporting`, history `reporting._sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
