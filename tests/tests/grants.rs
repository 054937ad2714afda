//! Privileges over pgwire, against the real server: a low-privilege role tries every path
//! that reads or writes data — queries (joins, subqueries, CTEs), INSERT, COPY in and out,
//! CREATE TABLE AS, DROP, RENAME, model functions in every form, model DDL, training
//! queries, catalog listings — and gets `42501` or sees nothing, until it is granted what it
//! needs, directly or through a role; ownership, REVOKE on cached plans, and the GRANT
//! errors PostgreSQL gives.

use prognos_e2e::{Server, rows_of, sqlstate};

async fn failure(c: &tokio_postgres::Client, sql: &str) -> String {
    let e = c.batch_execute(sql).await.expect_err(sql);
    sqlstate(&e)
}

async fn values(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let rows = c.simple_query(sql).await.expect(sql);
    rows_of(&rows)
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect()
}

const SETUP: &str = "CREATE TABLE sales AS SELECT * FROM (VALUES (1, 'north', 10.0), (2, 'south', 20.0)) AS t(id, region, amount); \
     CREATE TABLE secret AS SELECT 1 AS id, 'x' AS ssn; \
     CREATE VIEW big_sales AS SELECT * FROM sales WHERE amount > 15; \
     CREATE MODEL churn PREDICT churned USING logistic \
       AS SELECT tenure_months, support_calls, churned FROM customers; \
     CREATE USER low; CREATE USER other; CREATE ROLE analysts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_privileges_reads_writes_and_lists_nothing() {
    let server = Server::start_with_demo();
    let admin = server.connect().await;
    admin.batch_execute(SETUP).await.expect("setup");
    let low = server.connect_as("low").await;

    let denied = [
        "SELECT * FROM sales",
        "SELECT count(*) FROM customers",
        "SELECT s.id FROM (SELECT 1 AS id) x JOIN sales s ON s.id = x.id",
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM secret)",
        "SELECT (SELECT max(amount) FROM sales)",
        "WITH w AS (SELECT * FROM secret) SELECT * FROM w",
        "SELECT * FROM big_sales",
        "EXPLAIN SELECT * FROM sales",
        "INSERT INTO sales VALUES (3, 'east', 1.0)",
        "COPY sales TO STDOUT",
        "COPY (SELECT * FROM secret) TO STDOUT",
        "COPY sales FROM STDIN",
        "CREATE TABLE mine (a INT)",
        "CREATE TABLE stolen AS SELECT * FROM secret",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE sales",
        "DROP VIEW big_sales",
        "ALTER TABLE sales RENAME TO gone",
        "SELECT PREDICT('churn', 3, 1)",
        "SELECT PREDICT_PROBA('churn', 3, 1)",
        "SELECT * FROM PREDICT('churn', (SELECT 3 AS tenure_months, 1 AS support_calls))",
        "SELECT * FROM EVALUATE('churn', (SELECT 3 AS tenure_months, 1 AS support_calls, true AS churned))",
        "SELECT * FROM feature_importance('churn')",
        "DESCRIBE MODEL churn",
        "EXPORT MODEL churn TO 'churn.onnx'",
        "DROP MODEL churn",
        "CREATE MODEL mine PREDICT y AS SELECT 1 AS x, 2 AS y",
        "CREATE OR REPLACE MODEL churn PREDICT y AS SELECT 1 AS x, 2 AS y",
        "CREATE SCHEMA mine",
        "GRANT SELECT ON sales TO low",
        "GRANT analysts TO low",
        "GRANT CREATE MODEL TO low",
    ];
    for sql in denied {
        assert_eq!(failure(&low, sql).await, "42501", "{sql}");
    }
    let e = low
        .batch_execute("SELECT * FROM sales")
        .await
        .expect_err("denied");
    assert_eq!(
        e.as_db_error().map(|d| d.message()),
        Some("permission denied for table sales")
    );
    let e = low
        .batch_execute("SELECT PREDICT('churn', 3, 1)")
        .await
        .expect_err("denied");
    assert_eq!(
        e.as_db_error().map(|d| d.message()),
        Some("permission denied for model churn")
    );

    // The catalogs list nothing of what the role cannot see.
    for sql in [
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        "SELECT relname FROM pg_catalog.pg_class WHERE relname IN ('sales', 'secret', 'big_sales')",
        "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'public'",
        "SELECT name FROM system.models",
        "SHOW MODELS",
    ] {
        assert_eq!(values(&low, sql).await, Vec::<String>::new(), "{sql}");
    }
    // What is unknown stays unknown: 42P01 / 42704 before any privilege question.
    assert_eq!(failure(&low, "SELECT * FROM nosuch").await, "42P01");
    assert_eq!(failure(&low, "SELECT PREDICT('nosuch', 1)").await, "42704");
    // The catalogs themselves are readable, and the connection still works.
    assert_eq!(values(&low, "SELECT current_user").await, vec!["low"]);
    // The superuser sees everything.
    assert_eq!(
        values(
            &admin,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' \
             AND table_name IN ('sales', 'secret', 'big_sales') ORDER BY 1"
        )
        .await,
        vec!["big_sales", "sales", "secret"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_through_roles_open_exactly_what_they_name() {
    let server = Server::start_with_demo();
    let admin = server.connect().await;
    admin.batch_execute(SETUP).await.expect("setup");
    admin
        .batch_execute(
            "GRANT SELECT ON sales, big_sales TO analysts; GRANT analysts TO low; \
             GRANT INSERT ON TABLE sales TO low; GRANT USAGE ON MODEL churn TO analysts",
        )
        .await
        .expect("grants");
    let low = server.connect_as("low").await;

    assert_eq!(values(&low, "SELECT count(*) FROM sales").await, vec!["2"]);
    assert_eq!(
        values(&low, "SELECT count(*) FROM big_sales").await,
        vec!["1"]
    );
    low.batch_execute("INSERT INTO sales VALUES (3, 'east', 30.0)")
        .await
        .expect("INSERT granted");
    assert_eq!(values(&low, "SELECT count(*) FROM sales").await, vec!["3"]);
    assert_eq!(failure(&low, "SELECT * FROM secret").await, "42501");
    assert_eq!(
        failure(&low, "DELETE FROM sales WHERE id = 3").await,
        "42501"
    );
    assert_eq!(failure(&low, "DROP TABLE sales").await, "42501");
    let p = values(&low, "SELECT PREDICT('churn', 3, 1)").await;
    assert_eq!(p.len(), 1);
    assert_eq!(values(&low, "SHOW MODELS").await, vec!["churn"]);
    low.batch_execute("DESCRIBE MODEL churn")
        .await
        .expect("DESCRIBE with USAGE");
    // The model's rows still need SELECT: USAGE does not open the table it reads.
    assert_eq!(
        failure(&low, "SELECT * FROM PREDICT('churn', TABLE customers)").await,
        "42501"
    );
    assert_eq!(
        values(
            &low,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        )
        .await,
        vec!["big_sales", "sales"]
    );

    // Training reads with the trainer's privileges.
    admin
        .batch_execute("GRANT CREATE MODEL TO low")
        .await
        .expect("grant");
    assert_eq!(
        failure(
            &low,
            "CREATE MODEL leak PREDICT churned USING logistic \
             AS SELECT tenure_months, support_calls, churned FROM customers"
        )
        .await,
        "42501"
    );
    assert_eq!(
        failure(
            &low,
            "CREATE MODEL leak PREDICT id AS SELECT ssn, id FROM secret"
        )
        .await,
        "42501"
    );
    admin
        .batch_execute("GRANT SELECT ON customers TO low")
        .await
        .expect("grant");
    low.batch_execute(
        "CREATE MODEL mine PREDICT churned USING logistic \
         AS SELECT tenure_months, support_calls, churned FROM customers",
    )
    .await
    .expect("train on what it may read");
    // The creator owns it: others cannot use it until it grants them.
    let other = server.connect_as("other").await;
    assert_eq!(
        failure(&other, "SELECT PREDICT('mine', 3, 1)").await,
        "42501"
    );
    low.batch_execute("GRANT USAGE ON MODEL mine TO other")
        .await
        .expect("owner grants");
    assert_eq!(
        values(&other, "SELECT PREDICT('mine', 3, 1)").await.len(),
        1
    );
    assert_eq!(failure(&other, "DROP MODEL mine").await, "42501");

    // ALL TABLES IN SCHEMA covers the tables there now; REVOKE takes it back.
    admin
        .batch_execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO other")
        .await
        .expect("grant all");
    assert_eq!(
        values(&other, "SELECT count(*) FROM secret").await,
        vec!["1"]
    );
    admin
        .batch_execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM other")
        .await
        .expect("revoke all");
    assert_eq!(
        failure(&other, "SELECT count(*) FROM secret").await,
        "42501"
    );

    // pg_read_all_data reads every table, writes none.
    admin
        .batch_execute("GRANT pg_read_all_data TO other")
        .await
        .expect("grant");
    assert_eq!(
        values(&other, "SELECT count(*) FROM secret").await,
        vec!["1"]
    );
    assert_eq!(
        failure(&other, "INSERT INTO secret VALUES (2, 'y')").await,
        "42501"
    );

    // Owners: a role with CREATE on the schema owns its tables and grants them.
    admin
        .batch_execute("GRANT CREATE ON SCHEMA public TO low")
        .await
        .expect("grant");
    low.batch_execute(
        "CREATE TABLE notes (n INT); INSERT INTO notes VALUES (1); GRANT SELECT ON notes TO PUBLIC",
    )
    .await
    .expect("own table");
    let fresh = server.connect_as("other").await;
    assert_eq!(values(&fresh, "SELECT n FROM notes").await, vec!["1"]);
    assert_eq!(
        failure(&low, "GRANT SELECT ON secret TO low").await,
        "42501"
    );
    low.batch_execute("ALTER TABLE notes RENAME TO notes2")
        .await
        .expect("owner renames");
    assert_eq!(values(&fresh, "SELECT n FROM notes2").await, vec!["1"]);
    // A role that owns objects cannot be dropped.
    assert_eq!(failure(&admin, "DROP ROLE low").await, "2BP01");
    low.batch_execute("DROP TABLE notes2; DROP MODEL mine")
        .await
        .expect("owner drops");
    admin
        .batch_execute("REVOKE SELECT ON customers FROM low; DROP ROLE other")
        .await
        .expect("drop role after its objects");
    drop(low);
    admin
        .batch_execute("DROP ROLE low")
        .await
        .expect("nothing owned now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_reaches_prepared_statements_and_grant_errors_are_postgres_ones() {
    let server = Server::start_with_demo();
    let admin = server.connect().await;
    admin.batch_execute(SETUP).await.expect("setup");
    admin
        .batch_execute("GRANT SELECT ON sales TO low; GRANT USAGE ON MODEL churn TO low")
        .await
        .expect("grant");
    let low = server.connect_as("low").await;
    let count = low
        .prepare("SELECT count(*) FROM sales")
        .await
        .expect("prepare");
    let predict = low
        .prepare("SELECT PREDICT('churn', 3, 1)")
        .await
        .expect("prepare");
    let n: i64 = low.query_one(&count, &[]).await.expect("run").get(0);
    assert_eq!(n, 2);
    // A view needs SELECT of its own, besides SELECT on what it reads.
    assert_eq!(failure(&low, "SELECT * FROM big_sales").await, "42501");
    low.query_one(&predict, &[]).await.expect("run");
    admin
        .batch_execute("REVOKE SELECT ON sales FROM low; REVOKE USAGE ON MODEL churn FROM low")
        .await
        .expect("revoke");
    let e = low.query_one(&count, &[]).await.expect_err("revoked");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let e = low.query_one(&predict, &[]).await.expect_err("revoked");
    assert_eq!(sqlstate(&e), "42501", "{e}");

    for (sql, code) in [
        ("GRANT USAGE ON TABLE sales TO low", "0LP01"),
        ("GRANT SELECT ON MODEL churn TO low", "0LP01"),
        ("GRANT SELECT ON nosuch TO low", "42P01"),
        ("GRANT USAGE ON MODEL nosuch TO low", "42704"),
        ("GRANT SELECT ON sales TO ghost", "42704"),
        (
            "GRANT SELECT ON ALL TABLES IN SCHEMA nosuch TO low",
            "3F000",
        ),
        ("GRANT ghost TO low", "42704"),
        ("GRANT low TO low", "0LP01"),
        ("GRANT SELECT ON sales TO low WITH GRANT OPTION", "0A000"),
        ("GRANT SELEC ON sales TO low", "42601"),
    ] {
        assert_eq!(failure(&admin, sql).await, code, "{sql}");
    }
    admin
        .batch_execute("GRANT analysts TO low")
        .await
        .expect("membership");
    assert_eq!(failure(&admin, "GRANT low TO analysts").await, "0LP01");

    // Grants survive a restart.
    admin
        .batch_execute("GRANT SELECT ON sales TO analysts")
        .await
        .expect("grant");
    drop((admin, low));
    let mut server = server;
    server.restart();
    let low = server.connect_as("low").await;
    assert_eq!(values(&low, "SELECT count(*) FROM sales").await, vec!["2"]);
    assert_eq!(failure(&low, "SELECT * FROM secret").await, "42501");
}

/// `ALTER TABLE | MODEL … OWNER TO` and `REASSIGN OWNED BY … TO`: who may give what away, what
/// the new owner may then do, and a role that owned objects becoming droppable; ownership
/// survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_moves_with_owner_to_and_reassign_owned() {
    let mut server = Server::start_with_demo();
    let admin = server.connect().await;
    admin
        .batch_execute(
            "CREATE USER alice; CREATE USER bob; CREATE USER carol; \
             GRANT CREATE ON SCHEMA public TO alice; GRANT CREATE MODEL TO alice; \
             GRANT SELECT ON customers TO alice",
        )
        .await
        .expect("roles");
    let alice = server.connect_as("alice").await;
    alice
        .batch_execute(
            "CREATE TABLE a_t AS SELECT 1 AS x; CREATE TABLE a_u AS SELECT 2 AS y; \
             CREATE MODEL a_m PREDICT churned USING logistic \
               AS SELECT tenure_months, support_calls, churned FROM customers",
        )
        .await
        .expect("alice's objects");
    // A role that owns objects cannot be dropped.
    assert_eq!(failure(&admin, "DROP USER alice").await, "2BP01");
    let bob = server.connect_as("bob").await;
    // Giving away needs ownership, and membership in the new owner.
    assert_eq!(
        failure(&alice, "ALTER TABLE a_t OWNER TO bob").await,
        "42501"
    );
    assert_eq!(failure(&bob, "ALTER TABLE a_t OWNER TO bob").await, "42501");
    assert_eq!(failure(&bob, "ALTER MODEL a_m OWNER TO bob").await, "42501");
    assert_eq!(
        failure(&admin, "ALTER TABLE a_t OWNER TO nobody").await,
        "42704"
    );
    assert_eq!(
        failure(&admin, "ALTER TABLE no_t OWNER TO bob").await,
        "42P01"
    );
    admin
        .batch_execute("ALTER TABLE IF EXISTS no_t OWNER TO bob")
        .await
        .expect("IF EXISTS");
    // A member of the new owner may give to it.
    admin
        .batch_execute("GRANT carol TO alice")
        .await
        .expect("membership");
    alice
        .batch_execute("ALTER TABLE a_u OWNER TO carol")
        .await
        .expect("to a role alice is in");
    admin
        .batch_execute("ALTER TABLE a_t OWNER TO bob; ALTER MODEL a_m OWNER TO bob")
        .await
        .expect("superuser");
    assert_eq!(values(&bob, "SELECT x FROM a_t").await, vec!["1"]);
    assert_eq!(failure(&alice, "SELECT x FROM a_t").await, "42501");
    bob.batch_execute("ALTER MODEL a_m SET CACHE (entries = 10)")
        .await
        .expect("bob owns the model");
    assert_eq!(
        failure(&alice, "ALTER MODEL a_m RESET CACHE").await,
        "42501"
    );
    // What alice still owns moves at once; then alice can go.
    alice
        .batch_execute("CREATE TABLE a_v AS SELECT 3 AS z")
        .await
        .expect("another table");
    assert_eq!(
        failure(&bob, "REASSIGN OWNED BY alice TO bob").await,
        "42501"
    );
    admin
        .batch_execute("REASSIGN OWNED BY alice TO bob")
        .await
        .expect("reassign");
    assert_eq!(values(&bob, "SELECT z FROM a_v").await, vec!["3"]);
    drop(alice);
    admin
        .batch_execute("REVOKE carol FROM alice; DROP USER alice")
        .await
        .expect("alice owns nothing now");
    drop((admin, bob));
    server.restart();
    let bob = server.connect_as("bob").await;
    assert_eq!(values(&bob, "SELECT x FROM a_t").await, vec!["1"]);
    assert_eq!(values(&bob, "SELECT z FROM a_v").await, vec!["3"]);
    let carol = server.connect_as("carol").await;
    assert_eq!(values(&carol, "SELECT y FROM a_u").await, vec!["2"]);
}
