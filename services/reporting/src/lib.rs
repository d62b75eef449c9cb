//! reporting-service: the reseller's views (the Customers page with search, keyset paging
//! and the CSV download; one customer's detail, devices and CSV), projected from events,
//! and the reseller portal's deletion receipts.
//!
//! Layout: `domain` (rules, no I/O: placements and their counter deltas, the list
//! orders and search; the CSV format is the kit's, `reseller_kit::csv`), `events` (the projection, the
//! event handler), `postgres` (the projection's writes and the views' reads; large
//! statements in `.sql` files beside them, the counter changes of every path in one,
//! `placement_counters.sql`), `grpc` (the edge, with `grpc::convert`, the protobuf
//! conversions, and `grpc::csv`, streaming a download), `module` (wiring into a
//! program).
//!
//! Rules chosen here (DOMAIN.md leaves them open):
//! - Search trims the query and refuses control characters (no searched field holds any,
//!   and the stored search text separates the fields with U+001F, so a match never spans
//!   two fields); `%`, `_`, `\` and quotes match themselves.
//! - Page tokens are tied to their query and order: reusing one with another query or
//!   `order_by` is `INVALID_ARGUMENT` on `page_token`.
//! - The default order (`company_name`), and the customers CSV, sort company names in
//!   PostgreSQL's ICU root collation `und-x-icu` (migration 0004), whatever the server's
//!   locale: `Ärzte` among the A's, `émile` among the E's, accents and then case (lower
//!   case first) deciding only between otherwise equal names, so `acme`, `Acme`,
//!   `acme b`; exact ties by Knox ID. The page token's comparison and the index use the
//!   same collation; a token issued before this order (it carried the lower-cased name)
//!   is refused on `page_token` rather than continued at a slightly wrong place.
//! - Strings from callers (issue #9): every string field answers for itself, never
//!   `INTERNAL`: `INVALID_ARGUMENT` naming the field for a value its rule refuses (a NUL
//!   or another control character in `query`, more than 200 characters, a `knox_id` that
//!   is not 6 to 20 digits), `NOT_FOUND` for a Knox ID the reseller has no row for.
//!   Messages quote at most 64 characters of the value, control characters escaped
//!   (`reseller_kit::text::echo`). A page token is only base64 JSON, so one may be
//!   written by hand: one whose strings cannot be bound (a NUL) or whose Knox ID is not
//!   one is refused as not issued by this list; other content only moves where the page
//!   starts, inside the caller's own rows. Search is by characters, so non-ASCII text
//!   (`Ärzte`, `ärzte`) finds what holds it.
//! - Both CSV downloads take `byte_order_mark`: the file then starts with the UTF-8
//!   byte-order mark (EF BB BF), for Excel; without it the file is unchanged. Besides
//!   RFC 4180's cases, a cell is quoted when it holds a `;` (Excel's list separator in
//!   much of Europe) or any other control character, so no typed text splits a cell.
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
//! - MSPs (DOMAIN.md rules 2 and 3, see `domain::place`): a virtual upload stays virtual.
//!   Devices moved to C before C's delink stay under C as virtual uploads even if C is
//!   linked to the MSP again; devices the MSP moves to C after the re-link are under the
//!   MSP until C's next delink, which adds them to the same virtual upload (one virtual
//!   upload per original upload and row). A device the MSP moves on, after a re-link,
//!   from C to another customer it links is under the MSP again (rule 2 for that move).
//!   A device uploaded to MSP M that another MSP later moved (after its holder left M) is
//!   a virtual upload via M under whoever holds it. Devices uploaded directly to a
//!   customer stay under it whoever holds them (rule 1).
//! - A row listed only through virtual uploads shows `ACTIVE`, stays listed while any of
//!   its virtual uploads holds a device (deleted ones count, as in UPLOADS), and is no
//!   longer listed once they all left it. Deleted devices move with their registration
//!   (a delink takes them into the virtual upload, keeping UPLOADS consistent).
//! - CUSTOMER ID/MSP ID (`display_id`, `managing_msp_id`): the MSP's ID for a customer
//!   linked to an MSP now (fully or jointly managed), on every reseller's row of it,
//!   virtual-only rows included; else the account's own Knox ID and "".
//! - An upload whose devices all left a row (moved away by a delink) disappears from that
//!   row's detail, and LAST UPLOADED is the newest upload still under the row.
//! - A deletion of a registration known only from a move (its upload not projected yet)
//!   was never shown: NOT_APPLICABLE for it.
//! - Customer events carry revisions: the reference and the status each keep the newest
//!   revision, whatever order events arrive in; none waits for `customer_added`.

#![forbid(unsafe_code)]

pub mod domain;
mod events;
mod grpc;
mod module;
mod postgres;

pub use events::Projection;
pub use module::{CONSUMER, ReportingModule, consumer, spec};

/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "reporting";

/// The service's migrations (schema `reporting`, history `reporting._sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
