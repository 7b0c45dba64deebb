//! nexus-shm-protocol: everything both sides of a Memory Nexus connection must
//! agree on, and nothing else.
//!
//! - [`layout`]: the byte layout of a connection's shared segment (normative);
//! - [`ring`]: single-producer/single-consumer frame rings over that memory;
//! - [`segment`]: the sealed memfd that holds the rings, and its mapping;
//! - [`wake`]: the wake-ups between the processes (an eventfd bell, futex words);
//! - [`wire`]: the rkyv request/response types and error codes;
//! - [`handshake`]: the Unix-socket handshake that hands the segment over.
//!
//! No tokio here (the client must stay small and blocking); the daemon wraps
//! the bell in its own async machinery.

#[cfg(not(loom))]
pub mod handshake;
pub mod layout;
pub mod ring;
#[cfg(not(loom))]
pub mod segment;
mod sync;
#[cfg(not(loom))]
pub mod wake;
pub mod wire;

use std::path::PathBuf;

/// Version of the segment layout, the frame format and the wire types, as a
/// whole. Bumped on any incompatible change; checked at the handshake.
/// Version 2: the daemon wakes the client with a futex on the ring's flag word
/// instead of writing a client-held eventfd; the handshake passes the segment
/// and the daemon's bell. Version 3: a recall carries a creation-time range
/// and may name the engine to answer it. Version 4: a response says why its
/// route was taken (`Response::route_reason`). Version 5: `List` pages
/// through the stored memories; `Health` names what is degraded.
pub const PROTOCOL_VERSION: u32 = 5;

/// Environment variable naming the daemon's socket, for clients and tools.
pub const SOCKET_ENV: &str = "NEXUS_SOCKET";

/// File name of the socket when no path is configured.
pub const DEFAULT_SOCKET_NAME: &str = "nexusd.sock";

/// Where the daemon listens and clients connect when nothing says otherwise:
/// `$NEXUS_SOCKET`, else `$XDG_RUNTIME_DIR/nexusd.sock`, else `./nexusd.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join(DEFAULT_SOCKET_NAME),
        None => PathBuf::from(DEFAULT_SOCKET_NAME),
    }
}

/// Current CLOCK_MONOTONIC time in nanoseconds: the clock of request deadlines,
/// shared by every process on the host.
#[cfg(not(loom))]
pub fn monotonic_now_ns() -> u64 {
    let now =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    (now.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec() as u64)
}
