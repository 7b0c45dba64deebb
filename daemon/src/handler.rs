//! What each operation does, given a validated request: transport-agnostic,
//! so the shared-memory and socket sessions answer identically.
//!
//! Memory operations go to the durable store (`store/`): a write is answered
//! only once it is in the WAL and fsynced (per the fsync policy). Recall is
//! still an exact scan; the indexed pipeline is its own issue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use nexus_shm_protocol::wire::{
    ArchivedRequest, ArchivedRequestBody, ErrorCode, HealthReport, Pong, Response, ResponseBody, StatsReport,
};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::model::StoreError;
use crate::transport::admission::Admission;

/// State every session shares.
pub struct Shared {
    /// The configuration in force (swapped on SIGHUP; see `config()`).
    config: RwLock<Arc<Config>>,
    /// Counters.
    pub metrics: Metrics,
    /// Set when shutdown began: new requests are refused with `ShuttingDown`.
    pub shutting_down: AtomicBool,
    /// The memories.
    pub store: Store,
    /// The budgets connections are admitted against (fds, pending
    /// handshakes, per-uid shares, memory); see `admission.rs`.
    pub admission: Admission,
}

impl Shared {
    /// Fresh shared state for a configuration and an opened store.
    pub fn new(config: Config, store: Store) -> Arc<Self> {
        Arc::new(Self {
            admission: Admission::new(&config),
            config: RwLock::new(Arc::new(config)),
            metrics: Metrics::default(),
            shutting_down: AtomicBool::new(false),
            store,
        })
    }
}

impl Shared {
    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs a reloaded configuration.
    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }
}

/// Answers one validated request. `now_ns` is CLOCK_MONOTONIC at pick-up.
pub async fn handle(request: &ArchivedRequest, shared: &Shared, now_ns: u64) -> Response {
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
    let store = &shared.store;
    let result = match &request.body {
        ArchivedRequestBody::Ping(ping) => Ok(ResponseBody::Pong(Pong {
            payload_bytes: ping.payload.len() as u32,
            server_monotonic_ns: now_ns,
        })),
        ArchivedRequestBody::Stats => Ok(ResponseBody::Stats(stats(shared))),
        ArchivedRequestBody::Health => Ok(ResponseBody::Health(HealthReport {
            serving: !shared.shutting_down.load(Ordering::Relaxed),
            uptime_s: shared.metrics.uptime_s(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            write_failure: store.write_failure(),
        })),
        ArchivedRequestBody::Remember(remember) => {
            store.remember(remember, now_ms()).await.map(ResponseBody::Remembered)
        }
        ArchivedRequestBody::Recall(recall) => store.recall(recall, deadline_ns).await.map(ResponseBody::Recalled),
        ArchivedRequestBody::Forget(forget) => store.forget(forget, deadline_ns).await.map(ResponseBody::Forgotten),
        ArchivedRequestBody::Feedback(feedback) => store.feedback(feedback).await.map(|()| ResponseBody::Empty),
        ArchivedRequestBody::Flush => store.flush().await.map(ResponseBody::Flushed),
        ArchivedRequestBody::Checkpoint => store.requested_checkpoint().await.map(ResponseBody::Checkpointed),
    };
    match result {
        Ok(body) => Response::ok(id, body),
        Err(error) => store_error(id, &error),
    }
}

fn stats(shared: &Shared) -> StatsReport {
    let mut report = shared.metrics.report();
    report.counters.extend(shared.store.counters());
    report.counters.extend(shared.admission.gauges());
    report
}

fn store_error(id: u64, error: &StoreError) -> Response {
    Response::error(id, error.code(), error.to_string())
}

fn is_probe(body: &ArchivedRequestBody) -> bool {
    matches!(
        body,
        ArchivedRequestBody::Health | ArchivedRequestBody::Stats | ArchivedRequestBody::Ping(_)
    )
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_millis() as i64
}
