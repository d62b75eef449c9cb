//! What reporting-service does with events: the projection of the reseller's views
//! (and the reseller portal's deletion receipts it emits).

mod projection;

pub use projection::Projection;
