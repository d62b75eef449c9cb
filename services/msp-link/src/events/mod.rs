//! msp-link-service's events: what it publishes (`published`, through the outbox) and
//! the device view behind the MSP portal, projected from device events (`portal`).

pub mod portal;
pub mod published;
