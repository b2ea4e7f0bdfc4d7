//! Typed client of bakery's HTTP API v1, wire-compatible with the original Go client.
//!
//! The [`types`] module holds the JSON shapes of the API (shared with the server, so the two
//! cannot drift); the HTTP client itself is behind the default `http` feature.

pub mod types;

pub use types::*;
