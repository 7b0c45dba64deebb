//! nexus-daemon: the library behind `nexusd`.
//!
//! - [`cli`]: flags, logging, runtime, signals (the binary's whole `main`);
//! - [`config`]: every setting and limit, with its default;
//! - [`transport`]: the socket, admission, the handshake, both sessions and the
//!   one frame → answer path they share;
//! - [`handler`]: what each operation does;
//! - [`metrics`]: counters and histograms reported by `Stats`, and their
//!   Prometheus exposition;
//! - [`telemetry`]: the metrics endpoint (`metrics_socket`);
//! - [`notify`]: sd_notify to systemd (ready, status, watchdog, stopping);
//! - [`store`]: the durable memory store (WAL, state, snapshots).

pub mod cli;
pub mod config;
pub mod embed;
pub mod handler;
pub mod metrics;
pub mod notify;
pub mod preprocess;
pub mod recall;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod transport;
