//! nexus-mcp: Memory Nexus as a Model Context Protocol server, so an agent
//! host (Claude Desktop, an IDE, any MCP client) launches it as a command and
//! its model remembers, recalls and forgets through a running nexusd.
//!
//! A thin adapter: each MCP tool call becomes one `nexus-client` call over
//! shared memory, and its answer a small JSON object. The modules, in the
//! order a call walks them: `server` (the tools, on the official SDK `rmcp`),
//! `args` (the tools' arguments: schemas, checks, and the wire requests they
//! become), `daemon` (the blocking client run off the async runtime, with one
//! reconnect), `shape` (answers as small JSON), `failure` (a failed call as
//! one line with its fix).
//!
//! What it deliberately does not do: decide anything about memories (nexusd
//! does: ranking, limits, importance's range), speak any transport but stdio,
//! or write anything but the protocol to stdout (logs go to stderr).

pub mod args;
pub mod daemon;
pub mod failure;
pub mod server;
pub mod shape;
