//! Frontend benchmark (not a test): bulk scan over Flight SQL vs pgwire, and point-query
//! latency over pgwire with 1 and 16 concurrent clients, all against one server in one run.
//!
//! ```sh
//! cargo build --release -p prognos -p prognos-e2e
//! PROGNOS_BIN=$CARGO_TARGET_DIR/release/prognos \
//!   $CARGO_TARGET_DIR/release/prognos-bench --rows 10000000
//! ```
//! Prints a Markdown table; keep the numbers in `benches/README.md`.

use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::{StreamExt, TryStreamExt};
use prognos_e2e::{Server, arg, percentile};

async fn pg_scan(server: &Server) -> (u64, Duration) {
    let c = server.connect().await;
    let start = Instant::now();
    let rows = c
        .query_raw("SELECT * FROM bench_scan", Vec::<i64>::new())
        .await
        .expect("scan");
    futures::pin_mut!(rows);
    let mut n = 0u64;
    while let Some(r) = rows.next().await {
        r.expect("row");
        n += 1;
    }
    (n, start.elapsed())
}

async fn flight_scan(server: &Server) -> (u64, Duration) {
    let channel = tonic::transport::Endpoint::new(format!("http://{}", server.flight))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect flight");
    let mut client = FlightSqlServiceClient::new(channel);
    let start = Instant::now();
    let info = client
        .execute("SELECT * FROM bench_scan".to_string(), None)
        .await
        .expect("execute");
    let mut n = 0u64;
    for ep in info.endpoint {
        let ticket = ep.ticket.expect("ticket");
        let mut stream = client.do_get(ticket).await.expect("do_get");
        while let Some(batch) = stream.try_next().await.expect("batch") {
            n += batch.num_rows() as u64;
        }
    }
    (n, start.elapsed())
}

/// Run `sql` (one `$1 BIGINT` parameter, prepared once per client) `per_client` times from
/// each of `clients` concurrent connections; returns the sorted latencies and the wall time.
async fn point_queries(
    server: &Server,
    sql: &'static str,
    clients: usize,
    per_client: usize,
) -> (Vec<Duration>, Duration) {
    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..clients {
        let conn = server.pg_conn_str();
        tasks.push(tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            let stmt = client
                .prepare_typed(sql, &[tokio_postgres::types::Type::INT8])
                .await
                .expect("prepare");
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let id = ((c * per_client + i) % 1000) as i64 + 1;
                let t = Instant::now();
                let rows = client.query(&stmt, &[&id]).await.expect("point query");
                lat.push(t.elapsed());
                assert_eq!(rows.len(), 1);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    let wall = start.elapsed();
    all.sort();
    (all, wall)
}

/// The point queries measured, each beside `SELECT 1` (here `SELECT $1`, which the server
/// answers without planning).
const POINT_QUERIES: &[(&str, &str)] = &[
    ("SELECT $1 (no table)", "SELECT $1"),
    ("keyed lookup", "SELECT * FROM bench_points WHERE id = $1"),
    (
        "keyed lookup + PREDICT_PROBA",
        "SELECT id, PREDICT_PROBA('bench_model', v, w) FROM bench_points WHERE id = $1",
    ),
];

#[tokio::main]
async fn main() {
    let rows = arg("--rows", 10_000_000);
    let points = arg("--points", 2000) as usize;
    let server = Server::start();
    let c = server.connect().await;
    let t = Instant::now();
    c.batch_execute(&format!(
        "CREATE TABLE bench_scan AS SELECT value AS id, value * 2 AS x, \
         CAST(value % 1000 AS DOUBLE) AS y, concat('label_', CAST(value % 100 AS VARCHAR)) AS s \
         FROM generate_series(1, {rows});
         CREATE TABLE bench_points AS SELECT value AS id, value * 3 AS v, \
           CAST(value % 17 AS DOUBLE) AS w, value % 3 = 0 AS label FROM generate_series(1, 1000);
         CREATE MODEL bench_model PREDICT label USING gbdt WITH (num_trees = 20) \
           AS SELECT v, w, label FROM bench_points;"
    ))
    .await
    .expect("create bench tables");
    eprintln!("loaded {rows} rows in {:?}", t.elapsed());

    let (pg_rows, pg_time) = pg_scan(&server).await;
    let (fl_rows, fl_time) = flight_scan(&server).await;
    assert_eq!(pg_rows, rows);
    assert_eq!(fl_rows, rows);
    let mut point_results = vec![];
    for (label, sql) in POINT_QUERIES {
        let one = point_queries(&server, sql, 1, points).await;
        let sixteen = point_queries(&server, sql, 16, (points / 16).max(1)).await;
        point_results.push((label, one, sixteen));
    }

    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| bulk scan {rows} rows, pgwire (binary, tokio-postgres) | {:.0} rows/s ({:.2} s) |",
        pg_rows as f64 / pg_time.as_secs_f64(),
        pg_time.as_secs_f64()
    );
    println!(
        "| bulk scan {rows} rows, Flight SQL (arrow-flight client) | {:.0} rows/s ({:.2} s) |",
        fl_rows as f64 / fl_time.as_secs_f64(),
        fl_time.as_secs_f64()
    );
    println!(
        "| Flight SQL / pgwire scan speed | {:.1}x |",
        pg_time.as_secs_f64() / fl_time.as_secs_f64()
    );
    let base = percentile(&point_results[0].1.0, 0.5).as_secs_f64();
    for (label, (one, _), (sixteen, wall)) in &point_results {
        let p50 = percentile(one, 0.5).as_secs_f64();
        println!(
            "| {label}, 1 client: p50 / p99 | {:.2} ms / {:.2} ms ({:.1}x `SELECT $1`) |",
            p50 * 1e3,
            percentile(one, 0.99).as_secs_f64() * 1e3,
            p50 / base
        );
        println!(
            "| {label}, 16 clients: p50 / p99, throughput | {:.2} ms / {:.2} ms, {:.0} queries/s |",
            percentile(sixteen, 0.5).as_secs_f64() * 1e3,
            percentile(sixteen, 0.99).as_secs_f64() * 1e3,
            sixteen.len() as f64 / wall.as_secs_f64()
        );
    }
}
