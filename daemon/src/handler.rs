//! What each operation does, given a validated request: transport-agnostic,
//! so the shared-memory and socket sessions answer identically.
//!
//! This issue serves Ping, Stats and Health. The memory operations are part
//! of the protocol but land with the durable store and the recall pipeline;
//! until then they answer `NotAvailable`, never a fake success.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nexus_shm_protocol::wire::{
    ArchivedRequest, ArchivedRequestBody, ErrorCode, HealthReport, Pong, Response, ResponseBody,
};

use crate::config::Config;
use crate::metrics::Metrics;

/// State every session shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// Counters.
    pub metrics: Metrics,
    /// Set when shutdown began: new requests are refused with `ShuttingDown`.
    pub shutting_down: AtomicBool,
}

impl Shared {
    /// Fresh shared state for a configuration.
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            config,
            metrics: Metrics::default(),
            shutting_down: AtomicBool::new(false),
        })
    }
}

/// Answers one validated request. `now_ns` is CLOCK_MONOTONIC at pick-up.
pub fn handle(request: &ArchivedRequest, shared: &Shared, now_ns: u64) -> Response {
    let id = request.request_id.to_native();
    let deadline_ns = request.deadline_ns.to_native();
    if deadline_ns != 0 && now_ns > deadline_ns {
        let late_us = (now_ns - deadline_ns) / 1000;
        return Response::error(
            id,
            ErrorCode::DeadlineExceeded,
            format!("deadline passed {late_us} µs before pick-up"),
        );
    }
    if shared.shutting_down.load(Ordering::Relaxed) && !is_probe(&request.body) {
        return Response::error(id, ErrorCode::ShuttingDown, "nexusd is shutting down");
    }
    match &request.body {
        ArchivedRequestBody::Ping(ping) => Response::ok(
            id,
            ResponseBody::Pong(Pong {
                payload_bytes: ping.payload.len() as u32,
                server_monotonic_ns: now_ns,
            }),
        ),
        ArchivedRequestBody::Stats => Response::ok(id, ResponseBody::Stats(shared.metrics.report())),
        ArchivedRequestBody::Health => Response::ok(
            id,
            ResponseBody::Health(HealthReport {
                serving: !shared.shutting_down.load(Ordering::Relaxed),
                uptime_s: shared.metrics.uptime_s(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }),
        ),
        ArchivedRequestBody::Remember(_) => not_available(id, "Remember"),
        ArchivedRequestBody::Recall(_) => not_available(id, "Recall"),
        ArchivedRequestBody::Forget(_) => not_available(id, "Forget"),
        ArchivedRequestBody::Feedback(_) => not_available(id, "Feedback"),
        ArchivedRequestBody::Flush => not_available(id, "Flush"),
        ArchivedRequestBody::Checkpoint => not_available(id, "Checkpoint"),
    }
}

fn is_probe(body: &ArchivedRequestBody) -> bool {
    matches!(
        body,
        ArchivedRequestBody::Health | ArchivedRequestBody::Stats | ArchivedRequestBody::Ping(_)
    )
}

fn not_available(id: u64, operation: &str) -> Response {
    let message = format!("{operation} is not available in this build of nexusd (the memory store is not built yet)");
    Response::error(id, ErrorCode::NotAvailable, message)
}
