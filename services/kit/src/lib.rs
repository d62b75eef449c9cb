//! The shared runtime of the reseller portal's services: configuration, telemetry,
//! shutdown, the gRPC server bootstrap (health, reflection, auth, limits, error mapping),
//! the Postgres pool and migrations, and the NATS outbox relay and idempotent consumer.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod config;
pub mod country;
pub mod csv;
pub mod db;
pub mod device_id;
pub mod error;
pub mod event_parts;
pub mod events;
pub mod grpc;
pub mod ids;
pub mod inbox;
pub mod lost_events;
pub mod metrics;
pub mod one_statement;
pub mod outbox;
pub mod paging;
pub mod portal;
pub mod readiness;
pub mod rpc_layer;
pub mod shutdown;
pub mod sql;
pub mod startup;
pub mod stream;
pub mod subjects;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_events;
pub mod text;
pub mod timestamp;
pub mod trace_context;

pub use error::{ApiError, CommandError, FieldViolations, Reason, Refusal};
