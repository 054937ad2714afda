//! Random SQL against the real server (`prognos_e2e::sql_gen`: every prognos statement and
//! function, with often wrong arguments, and broken statements). Every statement must end —
//! within the statement timeout — in a result or an error with a proper SQLSTATE: no crash,
//! no hang, no `XX000` (an internal error is a bug, whatever the input), the connection usable
//! afterwards, and memory back near its level after warm-up.
//!
//! CI runs a fixed budget (`PROGNOS_FUZZ_STATEMENTS`, default 3000, seed
//! `PROGNOS_FUZZ_SEED`, default 1); `scripts/fuzz.sh` runs longer.

use std::time::Duration;

use prognos_e2e::sql_gen::{SETUP, SqlGen};
use prognos_e2e::{Server, env_u64, rss_kib};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sql_never_crashes_hangs_or_fails_internally() {
    let seed = env_u64("PROGNOS_FUZZ_SEED", 1);
    let statements = env_u64("PROGNOS_FUZZ_STATEMENTS", 3000);
    let mut server = Server::start_with(
        false,
        vec![
            (
                "PROGNOS__ENGINE__STATEMENT_TIMEOUT_MS".into(),
                "5000".into(),
            ),
            ("PROGNOS__ENGINE__MAX_VALUE_MB".into(), "16".into()),
            ("PROGNOS__ENGINE__QUERY_MEMORY_MB".into(), "256".into()),
            ("PROGNOS__ENGINE__MAX_RESULT_MB".into(), "64".into()),
        ],
    );
    let mut c = server.connect().await;
    for sql in SETUP {
        c.batch_execute(sql).await.expect(sql);
    }
    let mut generator = SqlGen::new(seed);
    let mut warm_rss = 0;
    let mut errors = 0usize;
    let mut internal: Vec<String> = vec![];
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..statements {
        let sql = generator.statement();
        let answer = tokio::time::timeout(Duration::from_secs(60), c.simple_query(&sql)).await;
        let Ok(answer) = answer else {
            panic!("seed {seed} statement {i} hangs: {sql}");
        };
        if let Err(e) = answer {
            errors += 1;
            match e.as_db_error() {
                Some(db) => {
                    if db.code().code() == "XX000" {
                        internal.push(format!("statement {i}: {}: {sql}", db.message()));
                    }
                    *codes.entry(db.code().code().to_string()).or_insert(0) += 1;
                    // A failed transaction block is ended, as a client would.
                    let _ = c.simple_query("ROLLBACK").await;
                }
                None => {
                    assert!(
                        server.is_running(),
                        "seed {seed} statement {i} crashed the server: {sql}: {e}"
                    );
                    panic!("seed {seed} statement {i} broke the connection: {sql}: {e}");
                }
            }
        }
        // A statement that leaves its block failed is rolled back, as a client would.
        if c.is_closed() {
            c = server.connect().await;
        }
        if i == statements / 5 {
            warm_rss = rss_kib(server.pid());
        }
    }
    assert!(
        internal.is_empty(),
        "seed {seed}: {} internal errors:\n{}",
        internal.len(),
        internal.join("\n")
    );
    let _ = c.batch_execute("ROLLBACK").await;
    assert!(server.is_running(), "seed {seed}: the server died");
    let rows = c
        .simple_query("SELECT count(*) FROM f_num")
        .await
        .expect("the connection still answers");
    assert!(!rows.is_empty());
    let end_rss = rss_kib(server.pid());
    eprintln!(
        "fuzz seed {seed}: {statements} statements, {errors} errors {codes:?}, RSS {warm_rss} KiB after warm-up, {end_rss} KiB at the end"
    );
    // Memory comes back: no statement keeps what it used (allocator slack allowed).
    assert!(
        end_rss <= warm_rss * 2 + 256 * 1024,
        "RSS grew from {warm_rss} KiB to {end_rss} KiB"
    );
}
