//! Test harness: starts the real `prognos` binary on free ports with a temporary data dir and
//! hands out connection strings for real clients.

pub mod sql_gen;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The SQLSTATE of a failed statement or connection, or a line saying there is none.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}

/// `customers` (400 rows: `customer_id`, `spend`, `visits`, `churned` = spend < 50) and
/// `churn`, a GBDT that learns `churned` from `spend` and `visits`, deployed without a gate:
/// the model the lifecycle tests log, monitor and serve.
pub const CHURN_SETUP: &str = "CREATE TABLE customers AS SELECT value AS customer_id, \
         CAST((value * 37) % 100 AS DOUBLE) AS spend, CAST(value % 7 AS DOUBLE) AS visits, \
         (value * 37) % 100 < 50 AS churned FROM generate_series(1, 400); \
     CREATE MODEL churn PREDICT churned USING gbdt WITH (gate = 'none') \
         AS SELECT spend, visits, churned FROM customers";

/// Run `sql`, which must fail with SQLSTATE `code`; returns the error's message.
pub async fn fails_with(c: &tokio_postgres::Client, sql: &str, code: &str) -> String {
    let e = c.simple_query(sql).await.expect_err(sql);
    assert_eq!(sqlstate(&e), code, "{sql}: {e}");
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
}

/// Path of the `prognos` binary: `$PROGNOS_BIN`, else next to the test executable's folder.
pub fn prognos_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PROGNOS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    dir.join("prognos")
}

/// A running server process.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    /// Data directory (kept across restarts of the same `Server`).
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// Postgres address.
    pub pg: SocketAddr,
    /// Flight SQL address.
    pub flight: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    extra_env: Vec<(String, String)>,
    demo: bool,
}

impl Server {
    /// Start on a fresh temporary data dir without demo data.
    pub fn start() -> Server {
        Self::start_with(false, Vec::new())
    }

    /// Start on a fresh temporary data dir with the demo data loaded.
    pub fn start_with_demo() -> Server {
        Self::start_with(true, Vec::new())
    }

    /// Start on a copy of the data dir `source` (a fixture), without demo data.
    pub fn start_with_data(source: &Path) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        copy_dir(source, &tmp.path().join("data"));
        Self::start_in(tmp, false, Vec::new())
    }

    /// Start on a copy of the data dir `source` with extra environment variables.
    pub fn start_with_data_env(source: &Path, extra_env: Vec<(String, String)>) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        copy_dir(source, &tmp.path().join("data"));
        Self::start_in(tmp, false, extra_env)
    }

    /// Set (or with `None` remove) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.extra_env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.extra_env.push((key.to_string(), v.to_string()));
        }
    }

    /// Wait up to `timeout` for the process to end by itself; whether it did.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Start with options and extra environment variables (e.g. `PROGNOS__S3__ENDPOINT`).
    pub fn start_with(demo: bool, extra_env: Vec<(String, String)>) -> Server {
        Self::start_in(tempfile::tempdir().expect("tempdir"), demo, extra_env)
    }

    /// Start on `tmp/data`.
    fn start_in(tmp: tempfile::TempDir, demo: bool, extra_env: Vec<(String, String)>) -> Server {
        let data_dir = tmp.path().join("data");
        let mut s = Server {
            child: None,
            data_dir,
            _tmp: Some(tmp),
            pg: "127.0.0.1:0".parse().expect("addr"),
            flight: "127.0.0.1:0".parse().expect("addr"),
            http: "127.0.0.1:0".parse().expect("addr"),
            extra_env,
            demo,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(prognos_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--pg-listen", "127.0.0.1:0"])
            .args(["--flight-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0"])
            .env(
                "PROGNOS_LOG",
                std::env::var("PROGNOS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if !self.demo {
            cmd.arg("--no-demo");
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", prognos_bin().display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("server did not report readiness");
        for part in line.split_whitespace() {
            if let Some((k, v)) = part.split_once('=') {
                let addr: SocketAddr = v.parse().expect("bound address");
                match k {
                    "pg" => self.pg = addr,
                    "flight" => self.flight = addr,
                    "http" => self.http = addr,
                    _ => {}
                }
            }
        }
        self.child = Some(child);
    }

    /// libpq-style connection string.
    pub fn pg_conn_str(&self) -> String {
        format!(
            "host={} port={} user=prognos dbname=prognos",
            self.pg.ip(),
            self.pg.port()
        )
    }

    /// `postgresql://` URL.
    pub fn pg_url(&self) -> String {
        format!(
            "postgresql://prognos@{}:{}/prognos",
            self.pg.ip(),
            self.pg.port()
        )
    }

    /// Connect with tokio-postgres (the connection task is spawned on the current runtime).
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.connect_as("prognos").await
    }

    /// Connect as `user` (a server that trusts loopback lets any existing role in).
    pub async fn connect_as(&self, user: &str) -> tokio_postgres::Client {
        let conn = format!(
            "host={} port={} user={user} dbname=prognos",
            self.pg.ip(),
            self.pg.port()
        );
        let (client, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Connect and collect the NOTICEs and WARNINGs the server sends, as
    /// `(severity, message)`, in the order they arrive.
    pub async fn connect_with_notices(&self) -> (tokio_postgres::Client, Notices) {
        use futures::StreamExt;
        let (client, mut conn) =
            tokio_postgres::connect(&self.pg_conn_str(), tokio_postgres::NoTls)
                .await
                .expect("connect");
        let seen = Notices::default();
        let sink = seen.clone();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notice(n) = m {
                    sink.0
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((n.severity().to_string(), n.message().to_string()));
                }
            }
        });
        (client, seen)
    }

    /// Process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stop with SIGKILL (no chance to clean up) and start again on the same data dir.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Graceful stop (SIGTERM) and start again on the same data dir.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to 20 s; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a missing client program (psql, a JDK with pgjdbc, PostgreSQL) fails its test
/// instead of skipping it: set in CI (`CI`) and by `PROGNOS_REQUIRE_CLIENTS`.
pub fn clients_required() -> bool {
    std::env::var("CI").is_ok() || std::env::var("PROGNOS_REQUIRE_CLIENTS").is_ok()
}

/// Whether a missing shared dataset fails a test instead of skipping it: set in CI (`CI`) and
/// by `PROGNOS_REQUIRE_DATA`.
pub fn data_required() -> bool {
    ["CI", "PROGNOS_REQUIRE_DATA"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false"))
}

/// Directory of the shared datasets: `$PROGNOS_SHARED_DATA`, else `shared/data` beside the
/// checkout. `None` when absent (the caller skips, saying so), except where
/// [`data_required`]: then the test fails.
pub fn shared_data_dir() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let found = std::env::var("PROGNOS_SHARED_DATA")
        .ok()
        .map(PathBuf::from)
        .into_iter()
        .chain([manifest.join("../../shared/data")])
        .find(|p| p.exists());
    assert!(
        found.is_some() || !data_required(),
        "shared/data not found, and CI / PROGNOS_REQUIRE_DATA require it \
         (set PROGNOS_SHARED_DATA to the data directory)"
    );
    found
}

/// Copy a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// A dataset kept in the repository (`tests/data/<name>`).
pub fn repo_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// The rows of a simple-query result as optional strings.
pub fn rows_of(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// `GET path` on the server's HTTP port: the status code and the whole response.
#[allow(clippy::expect_used)] // test helper: a failure here is the test's failure
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect http");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    let status = body
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body)
}

/// The number after `name` on the command line (`--clients 64`), or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0..=1) of sorted latencies; zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// A `u64` from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process in KiB (0 when unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// What [`Server::connect_with_notices`] collects: `(severity, message)` pairs.
#[derive(Debug, Clone, Default)]
pub struct Notices(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl Notices {
    /// Everything received so far, emptying the list.
    pub fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it, made with the
/// openssl command; returns (ca.pem, server.pem, server.key).
pub fn make_certificates(dir: &Path) -> (String, String, String) {
    let p = |n: &str| dir.join(n).display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}
