//! nexus-daemon: the library behind `nexusd`.
//!
//! - [`cli`]: flags, logging, runtime, signals (the binary's whole `main`);
//! - [`config`]: every setting and limit, with its default;
//! - [`transport`]: the socket, admission, the handshake, both sessions and the
//!   one frame → answer path they share;
//! - [`handler`]: what each operation does;
//! - [`metrics`]: counters reported by `Stats`;
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
#[doc(hidden)]
pub mod testing;
pub mod transport;
