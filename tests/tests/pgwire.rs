//! The Postgres wire protocol through tokio-postgres against the real server process.

use std::time::{Duration, Instant};

use prognos_e2e::{Server, http_get, rows_of, sqlstate};
use tokio_postgres::error::SqlState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_with_parameters() {
    let server = Server::start();
    let c = server.connect().await;

    let rows = c
        .simple_query("SELECT 1 AS one, 'x' AS s")
        .await
        .expect("simple");
    assert_eq!(
        rows_of(&rows),
        vec![vec![Some("1".into()), Some("x".into())]]
    );

    c.batch_execute(
        "CREATE TABLE t (id BIGINT, name VARCHAR, score DOUBLE, ok BOOLEAN);
         INSERT INTO t VALUES (1, 'a', 1.5, true), (2, 'b', NULL, false), (3, NULL, 3.25, NULL);",
    )
    .await
    .expect("ddl + insert");

    // Extended protocol with typed parameters; binary results.
    let rows = c
        .query(
            "SELECT id, name, score, ok FROM t WHERE id >= $1 ORDER BY id",
            &[&2i64],
        )
        .await
        .expect("extended");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, i64>(0), 2);
    assert_eq!(rows[0].get::<_, Option<&str>>(1), Some("b"));
    assert_eq!(rows[0].get::<_, Option<f64>>(2), None);
    assert_eq!(rows[0].get::<_, Option<bool>>(3), Some(false));
    assert_eq!(rows[1].get::<_, Option<&str>>(1), None);
    assert_eq!(rows[1].get::<_, Option<f64>>(2), Some(3.25));

    // Text parameter compared with a text column.
    let rows = c
        .query("SELECT id FROM t WHERE name = $1", &[&"a"])
        .await
        .expect("text param");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 1);

    // INSERT through the extended protocol reports the row count.
    let n = c
        .execute(
            "INSERT INTO t VALUES ($1, $2, $3, $4)",
            &[&4i64, &"d", &4.0f64, &true],
        )
        .await
        .expect("insert with params");
    assert_eq!(n, 1);
    let row = c
        .query_one("SELECT count(*), 1 + 1 FROM t", &[])
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 4);
    // Result columns are named as Postgres names them.
    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, vec!["count", "?column?"]);

    // A prepared statement runs many times.
    let stmt = c
        .prepare("SELECT name FROM t WHERE id = $1")
        .await
        .expect("prepare");
    for (id, want) in [(1i64, Some("a")), (4, Some("d")), (3, None)] {
        let row = c.query_one(&stmt, &[&id]).await.expect("exec prepared");
        assert_eq!(row.get::<_, Option<&str>>(0), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_text_encodings_of_types() {
    let server = Server::start();
    let c = server.connect().await;
    let row = c
        .query_one(
            "SELECT CAST(7 AS SMALLINT) AS i2, CAST(8 AS INT) AS i4, CAST(9 AS BIGINT) AS i8,
                    CAST(1.5 AS REAL) AS f4, CAST(2.25 AS DOUBLE) AS f8, true AS b, 'héllo' AS t,
                    DATE '2024-02-29' AS d, TIMESTAMP '2024-01-02 03:04:05.123456' AS ts,
                    CAST(12.345 AS DECIMAL(10,3)) AS n",
            &[],
        )
        .await
        .expect("typed row");
    assert_eq!(row.get::<_, i16>("i2"), 7);
    assert_eq!(row.get::<_, i32>("i4"), 8);
    assert_eq!(row.get::<_, i64>("i8"), 9);
    assert_eq!(row.get::<_, f32>("f4"), 1.5);
    assert_eq!(row.get::<_, f64>("f8"), 2.25);
    assert!(row.get::<_, bool>("b"));
    assert_eq!(row.get::<_, &str>("t"), "héllo");
    let d: chrono_like::Date = row.get("d");
    assert_eq!(d.0, "2024-02-29");
    let ts: chrono_like::Timestamp = row.get("ts");
    assert_eq!(ts.0, 757_479_845_123_456); // µs since 2000-01-01
    let n: chrono_like::Numeric = row.get("n");
    assert_eq!(n.0, "12.345");

    // The same values in text format (simple protocol).
    let rows = c
        .simple_query("SELECT DATE '2024-02-29', TIMESTAMP '2024-01-02 03:04:05', CAST(12.345 AS DECIMAL(10,3)), true, [1,2,3]")
        .await
        .expect("text");
    assert_eq!(
        rows_of(&rows),
        vec![vec![
            Some("2024-02-29".into()),
            Some("2024-01-02 03:04:05".into()),
            Some("12.345".into()),
            Some("t".into()),
            Some("{1,2,3}".into()),
        ]]
    );

    // bytea and interval, binary and text.
    let row = c
        .query_one(
            "SELECT CAST('abc' AS BYTEA) AS b, INTERVAL '1 day 2 hours' AS i",
            &[],
        )
        .await
        .expect("bytea/interval");
    assert_eq!(row.get::<_, Vec<u8>>("b"), b"abc".to_vec());
    let rows = c
        .simple_query("SELECT INTERVAL '1 year 2 months 3 days 4 hours 5 minutes 6 seconds'")
        .await
        .expect("interval text");
    assert_eq!(
        rows_of(&rows)[0][0].as_deref(),
        Some("1 year 2 mons 3 days 04:05:06")
    );

    // Arrays of numbers in binary.
    let row = c
        .query_one("SELECT [1, 2, 3] AS a, ['x', 'y'] AS s", &[])
        .await
        .expect("arrays");
    assert_eq!(row.get::<_, Vec<i64>>("a"), vec![1, 2, 3]);
    assert_eq!(
        row.get::<_, Vec<String>>("s"),
        vec!["x".to_string(), "y".to_string()]
    );
}

/// Minimal FromSql impls so the test checks raw wire values without extra crates.
mod chrono_like {
    use tokio_postgres::types::{FromSql, Type};

    pub(crate) struct Date(pub(crate) String);
    impl<'a> FromSql<'a> for Date {
        fn from_sql(
            _: &Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            let days = i32::from_be_bytes(raw.try_into()?);
            // days since 2000-01-01 → civil date
            let z = days as i64 + 10957 + 719468;
            let era = z.div_euclid(146097);
            let doe = z - era * 146097;
            let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
            Ok(Date(format!("{y:04}-{m:02}-{d:02}")))
        }
        fn accepts(ty: &Type) -> bool {
            *ty == Type::DATE
        }
    }

    pub(crate) struct Timestamp(pub(crate) i64);
    impl<'a> FromSql<'a> for Timestamp {
        fn from_sql(
            _: &Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Timestamp(i64::from_be_bytes(raw.try_into()?)))
        }
        fn accepts(ty: &Type) -> bool {
            *ty == Type::TIMESTAMP
        }
    }

    /// NUMERIC decoded from its binary form into a plain decimal string.
    pub(crate) struct Numeric(pub(crate) String);
    impl<'a> FromSql<'a> for Numeric {
        fn from_sql(
            _: &Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            let rd = |i: usize| i16::from_be_bytes([raw[i], raw[i + 1]]);
            let (ndigits, weight, sign, dscale) =
                (rd(0) as usize, rd(2) as i32, rd(4), rd(6) as usize);
            let digits: Vec<i64> = (0..ndigits).map(|i| rd(8 + 2 * i) as i64).collect();
            let mut int_part = String::new();
            let mut frac_part = String::new();
            for (i, d) in digits.iter().enumerate() {
                let pos = weight - i as i32;
                if pos >= 0 {
                    if int_part.is_empty() {
                        int_part = d.to_string()
                    } else {
                        int_part.push_str(&format!("{d:04}"))
                    }
                } else {
                    frac_part.push_str(&format!("{d:04}"));
                }
            }
            if int_part.is_empty() {
                int_part = "0".into();
            }
            frac_part.truncate(dscale);
            while frac_part.len() < dscale {
                frac_part.push('0');
            }
            let s = if dscale > 0 {
                format!("{int_part}.{frac_part}")
            } else {
                int_part
            };
            Ok(Numeric(if sign == 0x4000 { format!("-{s}") } else { s }))
        }
        fn accepts(ty: &Type) -> bool {
            *ty == Type::NUMERIC
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstates_and_connection_stays_usable() {
    let server = Server::start();
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE e (a INT)")
        .await
        .expect("create");

    let cases: Vec<(&str, SqlState)> = vec![
        ("SELEC 1", SqlState::SYNTAX_ERROR),
        ("SELECT * FROM no_such_table", SqlState::UNDEFINED_TABLE),
        ("SELECT no_such_column FROM e", SqlState::UNDEFINED_COLUMN),
        ("SELECT no_such_function(1)", SqlState::UNDEFINED_FUNCTION),
        ("CREATE TABLE e (a INT)", SqlState::DUPLICATE_TABLE),
        ("DROP TABLE no_such_table", SqlState::UNDEFINED_TABLE),
    ];
    for (sql, want) in cases {
        let err = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err), want.code(), "{sql}: {err:?}");
        let err = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&err), want.code(), "extended {sql}: {err:?}");
        // The connection keeps working after each error.
        let one: i64 = c
            .query_one("SELECT CAST(1 AS BIGINT)", &[])
            .await
            .expect("after error")
            .get(0);
        assert_eq!(one, 1);
    }

    // Division by zero at execution time.
    let err = c.query("SELECT 1 / 0", &[]).await.expect_err("div by zero");
    assert_eq!(sqlstate(&err), SqlState::DIVISION_BY_ZERO.code(), "{err:?}");

    // Wrong parameter count and wrong parameter type.
    let err = c
        .query("SELECT a FROM e WHERE a = $1", &[&1i32, &2i32])
        .await
        .expect_err("too many params");
    assert!(
        err.to_string().contains("parameters") || err.code().is_some(),
        "{err:?}"
    );
    let stmt = c
        .prepare_typed(
            "SELECT a FROM e WHERE a = $1",
            &[tokio_postgres::types::Type::INT4],
        )
        .await
        .expect("prepare typed");
    let err = c
        .query(&stmt, &[&"not a number"])
        .await
        .expect_err("wrong rust type for param");
    assert!(err.to_string().contains("serializing"), "{err}");
    // `CAST($1 AS INT)` types the parameter int4, as in Postgres; a client that declares it
    // text and sends text that is no integer gets 22P02 from the server.
    let stmt = c
        .prepare("SELECT a FROM e WHERE a = CAST($1 AS INT)")
        .await
        .expect("prepare cast");
    assert_eq!(stmt.params(), &[tokio_postgres::types::Type::INT4]);
    let stmt = c
        .prepare_typed(
            "SELECT a FROM e WHERE a = CAST($1 AS INT)",
            &[tokio_postgres::types::Type::TEXT],
        )
        .await
        .expect("prepare text");
    let err = c.query(&stmt, &[&"abc"]).await.expect_err("bad int text");
    assert_eq!(err.code().map(|c| c.code()), Some("22P02"), "{err:?}");

    // A 1 MB query text parses or fails cleanly.
    let big = format!("SELECT '{}' AS big", "x".repeat(1024 * 1024));
    let rows = c.simple_query(&big).await.expect("1MB query");
    assert_eq!(
        rows_of(&rows)[0][0].as_ref().map(|s| s.len()),
        Some(1024 * 1024)
    );
    let big_bad = format!("SELECT {} FROM", "1 +".repeat(300_000));
    let err = c.simple_query(&big_bad).await.expect_err("1MB garbage");
    assert_eq!(sqlstate(&err), "54001", "{err:?}");
    let one: i64 = c
        .query_one("SELECT CAST(1 AS BIGINT)", &[])
        .await
        .expect("still usable")
        .get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_commands_clients_send() {
    let server = Server::start();
    let c = server.connect().await;
    for sql in [
        "SET extra_float_digits = 3",
        "SET application_name = 'itest'",
        "SET client_encoding TO 'UTF8'",
        "SET TIME ZONE 'UTC'",
        "BEGIN",
        "COMMIT",
        "BEGIN",
        "ROLLBACK",
        "DISCARD ALL",
        "SET datafusion.execution.batch_size = 1024",
    ] {
        c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    c.simple_query("SET application_name = 'itest'")
        .await
        .expect("set");
    let rows = c.simple_query("SHOW application_name").await.expect("show");
    assert_eq!(rows_of(&rows), vec![vec![Some("itest".into())]]);
    let rows = c.simple_query("SHOW server_version").await.expect("show");
    assert_eq!(rows_of(&rows)[0][0].as_deref(), Some("16.0"));
    let v: String = c
        .query_one("SELECT version()", &[])
        .await
        .expect("version")
        .get(0);
    assert!(v.starts_with("PostgreSQL 16"), "{v}");
    let s: String = c
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .expect("current_setting")
        .get(0);
    assert_eq!(s, "itest");
    let db: String = c
        .query_one("SELECT current_database()", &[])
        .await
        .expect("db")
        .get(0);
    assert_eq!(db, "prognos");
    let err = c
        .simple_query("SHOW no_such_setting")
        .await
        .expect_err("unknown setting");
    assert!(err.code().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_a_long_query() {
    let server = Server::start();
    let c = server.connect().await;
    let token = c.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let err = c
        .simple_query("SELECT pg_sleep(30)")
        .await
        .expect_err("must be cancelled");
    assert_eq!(sqlstate(&err), SqlState::QUERY_CANCELED.code(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cancel took {:?}",
        started.elapsed()
    );
    canceller.await.expect("join").expect("cancel sent");
    let one: i64 = c
        .query_one("SELECT CAST(1 AS BIGINT)", &[])
        .await
        .expect("usable")
        .get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_and_abrupt_disconnects() {
    let server = Server::start();
    let setup = server.connect().await;
    setup
        .batch_execute("CREATE TABLE big AS SELECT value AS v FROM generate_series(1, 200000)")
        .await
        .expect("big table");

    // A client that disconnects in the middle of a query must not disturb the others.
    {
        let (client, conn) = tokio_postgres::connect(&server.pg_conn_str(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        let handle = tokio::spawn(conn);
        let q = tokio::spawn(async move { client.simple_query("SELECT v FROM big").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        handle.abort();
        q.abort();
    }
    {
        let (client, conn) = tokio_postgres::connect(&server.pg_conn_str(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        let handle = tokio::spawn(conn);
        let q = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(5)").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        handle.abort();
        q.abort();
    }

    let mut tasks = Vec::new();
    for i in 0..16i64 {
        let url = server.pg_conn_str();
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            let mut total = 0i64;
            for j in 0..10i64 {
                let row = c
                    .query_one(
                        "SELECT count(*) FROM big WHERE v % 16 = $1",
                        &[&((i + j) % 16)],
                    )
                    .await
                    .expect("query");
                total += row.get::<_, i64>(0);
            }
            total
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 125_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_socket_leaves_the_server_serving() {
    use std::io::{Read, Write};
    let server = Server::start();
    let payloads: Vec<Vec<u8>> = vec![
        (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0, 0, 0, 8, 4, 210, 22, 47], // SSLRequest, then hang up
        vec![0xff; 64],
    ];
    for p in payloads {
        let mut s = std::net::TcpStream::connect(server.pg).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = s.write_all(&p);
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    }
    let c = server.connect().await;
    let one: i64 = c
        .query_one("SELECT CAST(1 AS BIGINT)", &[])
        .await
        .expect("still serving")
        .get(0);
    assert_eq!(one, 1);
}

/// `SELECT` without `FROM` is evaluated on its one row without the planners (the point-query
/// fast path); it must behave as the planned path does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_selects_without_from() {
    let server = Server::start();
    let c = server.connect().await;

    // Parameters, coercion (int + bigint), several columns with their planned types.
    let stmt = c
        .prepare_typed(
            "SELECT $1 + 1 AS n, upper($2) AS s, 2.5 * $3 AS f",
            &[
                tokio_postgres::types::Type::INT4,
                tokio_postgres::types::Type::TEXT,
                tokio_postgres::types::Type::FLOAT8,
            ],
        )
        .await
        .expect("prepare");
    for k in [1i32, 41] {
        let row = c
            .query_one(&stmt, &[&k, &"ab", &f64::from(k)])
            .await
            .expect("query");
        assert_eq!(row.get::<_, i64>("n"), i64::from(k) + 1);
        assert_eq!(row.get::<_, String>("s"), "AB");
        assert_eq!(row.get::<_, f64>("f"), 2.5 * k as f64);
    }
    // NULL parameters.
    let nulls = c
        .prepare_typed(
            "SELECT $1 IS NULL, coalesce($1, 7)",
            &[tokio_postgres::types::Type::INT8],
        )
        .await
        .expect("prepare nulls");
    let row = c.query_one(&nulls, &[&None::<i64>]).await.expect("nulls");
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i64>(1), 7);

    // now() is the statement's time, not a cached one.
    let now = c.prepare("SELECT now()").await.expect("prepare now");
    let t1: std::time::SystemTime = c.query_one(&now, &[]).await.expect("now").get(0);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t2: std::time::SystemTime = c.query_one(&now, &[]).await.expect("now").get(0);
    assert!(
        t2.duration_since(t1).unwrap_or_default() >= Duration::from_millis(25),
        "{t1:?} then {t2:?}"
    );

    // Errors keep their SQLSTATEs.
    let e = c
        .query_one("SELECT 1 / 0", &[])
        .await
        .expect_err("division");
    assert_eq!(sqlstate(&e), "22012", "{e}");
    let e = c
        .query_one("SELECT 'x'::int", &[])
        .await
        .expect_err("bad cast");
    assert_eq!(sqlstate(&e), "22P02", "{e}");

    // What the fast path leaves to the planner still works: an async function, a scalar
    // subquery, an aggregate without FROM.
    let t0 = Instant::now();
    c.query("SELECT pg_sleep(0.05)", &[])
        .await
        .expect("pg_sleep");
    assert!(t0.elapsed() >= Duration::from_millis(45));
    c.batch_execute("CREATE TABLE few (x BIGINT); INSERT INTO few VALUES (3), (9);")
        .await
        .expect("table");
    let row = c
        .query_one("SELECT (SELECT max(x) FROM few) + 1, count(*)", &[])
        .await
        .expect("subquery");
    assert_eq!(row.get::<_, i64>(0), 10);
    assert_eq!(row.get::<_, i64>(1), 1);
}

/// A user table or column whose name starts with `pg_` is a user object: correlated scalar
/// subqueries over it keep their values (datafusion-pg-catalog's rewriter, which answers them
/// with NULL, runs on catalog-only queries), and a scalar subquery returning two rows is an
/// error, as in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_prefixed_user_names_keep_query_results() {
    let server = Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE pg_events (id BIGINT, v BIGINT, pg_score DOUBLE);
         INSERT INTO pg_events VALUES (1, 10, 0.5), (1, 20, 1.5), (2, 5, 2.5);
         CREATE TABLE events AS SELECT * FROM pg_events;",
    )
    .await
    .expect("setup");
    let correlated = |t: &str| {
        format!(
            "SELECT id, (SELECT max(v) FROM {t} e2 WHERE e2.id = e.id) AS m, \
             (SELECT sum(pg_score) FROM {t} e3 WHERE e3.id = e.id) AS s \
             FROM {t} e ORDER BY id, v"
        )
    };
    let want = vec![
        vec![Some("1".into()), Some("20".into()), Some("2".into())],
        vec![Some("1".into()), Some("20".into()), Some("2".into())],
        vec![Some("2".into()), Some("5".into()), Some("2.5".into())],
    ];
    for t in ["pg_events", "events"] {
        let rows = c.simple_query(&correlated(t)).await.expect(t);
        assert_eq!(rows_of(&rows), want, "{t}");
        // The same through the extended protocol.
        let rows = c.query(&correlated(t), &[]).await.expect(t);
        assert_eq!(rows.len(), 3, "{t}");
        assert_eq!(rows[0].get::<_, Option<i64>>(1), Some(20), "{t}");
    }
    // A column named pg_score in a user query, with a correlated subquery in the select list.
    let rows = c
        .simple_query(
            "SELECT pg_score, (SELECT max(x.pg_score) FROM events x WHERE x.id = e.id) AS top \
             FROM pg_events e ORDER BY pg_score",
        )
        .await
        .expect("pg_score");
    assert_eq!(
        rows_of(&rows),
        vec![
            vec![Some("0.5".into()), Some("1.5".into())],
            vec![Some("1.5".into()), Some("1.5".into())],
            vec![Some("2.5".into()), Some("2.5".into())],
        ]
    );
    // More than one row from a scalar subquery: 21000, as in PostgreSQL.
    for t in ["pg_events", "events"] {
        let e = c
            .simple_query(&format!("SELECT (SELECT v FROM {t}) AS v"))
            .await
            .expect_err("two rows");
        assert_eq!(sqlstate(&e), "21000", "{t}: {e:?}");
    }
    // psql's catalog queries still work next to such tables.
    let rows = c
        .simple_query(
            "SELECT c.relname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relname IN ('pg_events', 'events') ORDER BY 1",
        )
        .await
        .expect("catalog");
    assert_eq!(
        rows_of(&rows),
        vec![vec![Some("events".into())], vec![Some("pg_events".into())]]
    );
}

/// A prepared keyed lookup reuses its physical plan across executions: every execution sees
/// its own parameter values and every commit made before it (its own INSERT, another
/// session's INSERT or transaction), a transaction block sees its own writes, and
/// `PREDICT_PROBA` gives the same bits as the unprepared query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_lookups_see_new_values_and_every_commit() {
    let server = Server::start();
    let c = server.connect().await;
    let other = server.connect().await;
    c.batch_execute(
        "CREATE TABLE pts AS SELECT value AS id, CAST(value % 7 AS DOUBLE) AS v, \
           concat('s', CAST(value AS VARCHAR)) AS s, value % 3 = 0 AS label \
         FROM generate_series(1, 300);
         CREATE MODEL pts_model PREDICT label USING gbdt WITH (num_trees = 5) \
           AS SELECT v, label FROM pts;",
    )
    .await
    .expect("setup");
    let lookup = c
        .prepare("SELECT id, v, s FROM pts WHERE id = $1")
        .await
        .expect("prepare lookup");
    let found = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, f64, String)> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    for id in [1i64, 2, 299, 7, 1] {
        let rows = c.query(&lookup, &[&id]).await.expect("lookup");
        assert_eq!(
            found(rows),
            vec![(id, (id % 7) as f64, format!("s{id}"))],
            "id {id}"
        );
    }
    // The lookups ran on one physical plan: planned once, then reused.
    let (planned, reused) = prepared_plans(&server);
    assert!(
        planned >= 1 && reused >= 4,
        "planned {planned}, reused {reused}"
    );
    let missing = c.query(&lookup, &[&1000i64]).await.expect("lookup 1000");
    assert!(missing.is_empty());
    let null = c
        .query(&lookup, &[&None::<i64>])
        .await
        .expect("lookup NULL");
    assert!(null.is_empty(), "id = NULL matches nothing");

    // Its own INSERT, another session's INSERT, another session's transaction.
    c.batch_execute("INSERT INTO pts VALUES (1000, 1.5, 'own', true)")
        .await
        .expect("insert");
    let rows = c.query(&lookup, &[&1000i64]).await.expect("lookup 1000");
    assert_eq!(found(rows), vec![(1000, 1.5, "own".to_string())]);
    other
        .batch_execute("INSERT INTO pts VALUES (2000, 2.5, 'other', false)")
        .await
        .expect("insert other");
    let rows = c.query(&lookup, &[&2000i64]).await.expect("lookup 2000");
    assert_eq!(found(rows), vec![(2000, 2.5, "other".to_string())]);
    other
        .batch_execute("BEGIN; INSERT INTO pts VALUES (3000, 3.5, 'txn', true)")
        .await
        .expect("begin other");
    assert!(
        c.query(&lookup, &[&3000i64])
            .await
            .expect("3000")
            .is_empty()
    );
    other.batch_execute("COMMIT").await.expect("commit other");
    let rows = c.query(&lookup, &[&3000i64]).await.expect("lookup 3000");
    assert_eq!(found(rows), vec![(3000, 3.5, "txn".to_string())]);

    // Inside its own block it sees its own write; after ROLLBACK it is gone.
    c.batch_execute("BEGIN; INSERT INTO pts VALUES (4000, 4.5, 'mine', false)")
        .await
        .expect("begin");
    let rows = c.query(&lookup, &[&4000i64]).await.expect("lookup 4000");
    assert_eq!(found(rows), vec![(4000, 4.5, "mine".to_string())]);
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert!(
        c.query(&lookup, &[&4000i64])
            .await
            .expect("4000")
            .is_empty()
    );
    let rows = c.query(&lookup, &[&5i64]).await.expect("lookup 5");
    assert_eq!(found(rows), vec![(5, 5.0, "s5".to_string())]);

    // Each commit made the next lookup plan again, then reuse that plan.
    let (planned_after, _) = prepared_plans(&server);
    assert!(
        planned_after >= planned + 3,
        "planned {planned} then {planned_after}"
    );

    // Parameters in the select list and in several conditions.
    let scaled = c
        .prepare("SELECT id, v * $2 FROM pts WHERE id = $1 AND v >= $3")
        .await
        .expect("prepare scaled");
    for (id, k, min) in [(3i64, 2.0f64, 0.0f64), (4, 10.0, 1.0), (6, 1.0, 100.0)] {
        let rows = c.query(&scaled, &[&id, &k, &min]).await.expect("scaled");
        let got: Vec<(i64, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let v = (id % 7) as f64;
        let want = if v >= min { vec![(id, v * k)] } else { vec![] };
        assert_eq!(got, want, "id {id}, k {k}, min {min}");
    }
    // LIMIT $1 (a parameter where the planner wants a number) still runs.
    let limited = c
        .prepare_typed(
            "SELECT id FROM pts WHERE v = 1 ORDER BY id LIMIT $1",
            &[tokio_postgres::types::Type::INT8],
        )
        .await
        .expect("prepare limit");
    for n in [1i64, 3] {
        let rows = c.query(&limited, &[&n]).await.expect("limit");
        assert_eq!(rows.len(), n as usize);
    }

    // PREDICT_PROBA through the prepared plan equals the unprepared query, bit for bit.
    let scored = c
        .prepare("SELECT PREDICT_PROBA('pts_model', v) FROM pts WHERE id = $1")
        .await
        .expect("prepare predict");
    for id in [3i64, 10, 1000] {
        let prepared: f64 = c.query_one(&scored, &[&id]).await.expect("predict").get(0);
        let plain: f64 = c
            .query_one(
                &format!("SELECT PREDICT_PROBA('pts_model', v) FROM pts WHERE id = {id}"),
                &[],
            )
            .await
            .expect("plain predict")
            .get(0);
        assert_eq!(prepared.to_bits(), plain.to_bits(), "id {id}");
        assert!((0.0..=1.0).contains(&prepared));
    }

    // A new model version (DDL): the prepared statement is planned again, scores with the
    // new version, and goes back to reusing its plan.
    let before: f64 = c
        .query_one(&scored, &[&3i64])
        .await
        .expect("predict")
        .get(0);
    c.batch_execute(
        "CREATE OR REPLACE MODEL pts_model PREDICT label USING gbdt \
           WITH (num_trees = 40, learning_rate = 0.3, gate = 'none') AS SELECT v, label FROM pts",
    )
    .await
    .expect("retrain");
    let (planned, reused) = prepared_plans(&server);
    for _ in 0..3 {
        let after: f64 = c
            .query_one(&scored, &[&3i64])
            .await
            .expect("predict")
            .get(0);
        let plain: f64 = c
            .query_one(
                "SELECT PREDICT_PROBA('pts_model', v) FROM pts WHERE id = 3",
                &[],
            )
            .await
            .expect("plain predict")
            .get(0);
        assert_eq!(after.to_bits(), plain.to_bits());
        assert_ne!(after.to_bits(), before.to_bits(), "still the old version");
    }
    let (planned_now, reused_now) = prepared_plans(&server);
    assert_eq!(planned_now, planned + 1);
    assert!(
        reused_now >= reused + 2,
        "reused {reused} then {reused_now}"
    );
}

/// `prognos_prepared_plans_total` from `/metrics`: (planned, reused).
fn prepared_plans(server: &Server) -> (u64, u64) {
    let (status, body) = http_get(server.http, "/metrics");
    assert_eq!(status, 200);
    let value = |outcome: &str| -> u64 {
        let prefix = format!("prognos_prepared_plans_total{{outcome=\"{outcome}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{body}"))
    };
    (value("planned"), value("reused"))
}
