//! Column masking over pgwire, against the real server: a role without `UNMASK` gets masked
//! values in results, joins (keyed hashes match), filters (which see masked values only),
//! `COPY … TO STDOUT` and `CREATE TABLE … AS`; the owner and roles granted `UNMASK` see the
//! values; policies survive a restart, and their errors are PostgreSQL-like.

use futures::StreamExt;
use prognos_e2e::{Server, rows_of, sqlstate};

async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    rows_of(&c.simple_query(sql).await.expect(sql))
}

async fn failure(c: &tokio_postgres::Client, sql: &str) -> String {
    sqlstate(&c.batch_execute(sql).await.expect_err(sql))
}

const SETUP: &str = "CREATE TABLE payments AS SELECT * FROM (VALUES \
       (1, 'alice@example.com', '4111111111111111', 120), \
       (2, 'bob@example.com', '5500000000000004', 80)) AS t(id, email, card, amount); \
     CREATE TABLE refunds AS SELECT * FROM (VALUES ('alice@example.com', 5)) AS t(email, refund); \
     CREATE MASKING POLICY card_tail ON payments (card) USING partial(4); \
     CREATE MASKING POLICY email_hash ON payments (email) USING hash; \
     CREATE MASKING POLICY refund_email ON refunds (email) USING hash; \
     CREATE MASKING POLICY amount_hidden ON payments (amount) USING redact; \
     CREATE USER low; GRANT SELECT ON payments, refunds TO low";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_without_unmask_see_masked_values_everywhere() {
    let mut server = Server::start();
    let admin = server.connect().await;
    admin.batch_execute(SETUP).await.expect("setup");
    let low = server.connect_as("low").await;

    let masked = rows(
        &low,
        "SELECT id, email, card, amount FROM payments ORDER BY id",
    )
    .await;
    assert_eq!(masked[0][2].as_deref(), Some("************1111"));
    assert_eq!(masked[1][2].as_deref(), Some("************0004"));
    for r in &masked {
        let email = r[1].as_deref().expect("hashed, not NULL");
        assert_eq!(email.len(), 32, "{email}");
        assert!(!email.contains('@'), "{email}");
        assert_eq!(
            r[3].as_deref(),
            Some("0"),
            "redacted (a NOT NULL column: zero)"
        );
    }
    // Keyed hashes are equal across tables: joins on them still match.
    let joined = rows(
        &low,
        "SELECT p.id, r.refund FROM payments p JOIN refunds r ON p.email = r.email",
    )
    .await;
    assert_eq!(joined, vec![vec![Some("1".into()), Some("5".into())]]);
    // Filters see masked values only: the hidden ones cannot be probed.
    assert!(
        rows(
            &low,
            "SELECT id FROM payments WHERE card = '4111111111111111'"
        )
        .await
        .is_empty()
    );
    assert!(
        rows(&low, "SELECT id FROM payments WHERE email LIKE 'alice%'")
            .await
            .is_empty()
    );
    assert_eq!(
        rows(
            &low,
            "SELECT count(*) FROM payments WHERE card LIKE '%1111'"
        )
        .await,
        vec![vec![Some("1".into())]]
    );
    // COPY out is masked.
    let out = low
        .copy_out("COPY payments TO STDOUT")
        .await
        .expect("copy out");
    let mut text = Vec::new();
    futures::pin_mut!(out);
    while let Some(chunk) = out.next().await {
        text.extend_from_slice(&chunk.expect("chunk"));
    }
    let text = String::from_utf8(text).expect("utf8");
    assert!(
        text.contains("************1111") && !text.contains("4111111111111111"),
        "{text}"
    );
    assert!(!text.contains("alice@example.com"), "{text}");
    // A table the role makes from what it reads holds masked values.
    admin
        .batch_execute("GRANT CREATE ON SCHEMA public TO low")
        .await
        .expect("grant");
    low.batch_execute("CREATE TABLE copied AS SELECT * FROM payments")
        .await
        .expect("ctas");
    let copied = rows(&admin, "SELECT card FROM copied ORDER BY id").await;
    assert_eq!(copied[0][0].as_deref(), Some("************1111"));

    // The owner sees the values; UNMASK opens them to others, and REVOKE closes them again,
    // prepared statements included.
    let raw = rows(
        &admin,
        "SELECT card, email, amount FROM payments ORDER BY id",
    )
    .await;
    assert_eq!(raw[0][0].as_deref(), Some("4111111111111111"));
    assert_eq!(raw[0][1].as_deref(), Some("alice@example.com"));
    assert_eq!(raw[0][2].as_deref(), Some("120"));
    let card = low
        .prepare("SELECT card FROM payments WHERE id = 1")
        .await
        .expect("prepare");
    let c: String = low.query_one(&card, &[]).await.expect("run").get(0);
    assert_eq!(c, "************1111");
    admin
        .batch_execute("GRANT UNMASK ON payments TO low")
        .await
        .expect("unmask");
    let c: String = low.query_one(&card, &[]).await.expect("run").get(0);
    assert_eq!(c, "4111111111111111");
    admin
        .batch_execute("REVOKE UNMASK ON payments FROM low; GRANT ALL ON payments TO low")
        .await
        .expect("revoke; ALL does not unmask");
    let c: String = low.query_one(&card, &[]).await.expect("run").get(0);
    assert_eq!(c, "************1111");

    // Policies survive a restart; dropping one shows the column as it is.
    drop((admin, low));
    server.restart();
    let admin = server.connect().await;
    let low = server.connect_as("low").await;
    let again = rows(&low, "SELECT card FROM payments WHERE id = 2").await;
    assert_eq!(again[0][0].as_deref(), Some("************0004"));
    admin
        .batch_execute("DROP MASKING POLICY card_tail")
        .await
        .expect("drop policy");
    let plain = rows(&low, "SELECT card FROM payments WHERE id = 2").await;
    assert_eq!(plain[0][0].as_deref(), Some("5500000000000004"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_policy_errors() {
    let server = Server::start();
    let admin = server.connect().await;
    admin.batch_execute(SETUP).await.expect("setup");
    let low = server.connect_as("low").await;
    assert_eq!(
        failure(&low, "CREATE MASKING POLICY p ON payments (id) USING hash").await,
        "42501"
    );
    assert_eq!(
        failure(&low, "DROP MASKING POLICY card_tail").await,
        "42501"
    );
    for (sql, code) in [
        (
            "CREATE MASKING POLICY p ON payments (id) USING partial(2)",
            "42804",
        ),
        (
            "CREATE MASKING POLICY p ON payments (nosuch) USING hash",
            "42703",
        ),
        ("CREATE MASKING POLICY p ON nosuch (id) USING hash", "42P01"),
        (
            "CREATE MASKING POLICY card_tail ON refunds (refund) USING hash",
            "42710",
        ),
        (
            "CREATE MASKING POLICY p ON payments (card) USING hash",
            "42710",
        ),
        (
            "CREATE MASKING POLICY p ON payments (card) USING scramble",
            "42601",
        ),
        ("DROP MASKING POLICY nosuch", "42704"),
    ] {
        assert_eq!(failure(&admin, sql).await, code, "{sql}");
    }
    admin
        .batch_execute("DROP MASKING POLICY IF EXISTS nosuch")
        .await
        .expect("IF EXISTS");
    // Policies are listed for those who see their tables.
    let listed = rows(
        &admin,
        "SELECT name, table_name, column_name, method FROM system.masking_policies ORDER BY name",
    )
    .await;
    assert_eq!(
        listed[0],
        vec![
            Some("amount_hidden".into()),
            Some("payments".into()),
            Some("amount".into()),
            Some("redact".into())
        ]
    );
    assert_eq!(listed.len(), 4);
    assert_eq!(
        rows(&low, "SELECT count(*) FROM system.masking_policies").await,
        vec![vec![Some("4".into())]],
        "low reads payments and refunds"
    );
    let stranger = {
        admin
            .batch_execute("CREATE USER stranger")
            .await
            .expect("user");
        server.connect_as("stranger").await
    };
    assert_eq!(
        rows(&stranger, "SELECT count(*) FROM system.masking_policies").await,
        vec![vec![Some("0".into())]]
    );
    // Dropping the table drops its policies (the name is free again).
    admin
        .batch_execute(
            "DROP TABLE refunds; CREATE TABLE refunds (email VARCHAR); \
                        CREATE MASKING POLICY refund_email ON refunds (email) USING redact",
        )
        .await
        .expect("policy name reused after DROP TABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_queries_read_masked_values() {
    let server = Server::start();
    let admin = server.connect().await;
    admin
        .batch_execute(
            "CREATE TABLE people AS SELECT value AS id, 'secret-' || CAST(value AS VARCHAR) AS tag, \
               value % 2 AS y, CAST(value * 3 % 7 AS DOUBLE) AS x FROM generate_series(1, 200); \
             CREATE MASKING POLICY tag_hidden ON people (tag) USING redact; \
             CREATE USER low; GRANT SELECT ON people TO low; GRANT CREATE MODEL TO low",
        )
        .await
        .expect("setup");
    let low = server.connect_as("low").await;
    // Only masked values match: the trainer's query sees '***' in every row.
    low.batch_execute(
        "CREATE MODEL seen PREDICT y USING logistic AS SELECT x, y FROM people WHERE tag = '***'",
    )
    .await
    .expect("low trains on masked rows");
    let described = rows(&low, "DESCRIBE MODEL seen").await;
    let count = |key: &str| -> u64 {
        described
            .iter()
            .find(|r| r[0].as_deref() == Some(key))
            .and_then(|r| r[1].as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {described:?}"))
    };
    assert_eq!(count("train_rows") + count("validation_rows"), 200);
    // The owner's identical query sees the values, so no row matches.
    assert!(
        admin
            .batch_execute(
                "CREATE MODEL unseen PREDICT y USING logistic \
                 AS SELECT x, y FROM people WHERE tag = '***'",
            )
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_mask_for_the_role_that_reads_them() {
    let server = Server::start();
    let admin = server.connect().await;
    admin
        .batch_execute(
            "CREATE TABLE accounts AS SELECT * FROM (VALUES (1, 'DE89370400440532013000')) AS t(id, iban); \
             CREATE VIEW before_policy AS SELECT id, iban FROM accounts; \
             CREATE MASKING POLICY iban_tail ON accounts (iban) USING partial(4); \
             CREATE VIEW after_policy AS SELECT id, iban FROM accounts; \
             CREATE USER low; GRANT SELECT ON before_policy, after_policy TO low",
        )
        .await
        .expect("setup");
    let low = server.connect_as("low").await;
    // Views read with the privileges of their reader (PostgreSQL's security_invoker views).
    assert_eq!(
        failure(&low, "SELECT iban FROM before_policy").await,
        "42501"
    );
    admin
        .batch_execute("GRANT SELECT ON accounts TO low")
        .await
        .expect("grant");
    for view in ["before_policy", "after_policy"] {
        let got = rows(&low, &format!("SELECT iban FROM {view}")).await;
        assert_eq!(
            got[0][0].as_deref(),
            Some("******************3000"),
            "{view}"
        );
        let owner = rows(&admin, &format!("SELECT iban FROM {view}")).await;
        assert_eq!(
            owner[0][0].as_deref(),
            Some("DE89370400440532013000"),
            "{view}"
        );
    }
}
