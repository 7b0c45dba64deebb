//! The request's `route` field through the real client: honoured when this
//! build can take it, refused by name when it cannot (issue 8, item 1).

use nexus_client::wire::{ErrorCode, RecallRequest, RequestBody, Route};
use nexus_tests::store::{check_refused, memory};

use crate::start;

fn query(route: Option<Route>) -> RecallRequest {
    RecallRequest {
        namespace: "routes".into(),
        text: Some("hiking".into()),
        k: 5,
        route,
        ..RecallRequest::default()
    }
}

// Regression: the route a client forced was accepted and silently ignored,
// so a client asking for FullPipeline got the exact scan without knowing.
#[test]
fn a_forced_route_is_honoured_or_refused_by_name_never_ignored() {
    let daemon = start(&[]);
    let client = daemon.client();
    client
        .remember(vec![memory("routes", "Caroline went hiking")])
        .expect("a memory");
    for route in [None, Some(Route::None), Some(Route::SmartRouting)] {
        let hits = client
            .recall(query(route))
            .unwrap_or_else(|e| panic!("route {route:?}: {e}"));
        assert_eq!(hits.len(), 1, "route {route:?} is answered");
    }
    for route in [Route::CacheOnly, Route::FullPipeline, Route::MaximumIntelligence] {
        let body = RequestBody::Recall(query(Some(route)));
        let message = check_refused(&client, &format!("route {route:?}"), body, ErrorCode::NotAvailable);
        assert!(
            message.contains(&format!("{route:?}")),
            "the refusal names the route: {message}"
        );
    }
}
