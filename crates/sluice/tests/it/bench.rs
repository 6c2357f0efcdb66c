//! `sluice bench` works end to end (its figures are measured, never asserted: see BENCHMARKS.md).

use crate::helpers::{spawn_app_with, Db};
use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_a_running_instance_with_access_control_and_reports() {
    // The bench's webhook sink listens on loopback.
    let app = spawn_app_with(
        Db::Sqlite,
        &["--webhook-allow-private", "true", "--auth", "api_key"],
    )
    .await
    .unwrap();
    let key = app.create_key("bench", &["admin"]).await;
    // Parsed as the command line would be, so a new flag needs no change here.
    let url = app.url("");
    let cli = sluice::cli::Cli::try_parse_from([
        "sluice",
        "bench",
        "--url",
        url.as_str(),
        "--events",
        "300",
        "--concurrency",
        "8",
        "--duplicates",
        "0.1",
        "--actions",
        "log,noop,webhook",
        "--timeout-secs",
        "120",
        "--json",
        "--api-key",
        key.as_str(),
        "--ordering-keys",
        "20",
        // Every posted event must match the typical schema (no errors below).
        "--schema",
    ])
    .expect("the bench's flags parse");
    let sluice::cli::Command::Bench(args) = cli.command else {
        panic!("not the bench command: {:?}", cli.command);
    };
    let report = sluice::bench::bench(args).await.unwrap();
    assert_eq!(report.events_sent, 300);
    assert!(
        report.unique_events < 300 && report.unique_events > 200,
        "{report:?}"
    );
    assert_eq!(report.processed, report.unique_events);
    assert_eq!(report.failed, 0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.webhooks_received, report.unique_events);
    assert!(report.latency_ms_p50 <= report.latency_ms_p99);
    assert!(
        report.server_peak_rss_mb.is_none(),
        "not spawned: no memory figure"
    );
    app.stop().await;
}

#[test]
fn bench_spawns_its_own_server_with_a_key_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "bench",
            "--spawn",
            "--events",
            "500",
            "--json",
            "--actions",
            "log",
            "--auth",
        ])
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("bench.db").display()
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["processed"], 500);
    assert!(report["server_peak_rss_mb"].as_f64().unwrap() > 1.0);
    assert!(report["ingest_rate"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_builds_a_history_and_times_reads_at_each_size() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "bench",
            "--spawn",
            "--history",
            "400,200",
            "--json",
            "--auth",
        ])
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("history.db").display()
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sizes = report["sizes"].as_array().unwrap();
    let events: Vec<u64> = sizes
        .iter()
        .map(|s| s["events"].as_u64().unwrap())
        .collect();
    assert_eq!(events, [200, 400], "sizes are built smallest first");
    for size in sizes {
        assert_eq!(size["reads"].as_array().unwrap().len(), 11, "{size}");
        assert!(size["fresh_drain_rate"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn the_webhook_bench_measures_a_receiver_then_sluice_delivering_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "bench",
            "--spawn",
            "--webhooks",
            "--events",
            "300",
            "--receiver-delay-ms",
            "2",
            "--steady-secs",
            "1",
            "--dead-events",
            "100",
            "--dead-secs",
            "1",
            "--json",
        ])
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("bench.db").display()
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["capacity"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["backlog_rate"].as_f64().unwrap() > 0.0, "{report}");
    // One execution per delivered event, nothing deferred, nothing written while waiting
    // (the probe comes after TARGET_OPEN_MS, 30 s).
    assert_eq!(report["backlog_executions_per_event"], 1.0, "{report}");
    assert_eq!(report["backlog_deferred"], 0, "{report}");
    assert_eq!(report["steady_executions_per_event"], 1.0, "{report}");
    assert_eq!(report["dead_rows_written"], 0, "{report}");
    assert!(report["healthy_p99_ms"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn the_sources_bench_compares_signed_webhooks_and_drains_both_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bench", "--spawn", "--sources", "--events", "200", "--json"])
        .args(["--timeout-secs", "60"])
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("bench.db").display()
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["plain_rates"].as_array().unwrap().len(),
        5,
        "{report}"
    );
    assert!(report["verified_ratio"].as_f64().unwrap() > 0.0, "{report}");
    if std::env::var("CI").is_ok() {
        // The brokers run in CI: both are measured.
        assert!(report["nats_rate"].as_f64().is_some(), "{report}");
        assert!(report["rabbitmq_rate"].as_f64().is_some(), "{report}");
    }
}
