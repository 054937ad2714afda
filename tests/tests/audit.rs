//! The audit log over pgwire, against the real server: every statement (ad hoc, prepared,
//! failed, refused) and every login (and refused login) is a JSON line in the data dir's
//! `audit/` folder and a row of `system.audit_log`, with its role, client, tables, models,
//! rows, duration, outcome and SQLSTATE — and never a bound parameter or a password; only
//! superusers and roles granted SELECT on it read the table.

use prognos_e2e::{Server, rows_of, sqlstate};

async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    rows_of(&c.simple_query(sql).await.expect(sql))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_logins_are_recorded_without_secrets() {
    let server = Server::start_with_demo();
    let admin = server.connect().await;
    admin
        .batch_execute(
            "CREATE USER low PASSWORD 'pw-that-must-not-appear'; \
             CREATE MODEL churn PREDICT churned USING logistic \
               AS SELECT tenure_months, support_calls, churned FROM customers",
        )
        .await
        .expect("setup");
    let n: i64 = admin
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .expect("count")
        .get(0);
    let bound: String = admin
        .query_one("SELECT $1::text AS v", &[&"param-that-must-not-appear"])
        .await
        .expect("bound")
        .get(0);
    assert_eq!(bound, "param-that-must-not-appear");
    admin
        .simple_query("SELECT PREDICT('churn', 3, 1)")
        .await
        .expect("predict");
    let e = admin
        .batch_execute("SELECT * FROM nosuch")
        .await
        .expect_err("unknown table");
    assert_eq!(sqlstate(&e), "42P01");
    let low = server.connect_as("low").await;
    let e = low
        .batch_execute("SELECT * FROM customers")
        .await
        .expect_err("denied");
    assert_eq!(sqlstate(&e), "42501");
    // The audit log is for superusers and those granted it.
    let e = low
        .batch_execute("SELECT * FROM system.audit_log")
        .await
        .expect_err("denied");
    assert_eq!(sqlstate(&e), "42501");
    let conn = format!(
        "host={} port={} user=ghost dbname=prognos",
        server.pg.ip(),
        server.pg.port()
    );
    let refused = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("unknown role");
    assert_eq!(sqlstate(&refused), "28000");

    let count = rows(
        &admin,
        "SELECT rows, outcome, user_name, protocol, array_to_string(tables, ',') FROM system.audit_log \
         WHERE kind = 'statement' AND statement LIKE 'SELECT count(*)%FROM customers'",
    )
    .await;
    assert!(n > 1);
    assert_eq!(
        count,
        vec![vec![
            Some("1".into()),
            Some("ok".into()),
            Some("prognos".into()),
            Some("pgwire".into()),
            Some("public.customers".into()),
        ]]
    );
    let predict = rows(
        &admin,
        "SELECT array_to_string(models, ',') FROM system.audit_log \
         WHERE statement LIKE 'SELECT PREDICT(%'",
    )
    .await;
    assert_eq!(predict, vec![vec![Some("churn".into())]]);
    let failed = rows(
        &admin,
        "SELECT sqlstate, user_name FROM system.audit_log \
         WHERE outcome = 'error' AND kind = 'statement' ORDER BY time",
    )
    .await;
    assert_eq!(
        failed,
        vec![
            vec![Some("42P01".into()), Some("prognos".into())],
            vec![Some("42501".into()), Some("low".into())],
            vec![Some("42501".into()), Some("low".into())],
        ]
    );
    let logins = rows(
        &admin,
        "SELECT kind, user_name, sqlstate FROM system.audit_log \
         WHERE kind LIKE 'login%' AND user_name IN ('low', 'ghost') ORDER BY time",
    )
    .await;
    assert_eq!(
        logins,
        vec![
            vec![Some("login".into()), Some("low".into()), None],
            vec![
                Some("login_failed".into()),
                Some("ghost".into()),
                Some("28000".into())
            ],
        ]
    );
    let timing = rows(
        &admin,
        "SELECT count(*) FROM system.audit_log WHERE kind = 'statement' \
         AND (duration_ms IS NULL OR duration_ms < 0 OR client IS NULL)",
    )
    .await;
    assert_eq!(timing, vec![vec![Some("0".into())]]);

    // Files: JSON lines, no secrets.
    let dir = server.data_dir.join("audit");
    let mut text = String::new();
    for f in std::fs::read_dir(&dir).expect("audit dir") {
        text.push_str(&std::fs::read_to_string(f.expect("entry").path()).expect("read"));
    }
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        assert!(v["time"].is_string() && v["kind"].is_string(), "{line}");
    }
    assert!(
        !text.contains("pw-that-must-not-appear"),
        "password in the audit log"
    );
    assert!(
        !text.contains("param-that-must-not-appear"),
        "parameter in the audit log"
    );
    assert!(
        text.contains("<redacted>"),
        "the role statement is recorded, redacted"
    );

    admin
        .batch_execute("GRANT SELECT ON system.audit_log TO low")
        .await
        .expect("grant");
    let seen = rows(&low, "SELECT count(*) > 0 FROM system.audit_log").await;
    assert_eq!(seen, vec![vec![Some("t".into())]]);
}
