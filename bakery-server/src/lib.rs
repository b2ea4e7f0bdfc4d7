//! Bakery server: the shell around [`bakery_core`] — the HTTP API ([`http`], axum, thin
//! handlers, the one error → status mapping), TLS ([`http::tls`]), the TFTP listener's file provider
//! ([`tftp`]), the command line and TOML file resolved into a [`Config`] ([`config`]), the
//! proxy-DHCP snippet ([`dnsmasq`]), and the wiring of it all ([`app`]).
//!
//! # API (`/api/v1`)
//!
//! The routes of the contract (`specs/api-v1.md`) with their exact statuses, plus:
//!
//! - `GET /oven/{piId}?wait=baked&timeout=<seconds>` long-polls (default 60 s, at most 600):
//!   200 with the Pi as soon as it is baked (exported and, unless `powerOn` was false, powered
//!   on); 200 with the Pi still preparing (status 3) at the timeout; 200 at once with the Pi
//!   as it is when it will not be baked (unbaking, or in the fridge without a failed bake);
//!   409 `bake of pi <id> failed: <reason>` when the bake failed (the Pi is back in the fridge
//!   with `lastError`); 404 for an unknown Pi.
//! - `POST /fridge` takes `network` (static address rendered into cmdline.txt) and `powerOn`.
//! - `GET /pis`, `GET /pis/{piId}`, `PUT /oven/{piId}/metadata`, `POST /oven/{piId}/reset`,
//!   `GET /bakeforms/{name}`, `POST /disks/{id}/resize`, `PUT /disks/{id}/metadata`,
//!   `GET /files/{name}` (root-level boot files such as `bootcode.bin`).
//! - Unbake destroys the root disk and the Pi's ephemeral disks; other disks are detached and
//!   kept (the first server destroyed them all).
//! - Operator visibility ([`bakery_core::observe::Observer`]): `GET /events?since=&limit=` and the SSE
//!   stream `GET /events/stream` ([`bakery_core::events`]), boot timelines `GET /pis/{piId}/boots` and
//!   `GET /oven/{piId}/boots` ([`bakery_core::timeline`], summarised as `PiInfo.lastBoot`), `GET
//!   /openapi.json` ([`http::openapi`]); outside `/api/v1`: `GET /metrics` ([`bakery_core::metrics`]) and
//!   the status page `GET /` with its `/assets/{file}`.
//!
//! On the HTTP boot path (`GET /files/...`, what HookTFTP forwards) the Pi's address is taken
//! from `X-Forwarded-For` only when the request comes from a loopback address; the built-in
//! TFTP server passes the real peer to [`bakery_core::boot::BootFiles::open`].

pub mod app;
pub mod config;
pub mod dnsmasq;
pub mod http;
pub mod tftp;

pub use app::{App, AppError};
pub use config::{Cli, Command, Config, ConfigError, ServeArgs};
