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

/// Many connections inserting into one table at once: their writes are committed in groups
/// (one manifest for all the statements waiting on the table), every acknowledged row is there
/// after a `kill -9`, and the table keeps only its newest two manifests, whose file list is
/// exactly the table's data folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_into_one_table_all_commit_and_old_manifests_go() {
    const CLIENTS: i64 = 24;
    const INSERTS: i64 = 15;
    let mut server = Server::start();
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE g (client BIGINT, i BIGINT)")
        .await
        .expect("create");
    let mut writers = Vec::new();
    for client in 0..CLIENTS {
        let url = server.pg_conn_str();
        writers.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            for i in 0..INSERTS {
                c.simple_query(&format!("INSERT INTO g VALUES ({client}, {i})"))
                    .await
                    .expect("insert");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    server.kill_and_restart();
    let c = server.connect().await;
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT client * 1000 + i) FROM g",
            &[],
        )
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), CLIENTS * INSERTS, "every insert once");
    assert_eq!(row.get::<_, i64>(1), CLIENTS * INSERTS, "no insert twice");

    let catalog: serde_json::Value = serde_json::from_slice(
        &std::fs::read(server.data_dir.join("catalog.json")).expect("catalog.json"),
    )
    .expect("catalog json");
    let root = server.data_dir.join(
        catalog["tables"]["public.g"]["root"]
            .as_str()
            .expect("root"),
    );
    let mut manifests: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("_manifest"))
        .expect("manifests")
        .flatten()
        .map(|e| e.path())
        .collect();
    manifests.sort();
    assert!(
        (1..=2).contains(&manifests.len()),
        "manifests kept: {manifests:?}"
    );
    let newest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(manifests.last().expect("a manifest")).expect("read"),
    )
    .expect("manifest json");
    let mut listed: Vec<String> = newest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(root.join("data"))
        .expect("data folder")
        .flatten()
        .map(|e| format!("data/{}", e.file_name().to_string_lossy()))
        .collect();
    listed.sort();
    on_disk.sort();
    assert_eq!(
        listed, on_disk,
        "the newest manifest lists exactly the data files"
    );
    // Versions: one for CREATE TABLE, then one per group. With 24 writers waiting on each
    // other's fsyncs, some groups carry several inserts.
    let version = newest["version"].as_u64().expect("version");
    eprintln!(
        "{} inserts committed as {} versions",
        CLIENTS * INSERTS,
        version - 1
    );
    assert!(
        version < 1 + (CLIENTS * INSERTS) as u64,
        "no insert shared a commit: version {version}"
    );
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
