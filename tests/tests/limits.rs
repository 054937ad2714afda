//! Per-statement and per-server limits over pgwire: `statement_timeout` (a session setting with
//! a server default) ends the statement alone with `57014`, and `max_connections` refuses the
//! next connection with `53300` while the others keep working.

use std::time::{Duration, Instant};

use prognos_e2e::{Server, rows_of, sqlstate};
use tokio_postgres::NoTls;

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

async fn show(c: &tokio_postgres::Client, name: &str) -> Option<String> {
    let rows = c.simple_query(&format!("SHOW {name}")).await.expect("show");
    rows_of(&rows).into_iter().next().and_then(|r| r[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_cancels_the_statement_alone() {
    let server = Server::start_with(
        false,
        vec![("PROGNOS__ENGINE__STATEMENT_TIMEOUT_MS".into(), "300".into())],
    );
    let c = server.connect().await;
    assert_eq!(show(&c, "statement_timeout").await.as_deref(), Some("300"));
    let started = Instant::now();
    let e = c
        .batch_execute("SELECT pg_sleep(5)")
        .await
        .expect_err("server default");
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    assert_eq!(message(&e), "canceling statement due to statement timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The connection goes on; a session may lift or change its limit, and RESET brings back
    // the server's.
    c.batch_execute("SET statement_timeout = 0; SELECT pg_sleep(0.5)")
        .await
        .expect("no limit");
    c.batch_execute("SET statement_timeout = '1s'")
        .await
        .expect("with unit");
    c.batch_execute("SELECT pg_sleep(0.4)")
        .await
        .expect("within 1s");
    let e = c
        .query("SELECT pg_sleep(3) AS s, $1::BIGINT AS n", &[&7i64])
        .await
        .expect_err("extended protocol");
    assert_eq!(sqlstate(&e), "57014");
    for bad in ["'soon'", "'5 fortnights'", "-1"] {
        let e = c
            .batch_execute(&format!("SET statement_timeout = {bad}"))
            .await
            .expect_err(bad);
        assert_eq!(sqlstate(&e), "22023", "{bad}: {e:?}");
    }
    c.batch_execute("RESET statement_timeout")
        .await
        .expect("reset");
    assert_eq!(show(&c, "statement_timeout").await.as_deref(), Some("300"));
    let rows = c.simple_query("SELECT 1").await.expect("still up");
    assert_eq!(rows_of(&rows), vec![vec![Some("1".to_string())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_only_the_next_connection() {
    let server = Server::start_with(false, vec![("PROGNOS__MAX_CONNECTIONS".into(), "2".into())]);
    let a = server.connect().await;
    let b = server.connect().await;
    let e = match tokio_postgres::connect(&server.pg_conn_str(), NoTls).await {
        Ok(_) => panic!("a third connection was accepted"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&e), "53300", "{e:?}");
    assert_eq!(message(&e), "sorry, too many clients already");
    a.batch_execute("SELECT 1").await.expect("a works");
    b.batch_execute("SELECT 1").await.expect("b works");
    drop(b);
    // The slot comes back when the connection ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = loop {
        match tokio_postgres::connect(&server.pg_conn_str(), NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                break c;
            }
            Err(e) if Instant::now() < deadline && sqlstate(&e) == "53300" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no slot came back: {e:?}"),
        }
    };
    c.batch_execute("SELECT 1").await.expect("c works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_size_limit_are_refused_before_they_are_built() {
    let server = Server::start_with(
        false,
        vec![("PROGNOS__ENGINE__MAX_VALUE_MB".into(), "1".into())],
    );
    let c = server.connect().await;
    for sql in [
        "SELECT length(repeat('x', 2000000000))",
        "SELECT length(lpad('x', 2000000000))",
        "SELECT length(rpad('x', 2000000, '-'))",
        // Each value fits; the batch of them does not.
        "SELECT length(repeat('x', 100000 + (value - value))) FROM generate_series(1, 20)",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "54000", "{sql}: {}", message(&e));
        assert!(
            message(&e).contains("engine.max_value_mb"),
            "{}",
            message(&e)
        );
    }
    // Below the limit the functions answer as ever, and the connection goes on.
    let rows = rows_of(
        &c.simple_query("SELECT length(repeat('ab', 1000)), lpad('7', 3, '0'), rpad('a', 2, 'b')")
            .await
            .expect("small values"),
    );
    assert_eq!(
        rows,
        vec![vec![
            Some("2000".into()),
            Some("007".into()),
            Some("ab".into())
        ]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_the_size_limit_end_in_54000_and_the_connection_goes_on() {
    let server = Server::start_with(
        false,
        vec![("PROGNOS__ENGINE__MAX_RESULT_MB".into(), "1".into())],
    );
    let c = server.connect().await;
    let big = "SELECT repeat('x', 1000 + (value - value)) AS s FROM generate_series(1, 5000)";
    let e = c
        .simple_query(big)
        .await
        .expect_err("5 MB over a 1 MB limit");
    assert_eq!(sqlstate(&e), "54000", "{}", message(&e));
    assert!(
        message(&e).contains("engine.max_result_mb"),
        "{}",
        message(&e)
    );
    let rows = rows_of(
        &c.simple_query("SELECT count(*) FROM generate_series(1, 5000)")
            .await
            .expect("a small result"),
    );
    assert_eq!(rows, vec![vec![Some("5000".into())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_its_sessions_memory_share_fails_alone_with_53200() {
    let server = Server::start_with(
        false,
        vec![("PROGNOS__ENGINE__QUERY_MEMORY_MB".into(), "1".into())],
    );
    let big = server.connect().await;
    let other = server.connect().await;
    // A hash join's build side cannot spill: 500 000 keys need more than the 1 MiB share.
    let join = "SELECT count(*) FROM (SELECT value AS x FROM generate_series(1, 500000)) a \
                JOIN (SELECT value AS y FROM generate_series(1, 500000)) b ON a.x = b.y";
    let (failed, small) = tokio::join!(
        big.simple_query(join),
        other.simple_query("SELECT count(*) FROM generate_series(1, 1000)")
    );
    let e = failed.expect_err("over the share");
    assert_eq!(sqlstate(&e), "53200", "{}", message(&e));
    assert!(
        message(&e).contains("engine.query_memory_mb"),
        "{}",
        message(&e)
    );
    assert_eq!(
        rows_of(&small.expect("the other session is untouched")),
        vec![vec![Some("1000".into())]]
    );
    // The failed session goes on; its share was given back.
    assert_eq!(
        rows_of(
            &big.simple_query("SELECT count(*) FROM generate_series(1, 1000)")
                .await
                .expect("next statement")
        ),
        vec![vec![Some("1000".into())]]
    );
    // A sort spills to disk instead of failing.
    let sorted = rows_of(
        &big.simple_query(
            "SELECT sum(length(s)) FROM (SELECT repeat('x', 100 + (value - value)) AS s \
             FROM generate_series(1, 100000) ORDER BY s DESC) t",
        )
        .await
        .expect("sort spills"),
    );
    assert_eq!(sorted, vec![vec![Some("10000000".into())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_sets_and_artifacts_over_their_limits_end_in_54000() {
    let server = Server::start_with(
        false,
        vec![
            ("PROGNOS__MODELS__MAX_TRAINING_ROWS".into(), "1000".into()),
            ("PROGNOS__MODELS__MAX_ARTIFACT_MB".into(), "1".into()),
        ],
    );
    let c = server.connect().await;
    for sql in [
        "CREATE MODEL big PREDICT y USING linear AS \
         SELECT value AS x, value * 2 AS y FROM generate_series(1, 5000)",
        "CREATE MODEL big FORECAST y TIME t USING ets AS \
         SELECT to_timestamp(value * 3600) AS t, CAST(value AS DOUBLE) AS y \
         FROM generate_series(1, 5000)",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "54000", "{sql}: {}", message(&e));
        assert!(
            message(&e).contains("models.max_training_rows"),
            "{}",
            message(&e)
        );
    }
    // A forest of deep trees over noise is several MiB: refused, and nothing is registered.
    let e = c
        .simple_query(
            "CREATE MODEL big PREDICT y USING random_forest \
             WITH (num_trees = 200, min_data_in_leaf = 1) AS \
             SELECT random() AS a, random() AS b, random() AS y FROM generate_series(1, 1000)",
        )
        .await
        .expect_err("artifact over 1 MiB");
    assert_eq!(sqlstate(&e), "54000", "{}", message(&e));
    assert!(
        message(&e).contains("models.max_artifact_mb"),
        "{}",
        message(&e)
    );
    let rows = rows_of(
        &c.simple_query("SELECT count(*) FROM system.models WHERE name = 'big'")
            .await
            .expect("registry"),
    );
    assert_eq!(rows, vec![vec![Some("0".into())]]);
    // Under both limits the same connection trains as ever.
    c.simple_query(
        "CREATE MODEL small PREDICT y USING linear AS \
         SELECT value AS x, value * 2 AS y FROM generate_series(1, 1000)",
    )
    .await
    .expect("1000 rows is within the limit");
}
