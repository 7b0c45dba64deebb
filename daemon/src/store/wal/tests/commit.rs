//! The writer: group commit, LSN order, fsync policies, rotation and segment removal,
//! shutdown, restart, configuration.
//!
//! Not here: injected I/O failures (faults.rs), damaged logs (recovery.rs).

use std::sync::Arc;
use std::time::Duration;

use super::super::{
    FaultyFs, FsyncPolicy, MAX_PAYLOAD_BYTES, RealFs, Wal, WalConfig, WalError, WalFs, measure_fdatasync,
};
use super::support::{
    Outcome, Recorder, TempDir, WATCHDOG, append_and_flush, check_replay, config, expected, payload, start,
    wait_for_outcomes,
};

/// The same round trip against each `WalFs` (the conformance suite of the trait).
fn backends() -> Vec<(&'static str, Arc<dyn WalFs>)> {
    vec![("RealFs", Arc::new(RealFs)), ("FaultyFs", Arc::new(FaultyFs::new()))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_in_lsn_order_on_every_backend() {
    for (name, fs) in backends() {
        let dir = TempDir::new(name);
        // Groups smaller than some records: a big record must still go through alone.
        let config = WalConfig {
            max_group_bytes: 256,
            ..config(&dir)
        };
        let (wal, outcomes) = start(config, Arc::clone(&fs), 1);
        append_and_flush(&wal, &outcomes, 1..=40).await;
        wal.append(vec![7; 100_000], 41).await.unwrap();
        assert_eq!(wal.shutdown().unwrap(), 41, "{name}");
        let mut all = expected(1..=40);
        all.push((41, vec![7; 100_000]));
        check_replay(&dir, 0, &all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fdatasyncs() {
    const RECORDS: u64 = 400;
    let dir = TempDir::new("group");
    let (recorder, outcomes, release) = Recorder::gated();
    let wal = Arc::new(Wal::start(config(&dir), Arc::new(RealFs), 1, recorder).unwrap());
    // The writer stalls in the first ack while every other append queues up.
    let tasks: Vec<_> = (0..RECORDS)
        .map(|ticket| {
            let wal = Arc::clone(&wal);
            tokio::spawn(async move { wal.append(payload(ticket), ticket).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    release.send(()).unwrap();
    let durable_lsn = wal.flush().await.unwrap();
    assert_eq!(durable_lsn, RECORDS);
    let seen = outcomes.lock().unwrap().clone();
    let lsns: Vec<u64> = seen
        .iter()
        .map(|o| if let Outcome::Durable { lsn, .. } = o { *lsn } else { 0 })
        .collect();
    assert_eq!(
        lsns,
        (1..=RECORDS).collect::<Vec<_>>(),
        "acks in LSN order, none failed"
    );
    let stats = wal.stats();
    assert!(
        stats.fsyncs < RECORDS / 10,
        "{} fsyncs for {RECORDS} records",
        stats.fsyncs
    );
    assert!(stats.groups < RECORDS / 10, "{} groups", stats.groups);
    assert_eq!(
        (stats.records_acked, stats.acked_lsn, stats.durable_lsn),
        (RECORDS, RECORDS, RECORDS)
    );
    assert!(
        stats.group_records.iter().any(|&(upper, _)| upper > 64),
        "{:?}",
        stats.group_records
    );
    assert!(!stats.fsync_latency_ns.is_empty());
    Arc::into_inner(wal).unwrap().shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_policy_acks_before_syncing() {
    let dir = TempDir::new("interval-long");
    let config = WalConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        ..config(&dir)
    };
    let (wal, outcomes) = start(config, Arc::new(RealFs), 1);
    let fsyncs_at_start = wal.stats().fsyncs;
    for lsn in 1..=10 {
        wal.append(payload(lsn), lsn).await.unwrap();
    }
    wait_for_outcomes(&outcomes, 10);
    let stats = wal.stats();
    assert_eq!(
        (stats.acked_lsn, stats.fsyncs),
        (10, fsyncs_at_start),
        "acked after the write, not synced"
    );
    assert_eq!(wal.flush().await.unwrap(), 10);
    assert_eq!(wal.stats().fsyncs, fsyncs_at_start + 1);
    wal.shutdown().unwrap();
    check_replay(&dir, 0, &expected(1..=10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_policy_syncs_when_the_interval_passes() {
    let dir = TempDir::new("interval-short");
    let config = WalConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
        ..config(&dir)
    };
    let (wal, outcomes) = start(config, Arc::new(RealFs), 1);
    wal.append(payload(1), 1).await.unwrap();
    wait_for_outcomes(&outcomes, 1);
    let started = std::time::Instant::now();
    while wal.stats().durable_lsn < 1 {
        assert!(started.elapsed() < WATCHDOG, "hung: the interval sync never ran");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wal.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_policy_syncs_only_on_flush() {
    let dir = TempDir::new("never");
    let config = WalConfig {
        fsync: FsyncPolicy::Never,
        ..config(&dir)
    };
    let (wal, outcomes) = start(config, Arc::new(RealFs), 1);
    let fsyncs_at_start = wal.stats().fsyncs;
    for lsn in 1..=5 {
        wal.append(payload(lsn), lsn).await.unwrap();
    }
    wait_for_outcomes(&outcomes, 5);
    assert_eq!((wal.stats().durable_lsn, wal.stats().fsyncs), (0, fsyncs_at_start));
    assert_eq!(wal.flush().await.unwrap(), 5);
    assert_eq!(wal.flush().await.unwrap(), 5, "nothing new: no second sync");
    assert_eq!(wal.stats().fsyncs, fsyncs_at_start + 1);
    wal.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue() {
    let dir = TempDir::new("drain");
    let (wal, outcomes) = start(config(&dir), Arc::new(RealFs), 1);
    for lsn in 1..=100 {
        wal.append(payload(lsn), lsn).await.unwrap();
    }
    assert_eq!(wal.shutdown().unwrap(), 100);
    assert_eq!(outcomes.lock().unwrap().len(), 100);
    check_replay(&dir, 0, &expected(1..=100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_removal_of_covered_segments() {
    let dir = TempDir::new("rotate");
    let config = WalConfig {
        segment_bytes: 4096,
        max_group_bytes: 1024,
        ..config(&dir)
    };
    let (wal, outcomes) = start(config, Arc::new(RealFs), 1);
    append_and_flush(&wal, &outcomes, 1..=60).await;
    let info = wal.rotate().await.unwrap();
    assert!(info.sealed.len() >= 3, "{info:?}");
    assert!(
        info.sealed.iter().all(|s| s.bytes <= 4096),
        "rotation keeps segments within segment_bytes"
    );
    assert_eq!(info.active_first_lsn, 61);
    assert_eq!(info.sealed.last().unwrap().last_lsn, 60);
    for pair in info.sealed.windows(2) {
        assert_eq!(
            pair[0].last_lsn + 1,
            pair[1].first_lsn,
            "sealed segments are contiguous"
        );
    }
    let stats = wal.stats();
    assert_eq!(stats.segments, info.sealed.len() as u64 + 1);
    assert!(
        stats.dir_syncs >= stats.segments,
        "the directory is synced after each segment is created"
    );
    let again = wal.rotate().await.unwrap();
    assert_eq!(again.sealed, info.sealed, "rotating an empty segment changes nothing");

    let covered = &info.sealed[..2];
    let checkpoint = covered[1].last_lsn;
    let freed = wal.remove_segments_up_to(checkpoint).unwrap();
    assert_eq!(freed, covered.iter().map(|s| s.bytes).sum::<u64>());
    assert!(covered.iter().all(|s| !s.path.exists()));
    assert!(info.sealed[2].path.exists());
    assert_eq!(wal.remove_segments_up_to(checkpoint).unwrap(), 0, "idempotent");
    append_and_flush(&wal, &outcomes, 61..=62).await;
    wal.shutdown().unwrap();
    let report = check_replay(&dir, checkpoint, &expected(checkpoint + 1..=62));
    assert_eq!(report.last_lsn, 62);
    let missing = super::support::replay_all(dir.path(), &RealFs, 0, false).unwrap_err();
    assert!(
        matches!(missing, WalError::Corrupt { .. }),
        "records before the checkpoint are gone: {missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_the_log() {
    let dir = TempDir::new("restart");
    let (wal, outcomes) = start(config(&dir), Arc::new(RealFs), 1);
    append_and_flush(&wal, &outcomes, 1..=3).await;
    wal.shutdown().unwrap();
    let report = check_replay(&dir, 0, &expected(1..=3));
    // A run that appends nothing leaves an empty segment named after its first LSN;
    // the next start at that LSN replaces it.
    let (idle, _) = start(config(&dir), Arc::new(RealFs), report.last_lsn + 1);
    idle.shutdown().unwrap();
    let (wal, outcomes) = start(config(&dir), Arc::new(RealFs), report.last_lsn + 1);
    append_and_flush(&wal, &outcomes, 4..=5).await;
    let stats = wal.stats();
    assert_eq!(stats.segments, 2, "{stats:?}");
    wal.shutdown().unwrap();
    check_replay(&dir, 0, &expected(1..=5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_an_lsn_behind_the_log() {
    let dir = TempDir::new("conflict");
    let (wal, outcomes) = start(config(&dir), Arc::new(RealFs), 1);
    append_and_flush(&wal, &outcomes, 1..=3).await;
    wal.shutdown().unwrap();
    for next_lsn in [1, 0] {
        let (recorder, _) = Recorder::new();
        let refused = Wal::start(config(&dir), Arc::new(RealFs), next_lsn, recorder).unwrap_err();
        assert!(
            matches!(refused, WalError::LsnConflict { .. } | WalError::InvalidConfig(_)),
            "{refused}"
        );
    }
    check_replay(&dir, 0, &expected(1..=3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload_is_refused_without_touching_the_log() {
    let dir = TempDir::new("oversized");
    let (wal, outcomes) = start(config(&dir), Arc::new(RealFs), 1);
    let refused = wal.append(vec![0; MAX_PAYLOAD_BYTES + 1], 1).await.unwrap_err();
    assert!(matches!(refused, WalError::PayloadTooLarge { .. }), "{refused}");
    assert_eq!(wal.flush().await.unwrap(), 0);
    assert!(outcomes.lock().unwrap().is_empty());
    wal.shutdown().unwrap();
}

#[test]
fn wal_handle_is_send_and_sync() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Wal<u64>>();
    shareable::<Arc<Wal<u64>>>();
}

#[test]
fn fsync_policy_parses_and_explains_bad_input() {
    assert_eq!("always".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Always);
    assert_eq!("never".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Never);
    assert_eq!(
        "interval:10".parse::<FsyncPolicy>().unwrap(),
        FsyncPolicy::Interval(Duration::from_millis(10))
    );
    for bad in [
        "",
        "sometimes",
        "interval:",
        "interval:0",
        "interval:-1",
        "interval:99999999",
        "Always",
    ] {
        let error = bad.parse::<FsyncPolicy>().unwrap_err();
        assert!(error.to_string().contains("interval:<ms>"), "{bad}: {error}");
    }
}

#[test]
fn config_out_of_range_is_refused() {
    let dir = TempDir::new("config");
    let bad_configs = [
        WalConfig {
            segment_bytes: 10,
            ..config(&dir)
        },
        WalConfig {
            max_group_bytes: 0,
            ..config(&dir)
        },
        WalConfig {
            queue_depth: 0,
            ..config(&dir)
        },
    ];
    for bad in bad_configs {
        let (recorder, _) = Recorder::new();
        let refused = Wal::start(bad, Arc::new(RealFs), 1, recorder).unwrap_err();
        assert!(matches!(refused, WalError::InvalidConfig(_)), "{refused}");
    }
}

#[test]
fn measure_fdatasync_times_each_sample_and_cleans_up() {
    let dir = TempDir::new("probe");
    let samples = measure_fdatasync(dir.path(), 3).unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch file removed"
    );
}
