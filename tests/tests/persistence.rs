//! Tables survive restarts, and a `kill -9` in the middle of writes never leaves a table
//! unreadable or half-visible.

use std::time::Duration;

use prognos_e2e::{Server, rows_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_survive_restart() {
    let mut server = Server::start();
    {
        let c = server.connect().await;
        c.batch_execute(
            "CREATE TABLE kept (id BIGINT, label VARCHAR);
             INSERT INTO kept VALUES (1, 'one'), (2, 'two');
             CREATE TABLE ctas AS SELECT id * 10 AS x FROM kept;
             CREATE VIEW kept_view AS SELECT label FROM kept WHERE id = 2;
             CREATE TABLE dropped (a INT);
             DROP TABLE dropped;",
        )
        .await
        .expect("setup");
        let csv = server.data_dir.join("files").join("ext.csv");
        std::fs::write(&csv, "k,v\n1,10\n2,20\n3,30\n").expect("csv");
        c.batch_execute(&format!(
            "CREATE EXTERNAL TABLE ext STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
            csv.display()
        ))
        .await
        .expect("external");
        c.batch_execute("CREATE EXTERNAL TABLE ext_rel STORED AS CSV LOCATION 'ext.csv' OPTIONS ('format.has_header' 'true')")
            .await
            .expect("external relative to the data dir's files/");
    }
    server.restart();
    let c = server.connect().await;
    let rows = c
        .query("SELECT id, label FROM kept ORDER BY id", &[])
        .await
        .expect("kept");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].get::<_, &str>(1), "two");
    let sum: i64 = c
        .query_one("SELECT CAST(sum(x) AS BIGINT) FROM ctas", &[])
        .await
        .expect("ctas")
        .get(0);
    assert_eq!(sum, 30);
    let label: &str = &c
        .query_one("SELECT label FROM kept_view", &[])
        .await
        .expect("view")
        .get::<_, String>(0);
    assert_eq!(label, "two");
    let n: i64 = c
        .query_one("SELECT CAST(sum(v) AS BIGINT) FROM ext", &[])
        .await
        .expect("ext")
        .get(0);
    assert_eq!(n, 60);
    let n: i64 = c
        .query_one("SELECT count(*) FROM ext_rel", &[])
        .await
        .expect("ext_rel")
        .get(0);
    assert_eq!(n, 3);
    let err = c
        .query("SELECT * FROM dropped", &[])
        .await
        .expect_err("dropped stays dropped");
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_committed_data() {
    let mut server = Server::start();
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE w (batch BIGINT, v BIGINT)")
        .await
        .expect("create");
    // Each INSERT adds 50 000 rows; a writer runs until the server is killed under it.
    let url = server.pg_conn_str();
    let writer = tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let mut committed = 0i64;
        for b in 0..1000i64 {
            let sql = format!("INSERT INTO w SELECT {b}, value FROM generate_series(1, 50000)");
            match c.simple_query(&sql).await {
                Ok(_) => committed += 1,
                Err(_) => break,
            }
        }
        committed
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill_and_restart();
    let committed = writer.await.expect("writer");
    assert!(committed >= 1, "no insert finished before the kill");

    let c = server.connect().await;
    let rows = c
        .query(
            "SELECT batch, count(*) FROM w GROUP BY batch ORDER BY batch",
            &[],
        )
        .await
        .expect("table readable after kill -9");
    // Every visible batch is complete: no half-written insert is visible.
    for r in &rows {
        assert_eq!(
            r.get::<_, i64>(1),
            50_000,
            "batch {} is partial",
            r.get::<_, i64>(0)
        );
    }
    // Every insert the client saw succeed is there (an insert may also have committed just
    // before the kill without the client hearing about it).
    assert!(
        rows.len() as i64 >= committed,
        "{} batches visible, {committed} acknowledged",
        rows.len()
    );
    // The table still takes writes.
    c.batch_execute("INSERT INTO w VALUES (-1, -1)")
        .await
        .expect("insert after restart");
}

/// A data dir written by the previous release (tables, a view, a tabular and a forecasting
/// model: `tests/fixtures/datadir-v1/data`, made by commit 9b68d25's server from
/// `tests/fixtures/datadir-v1/setup.sql`) opens and answers the queries of `expected.txt`
/// exactly as that release answered them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_the_previous_release_answers_identically() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/datadir-v1");
    let server = Server::start_with_data(&fixture.join("data"));
    let c = server.connect().await;
    let expected = std::fs::read_to_string(fixture.join("expected.txt")).expect("expected.txt");
    let mut checked = 0;
    for block in expected.split("-- ").filter(|b| !b.trim().is_empty()) {
        let (sql, rows) = block.split_once('\n').expect("a query line");
        let want: Vec<&str> = rows.lines().filter(|l| !l.is_empty()).collect();
        let got = c
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let got: Vec<String> = rows_of(&got)
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| v.unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        assert_eq!(got, want, "{sql}");
        checked += 1;
    }
    assert_eq!(checked, 8, "every query of expected.txt ran");
}
