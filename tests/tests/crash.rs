//! Crash safety at every write step: for each kind of writing statement, the server is made to
//! abort right before its n-th visible file step (`PROGNOS_CRASH_AT=n`: a staged write, a
//! directory made, a file published or removed — see `prognos_storage::fs_steps`), for every n
//! until the statement completes without reaching it. After each crash the server restarts on
//! the same data dir and must show the state from before the statement or the state after it —
//! never a mix — with the catalog and model registry loaded and no file left that a crash
//! wrote and nothing references. The power-loss half of the proof (every acknowledged file and
//! directory entry is synced) is in `storage/src/durable.rs`'s tests.

use std::path::Path;
use std::time::Duration;

use prognos_e2e::{Server, sqlstate};
use prognos_storage::durable::is_staged_name;

/// One writing statement and the queries that show its effect.
struct Scenario {
    name: &'static str,
    setup: &'static [&'static str],
    statements: &'static [&'static str],
    probe: &'static [&'static str],
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "INSERT",
        setup: &[
            "CREATE TABLE t (x BIGINT, s TEXT)",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        ],
        statements: &["INSERT INTO t SELECT value, 'v' || value FROM generate_series(10, 5000)"],
        probe: &["SELECT count(*), sum(x) FROM t"],
    },
    Scenario {
        name: "CREATE TABLE AS",
        setup: &["CREATE TABLE t (x BIGINT)", "INSERT INTO t VALUES (1), (2)"],
        statements: &["CREATE TABLE t2 AS SELECT value AS x FROM generate_series(1, 3000)"],
        probe: &[
            "SELECT count(*), sum(x) FROM t",
            "SELECT count(*), sum(x) FROM t2",
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
        ],
    },
    Scenario {
        name: "COPY FROM",
        setup: &[
            "CREATE TABLE t (x BIGINT, s TEXT)",
            "INSERT INTO t VALUES (1, 'a')",
        ],
        statements: &["COPY t FROM STDIN (FORMAT csv)"],
        probe: &["SELECT count(*), sum(x) FROM t"],
    },
    Scenario {
        name: "transaction block",
        setup: &[
            "CREATE TABLE a (x BIGINT)",
            "CREATE TABLE b (x BIGINT)",
            "INSERT INTO a VALUES (1)",
        ],
        statements: &[
            "BEGIN",
            "INSERT INTO a SELECT value FROM generate_series(1, 100)",
            "INSERT INTO b SELECT value FROM generate_series(1, 50)",
            "CREATE TABLE c AS SELECT 1 AS x",
            "COMMIT",
        ],
        probe: &[
            "SELECT count(*) FROM a",
            "SELECT count(*) FROM b",
            "SELECT count(*) FROM c",
        ],
    },
    Scenario {
        name: "DROP TABLE",
        setup: &["CREATE TABLE t AS SELECT value AS x FROM generate_series(1, 100)"],
        statements: &["DROP TABLE t"],
        probe: &["SELECT count(*), sum(x) FROM t"],
    },
    Scenario {
        name: "CREATE MODEL",
        setup: &["CREATE TABLE t AS SELECT value AS x, value * 2 + 1 AS y \
                  FROM generate_series(1, 200)"],
        statements: &["CREATE MODEL m PREDICT y USING linear AS SELECT x, y FROM t"],
        probe: &[
            "SELECT name, version FROM system.model_versions ORDER BY 1, 2",
            "SELECT round(PREDICT('m', 10)) ",
        ],
    },
    Scenario {
        name: "CREATE OR REPLACE MODEL (a registry update)",
        setup: &[
            "CREATE TABLE t AS SELECT value AS x, value * 2 + 1 AS y FROM generate_series(1, 200)",
            "CREATE MODEL m PREDICT y USING linear AS SELECT x, y FROM t",
        ],
        statements: &[
            "CREATE OR REPLACE MODEL m PREDICT y USING linear AS SELECT x, y * 3 AS y FROM t",
        ],
        probe: &[
            "SELECT name, version, is_current FROM system.model_versions ORDER BY 1, 2",
            "SELECT round(PREDICT('m', 10))",
        ],
    },
    Scenario {
        name: "CREATE MODEL (forecast)",
        setup: &["CREATE TABLE s AS SELECT to_timestamp(value * 3600) AS t, \
                  CAST(value % 24 AS DOUBLE) AS y FROM generate_series(1, 240)"],
        statements: &["CREATE MODEL f FORECAST y TIME t USING ets \
                       WITH (horizon = 4) AS SELECT t, y FROM s"],
        probe: &["SELECT name, version FROM system.model_versions ORDER BY 1, 2"],
    },
    Scenario {
        name: "DROP MODEL",
        setup: &[
            "CREATE TABLE t AS SELECT value AS x, value * 2 + 1 AS y FROM generate_series(1, 200)",
            "CREATE MODEL m PREDICT y USING linear AS SELECT x, y FROM t",
        ],
        statements: &["DROP MODEL m"],
        probe: &["SELECT name, version FROM system.model_versions ORDER BY 1, 2"],
    },
    Scenario {
        name: "ALTER MODEL ROLLBACK",
        setup: &[
            "CREATE TABLE t AS SELECT value AS x, value * 2 + 1 AS y FROM generate_series(1, 200)",
            "CREATE MODEL m PREDICT y USING linear AS SELECT x, y FROM t",
            "CREATE OR REPLACE MODEL m PREDICT y USING linear AS SELECT x, y + 9 AS y FROM t",
        ],
        statements: &["ALTER MODEL m ROLLBACK"],
        probe: &[
            "SELECT version, state FROM system.model_versions ORDER BY 1",
            "SELECT round(PREDICT('m', 10)) FROM t LIMIT 1",
        ],
    },
    Scenario {
        name: "DROP MODEL VERSION",
        setup: &[
            "CREATE TABLE t AS SELECT value AS x, value * 2 + 1 AS y FROM generate_series(1, 200)",
            "CREATE MODEL m PREDICT y USING linear AS SELECT x, y FROM t",
            "CREATE OR REPLACE MODEL m PREDICT y USING linear AS SELECT x, y + 9 AS y FROM t",
        ],
        statements: &["DROP MODEL m VERSION 1"],
        probe: &["SELECT version, state FROM system.model_versions ORDER BY 1"],
    },
];

/// The probe's answers as text; an error is its SQLSTATE (a table that does not exist yet).
async fn observe(server: &Server, probe: &[&str]) -> String {
    let c = server.connect().await;
    let mut out = String::new();
    for sql in probe {
        match c.simple_query(sql).await {
            Ok(msgs) => {
                for row in prognos_e2e::rows_of(&msgs) {
                    out.push_str(&format!("{row:?}\n"));
                }
            }
            Err(e) => out.push_str(&format!("error {}\n", sqlstate(&e))),
        }
    }
    out
}

/// Run the statements in one connection; false if the connection broke (the server crashed).
async fn run(server: &Server, statements: &[&str]) -> bool {
    let c = server.connect().await;
    for sql in statements {
        let done = if sql.ends_with("FROM STDIN (FORMAT csv)") {
            copy_rows(&c, sql).await
        } else {
            c.simple_query(sql).await.map(|_| ())
        };
        if let Err(e) = done {
            assert!(
                e.is_closed() || e.as_db_error().is_none(),
                "{sql} failed without a crash: {:?}",
                e.as_db_error()
            );
            return false;
        }
    }
    true
}

/// `COPY … FROM STDIN` with 2000 rows `(i, 'r<i>')`.
async fn copy_rows(c: &tokio_postgres::Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    use futures::SinkExt;
    let sink = c.copy_in::<_, bytes::Bytes>(sql).await?;
    let mut sink = std::pin::pin!(sink);
    let body: String = (1..=2000).map(|i| format!("{i},r{i}\n")).collect();
    sink.send(bytes::Bytes::from(body)).await?;
    sink.as_mut().finish().await.map(|_| ())
}

/// Files a crash can leave: staged names (`name#<digits>`).
fn staged_files(dir: &Path, found: &mut Vec<String>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for e in read.filter_map(|e| e.ok()) {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            staged_files(&path, found);
        } else if is_staged_name(&name) {
            found.push(path.display().to_string());
        }
    }
}

/// Folders under `dir` (none if it is missing).
fn folders(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .count()
        })
        .unwrap_or(0)
}

/// The data files of a table folder that its newest manifest does not list.
fn unlisted_data_files(table: &Path) -> Vec<String> {
    let newest = std::fs::read_dir(table.join("_manifest"))
        .expect("manifests")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .max()
        .expect("a manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&newest).expect("read")).expect("json");
    let listed: Vec<&str> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    std::fs::read_dir(table.join("data"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| format!("data/{}", e.file_name().to_string_lossy()))
                .filter(|f| !listed.contains(&f.as_str()))
                .collect()
        })
        .unwrap_or_default()
}

/// What must hold after every restart: no staged file, one folder per managed table and per
/// model version, no data file a table's newest manifest does not list.
async fn assert_no_orphans(server: &Server, context: &str) {
    let mut staged = vec![];
    staged_files(&server.data_dir, &mut staged);
    assert!(
        staged.is_empty(),
        "{context}: staged files left: {staged:?}"
    );
    let c = server.connect().await;
    let tables = prognos_e2e::rows_of(
        &c.simple_query(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        )
        .await
        .expect("tables"),
    );
    let tables: usize = tables[0][0]
        .as_deref()
        .unwrap_or("0")
        .parse()
        .expect("count");
    assert_eq!(
        folders(&server.data_dir.join("tables/public")),
        tables,
        "{context}: table folders vs catalog"
    );
    if let Ok(read) = std::fs::read_dir(server.data_dir.join("tables/public")) {
        for table in read.filter_map(|e| e.ok()) {
            let unlisted = unlisted_data_files(&table.path());
            assert!(
                unlisted.is_empty(),
                "{context}: unlisted data files {unlisted:?}"
            );
        }
    }
    let versions = prognos_e2e::rows_of(
        &c.simple_query("SELECT name, count(*) FROM system.model_versions GROUP BY name")
            .await
            .expect("versions"),
    );
    let models_dir = server.data_dir.join("models");
    let mut on_disk = 0;
    if let Ok(read) = std::fs::read_dir(&models_dir) {
        for e in read.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !name.starts_with('.') {
                on_disk += folders(&e.path());
            }
        }
    }
    let recorded: usize = versions
        .iter()
        .map(|r| r[1].as_deref().unwrap_or("0").parse::<usize>().expect("n"))
        .sum();
    assert_eq!(
        on_disk, recorded,
        "{context}: model version folders vs registry"
    );
    assert_eq!(
        folders(&models_dir.join(".incoming")),
        0,
        "{context}: downloads left"
    );
}

async fn crash_at_every_step(scenario: &Scenario) -> usize {
    // The data dir every attempt starts from.
    let mut base = Server::start();
    assert!(run(&base, scenario.setup).await, "{}: setup", scenario.name);
    let before = observe(&base, scenario.probe).await;
    assert!(base.terminate(), "{}: clean stop", scenario.name);
    // The state after the statement, without a crash.
    let after = {
        let s = Server::start_with_data_env(&base.data_dir, vec![]);
        assert!(run(&s, scenario.statements).await, "{}", scenario.name);
        observe(&s, scenario.probe).await
    };
    assert_ne!(
        before, after,
        "{}: the statement changes nothing",
        scenario.name
    );
    for n in 1..=200 {
        let context = format!("{} crashed at step {n}", scenario.name);
        let mut s = Server::start_with_data_env(
            &base.data_dir,
            vec![("PROGNOS_CRASH_AT".into(), n.to_string())],
        );
        let finished = run(&s, scenario.statements).await;
        if finished {
            // Past the last step: the statement completed; it stays after a crash-free restart.
            s.set_env("PROGNOS_CRASH_AT", None);
            s.kill_and_restart();
            assert_eq!(observe(&s, scenario.probe).await, after, "{context}");
            assert_no_orphans(&s, &context).await;
            return n - 1;
        }
        assert!(
            s.wait_for_exit(Duration::from_secs(30)),
            "{context}: the connection broke but the server did not exit"
        );
        s.set_env("PROGNOS_CRASH_AT", None);
        s.kill_and_restart();
        let seen = observe(&s, scenario.probe).await;
        assert!(
            seen == before || seen == after,
            "{context}: neither the state before nor after:\n{seen}\nbefore:\n{before}\nafter:\n{after}"
        );
        assert_no_orphans(&s, &context).await;
        // The restarted server takes the statement again.
        if seen == before {
            assert!(run(&s, scenario.statements).await, "{context}: rerun");
            assert_eq!(observe(&s, scenario.probe).await, after, "{context}: rerun");
        }
    }
    panic!("{}: more than 200 crash points", scenario.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_step_of_every_writing_statement_survives_a_crash() {
    let mut report = vec![];
    for scenario in SCENARIOS {
        let points = crash_at_every_step(scenario).await;
        assert!(points > 0, "{}: no crash point was reached", scenario.name);
        report.push(format!("{}: {points}", scenario.name));
    }
    eprintln!("crash points per statement: {}", report.join(", "));
}

/// How far the DROP of an acknowledged table got.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Dropping {
    /// Not sent: the table must be there.
    No,
    /// Sent, not acknowledged (the kill came first): either outcome is right.
    Sent,
    /// Acknowledged: the table must be gone.
    Done,
}

/// What the writers of one round saw acknowledged.
#[derive(Default)]
struct Acknowledged {
    /// `(writer, batch)` of every INSERT that returned success.
    batches: Vec<(i64, i64)>,
    /// Tables whose CREATE TABLE AS returned success, and how far a DROP of them got.
    tables: Vec<(String, Dropping)>,
    /// Whether a CREATE OR REPLACE MODEL returned success.
    model: bool,
}

/// Random `kill -9`s under concurrent writers: four connections inserting 500-row batches into
/// one table, one creating, dropping and training. Each round kills the server at a random
/// moment (seeded: `PROGNOS_FUZZ_SEED`) and restarts it; every acknowledged write must be
/// there in full, no batch partly, and nothing orphaned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kill_9_under_concurrent_writers_loses_nothing_acknowledged() {
    use rand::{Rng, SeedableRng};
    use std::sync::{Arc, Mutex};

    let seed = prognos_e2e::env_u64("PROGNOS_FUZZ_SEED", 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut server = Server::start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE w (writer BIGINT, batch BIGINT, v BIGINT); \
         CREATE TABLE src AS SELECT CAST(value AS DOUBLE) AS x, \
             CAST(value * 2 + 1 AS DOUBLE) AS y FROM generate_series(1, 300)",
    )
    .await
    .expect("setup");
    drop(c);
    let mut all = Acknowledged::default();
    for round in 0..4i64 {
        let ack = Arc::new(Mutex::new(Acknowledged::default()));
        let mut tasks = vec![];
        for writer in 0..4i64 {
            let (url, ack) = (server.pg_conn_str(), Arc::clone(&ack));
            tasks.push(tokio::spawn(async move {
                let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(conn);
                for batch in 0.. {
                    let batch = round * 100_000 + batch;
                    let sql = format!(
                        "INSERT INTO w SELECT {writer}, {batch}, value FROM generate_series(1, 500)"
                    );
                    if c.simple_query(&sql).await.is_err() {
                        return;
                    }
                    ack.lock().expect("ack").batches.push((writer, batch));
                }
            }));
        }
        let (url, ack_ddl) = (server.pg_conn_str(), Arc::clone(&ack));
        tasks.push(tokio::spawn(async move {
            let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
                return;
            };
            tokio::spawn(conn);
            for i in 0.. {
                let name = format!("c_{round}_{i}");
                let create = format!("CREATE TABLE {name} AS SELECT * FROM src");
                if c.simple_query(&create).await.is_err() {
                    return;
                }
                ack_ddl
                    .lock()
                    .expect("ack")
                    .tables
                    .push((name, Dropping::No));
                if i > 0 {
                    let drop = format!("DROP TABLE c_{round}_{}", i - 1);
                    ack_ddl.lock().expect("ack").tables[i - 1].1 = Dropping::Sent;
                    if c.simple_query(&drop).await.is_err() {
                        return;
                    }
                    ack_ddl.lock().expect("ack").tables[i - 1].1 = Dropping::Done;
                }
                let train =
                    "CREATE OR REPLACE MODEL m PREDICT y USING linear AS SELECT x, y FROM src";
                if c.simple_query(train).await.is_err() {
                    return;
                }
                ack_ddl.lock().expect("ack").model = true;
            }
        }));
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        server.kill_and_restart();
        for t in tasks {
            t.await.expect("writer task");
        }
        let ack = std::mem::take(&mut *ack.lock().expect("ack"));
        all.batches.extend(ack.batches);
        all.tables.extend(ack.tables);
        all.model |= ack.model;

        let context = format!("seed {seed} round {round}");
        let c = server.connect().await;
        let rows = c
            .query(
                "SELECT writer, batch, count(*) FROM w GROUP BY writer, batch",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{context}: w unreadable: {e}"));
        let visible: std::collections::HashMap<(i64, i64), i64> = rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        for ((writer, batch), n) in &visible {
            assert_eq!(
                *n, 500,
                "{context}: batch {batch} of writer {writer} is partial"
            );
        }
        for key in &all.batches {
            assert!(
                visible.contains_key(key),
                "{context}: acknowledged batch {key:?} is missing"
            );
        }
        for (name, dropped) in &all.tables {
            let found = c
                .simple_query(&format!("SELECT count(*) FROM {name}"))
                .await;
            match (found, *dropped) {
                (Ok(msgs), Dropping::No | Dropping::Sent) => assert_eq!(
                    prognos_e2e::rows_of(&msgs)[0][0].as_deref(),
                    Some("300"),
                    "{context}: {name}"
                ),
                (Err(e), Dropping::Done | Dropping::Sent) => {
                    assert_eq!(sqlstate(&e), "42P01", "{context}: {name}")
                }
                (Ok(_), Dropping::Done) => panic!("{context}: {name} was dropped and is back"),
                (Err(e), Dropping::No) => {
                    panic!("{context}: acknowledged {name} is gone: {e}")
                }
            }
        }
        if all.model {
            let p = c
                .simple_query("SELECT PREDICT('m', x) FROM src WHERE x = 10")
                .await
                .unwrap_or_else(|e| panic!("{context}: acknowledged model m: {e}"));
            let y: f64 = prognos_e2e::rows_of(&p)[0][0]
                .as_deref()
                .and_then(|v| v.parse().ok())
                .expect("a prediction");
            assert!(
                (y - 21.0).abs() < 3.0,
                "{context}: m predicts {y} at x = 10 (y = 2x + 1)"
            );
        }
        assert_no_orphans(&server, &context).await;
        eprintln!(
            "{context}: {} batches, {} tables acknowledged so far",
            all.batches.len(),
            all.tables.len()
        );
    }
    assert!(
        !all.batches.is_empty(),
        "no write was acknowledged before any kill"
    );
}
