//! `BACKUP TO 'folder'` on a running server under writes: the copy starts as a server of its
//! own with the tables of one instant (a transaction block's writes to two tables are both
//! there or both not), the models, roles, grants and masking policies.

use std::time::Duration;

use prognos_e2e::{Server, rows_of, sqlstate};

async fn one(c: &tokio_postgres::Client, sql: &str) -> String {
    rows_of(&c.simple_query(sql).await.expect(sql))[0][0]
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_writes_restores_one_consistent_instant() {
    let server = Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE a (x BIGINT); CREATE TABLE b (x BIGINT); CREATE TABLE c (x BIGINT);
         CREATE TABLE people AS SELECT 'p' || value AS email, value AS spend FROM generate_series(1, 50);
         CREATE MODEL m PREDICT y USING linear AS
           SELECT value AS x, value * 3 + 2 AS y FROM generate_series(1, 100);
         CREATE ROLE analyst LOGIN;
         GRANT SELECT ON people TO analyst;
         CREATE MASKING POLICY mask_email ON people (email) USING redact;",
    )
    .await
    .expect("setup");
    let prediction = one(&c, "SELECT round(PREDICT('m', 10))").await;
    // Writers: transaction blocks into a and b together, single INSERTs into c.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = vec![];
    for w in 0..2 {
        let writer = server.connect().await;
        let stop = std::sync::Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let sql = if w == 0 {
                    format!("BEGIN; INSERT INTO a VALUES ({i}); INSERT INTO b VALUES ({i}); COMMIT")
                } else {
                    format!("INSERT INTO c VALUES ({i})")
                };
                writer.batch_execute(&sql).await.expect("write");
                i += 1;
            }
            i
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backups = tempfile::tempdir().expect("tmp");
    let mut folders = vec![];
    for n in 0..3 {
        let folder = backups.path().join(format!("b{n}"));
        c.batch_execute(&format!("BACKUP TO '{}'", folder.display()))
            .await
            .expect("backup");
        folders.push(folder);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        assert!(w.await.expect("writer") > 0, "the writer never wrote");
    }
    for folder in &folders {
        let restored = Server::start_with_data(folder);
        let r = restored.connect().await;
        let a = one(&r, "SELECT count(*) FROM a").await;
        let b = one(&r, "SELECT count(*) FROM b").await;
        assert_eq!(a, b, "{}: a block's two writes split", folder.display());
        let sums = (
            one(&r, "SELECT coalesce(sum(x), -1) FROM a").await,
            one(&r, "SELECT coalesce(sum(x), -1) FROM b").await,
        );
        assert_eq!(sums.0, sums.1);
        assert_eq!(one(&r, "SELECT round(PREDICT('m', 10))").await, prediction);
        assert_eq!(one(&r, "SELECT count(*) FROM people").await, "50");
        // Roles, grants and masking came along.
        let analyst = restored.connect_as("analyst").await;
        assert_eq!(
            one(&analyst, "SELECT min(email) FROM people").await,
            "***",
            "the masking policy holds"
        );
        let e = analyst
            .simple_query("SELECT count(*) FROM a")
            .await
            .expect_err("no grant on a");
        assert_eq!(sqlstate(&e), "42501");
    }
    // A later backup holds at least what an earlier one did.
    let counts: Vec<u64> = {
        let mut v = vec![];
        for folder in &folders {
            let r = Server::start_with_data(folder);
            let rc = r.connect().await;
            v.push(one(&rc, "SELECT count(*) FROM c").await.parse().expect("n"));
        }
        v
    };
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_refuses_what_it_must() {
    let server = Server::start();
    let c = server.connect().await;
    c.batch_execute("CREATE ROLE clerk LOGIN; CREATE TABLE t (x INT)")
        .await
        .expect("setup");
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("occupied"), b"x").expect("write");
    let inside = server.data_dir.join("tables");
    let clerk = server.connect_as("clerk").await;
    for (client, sql, state) in [
        (
            &clerk,
            format!("BACKUP TO '{}/new'", tmp.path().display()),
            "42501",
        ),
        (&c, format!("BACKUP TO '{}'", tmp.path().display()), "42710"),
        (&c, format!("BACKUP TO '{}'", inside.display()), "22023"),
        (&c, "BACKUP TO 's3://bucket/backup'".to_string(), "0A000"),
        (&c, "BACKUP TO".to_string(), "42601"),
        (&c, "BACKUP '/tmp/x'".to_string(), "42601"),
    ] {
        let e = client.simple_query(&sql).await.expect_err(&sql);
        assert_eq!(sqlstate(&e), state, "{sql}: {e:?}");
    }
    // The connection goes on.
    assert_eq!(one(&c, "SELECT count(*) FROM t").await, "0");
}
