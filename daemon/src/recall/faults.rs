//! Fault injection for tests, compiled only into debug builds (release
//! builds have no such switch): `NEXUS_TEST_FAULTS="dense=panic,lexical=hang"`
//! wraps the named engines so every search panics (`panic`), never returns
//! until its deadline (`hang`), or fails (`fail`). Integration tests start
//! nexusd with it to check that recalls are degraded, never failed, that
//! breakers open, and that a forced route with every engine down is refused
//! naming them.

use std::sync::Arc;

use crate::recall::engine::{Engine, EngineError, EngineSearch, SearchContext};
use crate::recall::query::Query;
use crate::store::{Follower, IndexChange, Store};

/// The environment variable read at start.
pub const FAULTS_ENV: &str = "NEXUS_TEST_FAULTS";

/// What a faulty engine does on every search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panics.
    Panic,
    /// Waits forever (the request's deadline ends it).
    Hang,
    /// Answers an error.
    Fail,
}

/// `engines`, with those named in [`FAULTS_ENV`] wrapped.
pub fn from_env(engines: Vec<Arc<dyn Engine>>) -> Vec<Arc<dyn Engine>> {
    let Ok(spec) = std::env::var(FAULTS_ENV) else {
        return engines;
    };
    let faults: Vec<(String, Fault)> = (spec.split(','))
        .filter_map(|part| {
            let (name, fault) = part.split_once('=')?;
            let fault = match fault.trim() {
                "panic" => Fault::Panic,
                "hang" => Fault::Hang,
                "fail" => Fault::Fail,
                _ => return None,
            };
            Some((name.trim().to_owned(), fault))
        })
        .collect();
    (engines.into_iter())
        .map(|engine| match faults.iter().find(|(name, _)| name == engine.name()) {
            Some((_, fault)) => {
                tracing::warn!(engine = engine.name(), ?fault, "test fault injected");
                Arc::new(Faulty {
                    inner: engine,
                    fault: *fault,
                }) as Arc<dyn Engine>
            }
            None => engine,
        })
        .collect()
}

/// An engine whose searches fail as told; it follows the log as the real one.
pub struct Faulty {
    /// The real engine.
    pub inner: Arc<dyn Engine>,
    /// What every search does.
    pub fault: Fault,
}

impl Follower for Faulty {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn follow(&self, change: &IndexChange<'_>) {
        self.inner.follow(change);
    }
}

impl Engine for Faulty {
    fn search<'a>(&'a self, _query: &'a Query<'a>, _ctx: &'a SearchContext<'a>) -> EngineSearch<'a> {
        let (fault, engine) = (self.fault, self.inner.name());
        Box::pin(async move {
            match fault {
                Fault::Panic => panic!("test fault: {engine} panics"),
                Fault::Hang => {
                    std::future::pending::<()>().await;
                    unreachable!("pending never completes")
                }
                Fault::Fail => Err(EngineError::Failed {
                    engine,
                    reason: "test fault: fails".into(),
                }),
            }
        })
    }

    fn opened(&self, store: &Store) {
        self.inner.opened(store);
    }

    fn origin(&self) -> String {
        self.inner.origin()
    }

    fn gauges(&self) -> Vec<(String, u64)> {
        self.inner.gauges()
    }
}
