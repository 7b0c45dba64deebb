//! Everything between a client's socket and the handler: admission, the
//! handshake, the two sessions (shared memory, the product; the socket, the
//! benchmark baseline and fallback) and the one frame → answer path they share.
//!
//! - [`listener`]: owning the socket path (lock, stale socket, atomic publish);
//! - [`server`]: the accept loop and the handshake;
//! - [`admission`]: the budgets a connection is admitted against (fds, pending
//!   handshakes, clients per uid, memory);
//! - [`shm_session`]: one client's shared-memory request pump;
//! - [`socket_session`]: the same frames over the socket;
//! - [`frame`]: the frame → answer path and the bad-frame policy of both.
//!
//! What this module does not do: decide answers (`handler.rs`) or store
//! anything (`store/`).

pub mod admission;
pub mod frame;
pub mod listener;
pub mod server;
pub mod shm_session;
pub mod socket_session;
