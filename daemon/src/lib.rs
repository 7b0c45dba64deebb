//! nexus-daemon: the library behind `nexusd`.
//!
//! - [`admission`]: the budgets connections are admitted against;
//! - [`cli`]: flags, logging, runtime, signals (the binary's whole `main`);
//! - [`config`]: every setting and limit, with its default;
//! - [`listener`]: owning the socket path (lock, stale socket, atomic publish);
//! - [`server`]: accept loop and handshake;
//! - [`session`]: one client's shared-memory request pump;
//! - [`socket_session`]: the same over the socket (benchmark baseline, fallback);
//! - [`handler`]: what each operation does;
//! - [`metrics`]: counters reported by `Stats`;
//! - [`store`]: the durable memory store (WAL, state, snapshots).

pub mod admission;
pub mod cli;
pub mod config;
pub mod embed;
pub mod handler;
pub mod listener;
pub mod metrics;
pub mod recall;
pub mod server;
pub mod session;
pub mod socket_session;
pub mod store;
