//! Prometheus exporter for ComfyControl workflows.
//!
//! ComfyControl streams each workflow's state as Server-Sent Events, a full
//! snapshot every two seconds. The exporter follows the data like this:
//!
//! - [`client`] sends every API request through one rate limit and one token
//!   ([`ratelimit`], [`token`]).
//! - [`discovery`] polls the workflow list and [`watchlist`] decides which
//!   workflows are watched; [`watcher`] runs one task per workflow.
//! - [`sse`] turns a stream's bytes into events, [`snapshot`] decodes each
//!   event, and [`change`] compares it with the last one of that workflow.
//! - [`metrics`] owns the registry and applies the changes; [`board`] keeps
//!   the current status of every watched workflow for the gauges.
//! - [`server`] serves `/metrics` and the health endpoints.
//!
//! [`loglimit`] keeps repeated warnings from many watchers to a few lines.
//!
//! [`simulator`] is a faithful stand-in for the API, used by the tests and
//! by [`demo`]. [`cli`], [`settings`], [`logging`] and [`launch`] turn the
//! command line into a running process; `main.rs` only calls [`launch::run`].

pub mod backoff;
pub mod board;
pub mod change;
pub mod cli;
pub mod client;
pub mod demo;
pub mod discovery;
pub mod exporter;
pub mod launch;
pub mod logging;
pub mod loglimit;
pub mod metrics;
pub mod ratelimit;
pub mod server;
pub mod settings;
pub mod simulator;
pub mod snapshot;
pub mod sse;
pub mod status;
pub mod token;
pub mod watcher;
pub mod watchlist;
