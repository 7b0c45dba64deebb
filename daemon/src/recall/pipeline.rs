//! The recall pipeline, as far as it goes today: route check → query
//! validation → one engine → the memories' bytes from the store.
//!
//! Where the pipeline will grow (the next issues), in this order: the router
//! picks a route (instead of [`check_route`] refusing the forced ones it
//! cannot take), the cache answers or misses, several engines run under the
//! request's deadline behind circuit breakers, fusion ranks their
//! candidates. The last step stays: the answer's memories are looked up by
//! id in the store (one read lock), so a memory forgotten while the engines
//! ran is not returned, and their bytes are read in place.

use std::sync::Arc;

use crate::recall::engine::{Candidate, Engine, SearchContext};
use crate::recall::error::RecallError;
use crate::recall::query::{Query, QueryInput, Route};
use crate::recall::scan::ScanEngine;
use crate::store::{Deadline, Memory, Store};

/// Answers recalls over a store.
#[derive(Clone)]
pub struct Recall {
    store: Store,
    /// The engine that answers (the exact scan until fusion exists).
    engine: Arc<dyn Engine>,
}

/// One result: the engine's candidate and its memory (read in place).
#[derive(Debug, Clone)]
pub struct Recalled {
    /// Id, score and its parts.
    pub candidate: Candidate,
    /// The memory.
    pub memory: Memory,
}

impl Recall {
    /// Recalls over `store` with the exact scan.
    pub fn new(store: Store) -> Self {
        Self::with_engine(store, Arc::new(ScanEngine))
    }

    /// Recalls over `store` answered by `engine` (tests run the pipeline
    /// with their own engines). An engine with an index must also be one of
    /// the store's followers (`Store::open_with`).
    pub fn with_engine(store: Store, engine: Arc<dyn Engine>) -> Self {
        Self { store, engine }
    }

    /// The best memories for `input`, best first, by `deadline`.
    pub async fn recall(&self, input: &QueryInput<'_>, deadline: Deadline) -> Result<Vec<Recalled>, RecallError> {
        check_route(input.route)?;
        let query = Query::validate(input, &self.store)?;
        let ctx = SearchContext::new(&self.store, deadline);
        let candidates = self.engine.search(&query, &ctx).await?;
        let memories = self.store.memories(candidates.hits.iter().map(|hit| hit.id));
        let recalled = (candidates.hits.into_iter().zip(memories)).filter_map(|(candidate, memory)| {
            Some(Recalled {
                candidate,
                memory: memory?,
            })
        });
        Ok(recalled.collect())
    }
}

/// The routes this build can take: the daemon's own choice, and
/// SmartRouting (which the exact scan answers until the router exists). A
/// forced route it cannot take is refused, never silently answered another way.
fn check_route(route: Route) -> Result<(), RecallError> {
    match route {
        Route::Auto | Route::SmartRouting => Ok(()),
        Route::CacheOnly | Route::FullPipeline | Route::MaximumIntelligence => {
            Err(RecallError::RouteNotAvailable { route })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recall::query::QueryInput;
    use crate::store::tests::{TestStore, note};

    // The request's route was accepted and silently ignored: a client forcing
    // FullPipeline got the exact scan and believed it had the full pipeline.
    #[tokio::test]
    async fn a_forced_route_the_build_cannot_take_is_refused_by_name() {
        let test = TestStore::open("routes");
        test.remember(vec![note("a", "Caroline went hiking")]).await;
        let recall = Recall::new(test.store.clone());
        let input = |route| QueryInput {
            namespace: "a",
            text: Some("hiking"),
            route,
            ..QueryInput::default()
        };
        for route in [Route::Auto, Route::SmartRouting] {
            let answer = recall.recall(&input(route), Deadline::NONE).await.expect("answered");
            assert_eq!(answer.len(), 1, "{route:?}");
            assert_eq!(answer[0].memory.view().text(), "Caroline went hiking");
        }
        for route in [Route::CacheOnly, Route::FullPipeline, Route::MaximumIntelligence] {
            let refused = recall.recall(&input(route), Deadline::NONE).await.unwrap_err();
            assert!(matches!(refused, RecallError::RouteNotAvailable { route: r } if r == route));
            assert!(refused.to_string().contains(&format!("{route:?}")), "{refused}");
        }
    }

    #[tokio::test]
    async fn queries_are_validated_before_any_engine_runs() {
        let test = TestStore::open("validate");
        let recall = Recall::new(test.store.clone());
        let empty = QueryInput {
            text: Some("   "),
            ..QueryInput::default()
        };
        let refused = recall.recall(&empty, Deadline::NONE).await.unwrap_err();
        assert!(matches!(refused, RecallError::EmptyQuery), "{refused}");
        let too_many = QueryInput {
            text: Some("x"),
            k: test.store.limits().max_k + 1,
            ..QueryInput::default()
        };
        let refused = recall.recall(&too_many, Deadline::NONE).await.unwrap_err();
        assert!(matches!(refused, RecallError::KTooLarge { .. }), "{refused}");
        let backwards = QueryInput {
            text: Some("x"),
            created: Some(crate::recall::TimeRange { start_ms: 2, end_ms: 1 }),
            ..QueryInput::default()
        };
        let refused = recall.recall(&backwards, Deadline::NONE).await.unwrap_err();
        assert!(matches!(refused, RecallError::BadTimeRange(_)), "{refused}");
    }
}
