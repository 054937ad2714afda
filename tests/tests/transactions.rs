//! Transaction blocks through the real server: what other sessions see, connections that
//! close inside a block, `kill -9` before COMMIT, concurrent commits (`40001`), and a commit
//! cut short by a crash finished at the next start. (The statement-level behaviour, checked
//! against PostgreSQL too, is in `tests/slt/postgres/transactions.slt`.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prognos_e2e::Server;
use tokio_postgres::Client;

async fn count(c: &Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

async fn sqlstate(c: &Client, sql: &str) -> String {
    let e = c
        .batch_execute(sql)
        .await
        .expect_err(&format!("{sql} should fail"));
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Parquet files under the data dir's managed tables.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    let mut out = vec![];
    walk(&dir.join("tables"), &mut out);
    out.sort();
    out
}

/// Wait until `dir` holds exactly `expected` data files (discarded files are deleted in the
/// background).
async fn wait_for_files(dir: &Path, expected: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = data_files(dir);
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "data files left behind: {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_inside_a_block_discards_its_writes() {
    let server = Server::start();
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (id BIGINT); INSERT INTO t VALUES (1), (2)")
        .await
        .expect("setup");
    let committed_files = data_files(&server.data_dir);
    {
        let doomed = server.connect().await;
        doomed
            .batch_execute(
                "BEGIN; INSERT INTO t VALUES (3); CREATE TABLE made_in_block AS SELECT id FROM t",
            )
            .await
            .expect("block");
        let sink = doomed
            .copy_in::<_, bytes::Bytes>("COPY t FROM STDIN")
            .await
            .expect("copy in");
        futures::pin_mut!(sink);
        use futures::SinkExt;
        sink.send(bytes::Bytes::from_static(b"4\n5\n"))
            .await
            .expect("copy data");
        assert_eq!(sink.finish().await.expect("copy done"), 2);
        assert_eq!(
            count(&doomed, "t").await,
            5,
            "the block sees its own writes"
        );
        assert_eq!(count(&c, "t").await, 2, "other sessions do not");
        // Dropping the client closes the connection inside the block.
    }
    assert_eq!(count(&c, "t").await, 2);
    assert_eq!(sqlstate(&c, "SELECT * FROM made_in_block").await, "42P01");
    wait_for_files(&server.data_dir, &committed_files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_commit_keeps_only_what_was_committed() {
    let mut server = Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (id BIGINT); INSERT INTO t VALUES (1), (2);
         CREATE TABLE doomed (id BIGINT)",
    )
    .await
    .expect("setup");
    c.batch_execute(
        "BEGIN;
         INSERT INTO t SELECT value FROM generate_series(10, 20);
         CREATE TABLE made_in_block (x BIGINT);
         INSERT INTO made_in_block VALUES (1);
         DROP TABLE doomed",
    )
    .await
    .expect("block");
    assert_eq!(count(&c, "t").await, 13);
    server.kill_and_restart();
    let c = server.connect().await;
    assert_eq!(count(&c, "t").await, 2);
    assert_eq!(count(&c, "doomed").await, 0);
    assert_eq!(sqlstate(&c, "SELECT * FROM made_in_block").await, "42P01");
    c.batch_execute("BEGIN; INSERT INTO t VALUES (3); COMMIT")
        .await
        .expect("writes after the restart");
    assert_eq!(count(&c, "t").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_block_survives_restart() {
    let mut server = Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (id BIGINT); INSERT INTO t VALUES (1);
         CREATE TABLE old (id BIGINT);
         BEGIN;
         INSERT INTO t VALUES (2), (3);
         CREATE TABLE summary AS SELECT count(*) AS n FROM t;
         DROP TABLE old",
    )
    .await
    .expect("block");
    // Until COMMIT other sessions see the tables as they were.
    let other = server.connect().await;
    assert_eq!(count(&other, "t").await, 1);
    assert_eq!(count(&other, "old").await, 0);
    assert_eq!(sqlstate(&other, "SELECT * FROM summary").await, "42P01");
    c.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(count(&other, "t").await, 3);
    assert_eq!(sqlstate(&other, "SELECT * FROM old").await, "42P01");
    server.restart();
    let c = server.connect().await;
    assert_eq!(count(&c, "t").await, 3);
    let n: i64 = c
        .query_one("SELECT n FROM summary", &[])
        .await
        .expect("summary")
        .get(0);
    assert_eq!(n, 3, "CREATE TABLE AS saw the block's own insert");
    assert_eq!(sqlstate(&c, "SELECT * FROM old").await, "42P01");
    assert!(
        !server.data_dir.join("_txn/commit.json").exists(),
        "the commit record is removed once the commit is done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_to_one_table_conflict_with_40001() {
    let server = Server::start();
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute("CREATE TABLE t (id BIGINT); INSERT INTO t VALUES (0)")
        .await
        .expect("setup");

    // Two blocks write the same table: the first commit wins, the second gets 40001.
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("a");
    b.batch_execute("BEGIN; INSERT INTO t VALUES (2)")
        .await
        .expect("b");
    a.batch_execute("COMMIT").await.expect("a commits");
    assert_eq!(sqlstate(&b, "COMMIT").await, "40001");
    assert_eq!(count(&a, "t").await, 2);
    // The failed commit ended b's block: b works normally again.
    assert_eq!(count(&b, "t").await, 2);

    // A write committed outside any block after a block first wrote the table conflicts too.
    a.batch_execute("BEGIN; INSERT INTO t VALUES (3)")
        .await
        .expect("a again");
    b.batch_execute("INSERT INTO t VALUES (4)")
        .await
        .expect("autocommit insert");
    assert_eq!(sqlstate(&a, "COMMIT").await, "40001");
    assert_eq!(count(&a, "t").await, 3);

    // Blocks writing different tables both commit.
    a.batch_execute("CREATE TABLE u (id BIGINT)")
        .await
        .expect("u");
    a.batch_execute("BEGIN; INSERT INTO t VALUES (5)")
        .await
        .expect("a t");
    b.batch_execute("BEGIN; INSERT INTO u VALUES (6)")
        .await
        .expect("b u");
    a.batch_execute("COMMIT").await.expect("a commits t");
    b.batch_execute("COMMIT").await.expect("b commits u");
    assert_eq!(count(&a, "t").await, 4);
    assert_eq!(count(&a, "u").await, 1);
}

/// A commit record left by a crash between writing it and finishing the commit is replayed
/// when the data dir is opened: the recorded version is committed, the catalog changes are
/// applied, and the record is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_commit_is_finished_at_start() {
    let mut server = Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (id BIGINT); INSERT INTO t VALUES (1), (2), (3);
         CREATE TABLE gone (id BIGINT)",
    )
    .await
    .expect("setup");
    drop(c);
    server.kill();

    // The table's root and newest manifest, read from the data dir.
    let catalog: serde_json::Value = serde_json::from_slice(
        &std::fs::read(server.data_dir.join("catalog.json")).expect("catalog.json"),
    )
    .expect("catalog json");
    let root = catalog["tables"]["public.t"]["root"]
        .as_str()
        .expect("root of t")
        .to_string();
    let manifests = server.data_dir.join(&root).join("_manifest");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&manifests)
        .expect("manifests")
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    let newest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(versions.last().expect("a manifest")).expect("read"))
            .expect("manifest json");
    let file = newest["files"][0].clone();
    // The data file the interrupted commit had written: a copy of t's one file.
    let path = file["path"].as_str().expect("file path");
    std::fs::copy(
        server.data_dir.join(&root).join(path),
        server.data_dir.join(&root).join("data/staged.parquet"),
    )
    .expect("copy the data file");
    let mut staged = file.clone();
    staged["path"] = serde_json::json!("data/staged.parquet");
    // The interrupted commit: t gets the staged file too (6 rows), `gone` is dropped.
    let record = serde_json::json!({
        "writes": [{
            "root": root,
            "base_version": newest["version"],
            "files": [file, staged],
        }],
        "drops": [["public", "gone"]],
        "creates": [],
    });
    std::fs::create_dir_all(server.data_dir.join("_txn")).expect("_txn");
    std::fs::write(
        server.data_dir.join("_txn/commit.json"),
        serde_json::to_vec(&record).expect("record"),
    )
    .expect("write record");

    server.restart();
    let c = server.connect().await;
    assert_eq!(count(&c, "t").await, 6);
    assert_eq!(sqlstate(&c, "SELECT * FROM gone").await, "42P01");
    assert!(!server.data_dir.join("_txn/commit.json").exists());
    // Replaying it again changes nothing: the version is there already.
    server.restart();
    let c = server.connect().await;
    assert_eq!(count(&c, "t").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_survive_restart() {
    let mut server = Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE a (id BIGINT); INSERT INTO a VALUES (1), (2);
         CREATE TABLE x (id BIGINT); INSERT INTO x VALUES (1), (2);
         CREATE VIEW v AS SELECT id FROM x WHERE id > 1;
         ALTER TABLE a RENAME TO b;
         ALTER TABLE v RENAME TO w;
         BEGIN; ALTER TABLE b RENAME TO c; INSERT INTO c VALUES (3); COMMIT",
    )
    .await
    .expect("renames");
    server.restart();
    let c = server.connect().await;
    assert_eq!(count(&c, "c").await, 3);
    assert_eq!(count(&c, "w").await, 1);
    for gone in ["a", "b", "v"] {
        assert_eq!(
            sqlstate(&c, &format!("SELECT * FROM {gone}")).await,
            "42P01",
            "{gone}"
        );
    }
}
