//! The pipeline's own behaviour: routes, validation, engines by name, fusion, isolation.

use super::*;
use crate::recall::query::QueryInput;
use crate::store::tests::{TestStore, note};

// Every route answers and says which it took; a forced CacheOnly with
// nothing cached is refused by name, then served once an answer is cached,
// and a write to the namespace makes that answer unservable.
#[tokio::test]
async fn every_route_answers_and_the_cache_serves_only_answers_newer_than_the_last_write() {
    let epochs = Arc::new(Epochs::new());
    let follower: Arc<dyn Follower> = Arc::new(EpochFollower::new(Arc::clone(&epochs)));
    let test = TestStore::open_with("routes", vec![follower]);
    test.remember(vec![note("a", "Caroline went hiking")]).await;
    let parts = RecallParts {
        epochs: Some(epochs),
        ..RecallParts::default()
    };
    let recall = Recall::build(test.store.clone(), Vec::new(), parts, PipelineConfig::default()).expect("valid");
    let input = |route| QueryInput {
        namespace: "a",
        text: Some("hiking"),
        route,
        ..QueryInput::default()
    };
    let refused = recall
        .recall(&input(Route::CacheOnly), Deadline::NONE)
        .await
        .unwrap_err();
    assert!(matches!(refused, RecallError::NotCached { .. }), "{refused}");
    assert!(refused.to_string().contains("CacheOnly"), "{refused}");
    for route in [Route::SmartRouting, Route::FullPipeline, Route::MaximumIntelligence] {
        let answer = recall.recall(&input(route), Deadline::NONE).await.expect("answered");
        assert_eq!(answer.route, route);
        assert_eq!(answer.reason, "forced by the request");
        assert_eq!(answer.hits.len(), 1, "{route:?}");
        assert_eq!(answer.hits[0].memory.view().text(), "Caroline went hiking");
    }
    let cached = recall
        .recall(&input(Route::CacheOnly), Deadline::NONE)
        .await
        .expect("cached");
    assert_eq!((cached.route, cached.cached), (Route::CacheOnly, Some(Level::Exact)));
    assert_eq!(cached.hits.len(), 1);
    let auto = recall
        .recall(&input(Route::Auto), Deadline::NONE)
        .await
        .expect("answered");
    assert_eq!(auto.route, Route::CacheOnly, "an auto-routed repeat is a cache hit");
    // A write to the namespace: the cached answer is never served again.
    test.remember(vec![note("a", "Melanie went hiking too")]).await;
    let refused = recall
        .recall(&input(Route::CacheOnly), Deadline::NONE)
        .await
        .unwrap_err();
    assert!(matches!(refused, RecallError::NotCached { .. }), "{refused}");
    let fresh = recall
        .recall(&input(Route::Auto), Deadline::NONE)
        .await
        .expect("answered");
    assert_ne!(fresh.route, Route::CacheOnly);
    assert_eq!(fresh.hits.len(), 2, "the new memory is in the next answer");
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
