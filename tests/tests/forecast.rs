//! FORECAST(TABLE t, ...) through the real server: real hourly data with gaps (UCI bike
//! sharing, from shared/data), several series at once, and every bad input.

use prognos_e2e::{Server, shared_data_dir};
use prognos_models::forecast::smape;
use tokio_postgres::Client;

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}

async fn rows(c: &Client, sql: &str) -> Vec<tokio_postgres::Row> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecast_series_with_ids_and_reject_bad_input() {
    let server = Server::start();
    let c = server.connect().await;
    // Two daily series with a weekly pattern and a trend; store 'b' arrives unsorted and with
    // a duplicated day (same value twice), which must not change anything.
    c.batch_execute(
        "CREATE TABLE sales AS \
           SELECT CAST('2025-01-01' AS DATE) + CAST(v AS INT) AS day, s AS store, \
                  (CASE WHEN s = 'a' THEN 100.0 ELSE 300.0 END) + (v % 7) * 10 + v * 0.5 AS amount \
           FROM generate_series(0, 139) AS t(v) CROSS JOIN (VALUES ('a'), ('b')) AS st(s); \
         INSERT INTO sales SELECT day, store, amount FROM sales WHERE store = 'b' AND day = DATE '2025-03-01'; \
         CREATE TABLE truth AS \
           SELECT CAST('2025-01-01' AS DATE) + CAST(v AS INT) AS day, s AS store, \
                  (CASE WHEN s = 'a' THEN 100.0 ELSE 300.0 END) + (v % 7) * 10 + v * 0.5 AS amount \
           FROM generate_series(140, 153) AS t(v) CROSS JOIN (VALUES ('a'), ('b')) AS st(s);",
    )
    .await
    .expect("tables");
    let got = rows(
        &c,
        "SELECT f.store, f.day, f.forecast, f.lower, f.upper, f.method, t.amount \
         FROM forecast(TABLE sales, time => 'day', value => 'amount', id => 'store', \
                       horizon => 14, level => 90) AS f \
         JOIN truth t ON t.store = f.store AND t.day = f.day ORDER BY f.store, f.day",
    )
    .await;
    assert_eq!(
        got.len(),
        28,
        "14 days for each of two stores, on the days after the data"
    );
    for store in ["a", "b"] {
        let r: Vec<_> = got
            .iter()
            .filter(|r| r.get::<_, String>(0) == store)
            .collect();
        let actual: Vec<f64> = r.iter().map(|r| r.get(6)).collect();
        let fc: Vec<f64> = r.iter().map(|r| r.get(2)).collect();
        for row in &r {
            let (f, lo, hi): (f64, f64, f64) = (row.get(2), row.get(3), row.get(4));
            assert!(lo <= f && f <= hi, "{store}: {lo} {f} {hi}");
            assert!(!row.get::<_, String>(5).is_empty());
        }
        let s = smape(&actual, &fc);
        assert!(
            s < 3.0,
            "store {store}: sMAPE {s} on a clean weekly pattern"
        );
    }

    // The forecast composes like any relation: grouping and ordering on (id, time) see every
    // row (a plan that kept the group keys' functional dependencies across the unnest
    // collapsed these to one row per store).
    let groups = rows(
        &c,
        "SELECT count(*) FROM (SELECT store, day FROM forecast(TABLE sales, time => 'day', \
         value => 'amount', id => 'store', horizon => 14) GROUP BY store, day) AS g",
    )
    .await;
    assert_eq!(groups[0].get::<_, i64>(0), 28);
    let first = rows(
        &c,
        "SELECT store, CAST(day AS VARCHAR) FROM forecast(TABLE sales, time => 'day', \
         value => 'amount', id => 'store', horizon => 14) ORDER BY store, day LIMIT 3",
    )
    .await;
    let days: Vec<String> = first
        .iter()
        .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    // The data ends on 2025-05-20 (day 139 after 2025-01-01).
    assert_eq!(days, ["a 2025-05-21", "a 2025-05-22", "a 2025-05-23"]);

    // EXPLAIN shows the plan of the rewritten query.
    let plan = rows(
        &c,
        "EXPLAIN SELECT * FROM forecast(TABLE sales, time => 'day', value => 'amount', \
         id => 'store')",
    )
    .await;
    let text: String = plan.iter().map(|r| r.get::<_, String>(1)).collect();
    assert!(text.contains("prognos_forecast"), "{text}");

    // Bad input: each with its SQLSTATE, and the server keeps serving.
    c.batch_execute(
        "CREATE TABLE empty_values AS SELECT CAST('2025-01-01' AS DATE) + CAST(v AS INT) AS day, \
         CAST(NULL AS DOUBLE) AS amount FROM generate_series(0, 9) AS t(v)",
    )
    .await
    .expect("nulls table");
    let cases = [
        (
            "forecast(TABLE sales, time => 'amount', value => 'amount')",
            "42804",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'store')",
            "42804",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'nope')",
            "42703",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'amount', id => 'nope')",
            "42703",
        ),
        (
            "forecast(TABLE empty_values, time => 'day', value => 'amount')",
            "22000",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'amount', horizon => 0)",
            "22023",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'amount', horizon => -3)",
            "22023",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'amount', horizon => 1000000000)",
            "22023",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'amount', level => 0)",
            "22023",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'amount', level => 100)",
            "22023",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'amount', method => 'magic')",
            "22023",
        ),
        (
            "forecast(TABLE sales, time => 'day', value => 'amount', colour => 'red')",
            "22023",
        ),
        ("forecast(TABLE sales, value => 'amount')", "22023"),
        ("forecast(TABLE sales, 'day', 'amount')", "22023"),
    ];
    for (from, code) in cases {
        let e = c
            .query(&format!("SELECT * FROM {from}"), &[])
            .await
            .expect_err(from);
        assert_eq!(sqlstate(&e), code, "{from}: {e}");
    }
    assert_eq!(rows(&c, "SELECT 1").await.len(), 1);
}

/// Real hourly data with gaps: UCI bike sharing rentals (shared/data), 48 hours of a regular
/// November week held out. FORECAST must continue the hourly grid, do at least as well as
/// seasonal naive (auto may pick it: it did when this was written, sMAPE 46.2 — night hours
/// with a handful of rentals weigh heavily in sMAPE) and cover with its 95 % intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bike_sharing_hourly_forecast_beats_seasonal_naive() {
    let Some(dir) = shared_data_dir() else {
        eprintln!("SKIP: shared/data not found");
        return;
    };
    let server = Server::start();
    let c = server.connect().await;
    let csv = dir.join("regression/bike_sharing_hour.csv");
    c.batch_execute(&format!(
        "CREATE EXTERNAL TABLE bike STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true'); \
         CREATE VIEW rentals AS SELECT CAST(concat(CAST(dteday AS VARCHAR), ' ', \
           lpad(CAST(hr AS VARCHAR), 2, '0'), ':00:00') AS TIMESTAMP) AS ts, \
           CAST(cnt AS DOUBLE) AS cnt FROM bike; \
         CREATE VIEW history AS SELECT * FROM rentals WHERE ts < TIMESTAMP '2012-11-12 00:00:00'; \
         CREATE VIEW future AS SELECT * FROM rentals WHERE ts >= TIMESTAMP '2012-11-12 00:00:00' \
           AND ts < TIMESTAMP '2012-11-14 00:00:00';",
        csv.display()
    ))
    .await
    .expect("bike tables");
    let mut scores = vec![];
    for method in ["auto", "seasonal_naive"] {
        let got = rows(
            &c,
            &format!(
                "SELECT f.ts, f.forecast, f.lower, f.upper, u.cnt \
                 FROM forecast(TABLE history, time => 'ts', value => 'cnt', horizon => 48, \
                               method => '{method}') AS f \
                 JOIN future u ON u.ts = f.ts ORDER BY f.ts"
            ),
        )
        .await;
        // The data has a few missing hours in those two days; most are there.
        assert!(got.len() >= 40, "{method}: {} matching hours", got.len());
        let actual: Vec<f64> = got.iter().map(|r| r.get(4)).collect();
        let fc: Vec<f64> = got.iter().map(|r| r.get(1)).collect();
        let covered = got
            .iter()
            .filter(|r| {
                r.get::<_, f64>(2) <= r.get::<_, f64>(4) && r.get::<_, f64>(4) <= r.get::<_, f64>(3)
            })
            .count();
        let s = smape(&actual, &fc);
        eprintln!(
            "{method}: sMAPE {s:.2} over {} hours, 95% interval covers {covered}",
            got.len()
        );
        assert!(
            covered as f64 >= 0.8 * got.len() as f64,
            "{method}: 95% intervals cover {covered} of {}",
            got.len()
        );
        scores.push(s);
    }
    assert!(
        scores[0] <= scores[1],
        "auto {} vs seasonal naive {}",
        scores[0],
        scores[1]
    );
}
