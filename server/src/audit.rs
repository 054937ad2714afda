//! Audit records of statements and logins, as the frontends make them (the engine writes
//! them: `prognos_engine::audit_log`).
//!
//! A [`StatementAudit`] is made when a statement starts; the frontend adds what it learns —
//! the tables and models the statement touched, the rows it sent or wrote, a failure and its
//! SQLSTATE — and the record is written when the last reference goes, which for a result set
//! is when its last row has been sent (or the client went away), so the duration covers the
//! streaming.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prognos_engine::audit_log::{AuditKind, AuditRecord};
use prognos_engine::{Engine, Session, Statement};

use crate::error::{EngineError, WireStatus};

/// The audit record of one running statement (see the module docs).
#[derive(Debug)]
pub struct StatementAudit {
    engine: Arc<Engine>,
    start: Instant,
    rows: AtomicU64,
    counted: std::sync::atomic::AtomicBool,
    record: Mutex<AuditRecord>,
}

impl StatementAudit {
    /// Start the record of `stmt`, run by `session` for `client` over `protocol`; `None` when
    /// the audit log is off.
    pub fn begin(
        engine: &Arc<Engine>,
        session: &Session,
        client: Option<&str>,
        protocol: &'static str,
        stmt: &Statement,
    ) -> Option<Arc<Self>> {
        if !engine.audits() {
            return None;
        }
        let mut record = AuditRecord::new(
            AuditKind::Statement,
            Some(session.user()),
            client.map(str::to_string),
            protocol,
        );
        record.statement = Some(stmt.audit_text());
        Some(Arc::new(Self {
            engine: Arc::clone(engine),
            start: Instant::now(),
            rows: AtomicU64::new(0),
            counted: std::sync::atomic::AtomicBool::new(false),
            record: Mutex::new(record),
        }))
    }

    fn with(&self, f: impl FnOnce(&mut AuditRecord)) {
        f(&mut self.record.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The tables and models the statement touched (read after the engine ran it).
    pub fn touched(&self, session: &Session) {
        let t = session.touched();
        self.with(|r| {
            r.tables = t.tables.into_iter().collect();
            r.models = t.models.into_iter().collect();
        });
    }

    /// Rows sent (a result set, counted batch by batch) or written.
    pub fn add_rows(&self, n: u64) {
        self.counted.store(true, Ordering::Relaxed);
        self.rows.fetch_add(n, Ordering::Relaxed);
    }

    /// The statement failed with `e`.
    pub fn fail(&self, e: &EngineError) {
        self.with(|r| {
            r.outcome = "error";
            r.sqlstate = Some(e.status().sqlstate().to_string());
            r.message = Some(e.to_string());
        });
    }
}

/// A batch on its way to the client, counted by `audit` (its rows, or its error).
pub fn observe(
    audit: Option<&StatementAudit>,
    batch: datafusion::error::Result<datafusion::arrow::array::RecordBatch>,
) -> Result<datafusion::arrow::array::RecordBatch, EngineError> {
    match batch {
        Ok(b) => {
            if let Some(a) = audit {
                a.add_rows(b.num_rows() as u64);
            }
            Ok(b)
        }
        Err(e) => {
            let e = EngineError::DataFusion(e);
            if let Some(a) = audit {
                a.fail(&e);
            }
            Err(e)
        }
    }
}

impl Drop for StatementAudit {
    fn drop(&mut self) {
        let mut record = self
            .record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        record.time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        record.duration_ms = Some(self.start.elapsed().as_secs_f64() * 1000.0);
        if self.counted.load(Ordering::Relaxed) {
            record.rows = Some(self.rows.load(Ordering::Relaxed));
        }
        self.engine.audit(&record);
    }
}

/// Record a login attempt by `user` from `client`: `Ok` or the error that refused it.
pub fn login(
    engine: &Engine,
    user: &str,
    client: Option<&str>,
    protocol: &'static str,
    outcome: Result<(), &EngineError>,
) {
    if !engine.audits() {
        return;
    }
    let kind = match outcome {
        Ok(()) => AuditKind::Login,
        Err(_) => AuditKind::LoginFailed,
    };
    let record = AuditRecord::new(
        kind,
        Some(user.to_string()),
        client.map(str::to_string),
        protocol,
    );
    let record = match outcome {
        Ok(()) => record,
        Err(e) => record.failed(e.status().sqlstate(), e.to_string()),
    };
    engine.audit(&record);
}
