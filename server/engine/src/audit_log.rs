//! The audit log's writer: one JSON object per line, appended to `<data dir>/audit/`.
//!
//! Frontends make an [`AuditRecord`] for every statement (when its rows are sent or it
//! fails) and every login attempt, and hand it to [`Engine::audit`]. Records go to the newest
//! `audit-<microseconds>.jsonl`; when it reaches `audit.max_file_mb` a new file is started,
//! and files beyond `audit.max_files` are deleted, oldest first. Files are only ever appended
//! to (each record is one `write` of a whole line on a file opened for appending), never
//! rewritten. `system.audit_log` ([`crate::audit_table`]) reads them.
//!
//! Records reach the disk in groups: a task started with the engine syncs the current file
//! every `audit.sync_ms` when something was written since the last sync (a file being closed
//! for rotation is synced first), so a power loss loses at most that much; with `sync_ms = 0`
//! every record is synced before the statement's answer goes out.
//!
//! A record never holds bound parameters (the statement is its printed tree, which has
//! `$1`, not the value) nor passwords (role statements print them redacted).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::Engine;
use crate::audit_table::AUDIT_DIR;
use crate::config::AuditConfig;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A statement.
    Statement,
    /// A successful login (pgwire start-up, Flight SQL basic auth).
    Login,
    /// A refused login.
    LoginFailed,
}

/// One audit record (the columns of `system.audit_log`).
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When it ended, RFC 3339 with microseconds, UTC.
    pub time: String,
    /// What it is about.
    pub kind: AuditKind,
    /// The role (for a failed login, the name given).
    pub user_name: Option<String>,
    /// The client's address.
    pub client: Option<String>,
    /// `pgwire` or `flight_sql`.
    pub protocol: &'static str,
    /// The statement (see the module docs).
    pub statement: Option<String>,
    /// Tables read or written, `schema.table`.
    pub tables: Vec<String>,
    /// Models used, trained or changed.
    pub models: Vec<String>,
    /// Rows returned or written.
    pub rows: Option<u64>,
    /// Time from the statement's start to its last row.
    pub duration_ms: Option<f64>,
    /// `ok` or `error`.
    pub outcome: &'static str,
    /// The SQLSTATE of a failure.
    pub sqlstate: Option<String>,
    /// The message of a failure.
    pub message: Option<String>,
}

impl AuditRecord {
    /// A record of `kind` by `user` from `client` over `protocol`, timed now.
    pub fn new(
        kind: AuditKind,
        user: Option<String>,
        client: Option<String>,
        protocol: &'static str,
    ) -> Self {
        Self {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            kind,
            user_name: user,
            client,
            protocol,
            statement: None,
            tables: vec![],
            models: vec![],
            rows: None,
            duration_ms: None,
            outcome: "ok",
            sqlstate: None,
            message: None,
        }
    }

    /// Mark it failed with `sqlstate` and `message`.
    pub fn failed(mut self, sqlstate: &str, message: String) -> Self {
        self.outcome = "error";
        self.sqlstate = Some(sqlstate.to_string());
        self.message = Some(message);
        self
    }
}

/// The files of the audit log (see the module docs).
#[derive(Debug)]
pub(crate) struct AuditLog {
    dir: PathBuf,
    max_bytes: u64,
    max_files: usize,
    /// `audit.sync_ms`.
    sync_ms: u64,
    current: Mutex<Option<(File, u64)>>,
    /// Written since the last sync.
    dirty: std::sync::atomic::AtomicBool,
}

impl AuditLog {
    /// The log of `data_dir`, or `None` when it is turned off.
    pub(crate) fn open(data_dir: &Path, config: &AuditConfig) -> Option<Self> {
        config.enabled.then(|| Self {
            dir: data_dir.join(AUDIT_DIR),
            max_bytes: config.max_file_mb.max(1) * 1024 * 1024,
            max_files: config.max_files.max(1),
            sync_ms: config.sync_ms,
            current: Mutex::new(None),
            dirty: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// How often the syncer runs; `None` when every record is synced as it is written.
    pub(crate) fn sync_every(&self) -> Option<std::time::Duration> {
        (self.sync_ms > 0).then(|| std::time::Duration::from_millis(self.sync_ms))
    }

    /// Sync the current file when records were written since the last sync; returns whether
    /// it synced.
    pub(crate) fn sync_if_dirty(&self) -> std::io::Result<bool> {
        use std::sync::atomic::Ordering;
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((file, _)) = current.as_ref() {
            file.sync_data()?;
        }
        Ok(true)
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                    .collect()
            })
            .unwrap_or_default();
        // Names carry their start time in microseconds, zero-padded: name order is age order.
        files.sort();
        files
    }

    /// Open a new file, deleting the oldest beyond `max_files`.
    fn start_file(&self) -> std::io::Result<(File, u64)> {
        std::fs::create_dir_all(&self.dir)?;
        let micros = chrono::Utc::now().timestamp_micros();
        let path = self.dir.join(format!("audit-{micros:020}.jsonl"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let files = self.files();
        if files.len() > self.max_files {
            for old in &files[..files.len() - self.max_files] {
                let _ = std::fs::remove_file(old);
            }
        }
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    /// Append `record`.
    pub(crate) fn write(&self, record: &AuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let rotate = match current.as_ref() {
            None => true,
            Some((_, size)) => size + line.len() as u64 > self.max_bytes && *size > 0,
        };
        if rotate {
            *current = Some(match current.take() {
                // Continue the newest file after a restart while it has room.
                None => match self.files().pop() {
                    Some(path) => {
                        let file = OpenOptions::new().append(true).open(&path)?;
                        let size = file.metadata()?.len();
                        if size + line.len() as u64 > self.max_bytes && size > 0 {
                            self.start_file()?
                        } else {
                            (file, size)
                        }
                    }
                    None => self.start_file()?,
                },
                // The file being closed holds records the syncer has not synced yet.
                Some((closed, _)) => {
                    closed.sync_data()?;
                    self.start_file()?
                }
            });
        }
        if let Some((file, size)) = current.as_mut() {
            file.write_all(&line)?;
            *size += line.len() as u64;
            if self.sync_ms == 0 {
                file.sync_data()?;
            } else {
                self.dirty.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        Ok(())
    }
}

/// Sync the audit log every `audit.sync_ms` for as long as the engine lives (nothing to do
/// when it is off or syncs every record).
pub(crate) fn start_syncer(engine: &std::sync::Arc<Engine>) {
    let Some(every) = engine.audit.as_ref().and_then(AuditLog::sync_every) else {
        return;
    };
    let weak = std::sync::Arc::downgrade(engine);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(engine) = weak.upgrade() else {
                return;
            };
            let synced = tokio::task::spawn_blocking(move || {
                engine.audit.as_ref().map(AuditLog::sync_if_dirty)
            })
            .await;
            if let Ok(Some(Err(e))) = synced {
                tracing::error!(error = %e, "audit log: records could not be synced");
            }
        }
    });
}

impl Engine {
    /// Append `record` to the audit log (when it is on). A record that cannot be written is
    /// reported in the server log; the statement it records is not failed for it.
    pub fn audit(&self, record: &AuditRecord) {
        if let Some(log) = &self.audit
            && let Err(e) = log.write(record)
        {
            tracing::error!(error = %e, "audit log: a record could not be written");
        }
    }

    /// Whether statements and logins are recorded.
    pub fn audits(&self) -> bool {
        self.audit.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_appended_and_files_rotated_by_size() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = AuditLog::open(
            dir.path(),
            &AuditConfig {
                enabled: true,
                max_file_mb: 1,
                max_files: 2,
                sync_ms: 200,
            },
        )
        .expect("on");
        let mut record = AuditRecord::new(AuditKind::Statement, Some("u".into()), None, "pgwire");
        record.statement = Some("x".repeat(300_000));
        for _ in 0..10 {
            log.write(&record).expect("write");
        }
        let files = log.files();
        assert_eq!(files.len(), 2, "{files:?}");
        for f in &files {
            let text = std::fs::read_to_string(f).expect("read");
            assert!(text.len() as u64 <= 1024 * 1024, "{}", text.len());
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("json line");
                assert_eq!(v["kind"], "statement");
            }
        }
        assert!(
            AuditLog::open(
                dir.path(),
                &AuditConfig {
                    enabled: false,
                    ..AuditConfig::default()
                }
            )
            .is_none()
        );
    }

    #[test]
    fn written_records_are_synced_once_by_the_syncer_or_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let grouped = AuditLog::open(dir.path(), &AuditConfig::default()).expect("on");
        assert_eq!(
            grouped.sync_every(),
            Some(std::time::Duration::from_millis(200))
        );
        assert!(
            !grouped.sync_if_dirty().expect("sync"),
            "nothing written yet"
        );
        let record = AuditRecord::new(AuditKind::Statement, Some("u".into()), None, "pgwire");
        grouped.write(&record).expect("write");
        grouped.write(&record).expect("write");
        assert!(
            grouped.sync_if_dirty().expect("sync"),
            "two records, one sync"
        );
        assert!(!grouped.sync_if_dirty().expect("sync"), "nothing new");
        let each = AuditLog::open(
            dir.path(),
            &AuditConfig {
                sync_ms: 0,
                ..AuditConfig::default()
            },
        )
        .expect("on");
        assert_eq!(each.sync_every(), None);
        each.write(&record).expect("write");
        assert!(!each.sync_if_dirty().expect("sync"), "synced as written");
        let lines: usize = each
            .files()
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("read").lines().count())
            .sum();
        assert_eq!(lines, 3);
    }
}
