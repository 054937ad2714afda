//! Serving through the real server: per-model series on `/metrics` (calls, rows, latency,
//! errors, live metrics, drift, retrain runs, process CPU and memory), `ALTER MODEL m SET
//! FALLBACK 'other'` answering when the model cannot, and the prediction cache of `SET CACHE`.

use std::time::{Duration, Instant};

use prognos_e2e::{Server, fails_with, rows_of};

/// `customers` (400 rows, `churned` = spend < 50), `churn` and `churn_backup` learning it.
async fn setup(server: &Server) -> tokio_postgres::Client {
    let c = server.connect().await;
    c.batch_execute(prognos_e2e::CHURN_SETUP)
        .await
        .expect("setup");
    c.batch_execute(
        "CREATE MODEL churn_backup PREDICT churned USING logistic WITH (gate = 'none') \
             AS SELECT spend, visits, churned FROM customers",
    )
    .await
    .expect("setup");
    c
}

/// The value of the `/metrics` series whose line starts with `series` (name and labels as
/// Prometheus prints them, labels sorted).
fn series(server: &Server, series: &str) -> Option<f64> {
    let (status, text) = prognos_e2e::http_get(server.http, "/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Wait until `series` exists and satisfies `ok` (the monitor publishes once a second here).
fn wait_series(server: &Server, name: &str, ok: impl Fn(f64) -> bool) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = series(server, name);
        if v.is_some_and(&ok) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_per_model_and_version() {
    let server = Server::start_with(
        false,
        vec![("PROGNOS__MODELS__RULE_CHECK_SECONDS".into(), "1".into())],
    );
    let c = setup(&server).await;
    c.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM customers")
        .await
        .expect("predict");
    let labels = "{model=\"churn\",version=\"1\"}";
    assert_eq!(
        series(&server, &format!("prognos_model_rows_scored_total{labels}")),
        Some(400.0)
    );
    let calls = series(&server, &format!("prognos_model_calls_total{labels}")).expect("calls");
    assert!(calls >= 1.0, "{calls}");
    assert_eq!(
        series(
            &server,
            &format!("prognos_model_call_duration_seconds_count{labels}")
        ),
        Some(calls)
    );
    assert!(
        series(&server, "prognos_process_resident_memory_bytes").is_some_and(|v| v > 1e6),
        "process memory"
    );
    // Whole seconds: present, if possibly still 0.
    assert!(series(&server, "prognos_process_cpu_seconds_total").is_some());
    // Live metrics and drift of the deployed version, from the log and the outcomes.
    c.batch_execute(
        "CREATE TABLE outcomes AS SELECT customer_id, churned, now() AS ts FROM customers; \
         ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id'); \
         ALTER MODEL churn SET OUTCOMES FROM \
             (SELECT customer_id AS key, churned AS actual, ts FROM outcomes)",
    )
    .await
    .expect("monitoring");
    c.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM customers")
        .await
        .expect("predict");
    let auc = wait_series(
        &server,
        "prognos_model_live_metric{metric=\"auc\",model=\"churn\",version=\"1\"}",
        |_| true,
    );
    assert!(auc.is_some_and(|a| a > 0.95), "live auc {auc:?}");
    let rows = wait_series(
        &server,
        "prognos_model_live_metric{metric=\"rows\",model=\"churn\",version=\"1\"}",
        |n| n >= 400.0,
    );
    assert_eq!(rows, Some(400.0));
    let psi = wait_series(
        &server,
        "prognos_model_drift_psi{feature=\"spend\",model=\"churn\",version=\"1\"}",
        |_| true,
    );
    assert!(
        psi.is_some_and(|p| p < 0.1),
        "drift of training-like inputs {psi:?}"
    );
    // Retrain runs by trigger and outcome.
    c.batch_execute("RETRAIN MODEL churn")
        .await
        .expect("retrain");
    assert_eq!(
        series(
            &server,
            "prognos_model_retrains_total{model=\"churn\",outcome=\"deployed\",trigger=\"manual\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_model_answers_when_the_model_cannot() {
    let mut server = Server::start();
    let c = setup(&server).await;
    // What may stand in.
    let said = fails_with(&c, "ALTER MODEL churn SET FALLBACK 'churn'", "22023").await;
    assert!(said.contains("another model"), "{said}");
    fails_with(&c, "ALTER MODEL churn SET FALLBACK 'nothing'", "42704").await;
    c.batch_execute(
        "CREATE MODEL spend_only PREDICT churned USING logistic WITH (gate = 'none') \
             AS SELECT spend, churned FROM customers",
    )
    .await
    .expect("other features");
    let said = fails_with(&c, "ALTER MODEL churn SET FALLBACK 'spend_only'", "22023").await;
    assert!(said.contains("cannot stand in"), "{said}");
    fails_with(&c, "ALTER MODEL churn SET FALLBACK churn_backup", "42601").await;
    c.batch_execute("ALTER MODEL churn SET FALLBACK 'churn_backup'")
        .await
        .expect("fallback");
    let sql = "SELECT customer_id, PREDICT('churn', spend, visits) FROM customers \
               ORDER BY customer_id";
    let backup_sql = "SELECT customer_id, PREDICT('churn_backup', spend, visits) \
                      FROM customers ORDER BY customer_id";
    let primary = rows_of(&c.simple_query(sql).await.expect("primary"));
    let backup = rows_of(&c.simple_query(backup_sql).await.expect("backup"));
    assert_ne!(primary, backup, "the two models must differ for this test");
    drop(c);
    // The model's artifact is damaged: its fallback answers, with a NOTICE, and is counted.
    let artifact = server.data_dir.join("models/churn/v0001/artifact.json");
    std::fs::write(&artifact, b"{\"format_version\": 1, \"garbage").expect("corrupt");
    server.restart();
    let (c, notices) = server.connect_with_notices().await;
    let answered = rows_of(&c.simple_query(sql).await.expect("answered by the fallback"));
    assert_eq!(answered, backup);
    let said = notices.take();
    assert!(
        said.iter()
            .any(|(_, m)| m.contains("\"churn_backup\"") && m.contains("answered instead")),
        "{said:?}"
    );
    assert!(
        series(
            &server,
            "prognos_model_fallbacks_total{fallback=\"churn_backup\",model=\"churn\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );
    // The model's failures are counted as errors (version 0: none could be loaded).
    assert!(
        series(
            &server,
            "prognos_model_errors_total{model=\"churn\",version=\"0\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );
    // Without the fallback, the damage shows.
    c.batch_execute("ALTER MODEL churn RESET FALLBACK")
        .await
        .expect("reset");
    fails_with(&c, sql, "XX001").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prediction_cache_answers_repeated_inputs_of_the_same_version() {
    let server = Server::start();
    let c = setup(&server).await;
    fails_with(&c, "ALTER MODEL churn SET CACHE (entries = 0)", "22023").await;
    fails_with(&c, "ALTER MODEL churn SET CACHE (size = 10)", "22023").await;
    c.batch_execute("ALTER MODEL churn SET CACHE (entries = 100)")
        .await
        .expect("cache");
    let point = "SELECT PREDICT_PROBA('churn', 20.0, 3.0)";
    let first = rows_of(&c.simple_query(point).await.expect("point"));
    for _ in 0..4 {
        assert_eq!(rows_of(&c.simple_query(point).await.expect("again")), first);
    }
    let hits = "prognos_model_cache_hits_total{model=\"churn\",version=\"1\"}";
    assert_eq!(series(&server, hits), Some(4.0));
    // A new version (trained on flipped labels) answers for itself, never from the old cache.
    c.batch_execute(
        "CREATE OR REPLACE MODEL churn PREDICT churned USING gbdt WITH (gate = 'none') \
             AS SELECT spend, visits, NOT churned AS churned FROM customers",
    )
    .await
    .expect("version 2");
    let second = rows_of(&c.simple_query(point).await.expect("version 2"));
    assert_ne!(second, first);
    let p = |r: &[Vec<Option<String>>]| -> f64 {
        r[0][0]
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("probability")
    };
    assert!(
        (p(&first) + p(&second) - 1.0).abs() < 0.2,
        "{first:?} {second:?}"
    );
    assert_eq!(
        rows_of(&c.simple_query(point).await.expect("cached")),
        second
    );
    assert_eq!(
        series(
            &server,
            "prognos_model_cache_hits_total{model=\"churn\",version=\"2\"}"
        ),
        Some(1.0)
    );
    // Without the cache, nothing more is counted.
    c.batch_execute("ALTER MODEL churn RESET CACHE")
        .await
        .expect("reset");
    c.simple_query(point).await.expect("uncached");
    assert_eq!(
        series(
            &server,
            "prognos_model_cache_hits_total{model=\"churn\",version=\"2\"}"
        ),
        Some(1.0)
    );
}
