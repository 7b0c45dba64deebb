//! The recall pipeline through a real daemon (issue 10): every route
//! answers and says why; a memory remembered a moment earlier is found on
//! every route (no stale index, no stale cache); a failing, hanging or
//! panicking engine makes answers degraded, never failed, and its breaker
//! opens; a forced route whose engines are all down is refused naming them;
//! feedback must name a recent recall and one of its results.

use nexus_client::Client;
use nexus_client::wire::{
    ErrorCode, FeedbackRequest, RecallRequest, RequestBody, Response, ResponseBody, Route, Status,
};
use nexus_tests::store::{check_refused, memory};

use crate::{start, start_with_env};

fn query(namespace: &str, text: &str, route: Option<Route>) -> RecallRequest {
    RecallRequest {
        namespace: namespace.into(),
        text: Some(text.into()),
        k: 5,
        route,
        ..RecallRequest::default()
    }
}

fn ask(client: &Client, request: RecallRequest) -> (Response, Vec<String>) {
    let response = client
        .call(RequestBody::Recall(request), None)
        .expect("the call goes through");
    let texts = match &response.body {
        ResponseBody::Recalled(hits) => hits.iter().map(|h| h.text.clone()).collect(),
        other => panic!("a recall answered {other:?} ({:?})", response.status),
    };
    (response, texts)
}

#[test]
fn every_route_answers_says_why_and_sees_the_last_write() {
    let daemon = start(&["--chunk-tokens", "0"]);
    let client = daemon.client();
    client
        .remember(vec![memory("routes", "Caroline went hiking in the hills")])
        .expect("a memory");
    let routes = [
        None,
        Some(Route::SmartRouting),
        Some(Route::FullPipeline),
        Some(Route::MaximumIntelligence),
    ];
    let mut previous: Option<&str> = None;
    for text in [
        "Melanie painted a lake at sunrise",
        "Caroline adopted a puppy named Oscar",
    ] {
        for route in routes {
            // The same question each round: a cached answer from round 0
            // must not hide round 1's memory.
            let (response, texts) = ask(&client, query("routes", "who went where and did what", route));
            assert_eq!(response.status, Status::Ok, "{route:?}");
            assert!(!response.route_reason.is_empty(), "{route:?}: the route says why");
            if route.is_some() {
                assert_eq!(Some(response.route), route);
                assert_eq!(response.route_reason, "forced by the request");
            }
            if let Some(previous) = previous {
                assert!(
                    texts.iter().any(|t| t == previous),
                    "{route:?}: {texts:?} misses {previous:?}"
                );
            }
        }
        client.remember(vec![memory("routes", text)]).expect("a memory");
        previous = Some(text);
        for route in routes {
            let (_, texts) = ask(&client, query("routes", text, route));
            assert_eq!(
                texts.first().map(String::as_str),
                Some(text),
                "{route:?} finds the new memory first"
            );
        }
    }
    // Asked twice with no write in between: the second is a cache hit.
    let question = query("routes", "a puppy named Oscar", None);
    ask(&client, question.clone());
    let (cached, texts) = ask(&client, question.clone());
    assert_eq!(cached.route, Route::CacheOnly, "{}", cached.route_reason);
    assert_eq!(texts[0], "Caroline adopted a puppy named Oscar");
    let (forced, _) = ask(&client, query("routes", "a puppy named Oscar", Some(Route::CacheOnly)));
    assert_eq!(forced.route, Route::CacheOnly);
    assert!(daemon.stats_counter("cache_hits_exact") >= 2);
    // Another namespace's question was never answered: forced CacheOnly is refused by name.
    let body = RequestBody::Recall(query("elsewhere", "a puppy", Some(Route::CacheOnly)));
    let message = check_refused(&client, "CacheOnly with nothing cached", body, ErrorCode::NotAvailable);
    assert!(
        message.contains("CacheOnly") && message.contains("elsewhere"),
        "{message}"
    );
}

#[test]
fn failing_engines_degrade_answers_open_their_breakers_and_a_forced_route_names_them() {
    let daemon = start_with_env(
        &["--chunk-tokens", "0", "--breaker-failures", "3"],
        &[("NEXUS_TEST_FAULTS", "dense=panic,lexical=fail")],
    );
    let client = daemon.client();
    client
        .remember(vec![memory("faults", "Caroline went hiking in the hills")])
        .expect("a memory");
    // Different questions so no answer comes from the cache.
    for n in 0..4 {
        let (response, texts) = ask(&client, query("faults", &format!("hiking trip {n}"), None));
        let Status::Degraded { reason } = &response.status else {
            panic!("expected a degraded answer, got {:?}", response.status);
        };
        assert!(reason.contains("dense") && reason.contains("lexical"), "{reason}");
        assert_eq!(texts, ["Caroline went hiking in the hills"], "the exact scan answered");
    }
    assert_eq!(daemon.stats_counter("dense_breaker_state"), 1, "open after 3 failures");
    assert_eq!(daemon.stats_counter("lexical_breaker_state"), 1);
    let (response, _) = ask(&client, query("faults", "hiking again", None));
    let Status::Degraded { reason } = &response.status else {
        panic!("expected a degraded answer, got {:?}", response.status);
    };
    assert!(reason.contains("circuit breaker open"), "{reason}");
    let body = RequestBody::Recall(query("faults", "hiking", Some(Route::FullPipeline)));
    let message = check_refused(&client, "forced route, engines down", body, ErrorCode::NotAvailable);
    assert!(message.contains("dense") && message.contains("lexical"), "{message}");
}

#[test]
fn a_hanging_engine_costs_the_deadline_not_the_answer() {
    let daemon = start_with_env(&["--chunk-tokens", "0"], &[("NEXUS_TEST_FAULTS", "dense=hang")]);
    let client = daemon.client();
    client
        .remember(vec![memory("hang", "Caroline went hiking in the hills")])
        .expect("a memory");
    let (response, texts) = ask(&client, query("hang", "hiking", None));
    let Status::Degraded { reason } = &response.status else {
        panic!("expected a degraded answer, got {:?}", response.status);
    };
    assert!(reason.contains("dense") && reason.contains("deadline"), "{reason}");
    assert_eq!(texts, ["Caroline went hiking in the hills"], "lexical answered");
}

#[test]
fn feedback_must_name_a_recent_recall_and_one_of_its_results() {
    let daemon = start(&["--chunk-tokens", "0"]);
    let client = daemon.client();
    let ids = client
        .remember(vec![
            memory("judge", "Caroline went hiking in the hills"),
            memory("judge", "Melanie painted a lake"),
        ])
        .expect("memories");
    let (response, texts) = ask(
        &client,
        query("judge", "hiking in the hills", Some(Route::SmartRouting)),
    );
    assert_eq!(texts[0], "Caroline went hiking in the hills");
    let feedback = |memory_id, recall_request_id| {
        RequestBody::Feedback(FeedbackRequest {
            memory_id,
            recall_request_id,
            useful: true,
        })
    };
    let answer = client
        .call(feedback(ids[0], response.request_id), None)
        .expect("the call goes through");
    assert_eq!(answer.status, Status::Ok);
    let unknown = check_refused(
        &client,
        "unknown recall",
        feedback(ids[0], u64::MAX),
        ErrorCode::NotFound,
    );
    assert!(unknown.contains("no recent recall"), "{unknown}");
    let other = if texts.len() == 1 { ids[1] } else { ids[0] + 1000 };
    let message = check_refused(
        &client,
        "memory not returned",
        feedback(other, response.request_id),
        ErrorCode::NotFound,
    );
    assert!(message.contains("not among the results"), "{message}");
}

#[test]
fn feedback_moves_a_judged_memory_ahead_of_an_equal_one_and_survives_a_restart() {
    let mut daemon = start(&["--chunk-tokens", "0", "--duplicates", "off"]);
    let client = daemon.client();
    let ids = client
        .remember(vec![
            memory("learn", "Caroline likes hiking in the hills"),
            memory("learn", "Caroline likes hiking in the hills"),
        ])
        .expect("memories");
    let ask_ids = |client: &Client| -> (u64, Vec<u64>) {
        let answer = client
            .recall_answer(query("learn", "hiking in the hills", Some(Route::FullPipeline)))
            .expect("answered");
        (answer.request_id, answer.hits.iter().map(|h| h.id).collect())
    };
    let (recall_id, before) = ask_ids(&client);
    assert_eq!(before, ids, "equal scores: the lower id first");
    for _ in 0..3 {
        client.feedback(ids[1], recall_id, true).expect("feedback on a result");
    }
    let (_, after) = ask_ids(&client);
    assert_eq!(after, [ids[1], ids[0]], "the memory judged useful comes first");
    let answer = client
        .recall_answer(query("learn", "hiking in the hills", Some(Route::FullPipeline)))
        .expect("answered");
    let why: Vec<&str> = answer.hits[0].why.iter().map(|s| s.name.as_str()).collect();
    assert!(why.contains(&"preference") && why.contains(&"lexical"), "{why:?}");
    drop(client);
    daemon.restart();
    let (_, replayed) = ask_ids(&daemon.client());
    assert_eq!(replayed, [ids[1], ids[0]], "the preference is durable (WAL replay)");
}

/// A configuration swap (SIGHUP with new fusion weights and breaker
/// settings) while recalls run drops none of them, and the new weights rank
/// the next recalls.
#[test]
fn a_configuration_swap_under_load_drops_no_recall() {
    use nexus_tests::{BOUNDED_WAIT, Daemon, TestDir, signal, wait_until};

    use crate::BINARIES;
    use nix::sys::signal::Signal;

    let dir = TestDir::new();
    let config = dir.path().join("nexusd.toml");
    std::fs::write(&config, "chunk_tokens = 0\n").expect("config");
    let config_arg = config.to_str().expect("utf-8 path").to_owned();
    let daemon = Daemon::start_in(BINARIES, dir, &["--config", &config_arg]);
    let client = daemon.client();
    let texts: Vec<String> = (0..50)
        .map(|i| format!("note {i}: Caroline went hiking near lake {i}"))
        .collect();
    client
        .remember(texts.iter().map(|t| memory("swap", t)).collect())
        .expect("memories");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let recalls = scope.spawn(|| {
            let client = daemon.client();
            let mut answered = 0u64;
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) && n > 200 {
                    break;
                }
                let answer = client
                    .recall_answer(query(
                        "swap",
                        &format!("hiking near lake {}", n % 50),
                        Some(Route::FullPipeline),
                    ))
                    .unwrap_or_else(|e| panic!("recall {n} failed during the swaps: {e}"));
                assert!(answer.degraded.is_none(), "recall {n}: {:?}", answer.degraded);
                assert!(!answer.hits.is_empty(), "recall {n} found nothing");
                answered += 1;
            }
            answered
        });
        for round in 0..6 {
            let weights = if round % 2 == 0 {
                "lexical=1,vector=0"
            } else {
                "lexical=0.2,vector=1"
            };
            let body = format!(
                "chunk_tokens = 0\nfusion_weights = \"{weights}\"\nbreaker_failures = {}\n",
                3 + round
            );
            std::fs::write(&config, body).expect("config");
            signal(daemon.pid(), Signal::SIGHUP);
            let reloads = round + 1;
            wait_until("the reload is applied", BOUNDED_WAIT, || {
                daemon.stderr_text().matches("SIGHUP: configuration reloaded").count() >= reloads
            });
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(recalls.join().expect("no recall failed") > 200);
    });
    let body = "chunk_tokens = 0\nfusion_weights = \"lexical=1,vector=0,context=0,recency=0,importance=0,preference=0,diversity=0,date=0\"\n";
    std::fs::write(&config, body).expect("config");
    signal(daemon.pid(), Signal::SIGHUP);
    wait_until("the last reload is applied", BOUNDED_WAIT, || {
        daemon.stderr_text().matches("SIGHUP: configuration reloaded").count() >= 7
    });
    let answer = client
        .recall_answer(query("swap", "lake 7", Some(Route::FullPipeline)))
        .expect("answered");
    let why: Vec<&str> = answer.hits[0].why.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(why, ["lexical"], "only the lexical factor weighs now");
}
