//! customer-service's events: what it publishes (`published`, through the outbox) and
//! the customer portal it projects from other services' events (`portal`).

pub mod portal;
pub mod published;
