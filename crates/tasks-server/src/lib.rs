//! The HTTP delivery of the task service.
//!
//! This crate wires the hexagon together at start-up: it reads [`Settings`],
//! builds the Diesel store and the token verifier behind their ports, and
//! serves the API with actix-web. Handlers only see the ports.

pub mod conditional;
pub mod cookie;
pub mod dto;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod json;
pub mod live;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod sync;
pub mod telemetry;

pub use settings::Settings;
pub use startup::Application;
