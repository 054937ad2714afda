//! Model lifecycle benchmark (a report, not a test): starts a real server and measures
//!
//! 1. point-PREDICT throughput (a prepared `SELECT id, PREDICT('m', x, z) FROM pts WHERE
//!    id = $1` from `--clients` clients for `--seconds` each) with prediction logging off, at
//!    sample 0.1 and at sample 1;
//! 2. the same load while `ALTER MODEL m DEPLOY VERSION` / `ROLLBACK` switch the deployed
//!    version every 500 ms: failed queries, and how long each switch statement took;
//! 3. the same load with the prediction cache on (`SET CACHE (entries = 1000)`);
//! 4. the same load while the outcomes turn wrong under `SET ROLLBACK WHEN live_rmse > 50`
//!    (logging every row, a rule check every second): the time from the drop to the
//!    automatic rollback.
//!
//! `PROGNOS_BIN=… prognos-lifecycle-bench [--clients 32] [--seconds 10]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prognos_e2e::{Server, arg, percentile};

/// Run the point-PREDICT load for `seconds`; returns (queries, failures, sorted latencies).
async fn load(server: &Server, clients: u64, seconds: u64) -> (u64, u64, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for c in 0..clients {
        let client = server.connect().await;
        let stop = Arc::clone(&stop);
        let failures = Arc::clone(&failures);
        tasks.push(tokio::spawn(async move {
            let Ok(stmt) = client
                .prepare("SELECT id, PREDICT('m', x, z) FROM pts WHERE id = $1")
                .await
            else {
                failures.fetch_add(1, Ordering::Relaxed);
                return vec![];
            };
            let mut latencies = vec![];
            let mut id = c as i64;
            while !stop.load(Ordering::Relaxed) {
                id = (id * 7 + 13) % 1000;
                let t = Instant::now();
                match client.query(&stmt, &[&id]).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("query failed: {e}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_unstable();
    (all.len() as u64, failures.load(Ordering::Relaxed), all)
}

/// One table row: queries per second, p50 and p99 latency, failures.
fn print_row(label: &str, n: u64, failed: u64, lat: &[Duration], seconds: u64) {
    println!(
        "| {label} | {:.0} | {:.2} ms | {:.2} ms | {failed} |",
        n as f64 / seconds as f64,
        percentile(lat, 0.5).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let clients = arg("--clients", 32);
    let seconds = arg("--seconds", 10);
    let server = Server::start_with(
        false,
        vec![("PROGNOS__MODELS__RULE_CHECK_SECONDS".into(), "1".into())],
    );
    let admin = server.connect().await;
    admin
        .batch_execute(
            "CREATE TABLE pts AS SELECT value AS id, CAST(value % 97 AS DOUBLE) AS x, \
                 CAST(value % 13 AS DOUBLE) AS z, CAST(value % 97 AS DOUBLE) * 2 + 1 AS y \
             FROM generate_series(0, 999); \
             CREATE MODEL m PREDICT y USING linear WITH (gate = 'none') AS SELECT x, z, y FROM pts; \
             CREATE OR REPLACE MODEL m PREDICT y USING gbdt WITH (gate = 'none') \
                 AS SELECT x, z, y FROM pts",
        )
        .await
        .expect("setup");

    println!("| logging | queries/s | p50 | p99 | failed |");
    println!("|---|---|---|---|---|");
    for (label, setting) in [
        ("off", None),
        ("sample 0.1", Some("0.1")),
        ("sample 1", Some("1")),
    ] {
        match setting {
            None => admin.batch_execute("ALTER MODEL m RESET LOGGING").await,
            Some(s) => admin
                .simple_query(&format!(
                    "ALTER MODEL m SET LOGGING (sample = {s}, key = 'id')"
                ))
                .await
                .map(|_| ()),
        }
        .expect("logging");
        let (n, failed, lat) = load(&server, clients, seconds).await;
        print_row(label, n, failed, &lat, seconds);
    }
    admin
        .batch_execute("ALTER MODEL m RESET LOGGING")
        .await
        .expect("reset");

    // Switches under load.
    let switching = Arc::new(AtomicBool::new(true));
    let switcher = {
        let c = server.connect().await;
        let switching = Arc::clone(&switching);
        tokio::spawn(async move {
            let mut times = vec![];
            let mut failed = 0u64;
            let mut deploy_one = true;
            while switching.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let sql = if deploy_one {
                    "ALTER MODEL m DEPLOY VERSION 1"
                } else {
                    "ALTER MODEL m DEPLOY VERSION 2"
                };
                deploy_one = !deploy_one;
                let t = Instant::now();
                match c.batch_execute(sql).await {
                    Ok(()) => times.push(t.elapsed()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{sql}: {e}");
                    }
                }
            }
            times.sort_unstable();
            (times, failed)
        })
    };
    let (n, failed, lat) = load(&server, clients, seconds).await;
    switching.store(false, Ordering::Relaxed);
    let (switches, switch_failed) = switcher.await.unwrap_or_default();
    println!();
    println!("| during DEPLOY every 500 ms | value |");
    println!("|---|---|");
    println!("| PREDICT queries | {n} ({failed} failed) |");
    println!(
        "| PREDICT p50 / p99 | {:.2} ms / {:.2} ms |",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    println!("| switches | {} ({switch_failed} failed) |", switches.len());
    println!(
        "| switch statement p50 / max | {:.2} ms / {:.2} ms |",
        percentile(&switches, 0.5).as_secs_f64() * 1e3,
        switches.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );

    // The prediction cache: every point query repeats one of 1 000 inputs.
    // Version 2 serves from here on (the switches may have left it deployed already: 55000).
    let _ = admin.batch_execute("ALTER MODEL m DEPLOY VERSION 2").await;
    println!();
    println!("| cache | queries/s | p50 | p99 | failed |");
    println!("|---|---|---|---|---|");
    for (label, sql) in [
        ("off", "ALTER MODEL m RESET CACHE"),
        ("entries = 1000", "ALTER MODEL m SET CACHE (entries = 1000)"),
        ("off", "ALTER MODEL m RESET CACHE"),
        ("entries = 1000", "ALTER MODEL m SET CACHE (entries = 1000)"),
    ] {
        admin.batch_execute(sql).await.expect("cache setting");
        let (n, failed, lat) = load(&server, clients, seconds).await;
        print_row(label, n, failed, &lat, seconds);
    }
    admin
        .batch_execute("ALTER MODEL m RESET CACHE")
        .await
        .expect("reset cache");

    // An outcome drop under load: how long until the rule rolls the model back.
    admin
        .batch_execute(
            "CREATE TABLE truth AS SELECT id, y AS actual FROM pts; \
             ALTER MODEL m SET LOGGING (sample = 1, key = 'id'); \
             ALTER MODEL m SET OUTCOMES FROM (SELECT id AS key, actual FROM truth); \
             ALTER MODEL m SET ROLLBACK WHEN live_rmse > 50",
        )
        .await
        .expect("rule");
    let drop_after = Duration::from_secs(seconds.min(5));
    let watch = async {
        tokio::time::sleep(drop_after).await;
        let t = Instant::now();
        admin
            .batch_execute(
                "ALTER MODEL m SET OUTCOMES FROM \
                 (SELECT id AS key, actual + 1000 AS actual FROM truth)",
            )
            .await
            .expect("drop");
        loop {
            let v: i64 = admin
                .query_one(
                    "SELECT version FROM system.model_versions \
                     WHERE name = 'm' AND state = 'deployed'",
                    &[],
                )
                .await
                .expect("deployed")
                .get(0);
            if v == 1 {
                return Some(t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(60) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((n, failed, _), rolled_back) = tokio::join!(load(&server, clients, seconds * 2), watch);
    println!();
    println!("| outcome drop under load | value |");
    println!("|---|---|");
    println!("| PREDICT queries | {n} ({failed} failed) |");
    match rolled_back {
        Some(d) => println!("| drop to automatic rollback | {:.2} s |", d.as_secs_f64()),
        None => println!("| drop to automatic rollback | none within 60 s |"),
    }
}
