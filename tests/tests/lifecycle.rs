//! The model lifecycle through the real server: version states, DEPLOY / ROLLBACK / RETIRE /
//! DROP VERSION with their errors, pinned versions (`m@n`), states surviving a `kill -9`, and
//! 16 clients scoring through deployments and rollbacks without an error, each query scored
//! by one version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use prognos_e2e::{Server, fails_with, rows_of, sqlstate};

/// `src`: y = 2x + 1 for x in 1..300; model `m` version 1 learns it, version 2 learns y + 1000.
async fn two_versions(server: &Server) -> tokio_postgres::Client {
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE src AS SELECT CAST(value AS DOUBLE) AS x, \
             CAST(value * 2 + 1 AS DOUBLE) AS y FROM generate_series(1, 300); \
         CREATE MODEL m PREDICT y USING linear AS SELECT x, y FROM src; \
         CREATE OR REPLACE MODEL m PREDICT y USING linear AS SELECT x, y + 1000 AS y FROM src",
    )
    .await
    .expect("setup");
    c
}

/// `(version, state)` of every version of `m`.
async fn states(c: &tokio_postgres::Client) -> Vec<(i64, String)> {
    c.query(
        "SELECT version, state FROM system.model_versions WHERE name = 'm' ORDER BY version",
        &[],
    )
    .await
    .expect("states")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn st(v: &[(i64, &str)]) -> Vec<(i64, String)> {
    v.iter().map(|(n, s)| (*n, s.to_string())).collect()
}

/// Which version scored `PREDICT('name', x)` over all of `src`: 1 or 2 (by the offset of
/// the predictions from 2x), and whether every row was scored by the same one.
async fn scored_by(c: &tokio_postgres::Client, name: &str) -> Result<(i64, bool), String> {
    let sql = format!(
        "SELECT min(PREDICT('{name}', x) - 2 * x), max(PREDICT('{name}', x) - 2 * x) FROM src"
    );
    let row = c
        .query_one(&sql, &[])
        .await
        .map_err(|e| format!("{}: {e}", sqlstate(&e)))?;
    let (lo, hi): (f64, f64) = (row.get(0), row.get(1));
    let version = if hi < 500.0 { 1 } else { 2 };
    Ok((version, (hi - lo) < 500.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_move_through_their_states_and_survive_a_kill() {
    let mut server = Server::start();
    let c = two_versions(&server).await;
    assert_eq!(states(&c).await, st(&[(1, "candidate"), (2, "deployed")]));
    assert_eq!(scored_by(&c, "m").await, Ok((2, true)));
    assert_eq!(scored_by(&c, "m@1").await, Ok((1, true)));
    assert_eq!(scored_by(&c, "m@2").await, Ok((2, true)));

    // Rollback: back to 1, and 2 is retired.
    c.simple_query("ALTER MODEL m ROLLBACK")
        .await
        .expect("rollback");
    assert_eq!(states(&c).await, st(&[(1, "deployed"), (2, "retired")]));
    assert_eq!(scored_by(&c, "m").await, Ok((1, true)));
    let msg = fails_with(&c, "ALTER MODEL m ROLLBACK", "55000").await;
    assert!(msg.contains("no earlier deployed version"), "{msg}");
    // Who changed it, when and why.
    let row = c
        .query_one(
            "SELECT state_changed_by, state_reason, state_changed_at <> '' \
             FROM system.model_versions WHERE name = 'm' AND version = 2",
            &[],
        )
        .await
        .expect("audit columns");
    assert_eq!(row.get::<_, String>(0), "prognos");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("rolled back to version 1")
    );
    assert!(row.get::<_, bool>(2));

    // An explicit deploy brings a retired version back; errors leave everything as it was.
    c.simple_query("ALTER MODEL m DEPLOY VERSION 2")
        .await
        .expect("deploy 2");
    assert_eq!(states(&c).await, st(&[(1, "candidate"), (2, "deployed")]));
    fails_with(&c, "ALTER MODEL m DEPLOY VERSION 2", "55000").await;
    fails_with(&c, "ALTER MODEL m DEPLOY VERSION 9", "42704").await;
    fails_with(&c, "ALTER MODEL m RETIRE VERSION 2", "55000").await;
    fails_with(&c, "DROP MODEL m VERSION 2", "55000").await;
    fails_with(&c, "ALTER MODEL nope ROLLBACK", "42704").await;
    fails_with(&c, "ALTER MODEL m DEPLOY VERSION 0", "42601").await;
    fails_with(&c, "ALTER MODEL m SHIP VERSION 1", "42601").await;
    fails_with(&c, "SELECT PREDICT('m@7', 1.0)", "42704").await;
    assert_eq!(states(&c).await, st(&[(1, "candidate"), (2, "deployed")]));

    // A third version, retired, then dropped: its number is not given again.
    c.batch_execute(
        "CREATE OR REPLACE MODEL m PREDICT y USING linear AS SELECT x, y FROM src; \
         ALTER MODEL m ROLLBACK; \
         DROP MODEL m VERSION 3",
    )
    .await
    .expect("v3 made, rolled back from, dropped");
    assert_eq!(states(&c).await, st(&[(1, "candidate"), (2, "deployed")]));
    fails_with(&c, "SELECT PREDICT('m@3', 1.0)", "42704").await;

    // The states survive a kill -9, and the next version is 4.
    server.kill_and_restart();
    let c = server.connect().await;
    assert_eq!(states(&c).await, st(&[(1, "candidate"), (2, "deployed")]));
    assert_eq!(scored_by(&c, "m").await, Ok((2, true)));
    c.simple_query("CREATE OR REPLACE MODEL m PREDICT y USING linear AS SELECT x, y FROM src")
        .await
        .expect("v4");
    assert_eq!(
        states(&c).await,
        st(&[(1, "candidate"), (2, "candidate"), (4, "deployed")])
    );
    // Rollback walks the history: 4 → 2 → 1.
    c.simple_query("ALTER MODEL m ROLLBACK")
        .await
        .expect("to 2");
    c.simple_query("ALTER MODEL m ROLLBACK")
        .await
        .expect("to 1");
    assert_eq!(
        states(&c).await,
        st(&[(1, "deployed"), (2, "retired"), (4, "retired")])
    );
    // system.models shows the deployed version.
    let row = c
        .query_one(
            "SELECT version, versions FROM system.models WHERE name = 'm'",
            &[],
        )
        .await
        .expect("system.models");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_does_not_own_the_model_cannot_change_its_lifecycle() {
    let server = Server::start();
    let c = two_versions(&server).await;
    c.batch_execute(
        "CREATE ROLE analyst LOGIN; GRANT USAGE ON MODEL m TO analyst; \
         GRANT SELECT ON src TO analyst",
    )
    .await
    .expect("role");
    let a = server.connect_as("analyst").await;
    assert_eq!(scored_by(&a, "m@1").await, Ok((1, true)));
    for sql in [
        "ALTER MODEL m ROLLBACK",
        "ALTER MODEL m DEPLOY VERSION 1",
        "ALTER MODEL m RETIRE VERSION 1",
        "DROP MODEL m VERSION 1",
    ] {
        fails_with(&a, sql, "42501").await;
    }
    assert_eq!(states(&c).await, st(&[(1, "candidate"), (2, "deployed")]));
}

/// 16 clients score `m` over all of `src` while the owner deploys and rolls back: no query
/// fails and every query is scored by one version; both versions are seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_predict_through_deploys_and_rollbacks_without_errors() {
    let server = Server::start();
    let c = two_versions(&server).await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut clients = vec![];
    for _ in 0..16 {
        let url = server.pg_conn_str();
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        clients.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            let mut queries = 0;
            while !stop.load(Ordering::SeqCst) {
                let (version, one) = scored_by(&c, "m").await.expect("PREDICT during a switch");
                assert!(one, "a query was scored by two versions");
                seen[(version - 1) as usize].fetch_add(1, Ordering::SeqCst);
                queries += 1;
            }
            queries
        }));
    }
    for switch in ["ALTER MODEL m DEPLOY VERSION 1", "ALTER MODEL m ROLLBACK"]
        .iter()
        .cycle()
        .take(8)
    {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.simple_query(switch).await.expect(switch);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for t in clients {
        total += t.await.expect("client");
    }
    let (v1, v2) = (
        seen[0].load(Ordering::SeqCst),
        seen[1].load(Ordering::SeqCst),
    );
    eprintln!("{total} queries through 8 switches: {v1} scored by version 1, {v2} by version 2");
    assert!(v1 > 0 && v2 > 0, "both versions served ({v1}, {v2})");
    assert_eq!(
        rows_of(&c.simple_query("SELECT 1").await.expect("alive")).len(),
        1
    );
}

/// `g`: y = 3x − 2z + noise-free, with `z` cycling 0..6; 1000 rows.
async fn gate_data(c: &tokio_postgres::Client) {
    c.batch_execute(
        "CREATE TABLE g AS SELECT CAST(value AS DOUBLE) AS x, CAST(value % 7 AS DOUBLE) AS z, \
             CAST(3 * value - 2 * (value % 7) AS DOUBLE) AS y FROM generate_series(1, 1000)",
    )
    .await
    .expect("gate data");
}

fn warnings(n: &[(String, String)]) -> Vec<&str> {
    n.iter()
        .filter(|(s, _)| s == "WARNING")
        .map(|(_, m)| m.as_str())
        .collect()
}

fn notices_with<'a>(n: &'a [(String, String)], text: &str) -> Vec<&'a str> {
    n.iter()
        .filter(|(_, m)| m.contains(text))
        .map(|(_, m)| m.as_str())
        .collect()
}

/// The default gate: a version worse than the deployed one on the same held-out rows is
/// stored as rejected with a WARNING while the deployed one keeps serving; a better one is
/// deployed. When the deployed version cannot read the new held-out rows, stored metrics
/// decide, and a NOTICE says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_gate_rejects_a_worse_version_and_deploys_a_better_one() {
    let server = Server::start();
    let (c, notices) = server.connect_with_notices().await;
    gate_data(&c).await;
    // Version 1: two shallow trees on x and z — poor.
    c.simple_query(
        "CREATE MODEL m PREDICT y USING gbdt WITH (num_trees = 2) AS SELECT x, z, y FROM g",
    )
    .await
    .expect("v1");
    assert!(
        warnings(&notices.take()).is_empty(),
        "the first version deploys"
    );
    // Version 2: a linear fit of the exact relation — better on the same rows.
    c.simple_query("CREATE OR REPLACE MODEL m PREDICT y USING linear AS SELECT x, z, y FROM g")
        .await
        .expect("v2");
    let n = notices.take();
    assert!(warnings(&n).is_empty(), "{n:?}");
    assert_eq!(notices_with(&n, "validation gate passed").len(), 1, "{n:?}");
    assert!(
        notices_with(&n, "on the same 200 held-out rows").len() == 1,
        "{n:?}"
    );
    // Version 3: the poor trees again — rejected, and version 2 keeps serving.
    c.simple_query(
        "CREATE OR REPLACE MODEL m PREDICT y USING gbdt WITH (num_trees = 2) \
         AS SELECT x, z, y FROM g",
    )
    .await
    .expect("a rejected version still completes the statement");
    let n = notices.take();
    let w = warnings(&n);
    assert_eq!(w.len(), 1, "{n:?}");
    assert!(
        w[0].contains("version 3 was rejected") && w[0].contains("version 2 stays deployed"),
        "{}",
        w[0]
    );
    assert_eq!(
        states(&c).await,
        st(&[(1, "candidate"), (2, "deployed"), (3, "rejected")])
    );
    let reason: Option<String> = c
        .query_one(
            "SELECT state_reason FROM system.model_versions WHERE name = 'm' AND version = 3",
            &[],
        )
        .await
        .expect("reason")
        .get(0);
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("worse than the deployed version: rmse")),
        "{reason:?}"
    );
    let msg = fails_with(&c, "ALTER MODEL m DEPLOY VERSION 3", "55000").await;
    assert!(msg.contains("rejected"), "{msg}");
    // A version whose features the deployed one lacks: judged by stored metrics.
    c.simple_query("CREATE OR REPLACE MODEL m PREDICT y USING linear AS SELECT z AS w, y FROM g")
        .await
        .expect("v4");
    let n = notices.take();
    assert_eq!(warnings(&n).len(), 1, "{n:?}");
    assert!(
        warnings(&n)[0].contains("by the metrics stored with each version"),
        "{n:?}"
    );
    assert_eq!(states(&c).await[3], (4, "rejected".to_string()));
    // gate = 'none' deploys whatever comes.
    c.simple_query(
        "CREATE OR REPLACE MODEL m PREDICT y USING linear WITH (gate = 'none') \
         AS SELECT z AS w, y FROM g",
    )
    .await
    .expect("v5");
    assert_eq!(states(&c).await[4], (5, "deployed".to_string()));
}

/// Explicit rules, manual deployment, a first version that fails its gate, and rules that
/// cannot be evaluated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_rules_and_manual_deployment() {
    let server = Server::start();
    let (c, notices) = server.connect_with_notices().await;
    gate_data(&c).await;
    // A first version that fails its rule: stored, nothing deployed.
    c.simple_query(
        "CREATE MODEL m PREDICT y USING gbdt WITH (num_trees = 2, gate = 'r2 >= 0.99') \
         AS SELECT x, z, y FROM g",
    )
    .await
    .expect("v1 rejected");
    let n = notices.take();
    assert!(
        warnings(&n)
            .iter()
            .any(|w| w.contains("no version is deployed")
                && w.contains("gate 'r2 >= 0.99' failed: r2 = ")),
        "{n:?}"
    );
    let msg = fails_with(&c, "SELECT PREDICT('m', 1.0, 2.0)", "55000").await;
    assert!(msg.contains("no version is deployed"), "{msg}");
    let row = c
        .query_one("SELECT version FROM system.models WHERE name = 'm'", &[])
        .await
        .expect("system.models lists it");
    assert_eq!(row.get::<_, Option<i64>>(0), None);
    assert!(
        c.simple_query("SELECT PREDICT('m@1', 1.0, 2.0)")
            .await
            .is_ok()
    );
    // A passing version under manual deployment waits as a candidate.
    c.simple_query(
        "CREATE OR REPLACE MODEL m PREDICT y USING linear \
         WITH (gate = 'r2 >= 0.99 AND logloss IS NULL', deploy = 'manual') AS SELECT x, z, y FROM g",
    )
    .await
    .map(|_| ())
    .expect_err("IS NULL is not a comparison");
    c.simple_query(
        "CREATE OR REPLACE MODEL m PREDICT y USING linear \
         WITH (gate = 'r2 >= 0.99 AND rmse < 5', deploy = 'manual') AS SELECT x, z, y FROM g",
    )
    .await
    .expect("v2 candidate");
    let n = notices.take();
    assert_eq!(
        notices_with(&n, "version 2 is a candidate").len(),
        1,
        "{n:?}"
    );
    assert_eq!(states(&c).await, st(&[(1, "rejected"), (2, "candidate")]));
    c.simple_query("ALTER MODEL m DEPLOY VERSION 2")
        .await
        .expect("deploy the candidate");
    assert_eq!(deployed_version(&c).await, 2);
    // Rules that cannot be evaluated fail the statement, and nothing is stored.
    for (gate, code) in [
        ("auc >= 0.8", "22023"), // a regression reports no auc
        ("accuracy > 0.9 AND", "22023"),
        ("precsion > 0.5", "22023"),
    ] {
        let sql = format!(
            "CREATE OR REPLACE MODEL m PREDICT y USING linear WITH (gate = '{gate}') \
             AS SELECT x, z, y FROM g"
        );
        fails_with(&c, &sql, code).await;
    }
    fails_with(
        &c,
        "CREATE OR REPLACE MODEL m PREDICT y USING linear WITH (deploy = 'soon') \
         AS SELECT x, z, y FROM g",
        "22023",
    )
    .await;
    assert_eq!(states(&c).await, st(&[(1, "rejected"), (2, "deployed")]));
}

/// The deployed version of `m`.
async fn deployed_version(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT version FROM system.model_versions WHERE name = 'm' AND state = 'deployed'",
        &[],
    )
    .await
    .expect("deployed")
    .get(0)
}

/// `(trigger, outcome, version)` of every recorded run of `m`.
async fn jobs(c: &tokio_postgres::Client) -> Vec<(String, String, Option<i64>)> {
    c.query(
        "SELECT trigger, outcome, version FROM system.model_jobs WHERE model = 'm'",
        &[],
    )
    .await
    .expect("jobs")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// `RETRAIN MODEL` runs the deployed version's definition on current data through the gate,
/// records the run, and refuses roles that do not own the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrain_runs_the_definition_on_current_data_and_records_it() {
    let server = Server::start();
    let c = server.connect().await;
    gate_data(&c).await;
    c.simple_query(
        "CREATE MODEL m PREDICT y USING linear WITH (lambda = 0.01) AS SELECT x, z, y FROM g",
    )
    .await
    .expect("v1");
    let definition: String = c
        .query_one(
            "SELECT definition FROM system.model_versions WHERE name = 'm' AND version = 1",
            &[],
        )
        .await
        .expect("definition")
        .get(0);
    assert!(
        definition.starts_with("CREATE OR REPLACE MODEL m PREDICT y USING linear WITH (lambda = '0.01') AS SELECT x, z, y FROM g"),
        "{definition}"
    );
    // New rows arrive; the retrain sees them.
    c.simple_query("INSERT INTO g SELECT x + 1000, z, y + 3000 FROM g WHERE x <= 500")
        .await
        .expect("new rows");
    c.simple_query("RETRAIN MODEL m").await.expect("retrain");
    assert_eq!(
        jobs(&c).await,
        [("manual".to_string(), "deployed".to_string(), Some(2))]
    );
    let rows: i64 = c
        .query_one(
            "SELECT train_rows + validation_rows FROM system.model_versions \
             WHERE name = 'm' AND version = 2",
            &[],
        )
        .await
        .expect("rows")
        .get(0);
    assert_eq!(rows, 1500, "the retrain read the table as it is now");
    // Ownership and unknown models.
    c.batch_execute("CREATE ROLE analyst LOGIN; GRANT USAGE ON MODEL m TO analyst")
        .await
        .expect("role");
    let a = server.connect_as("analyst").await;
    fails_with(&a, "RETRAIN MODEL m", "42501").await;
    fails_with(&c, "RETRAIN MODEL nope", "42704").await;
    fails_with(&c, "RETRAIN m", "42601").await;
    // The analyst sees the jobs of a model it may use, not others'.
    c.simple_query(
        "CREATE MODEL other PREDICT y USING linear AS SELECT x, y FROM g; RETRAIN MODEL other",
    )
    .await
    .expect("other");
    let seen: Vec<String> = a
        .query("SELECT DISTINCT model FROM system.model_jobs", &[])
        .await
        .expect("analyst's jobs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, ["m"]);
}

/// A schedule retrains by itself, keeps doing so after a `kill -9`, and stops when reset;
/// two retrains of one model never run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_retrains_run_resume_after_a_restart_and_never_overlap() {
    let mut server = Server::start();
    let c = server.connect().await;
    gate_data(&c).await;
    c.simple_query("CREATE MODEL m PREDICT y USING linear AS SELECT x, z, y FROM g")
        .await
        .expect("v1");
    fails_with(&c, "ALTER MODEL m SET RETRAIN EVERY 'often'", "22023").await;
    fails_with(
        &c,
        "ALTER MODEL m SET RETRAIN EVERY '6 hours' AT '02:00'",
        "22023",
    )
    .await;
    c.simple_query("ALTER MODEL m SET RETRAIN EVERY '1 second'")
        .await
        .expect("schedule");
    let every: String = c
        .query_one(
            "SELECT retrain_every FROM system.models WHERE name = 'm'",
            &[],
        )
        .await
        .expect("schedule shown")
        .get(0);
    assert_eq!(every, "1 second");
    wait_for_scheduled(&server, 1).await;
    server.kill_and_restart();
    let c = server.connect().await;
    let before = scheduled(&jobs(&c).await);
    wait_for_scheduled(&server, before + 1).await;
    c.simple_query("ALTER MODEL m RESET RETRAIN")
        .await
        .expect("reset");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = scheduled(&jobs(&c).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        scheduled(&jobs(&c).await),
        settled,
        "runs after RESET RETRAIN"
    );
    for (_, outcome, version) in jobs(&c).await {
        assert_eq!(outcome, "deployed");
        assert!(version.is_some());
    }

    // Overlap: a slow retrain holds the model; a second one is refused with 55006.
    c.batch_execute(
        "CREATE TABLE big AS SELECT CAST(value AS DOUBLE) AS x, CAST(value % 13 AS DOUBLE) AS z, \
             CAST(value % 97 AS DOUBLE) AS y FROM generate_series(1, 200000); \
         CREATE OR REPLACE MODEL m PREDICT y USING gbdt WITH (num_trees = 200, gate = 'none') \
             AS SELECT x, z, y FROM big",
    )
    .await
    .expect("a slow model");
    let (a, b) = (server.connect().await, server.connect().await);
    let (ra, rb) = tokio::join!(a.simple_query("RETRAIN MODEL m"), async {
        // Once the first shows its version as training, the second must be refused, and the
        // run shows as running.
        for _ in 0..500 {
            let training = b
                .query(
                    "SELECT version FROM system.model_versions \
                     WHERE name = 'm' AND state = 'training'",
                    &[],
                )
                .await
                .expect("training rows");
            if !training.is_empty() {
                let running = jobs(&b).await.iter().any(|(_, o, _)| o == "running");
                return Some((running, b.simple_query("RETRAIN MODEL m").await));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    });
    assert!(ra.is_ok(), "the first retrain: {ra:?}");
    let (running, second) = rb.expect("the first retrain was seen training");
    assert!(running, "system.model_jobs shows the run as running");
    let e = second.expect_err("the second retrain overlaps the first");
    assert_eq!(sqlstate(&e), "55006", "{e}");
    assert!(
        jobs(&c).await.iter().all(|(_, o, _)| o != "running"),
        "nothing runs any more"
    );
    let training: i64 = c
        .query_one(
            "SELECT count(*) FROM system.model_versions WHERE state = 'training'",
            &[],
        )
        .await
        .expect("training rows")
        .get(0);
    assert_eq!(training, 0, "nothing trains any more");
}

fn scheduled(j: &[(String, String, Option<i64>)]) -> usize {
    j.iter().filter(|(t, _, _)| t == "schedule").count()
}

/// Wait (up to 20 s) until `m` has at least `n` scheduled runs.
async fn wait_for_scheduled(server: &Server, n: usize) {
    let c = server.connect().await;
    for _ in 0..100 {
        if scheduled(&jobs(&c).await) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "fewer than {n} scheduled runs after 20 s: {:?}",
        jobs(&c).await
    );
}

/// `DRIFT('m', …)`: a resample of the training table barely drifts; a shifted copy drifts a lot,
/// in its features and its prediction, and new categories show as unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_of_a_shifted_copy_exceeds_drift_of_a_resample() {
    let server = Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE cust AS SELECT CAST(value AS DOUBLE) AS tenure, \
             CASE WHEN value % 4 = 0 THEN 'premium' ELSE 'basic' END AS plan, \
             CAST(value % 7 AS DOUBLE) * 10 + value / 100.0 AS spend FROM generate_series(1, 4000); \
         CREATE MODEL spend PREDICT spend USING gbdt AS SELECT tenure, plan, spend FROM cust",
    )
    .await
    .expect("model");
    let drift = |sql: &'static str| {
        let c = &c;
        async move {
            c.query(sql, &[])
                .await
                .expect(sql)
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, f64>(1),
                        r.get::<_, f64>(4),
                        r.get::<_, i64>(5),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let resample = drift(
        "SELECT feature, psi, training_null_share, null_share, unseen_share, rows \
         FROM DRIFT('spend', (SELECT * FROM cust WHERE tenure % 3 = 0))",
    )
    .await;
    let shifted = drift(
        "SELECT feature, psi, training_null_share, null_share, unseen_share, rows \
         FROM DRIFT('spend', (SELECT tenure + 3000 AS tenure, \
             CASE WHEN tenure % 2 = 0 THEN 'premium' ELSE 'gold' END AS plan FROM cust))",
    )
    .await;
    let names: Vec<&str> = resample.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["tenure", "plan", "prediction"]);
    assert_eq!(resample[0].3, 1333);
    for (r, s) in resample.iter().zip(&shifted) {
        assert!(r.1 < 0.05, "{} drifts on a resample: {}", r.0, r.1);
        assert!(
            s.1 > 0.25 && s.1 > 10.0 * r.1,
            "{}: {} vs {}",
            r.0,
            s.1,
            r.1
        );
    }
    assert_eq!(shifted[1].2, 0.5, "half the plans are unseen");
    fails_with(&c, "SELECT * FROM DRIFT('nope', TABLE cust)", "42704").await;
    c.simple_query("CREATE MODEL seg USING kmeans AS SELECT tenure, spend FROM cust")
        .await
        .expect("k-means");
    let msg = fails_with(&c, "SELECT * FROM DRIFT('seg', TABLE cust)", "22023").await;
    assert!(msg.contains("no training profile"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forecasting_model_retrains_on_its_extended_series() {
    let server = Server::start();
    let c = server.connect().await;
    let rows = |from: i64, to: i64| {
        // Two stores: even rows are store 'a', odd ones 'b', day = row / 2.
        format!(
            "SELECT CAST('2025-01-01' AS DATE) + CAST(r / 2 AS INT) AS day, \
                    CASE WHEN r % 2 = 0 THEN 'a' ELSE 'b' END AS store, \
                    (CASE WHEN r % 2 = 0 THEN 100.0 ELSE 300.0 END) + ((r / 2) % 7) * 10 \
                    + (r / 2) * 0.5 AS amount \
             FROM generate_series({}, {}) AS t(r)",
            2 * from,
            2 * to + 1
        )
    };
    c.batch_execute(&format!(
        "CREATE TABLE sales AS {}; \
         CREATE MODEL m FORECAST amount TIME day BY store WITH (horizon = 7) \
             AS SELECT day, store, amount FROM sales",
        rows(0, 139)
    ))
    .await
    .expect("model");
    let first_day = "SELECT CAST(min(day) AS VARCHAR), count(*) FROM FORECAST('m')";
    let got = rows_of(&c.simple_query(first_day).await.expect("forecast"));
    assert_eq!(got[0], vec![Some("2025-05-21".into()), Some("14".into())]);
    // Two more weeks arrive; a retrain forecasts from the end of the longer series.
    c.batch_execute(&format!(
        "INSERT INTO sales {}; RETRAIN MODEL m",
        rows(140, 153)
    ))
    .await
    .expect("retrain");
    assert_eq!(deployed_version(&c).await, 2);
    let got = rows_of(&c.simple_query(first_day).await.expect("forecast"));
    assert_eq!(got[0], vec![Some("2025-06-04".into()), Some("14".into())]);
    let j = jobs(&c).await;
    assert!(
        j.iter()
            .any(|(t, o, v)| t == "manual" && o == "deployed" && *v == Some(2)),
        "{j:?}"
    );
}
