//! Server-side files: which local paths a role may name in COPY, external tables, and model
//! import / export (the data dir's `files/` folder for everyone; anything else superusers and
//! members of `pg_read_server_files` / `pg_write_server_files` only), tested with traversal,
//! absolute paths, `file://` URLs and symbolic links.

use prognos_e2e::{Server, sqlstate};
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_superusers_name_files_outside_the_files_folder() {
    let server = Server::start_with_demo();
    let admin = server.connect().await;
    admin
        .batch_execute(
            "CREATE USER low; \
             CREATE MODEL tiny PREDICT churned USING logistic \
               AS SELECT tenure_months, support_calls, churned FROM customers; \
             GRANT CREATE ON SCHEMA public TO low; GRANT CREATE MODEL TO low; \
             GRANT USAGE ON MODEL tiny TO low",
        )
        .await
        .expect("setup");
    let conn = format!(
        "host={} port={} user=low dbname=prognos",
        server.pg.ip(),
        server.pg.port()
    );
    let (low, connection) = tokio_postgres::connect(&conn, NoTls)
        .await
        .expect("low connects");
    tokio::spawn(async move {
        let _ = connection.await;
    });

    let outside = tempfile::tempdir().expect("tmp");
    let secret = outside.path().join("secret.csv");
    std::fs::write(&secret, "a\n1\n").expect("write");
    let files = server.data_dir.join("files");
    std::os::unix::fs::symlink(outside.path(), files.join("link")).expect("symlink");
    let out = outside.path().display().to_string();

    let denied = [
        format!("COPY (SELECT 1 AS a) TO '{out}/x.csv' (FORMAT csv)"),
        "COPY (SELECT 1 AS a) TO '../roles.json' (FORMAT csv)".to_string(),
        "COPY (SELECT 1 AS a) TO 'a/../../catalog.json' (FORMAT csv)".to_string(),
        format!("COPY (SELECT 1 AS a) TO 'file://{out}/y.csv' (FORMAT csv)"),
        "COPY (SELECT 1 AS a) TO 'link/z.csv' (FORMAT csv)".to_string(),
        format!(
            "CREATE EXTERNAL TABLE s1 STORED AS CSV LOCATION '{}'",
            secret.display()
        ),
        "CREATE EXTERNAL TABLE s2 STORED AS CSV LOCATION 'link/secret.csv'".to_string(),
        "CREATE EXTERNAL TABLE s3 STORED AS CSV LOCATION '../roles.json'".to_string(),
        "CREATE EXTERNAL TABLE s4 STORED AS CSV LOCATION 'file:///etc/passwd'".to_string(),
        format!("CREATE MODEL m FROM '{out}/m.onnx'"),
        format!("EXPORT MODEL tiny TO '{out}/tiny.onnx'"),
        "EXPORT MODEL tiny TO '../models/registry.json'".to_string(),
    ];
    for sql in &denied {
        let e = low.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
    }
    assert!(!outside.path().join("x.csv").exists());
    assert!(!outside.path().join("z.csv").exists());
    assert!(!outside.path().join("tiny.onnx").exists());

    // Inside files/, every role reads and writes.
    low.batch_execute(
        "COPY (SELECT 1 AS a UNION ALL SELECT 2) TO 'mine/out.csv' (FORMAT csv, HEADER true); \
         CREATE EXTERNAL TABLE mine STORED AS CSV LOCATION 'mine/out.csv' OPTIONS ('format.has_header' 'true'); \
         EXPORT MODEL tiny TO 'tiny.onnx'",
    )
    .await
    .expect("files/ is open to every role");
    assert!(files.join("mine/out.csv").exists());
    assert!(files.join("tiny.onnx").exists());
    let n: i64 = low
        .query_one("SELECT count(*) FROM mine", &[])
        .await
        .expect("read back")
        .get(0);
    assert_eq!(n, 2);

    // A superuser may name any path, as in PostgreSQL.
    admin
        .batch_execute(&format!(
            "COPY (SELECT 1 AS a) TO '{out}/x.csv' (FORMAT csv); \
             CREATE EXTERNAL TABLE s1 STORED AS CSV LOCATION '{}'; \
             EXPORT MODEL tiny TO '{out}/tiny.onnx'",
            secret.display()
        ))
        .await
        .expect("superuser");
    assert!(outside.path().join("x.csv").exists());
    assert!(outside.path().join("tiny.onnx").exists());

    // The predefined roles open the rest of the disk, each for its own direction.
    admin
        .batch_execute("GRANT pg_write_server_files TO low")
        .await
        .expect("grant");
    low.batch_execute(&format!(
        "COPY (SELECT 1 AS a) TO '{out}/w.csv' (FORMAT csv)"
    ))
    .await
    .expect("pg_write_server_files writes anywhere");
    assert!(outside.path().join("w.csv").exists());
    let e = low
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE s5 STORED AS CSV LOCATION '{}'",
            secret.display()
        ))
        .await
        .expect_err("reading needs pg_read_server_files");
    assert_eq!(sqlstate(&e), "42501");
    admin
        .batch_execute("GRANT pg_read_server_files TO low; REVOKE pg_write_server_files FROM low")
        .await
        .expect("grant / revoke");
    low.batch_execute(&format!(
        "CREATE EXTERNAL TABLE s5 STORED AS CSV LOCATION '{}'",
        secret.display()
    ))
    .await
    .expect("pg_read_server_files reads anywhere");
    let e = low
        .batch_execute(&format!(
            "COPY (SELECT 1 AS a) TO '{out}/v.csv' (FORMAT csv)"
        ))
        .await
        .expect_err("revoked");
    assert_eq!(sqlstate(&e), "42501");
}
