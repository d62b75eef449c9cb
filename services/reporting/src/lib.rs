//! reporting-service: the reseller's views (the Customers page with search, keyset paging
//! and the CSV download; one customer's detail, devices and CSV), projected from events,
//! and the reseller portal's deletion receipts.
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
//! - A row is listed when the reseller added the account or it holds virtual uploads; a
//!   row that exists only because an upload's counters arrived before `customer_added`
//!   is not listed, and every call answers `NOT_FOUND` for it as for an unknown account.
//! - One customer's devices (`ListCustomerDevices`, the CSV) are its live devices, newest
//!   upload first, then by upload ID, then by device ID. `UploadSummary.device_count`
//!   counts deleted devices too, like UPLOADS, so a row's uploads add up to its UPLOADS.
//! - The customer CSV has the columns `Upload ID`, `Uploaded At`, `Order Number`,
//!   `Device ID`, `Device Type`, `Model`, `Virtual Upload`, `Via MSP`; device IDs, models
//!   and order numbers are text cells (neutralised: a serial number may begin with `-`).
//! - A deletion projected before its upload is remembered: the upload then registers the
//!   device as deleted (counted in UPLOADS, never shown). The reseller portal's receipt is
//!   REMOVED when it showed at least one of the part's devices, else NOT_APPLICABLE.

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
