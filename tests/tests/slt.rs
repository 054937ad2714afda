//! Golden-file SQL tests: the `.slt` files (sqllogictest format) under `tests/slt/`, run over
//! the Postgres wire protocol (tokio-postgres, simple query protocol) against the real server.
//!
//! * `tests/slt/prognos/*.slt` run against prognos, each file on a fresh server with the demo
//!   data: catalog queries of clients, model / forecast / anomaly statements and their
//!   SQLSTATEs, `EXPLAIN` of the relation forms, COPY round trips.
//! * `tests/slt/postgres/*.slt` hold plain SQL and run twice: against prognos (without demo
//!   data) and against a real PostgreSQL 15 started for the test (Debian's `postgresql-15`,
//!   `initdb` as the `postgres` user when run as root), so "as PostgreSQL does" is checked, not
//!   assumed. Without PostgreSQL the second run is skipped with a message, except where
//!   `PROGNOS_REQUIRE_CLIENTS` or `CI` is set: then the test fails.
//! * `tests/slt/postgres_binary/*.slt` run the same way through the extended protocol with
//!   binary results: each value is its type name and the hex of its binary encoding
//!   (`int8:000000000000002a`), so the binary output of every type is pinned to PostgreSQL's.
//!
//! Values are compared as text: NULL is `NULL`, an empty string `(empty)`; a value spanning
//! several lines (an `EXPLAIN` plan) is one row per line. `statement error (SQLSTATE)` checks
//! the error's SQLSTATE.

use std::path::{Path, PathBuf};
use std::process::Command;

use async_trait::async_trait;
use prognos_e2e::Server;
use sqllogictest::{DBOutput, DefaultColumnType, Runner};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// One tokio-postgres connection as a sqllogictest database. `binary`: run each statement
/// through the extended protocol with binary results and show each value as its type and the
/// hex of its binary encoding (`int8:000000000000002a`); otherwise the simple protocol's text.
struct PgWire {
    client: tokio_postgres::Client,
    binary: bool,
}

impl PgWire {
    async fn connect(conn_str: String) -> Result<Self, SqlError> {
        Self::connect_as(conn_str, false).await
    }

    async fn connect_as(conn_str: String, binary: bool) -> Result<Self, SqlError> {
        let (client, connection) = tokio_postgres::connect(&conn_str, NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { client, binary })
    }

    async fn run_binary(&self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let statement = self.client.prepare(sql).await?;
        if statement.columns().is_empty() {
            let n = self.client.execute(&statement, &[]).await?;
            return Ok(DBOutput::StatementComplete(n));
        }
        let rows = self.client.query(&statement, &[]).await?;
        let out = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let ty = row.columns()[i].type_().name().to_string();
                        match row.get::<_, Raw>(i).0 {
                            None => "NULL".to_string(),
                            Some(bytes) => {
                                let hex: String =
                                    bytes.iter().map(|b| format!("{b:02x}")).collect();
                                format!("{ty}:{hex}")
                            }
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; statement.columns().len()],
            rows: out,
        })
    }
}

/// A value's binary encoding as the server sent it, whatever its type.
struct Raw(Option<Vec<u8>>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(
        _ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(
        _ty: &tokio_postgres::types::Type,
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }
}

fn cell(v: Option<&str>) -> String {
    match v {
        None => "NULL".to_string(),
        Some("") => "(empty)".to_string(),
        Some(s) => s.to_string(),
    }
}

/// A failed statement: the server's SQLSTATE and message (tokio-postgres' own `Display`
/// says only "db error").
#[derive(Debug)]
struct SqlError {
    sqlstate: Option<String>,
    message: String,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sqlstate {
            Some(s) => write!(f, "{s}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for SqlError {}

impl From<tokio_postgres::Error> for SqlError {
    fn from(e: tokio_postgres::Error) -> Self {
        SqlError {
            sqlstate: e.code().map(|c| c.code().to_string()),
            message: e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string()),
        }
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for PgWire {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Self::Error> {
        if self.binary {
            return self.run_binary(sql).await;
        }
        let messages = self.client.simple_query(sql).await?;
        let mut columns = None;
        let mut rows = vec![];
        let mut affected = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(d) => columns = Some(d.len()),
                SimpleQueryMessage::Row(r) => {
                    columns = Some(r.len());
                    let values: Vec<String> = (0..r.len()).map(|i| cell(r.get(i))).collect();
                    // A value of several lines (a plan) continues on rows of its own.
                    let extra: Vec<Vec<String>> = values
                        .iter()
                        .flat_map(|v| v.lines().skip(1).map(|l| vec![l.to_string()]))
                        .collect();
                    rows.push(
                        values
                            .iter()
                            .map(|v| v.lines().next().unwrap_or_default().to_string())
                            .collect(),
                    );
                    rows.extend(extra);
                }
                SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(affected),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "postgres-wire"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &Self::Error) -> Option<String> {
        err.sqlstate.clone()
    }
}

fn slt_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

async fn run_file(conn_str: String, file: &Path) {
    // Files under a `…_binary` directory compare binary result encodings.
    let binary = file
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|d| d.to_string_lossy().ends_with("_binary"));
    let mut runner = Runner::new(move || PgWire::connect_as(conn_str.clone(), binary));
    if let Err(e) = runner.run_file_async(file).await {
        panic!("{}:\n{}", file.display(), e.display(true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prognos_golden_files() {
    for file in slt_files("prognos") {
        eprintln!("golden file {}", file.display());
        let server = Server::start_with_demo();
        run_file(server.pg_conn_str(), &file).await;
    }
}

/// A PostgreSQL 15 cluster in a temporary directory, stopped on drop.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Postgres {
    /// `None` when PostgreSQL 15 is not installed.
    fn start() -> Option<Postgres> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = running_as_root();
        let data = dir.path().join("pgdata");
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown for the postgres user");
        }
        let port = free_port();
        let run = |args: &[&str]| {
            let out = pg_command(as_postgres, args)
                .output()
                .expect("run a PostgreSQL program");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let data_s = data.display().to_string();
        let initdb = format!("{PG_BIN}/initdb");
        run(&[
            &initdb,
            "-D",
            &data_s,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.path().display()
        );
        let log = dir.path().join("log").display().to_string();
        run(&[
            &pg_ctl, "-D", &data_s, "-o", &opts, "-l", &log, "-w", "start",
        ]);
        Some(Postgres {
            dir,
            port,
            as_postgres,
        })
    }

    fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("pgdata").display().to_string();
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let _ = pg_command(
            self.as_postgres,
            &[&pg_ctl, "-D", &data, "-m", "immediate", "stop"],
        )
        .output();
    }
}

/// A PostgreSQL program with its arguments, run as the `postgres` user when we are root.
fn pg_command(as_postgres: bool, args: &[&str]) -> Command {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]);
        c
    } else {
        Command::new("env")
    };
    cmd.args(args);
    cmd
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_golden_files_agree_with_prognos_and_postgresql() {
    let files: Vec<PathBuf> = slt_files("postgres")
        .into_iter()
        .chain(slt_files("postgres_binary"))
        .collect();
    for file in &files {
        let server = Server::start();
        run_file(server.pg_conn_str(), file).await;
    }
    let Some(pg) = Postgres::start() else {
        assert!(
            !prognos_e2e::clients_required(),
            "PostgreSQL 15 ({PG_BIN}) is required in CI"
        );
        eprintln!("PostgreSQL 15 not installed: golden files not checked against it");
        return;
    };
    for file in &files {
        // A fresh database per file, as prognos gets a fresh server.
        let admin = PgWire::connect(pg.conn_str())
            .await
            .expect("connect to PostgreSQL");
        let db = file
            .file_stem()
            .map(|s| s.to_string_lossy().replace('-', "_"))
            .unwrap_or_default();
        for sql in [
            format!("DROP DATABASE IF EXISTS {db}"),
            format!("CREATE DATABASE {db}"),
        ] {
            admin
                .client
                .batch_execute(&sql)
                .await
                .expect("create database");
        }
        let conn = format!(
            "{} dbname={db}",
            pg.conn_str().replace(" dbname=postgres", "")
        );
        run_file(conn, file).await;
    }
}
