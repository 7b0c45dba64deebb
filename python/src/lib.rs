//! nexus_memory: the Python package of Memory Nexus, a thin PyO3 layer over
//! `nexus_client::Client`.
//!
//! It converts Python values to wire types (times, tags, vectors), releases
//! the GIL around every call into the daemon (the Rust client is `Sync`, so
//! Python threads share one `Client`), and maps `ClientError`s and the
//! daemon's error codes to Python exception classes. It deliberately holds no
//! logic of its own: routing, validation and storage belong to the daemon,
//! the connection and its timeouts to nexus-client.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_client::wire::{
    ErrorCode, ForgetRequest, HealthReport, MemoryInput, MemoryTag, RecallHit, RecallRequest, Route, TimeRange,
};
use nexus_client::{ClientError, ConnectOptions};
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

create_exception!(
    nexus_memory,
    NexusError,
    PyException,
    "Base class of every Memory Nexus error."
);
create_exception!(
    nexus_memory,
    DaemonNotRunning,
    NexusError,
    "No nexusd answers at the socket path."
);
create_exception!(
    nexus_memory,
    DaemonGone,
    NexusError,
    "The daemon went away mid-session; call reconnect()."
);
create_exception!(
    nexus_memory,
    InvalidRequest,
    NexusError,
    "The daemon refused an argument."
);
create_exception!(
    nexus_memory,
    NotFound,
    NexusError,
    "The memory or recall named does not exist."
);
create_exception!(nexus_memory, Busy, NexusError, "The daemon is overloaded; retry later.");
create_exception!(nexus_memory, Timeout, NexusError, "No answer within the timeout.");
create_exception!(
    nexus_memory,
    PermissionDenied,
    NexusError,
    "The daemon refused this user."
);
create_exception!(
    nexus_memory,
    StorageError,
    NexusError,
    "The daemon could not make a write durable."
);
create_exception!(
    nexus_memory,
    ProtocolError,
    NexusError,
    "The daemon's answer was not understood."
);

/// Memories per Remember request in `remember_many`: the CLI import's batch,
/// under the daemon's default `limits.max_batch` (10,000).
const BATCH_MEMORIES: usize = 1000;

/// Estimated encoded bytes per Remember request at most (1 MiB): a quarter of
/// the largest frame of [`RING_BYTES`] rings, so the estimate's error never matters.
const BATCH_BUDGET_BYTES: usize = 1 << 20;

/// Encoded bytes per memory besides its text, vector and tags (an over-estimate).
const MEMORY_OVERHEAD_BYTES: usize = 64;

/// Both rings of a Python client (8 MiB, as `nexus import`): frames up to
/// 4 MiB, so a `remember_many` batch or a large recall answer fits.
const RING_BYTES: u32 = 8 << 20;

/// A connection to nexusd, shareable between threads.
#[pyclass(frozen, module = "nexus_memory")]
struct Client {
    /// `None` once closed. Calls clone the `Arc` under the lock, then run
    /// with the lock and the GIL released.
    inner: Mutex<Option<Arc<nexus_client::Client>>>,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (socket=None, *, timeout=5.0))]
    fn new(py: Python<'_>, socket: Option<PathBuf>, timeout: f64) -> PyResult<Self> {
        let path = socket.unwrap_or_else(nexus_client::default_socket_path);
        let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
            PyValueError::new_err(format!("timeout must be a positive number of seconds, got {timeout}"))
        })?;
        let options = ConnectOptions {
            name: "nexus_memory (python)".into(),
            request_ring_bytes: RING_BYTES,
            response_ring_bytes: RING_BYTES,
            timeout,
            ..ConnectOptions::default()
        };
        let client = py
            .detach(|| nexus_client::Client::connect_with(&path, options))
            .map_err(to_py_err)?;
        Ok(Self {
            inner: Mutex::new(Some(Arc::new(client))),
        })
    }

    /// The socket path.
    #[getter]
    fn socket(&self) -> PyResult<PathBuf> {
        Ok(self.client()?.path().to_path_buf())
    }

    /// Stores one memory; returns its id.
    #[pyo3(signature = (text, *, namespace="default", key=None, tags=None, vector=None, importance=1.0, created_at=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
    fn remember(
        &self,
        py: Python<'_>,
        text: String,
        namespace: &str,
        key: Option<String>,
        tags: Option<&Bound<'_, PyAny>>,
        vector: Option<&Bound<'_, PyAny>>,
        importance: f32,
        created_at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let memory = MemoryInput {
            key,
            vector: vector.map(to_vector).transpose()?,
            tags: tags.map(to_tags).transpose()?.unwrap_or_default(),
            created_at_ms: created_at.map(to_epoch_ms).transpose()?,
            importance,
            ..MemoryInput::new(namespace, text)
        };
        let client = self.client()?;
        let ids = py.detach(|| client.remember(vec![memory])).map_err(to_py_err)?;
        ids.first()
            .copied()
            .ok_or_else(|| ProtocolError::new_err("nexusd returned no id for the memory"))
    }

    /// Stores many memories (dicts with remember's keyword names, `(text,
    /// namespace)` tuples, or strings); returns their ids in order. Sent in
    /// bounded batches, each stored atomically.
    fn remember_many(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        let mut memories = Vec::new();
        for item in items.try_iter()? {
            memories.push(to_memory(&item?)?);
        }
        let client = self.client()?;
        py.detach(|| {
            let mut ids = Vec::with_capacity(memories.len());
            for batch in batches(memories) {
                ids.extend(client.remember(batch)?);
            }
            Ok(ids)
        })
        .map_err(to_py_err)
    }

    /// The best memories for a query.
    #[pyo3(signature = (query, *, namespace="default", k=5, tags=None, since=None, until=None, route=None, vector=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
    fn recall(
        &self,
        py: Python<'_>,
        query: Option<String>,
        namespace: &str,
        k: u32,
        tags: Option<&Bound<'_, PyAny>>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        route: Option<&str>,
        vector: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Hit>> {
        let request = recall_request(query, namespace, k, tags, since, until, route, vector)?;
        let client = self.client()?;
        let hits = py.detach(|| client.recall(request)).map_err(to_py_err)?;
        Ok(hits.into_iter().map(Hit::from).collect())
    }

    /// Like `recall`, with the request id (what `feedback` names), the route
    /// taken and why, and what was missing if the answer is degraded.
    #[pyo3(signature = (query, *, namespace="default", k=5, tags=None, since=None, until=None, route=None, vector=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
    fn recall_answer(
        &self,
        py: Python<'_>,
        query: Option<String>,
        namespace: &str,
        k: u32,
        tags: Option<&Bound<'_, PyAny>>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        route: Option<&str>,
        vector: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RecallAnswer> {
        let request = recall_request(query, namespace, k, tags, since, until, route, vector)?;
        let client = self.client()?;
        let answer = py.detach(|| client.recall_answer(request)).map_err(to_py_err)?;
        let hits = answer
            .hits
            .into_iter()
            .map(|hit| Py::new(py, Hit::from(hit)))
            .collect::<PyResult<_>>()?;
        Ok(RecallAnswer {
            request_id: answer.request_id,
            route: route_name(answer.route).to_owned(),
            route_reason: answer.route_reason,
            degraded: answer.degraded,
            hits,
        })
    }

    /// Deletes the memories `ids`, or every memory of `namespace`; returns how many.
    #[pyo3(signature = (ids=None, *, namespace=None))]
    fn forget(&self, py: Python<'_>, ids: Option<Vec<u64>>, namespace: Option<String>) -> PyResult<u64> {
        let what = match (ids, namespace) {
            (Some(ids), None) => ForgetRequest::Ids(ids),
            (None, Some(namespace)) => ForgetRequest::Namespace(namespace),
            _ => {
                return Err(PyValueError::new_err(
                    "forget takes either ids or namespace=..., not both or neither",
                ));
            }
        };
        let client = self.client()?;
        py.detach(|| client.forget(what)).map_err(to_py_err)
    }

    /// Records whether memory `memory_id`, recalled by recall `recall_id`, was useful.
    #[pyo3(signature = (memory_id, recall_id, useful=true))]
    fn feedback(&self, py: Python<'_>, memory_id: u64, recall_id: u64, useful: bool) -> PyResult<()> {
        let client = self.client()?;
        py.detach(|| client.feedback(memory_id, recall_id, useful))
            .map_err(to_py_err)
    }

    /// The daemon's counters by name.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let client = self.client()?;
        let report = py.detach(|| client.stats()).map_err(to_py_err)?;
        let pairs: Vec<(String, u64)> = report.counters.into_iter().map(|c| (c.name, c.value)).collect();
        pairs_to_dict(py, &pairs)
    }

    /// The daemon's health probe.
    fn health(&self, py: Python<'_>) -> PyResult<Health> {
        let client = self.client()?;
        py.detach(|| client.health()).map(Health::from).map_err(to_py_err)
    }

    /// Replaces the connection with a fresh one (after `DaemonGone`).
    fn reconnect(&self, py: Python<'_>) -> PyResult<()> {
        let client = self.client()?;
        py.detach(|| client.reconnect()).map_err(to_py_err)
    }

    /// Closes the connection; later calls raise `NexusError`.
    fn close(&self) {
        self.lock().take();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }
}

impl Client {
    fn client(&self) -> PyResult<Arc<nexus_client::Client>> {
        self.lock()
            .clone()
            .ok_or_else(|| NexusError::new_err("this Client is closed; create a new one"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<nexus_client::Client>>> {
        // The guarded value is an Option swapped whole, never left half-made.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One recalled memory.
#[pyclass(frozen, module = "nexus_memory")]
struct Hit {
    #[pyo3(get)]
    id: u64,
    #[pyo3(get)]
    text: String,
    #[pyo3(get)]
    score: f32,
    #[pyo3(get)]
    namespace: String,
    /// Milliseconds since the Unix epoch (`created_at` is the same as a datetime).
    #[pyo3(get)]
    created_at_ms: i64,
    tag_pairs: Vec<(String, String)>,
    signals: Vec<(String, f32)>,
}

#[pymethods]
impl Hit {
    /// Tags as a dict.
    #[getter]
    fn tags<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        pairs_to_dict(py, &self.tag_pairs)
    }

    /// Per-signal contributions to the score.
    #[getter]
    fn why<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        pairs_to_dict(py, &self.signals)
    }

    /// Creation time, an aware UTC datetime.
    #[getter]
    fn created_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let datetime = py.import("datetime")?;
        let utc = datetime.getattr("timezone")?.getattr("utc")?;
        let seconds = self.created_at_ms.div_euclid(1000);
        let micros = self.created_at_ms.rem_euclid(1000) * 1000;
        let base = datetime
            .getattr("datetime")?
            .call_method1("fromtimestamp", (seconds, utc))?;
        let delta = datetime.getattr("timedelta")?.call((0, 0, micros), None)?;
        base.call_method1("__add__", (delta,))
    }

    fn __repr__(&self) -> String {
        format!("Hit(id={}, score={:.4}, text={:?})", self.id, self.score, self.text)
    }
}

impl From<RecallHit> for Hit {
    fn from(hit: RecallHit) -> Self {
        Self {
            id: hit.id,
            text: hit.text,
            score: hit.score,
            namespace: hit.namespace,
            created_at_ms: hit.created_at_ms,
            tag_pairs: hit.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            signals: hit.why.into_iter().map(|s| (s.name, s.value)).collect(),
        }
    }
}

/// A recall's hits and how the daemon answered.
#[pyclass(frozen, module = "nexus_memory")]
struct RecallAnswer {
    #[pyo3(get)]
    request_id: u64,
    #[pyo3(get)]
    route: String,
    #[pyo3(get)]
    route_reason: String,
    #[pyo3(get)]
    degraded: Option<String>,
    hits: Vec<Py<Hit>>,
}

#[pymethods]
impl RecallAnswer {
    /// The hits, best first.
    #[getter]
    fn hits(&self, py: Python<'_>) -> Vec<Py<Hit>> {
        self.hits.iter().map(|hit| hit.clone_ref(py)).collect()
    }
}

/// The daemon's health probe.
#[pyclass(frozen, get_all, module = "nexus_memory")]
struct Health {
    serving: bool,
    uptime_s: u64,
    version: String,
    write_failure: Option<String>,
    degraded: Vec<String>,
}

#[pymethods]
impl Health {
    fn __repr__(&self) -> String {
        format!(
            "Health(serving={}, uptime_s={}, version={:?})",
            if self.serving { "True" } else { "False" },
            self.uptime_s,
            self.version
        )
    }
}

impl From<HealthReport> for Health {
    fn from(report: HealthReport) -> Self {
        Self {
            serving: report.serving,
            uptime_s: report.uptime_s,
            version: report.version,
            write_failure: report.write_failure,
            degraded: report.degraded,
        }
    }
}

#[pymodule]
fn nexus_memory(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<Hit>()?;
    m.add_class::<RecallAnswer>()?;
    m.add_class::<Health>()?;
    m.add("NexusError", py.get_type::<NexusError>())?;
    m.add("DaemonNotRunning", py.get_type::<DaemonNotRunning>())?;
    m.add("DaemonGone", py.get_type::<DaemonGone>())?;
    m.add("InvalidRequest", py.get_type::<InvalidRequest>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Busy", py.get_type::<Busy>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// The Python exception for a client error, with the daemon's message.
fn to_py_err(error: ClientError) -> PyErr {
    let message = error.to_string();
    match &error {
        ClientError::Connect { .. } => DaemonNotRunning::new_err(message),
        ClientError::DaemonGone | ClientError::Io(_) => DaemonGone::new_err(message),
        ClientError::Timeout(_) => Timeout::new_err(message),
        ClientError::Busy(_) => Busy::new_err(message),
        ClientError::FrameTooLarge { .. } => InvalidRequest::new_err(message),
        ClientError::UntrustedDaemon { .. } => PermissionDenied::new_err(message),
        ClientError::Refused { code, .. } | ClientError::Status { code, .. } => code_to_py_err(*code, message),
        _ => ProtocolError::new_err(message),
    }
}

/// The exception class of a daemon error code.
fn code_to_py_err(code: u32, message: String) -> PyErr {
    match ErrorCode::from_u32(code) {
        Some(ErrorCode::PermissionDenied) => PermissionDenied::new_err(message),
        Some(ErrorCode::TooManyClients | ErrorCode::Busy) => Busy::new_err(message),
        Some(ErrorCode::DeadlineExceeded) => Timeout::new_err(message),
        Some(ErrorCode::ShuttingDown) => DaemonGone::new_err(message),
        Some(
            ErrorCode::InvalidArgument
            | ErrorCode::DimensionMismatch
            | ErrorCode::BatchTooLarge
            | ErrorCode::FrameTooLarge
            | ErrorCode::MalformedFrame,
        ) => InvalidRequest::new_err(message),
        Some(ErrorCode::NotFound) => NotFound::new_err(message),
        Some(ErrorCode::DiskFull | ErrorCode::StorageFailed) => StorageError::new_err(message),
        _ => NexusError::new_err(message),
    }
}

#[allow(clippy::too_many_arguments)] // the recall keyword arguments, converted in one place
fn recall_request(
    query: Option<String>,
    namespace: &str,
    k: u32,
    tags: Option<&Bound<'_, PyAny>>,
    since: Option<&Bound<'_, PyAny>>,
    until: Option<&Bound<'_, PyAny>>,
    route: Option<&str>,
    vector: Option<&Bound<'_, PyAny>>,
) -> PyResult<RecallRequest> {
    let start_ms = since.map(to_epoch_ms).transpose()?;
    let end_ms = until.map(to_epoch_ms).transpose()?;
    let created = (start_ms.is_some() || end_ms.is_some()).then(|| TimeRange {
        start_ms: start_ms.unwrap_or(i64::MIN),
        end_ms: end_ms.unwrap_or(i64::MAX),
    });
    Ok(RecallRequest {
        namespace: namespace.to_owned(),
        text: query,
        vector: vector.map(to_vector).transpose()?,
        k,
        route: route.map(parse_route).transpose()?,
        filter: tags.map(to_tags).transpose()?.unwrap_or_default(),
        created,
        engine: None,
    })
}

fn parse_route(name: &str) -> PyResult<Route> {
    match name {
        "cache_only" => Ok(Route::CacheOnly),
        "smart" | "smart_routing" => Ok(Route::SmartRouting),
        "full" | "full_pipeline" => Ok(Route::FullPipeline),
        "maximum" | "maximum_intelligence" => Ok(Route::MaximumIntelligence),
        other => Err(PyValueError::new_err(format!(
            "unknown route {other:?}: use \"cache_only\", \"smart\", \"full\" or \"maximum\""
        ))),
    }
}

fn route_name(route: Route) -> &'static str {
    match route {
        Route::None => "none",
        Route::CacheOnly => "cache_only",
        Route::SmartRouting => "smart",
        Route::FullPipeline => "full",
        Route::MaximumIntelligence => "maximum",
    }
}

/// One `remember_many` item: a str, a `(text, namespace)` tuple, or a dict.
fn to_memory(item: &Bound<'_, PyAny>) -> PyResult<MemoryInput> {
    if let Ok(text) = item.cast::<PyString>() {
        return Ok(MemoryInput::new("default", text.to_str()?));
    }
    if let Ok(tuple) = item.cast::<PyTuple>() {
        let (text, namespace): (String, String) = tuple.extract()?;
        return Ok(MemoryInput::new(namespace, text));
    }
    let dict = item
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("remember_many items are dicts, (text, namespace) tuples or strings"))?;
    memory_from_dict(dict)
}

fn memory_from_dict(dict: &Bound<'_, PyDict>) -> PyResult<MemoryInput> {
    let text: String = dict
        .get_item("text")?
        .ok_or_else(|| PyValueError::new_err("a remember_many dict needs a \"text\""))?
        .extract()?;
    let field = |name: &str| dict.get_item(name).map(|v| v.filter(|v| !v.is_none()));
    let namespace: String = field("namespace")?
        .map(|v| v.extract())
        .transpose()?
        .unwrap_or_else(|| "default".into());
    Ok(MemoryInput {
        key: field("key")?.map(|v| v.extract()).transpose()?,
        tags: field("tags")?.as_ref().map(to_tags).transpose()?.unwrap_or_default(),
        vector: field("vector")?.as_ref().map(to_vector).transpose()?,
        importance: field("importance")?.map(|v| v.extract()).transpose()?.unwrap_or(1.0),
        created_at_ms: field("created_at")?.as_ref().map(to_epoch_ms).transpose()?,
        ..MemoryInput::new(namespace, text)
    })
}

/// Splits memories into Remember requests bounded in count and estimated bytes.
fn batches(memories: Vec<MemoryInput>) -> Vec<Vec<MemoryInput>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for memory in memories {
        let bytes = estimated_bytes(&memory);
        if !batch.is_empty() && (batch.len() == BATCH_MEMORIES || batch_bytes + bytes > BATCH_BUDGET_BYTES) {
            out.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        batch_bytes += bytes;
        batch.push(memory);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

fn estimated_bytes(memory: &MemoryInput) -> usize {
    let tags: usize = memory.tags.iter().map(|t| t.key.len() + t.value.len() + 16).sum();
    let vector = memory.vector.as_ref().map_or(0, |v| v.len() * 4);
    MEMORY_OVERHEAD_BYTES
        + memory.namespace.len()
        + memory.text.len()
        + memory.key.as_ref().map_or(0, String::len)
        + tags
        + vector
}

/// A vector from any object exporting a float32 buffer (numpy, array('f'),
/// memoryview): one memcpy, no Python float per element; else a sequence of numbers.
fn to_vector(value: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    if let Ok(buffer) = PyBuffer::<f32>::get(value) {
        return buffer.to_vec(value.py());
    }
    value
        .extract::<Vec<f32>>()
        .map_err(|_| PyTypeError::new_err("a vector is a list of floats or a float32 buffer (numpy.float32 array)"))
}

/// Tags from a dict of str to str.
fn to_tags(value: &Bound<'_, PyAny>) -> PyResult<Vec<MemoryTag>> {
    let dict = value
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("tags are a dict of str to str"))?;
    dict.iter()
        .map(|(key, value)| {
            Ok(MemoryTag {
                key: key.extract()?,
                value: value.extract()?,
            })
        })
        .collect()
}

/// Milliseconds since the Unix epoch from an int (already ms) or a datetime
/// (aware; naive means UTC).
fn to_epoch_ms(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    let datetime = value.py().import("datetime")?;
    if !value.is_instance(&datetime.getattr("datetime")?)? {
        return value
            .extract::<i64>()
            .map_err(|_| PyTypeError::new_err("a time is a datetime or an int of milliseconds since the Unix epoch"));
    }
    let utc = datetime.getattr("timezone")?.getattr("utc")?;
    let aware = if value.getattr("tzinfo")?.is_none() {
        let kwargs = PyDict::new(value.py());
        kwargs.set_item("tzinfo", &utc)?;
        value.call_method("replace", (), Some(&kwargs))?
    } else {
        value.clone()
    };
    let epoch = datetime.getattr("datetime")?.call_method1("fromtimestamp", (0, utc))?;
    let one_ms = datetime.getattr("timedelta")?.call((0, 0, 1000), None)?;
    aware.sub(epoch)?.floor_div(one_ms)?.extract()
}

fn pairs_to_dict<'py, V: IntoPyObject<'py> + Clone>(
    py: Python<'py>,
    pairs: &[(String, V)],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in pairs {
        dict.set_item(key, value.clone())?;
    }
    Ok(dict)
}
