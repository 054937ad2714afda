//! Prediction logging, outcomes and live metrics through the real server:
//! `ALTER MODEL m SET LOGGING (sample, key)` fills the model's log table from PREDICT calls
//! (the key taken from the scored relation), only roles granted it read that table,
//! `SET OUTCOMES FROM (...)` joins what happened, and `MODEL_MONITOR('m')` reports live
//! metrics per version that fall when the outcomes stop agreeing with the predictions.

use std::time::{Duration, Instant};

use prognos_e2e::{Server, fails_with, rows_of};

/// `customers`: 400 rows, `churned` = (spend < 50); `churn` learns it.
async fn setup(server: &Server) -> tokio_postgres::Client {
    let c = server.connect().await;
    c.batch_execute(prognos_e2e::CHURN_SETUP)
        .await
        .expect("setup");
    c
}

/// Retrains a rule started that deployed a version.
const RULE_RETRAINS_DEPLOYED: &str = "SELECT count(*) FROM system.model_jobs \
     WHERE model = 'churn' AND trigger = 'rule' AND outcome = 'deployed'";

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Wait until `sql` (a count) reaches `at_least`, as the writer flushes about every second.
async fn wait_for(c: &tokio_postgres::Client, sql: &str, at_least: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(c, sql).await;
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `metric → value` of version `v` over all windows of `MODEL_MONITOR('churn')`, with the
/// numbers of predictions and outcomes.
async fn live(c: &tokio_postgres::Client, v: i64) -> (i64, i64, Vec<(String, f64)>) {
    let rows = c
        .query(
            "SELECT sum(predictions), sum(outcomes), metric, avg(value) \
             FROM MODEL_MONITOR('churn', window => '1 day') WHERE version = $1 \
             GROUP BY metric ORDER BY metric",
            &[&v],
        )
        .await
        .expect("model_monitor");
    let p = rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0);
    let o = rows.first().map(|r| r.get::<_, i64>(1)).unwrap_or(0);
    let m = rows
        .iter()
        .map(|r| (r.get::<_, String>(2), r.get::<_, f64>(3)))
        .collect();
    (p, o, m)
}

fn metric(m: &[(String, f64)], name: &str) -> f64 {
    m.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_predictions_meet_their_outcomes_in_live_metrics() {
    let server = Server::start();
    let c = setup(&server).await;

    // Nothing to monitor yet: clear errors.
    let msg = fails_with(&c, "SELECT * FROM MODEL_MONITOR('churn')", "22023").await;
    assert!(msg.contains("SET LOGGING"), "{msg}");
    fails_with(&c, "ALTER MODEL churn SET LOGGING (sample = 0)", "22023").await;
    fails_with(&c, "ALTER MODEL churn SET LOGGING (sample = 2)", "22023").await;
    fails_with(&c, "ALTER MODEL churn SET LOGGING (rate = 1)", "22023").await;
    fails_with(&c, "ALTER MODEL churn SET LOGGING sample = 1", "42601").await;
    fails_with(&c, "ALTER MODEL nope SET LOGGING (sample = 1)", "42704").await;

    c.batch_execute("ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id')")
        .await
        .expect("set logging");
    // The log table exists at once, typed after the model.
    let columns: Vec<String> = c
        .query(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_name = 'churn_predictions' ORDER BY ordinal_position",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        [
            "ts",
            "version",
            "key",
            "spend",
            "visits",
            "prediction",
            "scores"
        ]
    );

    // Scalar PREDICT and the relation form both log, with the key of the scored rows; the
    // result column keeps its name.
    let scored = c
        .simple_query(
            "SELECT customer_id, PREDICT('churn', spend, visits) FROM customers \
             WHERE customer_id <= 300",
        )
        .await
        .expect("predict");
    assert_eq!(rows_of(&scored).len(), 300);
    let names = c
        .prepare("SELECT PREDICT('churn', spend, visits) FROM customers")
        .await
        .expect("prepare");
    assert_eq!(names.columns()[0].name(), "predict");
    c.simple_query(
        "SELECT count(predicted_churned) FROM \
         PREDICT('churn', (SELECT * FROM customers WHERE customer_id > 300))",
    )
    .await
    .expect("predict relation");
    let logged = wait_for(&c, "SELECT count(*) FROM churn_predictions", 400).await;
    assert_eq!(logged, 400, "every scored row logged at sample = 1");
    // Each logged row: its key, version 1, its inputs and the prediction PREDICT gave.
    let mismatched = count(
        &c,
        "SELECT count(*) FROM churn_predictions l JOIN customers t \
         ON l.key = CAST(t.customer_id AS VARCHAR) \
         WHERE l.version <> 1 OR l.spend <> t.spend OR l.visits <> t.visits \
            OR l.prediction <> PREDICT('churn', t.spend, t.visits) \
            OR array_length(l.scores) IS NULL",
    )
    .await;
    assert_eq!(mismatched, 0);
    assert_eq!(
        count(&c, "SELECT count(DISTINCT key) FROM churn_predictions").await,
        400
    );

    // Only roles granted it read the log.
    c.batch_execute("CREATE USER analyst; GRANT USAGE ON MODEL churn TO analyst")
        .await
        .expect("user");
    let analyst = server.connect_as("analyst").await;
    fails_with(&analyst, "SELECT count(*) FROM churn_predictions", "42501").await;
    fails_with(&analyst, "ALTER MODEL churn RESET LOGGING", "42501").await;

    // Outcomes: what happened, by key. First the truth: live accuracy matches the model's.
    c.batch_execute(
        "CREATE TABLE outcomes AS SELECT customer_id, churned, now() AS ts FROM customers",
    )
    .await
    .expect("outcomes");
    fails_with(
        &c,
        "ALTER MODEL churn SET OUTCOMES FROM (SELECT customer_id, churned FROM outcomes)",
        "42703",
    )
    .await;
    c.batch_execute(
        "ALTER MODEL churn SET OUTCOMES FROM \
         (SELECT customer_id AS key, churned AS actual, ts FROM outcomes)",
    )
    .await
    .expect("set outcomes");
    // The check above scored (and logged) the customers again: let the writer catch up.
    let logged = wait_for(&c, "SELECT count(*) FROM churn_predictions", 800).await;
    assert_eq!(logged, 800);
    let (p, o, good) = live(&c, 1).await;
    assert_eq!((p, o), (800, 800));
    assert!(metric(&good, "auc") > 0.95, "{good:?}");
    assert_eq!(metric(&good, "rows"), 800.0);

    // The world changes: half the customers do the opposite of what was predicted.
    c.batch_execute(
        "INSERT OVERWRITE outcomes SELECT customer_id, \
             CASE WHEN customer_id % 2 = 0 THEN NOT churned ELSE churned END, now() \
         FROM customers",
    )
    .await
    .expect("drift");
    let (_, _, bad) = live(&c, 1).await;
    assert!(
        metric(&bad, "auc") < metric(&good, "auc") - 0.3,
        "{good:?} -> {bad:?}"
    );

    // Sampling: about a tenth of the rows.
    c.batch_execute(
        "ALTER MODEL churn SET LOGGING (sample = 0.1, key = 'customer_id'); \
         CREATE TABLE many AS SELECT value AS customer_id, CAST(value % 100 AS DOUBLE) AS spend, \
             1.0 AS visits FROM generate_series(1, 20000)",
    )
    .await
    .expect("sample 0.1");
    let before = count(&c, "SELECT count(*) FROM churn_predictions").await;
    c.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM many")
        .await
        .expect("predict many");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sampled = count(&c, "SELECT count(*) FROM churn_predictions").await - before;
    assert!(
        (1600..=2400).contains(&sampled),
        "{sampled} of 20000 logged"
    );

    // RESET LOGGING stops it; the table stays.
    c.batch_execute("ALTER MODEL churn RESET LOGGING")
        .await
        .expect("reset");
    let before = count(&c, "SELECT count(*) FROM churn_predictions").await;
    c.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM many")
        .await
        .expect("predict unlogged");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM churn_predictions").await,
        before
    );
    let msg = fails_with(&c, "SELECT * FROM MODEL_MONITOR('churn')", "22023").await;
    assert!(msg.contains("prediction log"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_at_most_max_rows_and_survives_a_restart() {
    let mut server = Server::start();
    let c = setup(&server).await;
    c.batch_execute(
        "ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id', \
             table = 'audit_churn', max_rows = 500)",
    )
    .await
    .expect("set logging");
    for _ in 0..4 {
        c.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM customers")
            .await
            .expect("predict");
        // One flush per call, so the table holds one file per call.
        tokio::time::sleep(Duration::from_millis(1600)).await;
    }
    let kept = wait_for(&c, "SELECT count(*) FROM audit_churn", 400).await;
    assert_eq!(kept, 400, "the newest whole files within max_rows = 500");
    drop(c);
    server.kill_and_restart();
    let c = server.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM audit_churn").await, 400);
    // Logging is still on after the restart; the next call's file replaces the older ones.
    let newest_before: i64 = c
        .query_one("SELECT CAST(max(ts) AS BIGINT) FROM audit_churn", &[])
        .await
        .expect("max ts")
        .get(0);
    c.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM customers")
        .await
        .expect("predict");
    let deadline = Instant::now() + Duration::from_secs(30);
    let newer =
        format!("SELECT count(*) FROM audit_churn WHERE CAST(ts AS BIGINT) > {newest_before}");
    while count(&c, &newer).await < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&c, &newer).await, 400);
    assert_eq!(count(&c, "SELECT count(*) FROM audit_churn").await, 400);
}

/// A one-shot HTTP receiver: the body of the first POST it gets, answered `204`.
async fn webhook_receiver() -> (String, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head, then as many body bytes as Content-Length says.
        loop {
            let Ok(n) = socket.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    let _ = socket
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    let _ = tx.send(format!("{head}\n\n{body}"));
                    return;
                }
            }
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_drop_rolls_the_model_back_and_posts_the_alert() {
    let (url, posted) = webhook_receiver().await;
    let server = Server::start_with(
        false,
        vec![
            ("PROGNOS__MODELS__ALERT_WEBHOOK".into(), url),
            ("PROGNOS__MODELS__RULE_CHECK_SECONDS".into(), "1".into()),
        ],
    );
    let c = setup(&server).await;
    // Version 2 is deployed; version 1 is what a rollback returns to.
    c.batch_execute(
        "CREATE OR REPLACE MODEL churn PREDICT churned USING gbdt WITH (gate = 'none') \
             AS SELECT spend, visits, churned FROM customers; \
         CREATE TABLE outcomes AS SELECT customer_id, churned, now() AS ts FROM customers",
    )
    .await
    .expect("second version");
    // A rule needs the log and the outcomes first.
    let msg = fails_with(
        &c,
        "ALTER MODEL churn SET ROLLBACK WHEN live_auc < 0.7",
        "55000",
    )
    .await;
    assert!(msg.contains("SET LOGGING"), "{msg}");
    c.batch_execute(
        "ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id'); \
         ALTER MODEL churn SET OUTCOMES FROM \
             (SELECT customer_id AS key, churned AS actual, ts FROM outcomes)",
    )
    .await
    .expect("logging");
    fails_with(&c, "ALTER MODEL churn SET ROLLBACK WHEN auc < 0.7", "22023").await;
    fails_with(
        &c,
        "ALTER MODEL churn SET ROLLBACK WHEN live_nonsense < 0.7",
        "22023",
    )
    .await;
    fails_with(
        &c,
        "ALTER MODEL churn SET ROLLBACK WHEN live_auc < 0.7 OVER 'soon'",
        "22023",
    )
    .await;
    c.batch_execute("ALTER MODEL churn SET ROLLBACK WHEN live_auc < 0.7 OVER '1 hour'")
        .await
        .expect("rule");
    c.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM customers")
        .await
        .expect("predict");
    wait_for(&c, "SELECT count(*) FROM churn_predictions", 400).await;
    // While the outcomes agree, nothing happens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deployed = "SELECT version FROM system.model_versions \
                    WHERE name = 'churn' AND state = 'deployed'";
    assert_eq!(count(&c, deployed).await, 2);

    // The outcomes turn: every prediction is now wrong, and live AUC falls far below 0.7.
    let dropped_at = Instant::now();
    c.batch_execute(
        "INSERT OVERWRITE outcomes SELECT customer_id, NOT churned, now() FROM customers",
    )
    .await
    .expect("drop");
    let body = tokio::time::timeout(Duration::from_secs(30), posted)
        .await
        .expect("the webhook is called within 30 s")
        .expect("a body");
    let rolled_back_in = dropped_at.elapsed();
    assert!(body.starts_with("POST /alerts"), "{body}");
    let json = body.split("\n\n").nth(1).unwrap_or_default();
    let alert: serde_json::Value = serde_json::from_str(json).expect(json);
    assert_eq!(alert["model"], "churn");
    assert_eq!(alert["action"], "rollback");
    assert_eq!(alert["from_version"], 2);
    assert_eq!(alert["to_version"], 1);
    assert!(
        alert["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("live_auc"),
        "{alert}"
    );
    // The registry says so, with the reason, and /metrics counts it.
    assert_eq!(count(&c, deployed).await, 1);
    let row = c
        .query_one(
            "SELECT state, state_changed_by, state_reason FROM system.model_versions \
             WHERE name = 'churn' AND version = 2",
            &[],
        )
        .await
        .expect("version 2");
    assert_eq!(row.get::<_, String>(0), "retired");
    assert_eq!(row.get::<_, String>(1), "system");
    let reason: String = row.get(2);
    assert!(reason.contains("ROLLBACK WHEN live_auc < 0.7"), "{reason}");
    let (status, metrics) = prognos_e2e::http_get(server.http, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("prognos_model_alerts_total{action=\"rollback\",model=\"churn\"} 1"),
        "{metrics}"
    );
    eprintln!("outcome drop to rollback: {rolled_back_in:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_metric_rule_retrains_the_model_once_per_window() {
    let server = Server::start_with(
        false,
        vec![("PROGNOS__MODELS__RULE_CHECK_SECONDS".into(), "1".into())],
    );
    let c = setup(&server).await;
    c.batch_execute(
        "CREATE TABLE outcomes AS SELECT customer_id, NOT churned AS churned, now() AS ts \
             FROM customers; \
         ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id'); \
         ALTER MODEL churn SET OUTCOMES FROM \
             (SELECT customer_id AS key, churned AS actual, ts FROM outcomes); \
         ALTER MODEL churn SET RETRAIN WHEN live_accuracy < 0.5 AND live_rows >= 300",
    )
    .await
    .expect("rule");
    // Too few outcomes: 200 predictions logged, the rule waits for 300.
    c.simple_query(
        "SELECT max(PREDICT('churn', spend, visits)) FROM customers WHERE customer_id <= 200",
    )
    .await
    .expect("predict");
    wait_for(&c, "SELECT count(*) FROM churn_predictions", 200).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = "SELECT count(*) FROM system.model_jobs WHERE model = 'churn' AND trigger = 'rule'";
    assert_eq!(count(&c, jobs).await, 0);
    // Every outcome contradicts the predictions: the rule fires, once.
    c.simple_query(
        "SELECT max(PREDICT('churn', spend, visits)) FROM customers WHERE customer_id > 200",
    )
    .await
    .expect("predict");
    assert_eq!(wait_for(&c, RULE_RETRAINS_DEPLOYED, 1).await, 1);
    assert_eq!(
        count(
            &c,
            "SELECT version FROM system.model_versions WHERE name = 'churn' AND state = 'deployed'"
        )
        .await,
        2
    );
    // The new version has no outcomes yet, and the window has not passed: no second run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&c, jobs).await, 1);
    c.batch_execute("ALTER MODEL churn RESET RETRAIN")
        .await
        .expect("reset");
    let rules: i64 = count(
        &c,
        "SELECT count(*) FROM system.model_jobs WHERE model = 'churn'",
    )
    .await;
    assert_eq!(rules, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_in_the_logged_inputs_retrains_the_model() {
    let server = Server::start_with(
        false,
        vec![("PROGNOS__MODELS__RULE_CHECK_SECONDS".into(), "1".into())],
    );
    let c = setup(&server).await;
    // A drift rule needs the log, not outcomes.
    let said = fails_with(
        &c,
        "ALTER MODEL churn SET RETRAIN WHEN drift > 0.5",
        "55000",
    )
    .await;
    assert!(said.contains("SET LOGGING"), "{said}");
    c.batch_execute(
        "ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id'); \
         ALTER MODEL churn SET RETRAIN WHEN drift > 0.5",
    )
    .await
    .expect("a drift rule without outcomes");
    let said = fails_with(
        &c,
        "ALTER MODEL churn SET RETRAIN WHEN drifts > 0.5",
        "22023",
    )
    .await;
    assert!(said.contains("drift"), "{said}");
    // Inputs like the training data: no drift, no retrain.
    c.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM customers")
        .await
        .expect("predict");
    wait_for(&c, "SELECT count(*) FROM churn_predictions", 400).await;
    let calm: f64 = c
        .query_one(
            "SELECT max(psi) FROM DRIFT('churn', (SELECT * FROM churn_predictions))",
            &[],
        )
        .await
        .expect("drift of the log")
        .get(0);
    assert!(calm < 0.1, "drift of inputs like training: {calm}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = "SELECT count(*) FROM system.model_jobs WHERE model = 'churn' AND trigger = 'rule'";
    assert_eq!(count(&c, jobs).await, 0);
    // Spend far above anything seen in training: the rule fires and retrains once.
    c.simple_query(
        "SELECT max(PREDICT('churn', spend + 500, visits)) FROM customers \
         WHERE customer_id <= 300",
    )
    .await
    .expect("predict shifted");
    assert_eq!(wait_for(&c, RULE_RETRAINS_DEPLOYED, 1).await, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&c, jobs).await,
        1,
        "the new version has no logged rows yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stores_values_as_the_caller_saw_them_and_refuses_bad_setups() {
    let server = Server::start();
    let c = setup(&server).await;
    let set = "ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id')";
    // It makes a table: not inside a transaction block.
    c.batch_execute("BEGIN").await.expect("begin");
    fails_with(&c, set, "42000").await;
    c.batch_execute("ROLLBACK").await.expect("rollback");
    // A table of the log's name that is not a log.
    c.batch_execute("CREATE TABLE churn_predictions (x INT)")
        .await
        .expect("clash");
    let said = fails_with(&c, set, "42P07").await;
    assert!(said.contains("churn_predictions"), "{said}");
    // Another table, named; a role that sees spend redacted scores the model.
    c.batch_execute(
        "ALTER MODEL churn SET LOGGING (sample = 1, key = 'customer_id', \
             table = 'public.churn_log'); \
         CREATE MASKING POLICY spend_hidden ON customers (spend) USING redact; \
         CREATE USER low; GRANT SELECT ON customers TO low; GRANT USAGE ON MODEL churn TO low",
    )
    .await
    .expect("log and policy");
    let low = server.connect_as("low").await;
    low.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM customers")
        .await
        .expect("low predicts");
    assert_eq!(
        wait_for(&c, "SELECT count(*) FROM churn_log", 400).await,
        400
    );
    let shown = "SELECT count(*) FROM churn_log WHERE spend IS NOT NULL AND spend <> 0";
    assert_eq!(count(&c, shown).await, 0, "the log holds what low saw");
    // The superuser sees spend, and so does its log.
    c.simple_query("SELECT max(PREDICT('churn', spend, visits)) FROM customers")
        .await
        .expect("superuser predicts");
    assert_eq!(
        wait_for(&c, "SELECT count(*) FROM churn_log", 800).await,
        800
    );
    assert!(count(&c, shown).await > 300);
}
