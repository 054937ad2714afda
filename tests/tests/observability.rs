//! `/health`, `/metrics` and EXPLAIN over the Postgres protocol.

use prognos_e2e::{Server, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_explain() {
    let server = Server::start_with_demo();
    let (status, body) = http_get(server.http, "/health");
    assert_eq!(status, 200);
    assert!(body.contains("\"ok\""), "{body}");

    let c = server.connect().await;
    c.simple_query("SELECT count(*) FROM customers")
        .await
        .expect("query");
    let _ = c
        .simple_query("SELECT * FROM nope")
        .await
        .expect_err("error");

    let rows = c
        .simple_query("EXPLAIN SELECT plan, count(*) FROM customers GROUP BY plan")
        .await
        .expect("explain");
    let text: String = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(1).map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(text.contains("Aggregate"), "{text}");
    let rows = c
        .query(
            "EXPLAIN ANALYZE SELECT count(*) FROM customers WHERE churned",
            &[],
        )
        .await
        .expect("explain analyze");
    assert!(!rows.is_empty());

    let (status, body) = http_get(server.http, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "prognos_connections{protocol=\"pgwire\"} 1",
        "prognos_queries_total{protocol=\"pgwire\"}",
        "prognos_query_duration_seconds_bucket",
        "prognos_errors_total{protocol=\"pgwire\",sqlstate=\"42P01\"} 1",
    ] {
        assert!(body.contains(needle), "metrics lack {needle}:\n{body}");
    }
    let (status, _) = http_get(server.http, "/nope");
    assert_eq!(status, 404);
}

#[test]
fn sigterm_shuts_down_gracefully_and_bad_config_is_reported() {
    let mut server = Server::start();
    assert!(server.terminate(), "server did not exit cleanly on SIGTERM");

    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "no_such_key = 1\n").expect("write");
    let out = std::process::Command::new(prognos_e2e::prognos_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_key"), "{err}");
}
