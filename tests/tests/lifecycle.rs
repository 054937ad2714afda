//! The model lifecycle through the real server: version states, DEPLOY / ROLLBACK / RETIRE /
//! DROP VERSION with their errors, pinned versions (`m@n`), states surviving a `kill -9`, and
//! 16 clients scoring through deployments and rollbacks without an error, each query scored
//! by one version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use prognos_e2e::{Server, rows_of, sqlstate};

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

async fn fails_with(c: &tokio_postgres::Client, sql: &str, code: &str) -> String {
    let e = c.simple_query(sql).await.expect_err(sql);
    assert_eq!(sqlstate(&e), code, "{sql}: {e}");
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
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
