//! Load test (not a test: a report): `--clients` concurrent pgwire clients (default 64) for
//! `--seconds` (default 60) against one server, each mixing scans, point PREDICT, batch
//! PREDICT, FORECAST, ANOMALY, INSERT, bad queries (which must fail with their own SQLSTATE)
//! and, now and then, CREATE OR REPLACE MODEL. Reports throughput and p50 / p99 latency per
//! kind, unexpected errors, and the server's RSS over time.
//!
//! ```sh
//! cargo build --release -p prognos -p prognos-e2e
//! PROGNOS_BIN=$CARGO_TARGET_DIR/release/prognos \
//!   $CARGO_TARGET_DIR/release/prognos-load --clients 64 --seconds 120
//! ```
//! Prints a Markdown table; keep the numbers in `benches/README.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prognos_e2e::{Server, arg, percentile, rss_kib};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Mutex;

const SETUP: &[&str] = &[
    "CREATE TABLE customers AS SELECT value AS id, CAST(value % 48 AS DOUBLE) AS tenure, \
     CAST(value % 97 AS DOUBLE) + 20.0 AS charges, CAST(value % 5 AS BIGINT) AS calls, \
     CAST((value % 5) > 2 AS BIGINT) AS churned FROM generate_series(1, 50000)",
    "CREATE TABLE metrics AS SELECT to_timestamp(value * 300) AS ts, 'h' || (value % 4) AS host, \
     100.0 + CAST(value % 288 AS DOUBLE) / 10.0 AS latency FROM generate_series(1, 8000)",
    "CREATE TABLE events (id BIGINT, kind TEXT, amount DOUBLE)",
    "CREATE MODEL churn PREDICT churned USING gbdt WITH (num_trees = 30) AS \
     SELECT tenure, charges, calls, churned FROM customers",
    "CREATE MODEL load_fc FORECAST latency TIME ts BY host USING ets WITH (horizon = 12) AS \
     SELECT ts, host, latency FROM metrics",
];

/// The kinds of statements the clients send, with their weights.
const KINDS: &[(&str, u32)] = &[
    ("scan", 20),
    ("point PREDICT", 30),
    ("batch PREDICT", 8),
    ("FORECAST", 8),
    ("ANOMALY", 4),
    ("INSERT", 20),
    ("bad query", 9),
    ("CREATE MODEL", 1),
];

fn statement(kind: &str, rng: &mut ChaCha8Rng) -> (String, Option<&'static str>) {
    let k = rng.random_range(0..1000);
    match kind {
        "scan" => (
            format!(
                "SELECT count(*), avg(charges) FROM customers WHERE id % 100 = {}",
                k % 100
            ),
            None,
        ),
        "point PREDICT" => (
            format!(
                "SELECT PREDICT_PROBA('churn', {}.0, {}.5, {})",
                k % 48,
                20 + k % 97,
                k % 5
            ),
            None,
        ),
        "batch PREDICT" => (
            format!(
                "SELECT avg(PREDICT_PROBA('churn', tenure, charges, calls)) FROM customers \
                 WHERE id % 50 = {}",
                k % 50
            ),
            None,
        ),
        "FORECAST" => ("SELECT count(*) FROM FORECAST('load_fc')".into(), None),
        "ANOMALY" => (
            "SELECT count(*) FROM ANOMALY(TABLE metrics, time => 'ts', value => 'latency', \
             id => 'host')"
                .into(),
            None,
        ),
        "INSERT" => (
            format!("INSERT INTO events VALUES ({k}, 'click', {}.25)", k % 17),
            None,
        ),
        "bad query" => match k % 3 {
            0 => ("SELECT * FROM no_such_table".into(), Some("42P01")),
            1 => ("SELECT PREDICT('no_such_model', 1)".into(), Some("42704")),
            _ => ("SELEC 1".into(), Some("42601")),
        },
        _ => (
            "CREATE OR REPLACE MODEL churn_small PREDICT churned USING logistic AS \
             SELECT tenure, charges, calls, churned FROM customers WHERE id % 3 = 0"
                .into(),
            None,
        ),
    }
}

#[derive(Default)]
struct Tally {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    unexpected: Vec<String>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let clients = arg("--clients", 64);
    let seconds = arg("--seconds", 60);
    let server = Server::start_with(
        false,
        vec![("PROGNOS__MAX_CONNECTIONS".into(), (clients + 8).to_string())],
    );
    let admin = server.connect().await;
    for sql in SETUP {
        admin.batch_execute(sql).await.expect(sql);
    }
    let total_weight: u32 = KINDS.iter().map(|(_, w)| w).sum();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for client in 0..clients {
        let c = server.connect().await;
        let tally = Arc::clone(&tally);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(client);
            let mut local: Vec<(&'static str, Duration)> = vec![];
            let mut unexpected = vec![];
            while !stop.load(Ordering::Relaxed) {
                let mut pick = rng.random_range(0..total_weight);
                let kind = KINDS
                    .iter()
                    .find(|(_, w)| {
                        if pick < *w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .map(|(k, _)| *k)
                    .unwrap_or("scan");
                let (sql, expected) = statement(kind, &mut rng);
                let start = Instant::now();
                let outcome = c.simple_query(&sql).await;
                local.push((kind, start.elapsed()));
                match (outcome, expected) {
                    (Ok(_), None) => {}
                    (Err(e), Some(code))
                        if e.as_db_error().is_some_and(|d| d.code().code() == code) => {}
                    (Ok(_), Some(code)) => unexpected.push(format!("{kind}: no {code}: {sql}")),
                    (Err(e), _) => unexpected.push(format!("{kind}: {e:?}: {sql}")),
                }
            }
            let mut t = tally.lock().await;
            for (k, d) in local {
                t.latencies.entry(k).or_default().push(d);
            }
            t.unexpected.extend(unexpected);
        }));
    }
    let started = Instant::now();
    let mut rss = vec![];
    while started.elapsed() < Duration::from_secs(seconds) {
        rss.push((started.elapsed().as_secs(), rss_kib(server.pid())));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("client");
    }
    let elapsed = started.elapsed().as_secs_f64();
    rss.push((started.elapsed().as_secs(), rss_kib(server.pid())));
    let t = tally.lock().await;
    println!("{clients} clients, {elapsed:.0} s\n");
    println!("| kind | statements | per second | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for (kind, _) in KINDS {
        let mut l = t.latencies.get(kind).cloned().unwrap_or_default();
        l.sort();
        println!(
            "| {kind} | {} | {:.1} | {:.1} | {:.1} |",
            l.len(),
            l.len() as f64 / elapsed,
            percentile(&l, 0.5).as_secs_f64() * 1e3,
            percentile(&l, 0.99).as_secs_f64() * 1e3
        );
    }
    println!("\nunexpected errors: {}", t.unexpected.len());
    for u in t.unexpected.iter().take(10) {
        println!("  {u}");
    }
    println!(
        "RSS (s: MiB): {}",
        rss.iter()
            .map(|(s, k)| format!("{s}: {}", k / 1024))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
