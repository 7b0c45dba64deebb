//! The pipeline's own behaviour: routes, validation, engines by name, fusion, isolation.

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
        assert_eq!(answer.hits.len(), 1, "{route:?}");
        assert_eq!(answer.hits[0].memory.view().text(), "Caroline went hiking");
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
