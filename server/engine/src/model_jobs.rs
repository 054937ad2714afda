//! Retraining: `RETRAIN MODEL m`, retraining schedules (`ALTER MODEL m SET RETRAIN EVERY
//! '1 day' [AT '02:00']`), and the record of every run (`system.model_jobs`).
//!
//! A retrain runs the `CREATE OR REPLACE MODEL` statement that made the deployed version (each
//! version records it) on current data, through the model's validation gate, as a new
//! version. A scheduled run does so in a session of the model's owner, so it reads what the
//! owner may read, masked as the owner sees it. At most one retrain of a model runs at a time;
//! another is refused with `55006` (a scheduled one waits for its next turn). A run in progress
//! is a `running` row of `system.model_jobs`; each finished run appends
//! a line to `models/jobs.jsonl` in the data dir (start, end, trigger, the role, rows trained
//! on, outcome, version made), which `system.model_jobs` reads. Schedules are stored in the
//! registry with their next run, so they survive restarts; a run that fell due while the
//! server was down happens once when it is back.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use prognos_catalog::{Admission, RetrainSchedule, Securable};
use serde::{Deserialize, Serialize};

use crate::Engine;
use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_sql::ModelStatement;
use crate::parser::Parsed;
use crate::session::Session;

/// Name of `system.model_jobs`.
pub(crate) const JOBS_TABLE: &str = "model_jobs";
const JOBS_FILE: &str = "jobs.jsonl";

/// What started a retrain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// `RETRAIN MODEL`.
    Manual,
    /// The model's schedule.
    Schedule,
    /// The model's `RETRAIN WHEN` rule on live metrics.
    Rule,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Rule => "rule",
        }
    }
}

/// One run, as `jobs.jsonl` stores it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct JobRecord {
    model: String,
    trigger: String,
    user: String,
    started_at: String,
    ended_at: String,
    /// `deployed`, `candidate`, `rejected` or `failed` (`running` while it runs).
    outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rows: Option<u64>,
    message: String,
}

/// The retrains running now (by model, shown by `system.model_jobs` as `running`) and the
/// file that records finished ones.
#[derive(Debug)]
pub(crate) struct Jobs {
    running: Mutex<HashMap<String, JobRecord>>,
    path: PathBuf,
    append: Mutex<()>,
}

/// A model's retrain slot, held while it runs.
struct Claim<'a> {
    jobs: &'a Jobs,
    model: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.jobs
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.model);
    }
}

impl Jobs {
    /// The jobs of the registry in `models_dir`.
    pub(crate) fn new(models_dir: &Path) -> Jobs {
        Jobs {
            running: Mutex::new(HashMap::new()),
            path: models_dir.join(JOBS_FILE),
            append: Mutex::new(()),
        }
    }

    fn claim(&self, model: &str, trigger: Trigger, user: &str) -> Option<Claim<'_>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.contains_key(model) {
            return None;
        }
        running.insert(
            model.to_string(),
            JobRecord {
                model: model.to_string(),
                trigger: trigger.name().to_string(),
                user: user.to_string(),
                started_at: now(),
                ended_at: String::new(),
                outcome: "running".to_string(),
                version: None,
                rows: None,
                message: String::new(),
            },
        );
        Some(Claim {
            jobs: self,
            model: model.to_string(),
        })
    }

    pub(crate) fn is_running(&self, model: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(model)
    }

    /// Append `record` (one JSON line, synced: a run that was reported is not forgotten).
    fn record(&self, record: &JobRecord) {
        let _one_at_a_time = self.append.lock().unwrap_or_else(|p| p.into_inner());
        let written = serde_json::to_string(record)
            .map_err(std::io::Error::other)
            .and_then(|line| {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                writeln!(f, "{line}")?;
                f.sync_data()
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "could not record a model job");
        }
    }

    /// Every recorded run, oldest first (a damaged line is skipped), then the running ones.
    fn records(&self) -> Vec<JobRecord> {
        let mut records: Vec<JobRecord> = std::fs::read_to_string(&self.path)
            .map(|text| {
                text.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default();
        let mut running: Vec<JobRecord> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        running.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        records.extend(running);
        records
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn in_use(model: &str) -> EngineError {
    EngineError::statement(
        StatusCode::ObjectInUse,
        format!("a retrain of model \"{model}\" is already running"),
    )
}

/// `RETRAIN MODEL name` (or a scheduled run) in `session`: a new version from the deployed
/// version's definition, through the gate. Returns the version made and how it was admitted.
pub(crate) async fn retrain(
    engine: &Engine,
    session: &Session,
    name: &str,
    trigger: Trigger,
) -> EngineResult<(u32, Admission)> {
    let claim = engine
        .jobs
        .claim(name, trigger, &session.user())
        .ok_or_else(|| in_use(name))?;
    let started_at = now();
    let outcome = run_definition(engine, session, name).await;
    let record = JobRecord {
        model: name.to_string(),
        trigger: trigger.name().to_string(),
        user: session.user(),
        started_at,
        ended_at: now(),
        outcome: match &outcome {
            Ok((_, Admission::Deploy)) => "deployed",
            Ok((_, Admission::Candidate)) => "candidate",
            Ok((_, Admission::Reject(_))) => "rejected",
            Err(_) => "failed",
        }
        .to_string(),
        version: outcome.as_ref().ok().map(|(v, _)| *v),
        rows: outcome.as_ref().ok().and_then(|(v, _)| {
            engine.registry.get(name).and_then(|e| {
                e.versions
                    .iter()
                    .find(|r| r.version == *v)
                    .map(|r| (r.train_rows + r.validation_rows) as u64)
            })
        }),
        message: match &outcome {
            Ok((_, Admission::Reject(why))) => why.clone(),
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        },
    };
    engine.jobs.record(&record);
    crate::model_health::retrain_finished(name, &record.trigger, &record.outcome);
    drop(claim);
    outcome
}

/// Run the definition the model's deployed version (else its newest) recorded.
async fn run_definition(
    engine: &Engine,
    session: &Session,
    name: &str,
) -> EngineResult<(u32, Admission)> {
    let entry = engine
        .registry
        .get(name)
        .ok_or_else(|| prognos_catalog::CatalogError::ModelNotFound(name.to_string()))?;
    let definition = entry
        .current_version()
        .and_then(|v| v.definition.clone())
        .or_else(|| {
            entry
                .versions
                .iter()
                .rev()
                .find_map(|v| v.definition.clone())
        })
        .ok_or_else(|| {
            EngineError::statement(
                StatusCode::ObjectNotInPrerequisiteState,
                format!(
                    "model \"{name}\" has no recorded definition to retrain from (it was \
                     imported, or made before definitions were recorded: CREATE OR REPLACE it \
                     once)"
                ),
            )
        })?;
    let mut parsed = crate::parser::parse(&definition)?;
    let statement = match (parsed.pop(), parsed.is_empty()) {
        (Some(p), true) => match p.statement {
            Parsed::Model(m @ ModelStatement::Create { .. }) => m,
            _ => {
                return Err(EngineError::statement(
                    StatusCode::DataCorrupted,
                    format!("model \"{name}\": its recorded definition is not a CREATE MODEL"),
                ));
            }
        },
        _ => {
            return Err(EngineError::statement(
                StatusCode::DataCorrupted,
                format!("model \"{name}\": its recorded definition is not one statement"),
            ));
        }
    };
    crate::model_ddl::create(engine, session, &statement)
        .await?
        .ok_or_else(|| {
            EngineError::statement(
                StatusCode::Internal,
                format!("model \"{name}\": the retrain made no version"),
            )
        })
}

/// A retraining schedule from `SET RETRAIN EVERY 'every' [AT 'at']`, its first run due next.
pub(crate) fn schedule(every: &str, at: Option<&str>) -> EngineResult<RetrainSchedule> {
    let seconds = interval_seconds(every)?;
    let at_time = at.map(time_of_day).transpose()?;
    if at_time.is_some() && seconds % 86_400 != 0 {
        return Err(EngineError::statement(
            StatusCode::InvalidParameterValue,
            format!("AT aligns runs to a time of day, so EVERY must be whole days, not '{every}'"),
        ));
    }
    let mut s = RetrainSchedule {
        every: every.trim().to_string(),
        every_seconds: seconds,
        at: at.map(|a| a.trim().to_string()),
        next_run: String::new(),
    };
    s.next_run = next_run(&s, Utc::now()).to_rfc3339();
    Ok(s)
}

/// `'90 seconds'`, `'15 minutes'`, `'1 hour'`, `'1 day'`, `'2 weeks'` (also `s`, `min`, `h`,
/// `d`, `w`) in seconds.
pub(crate) fn interval_seconds(text: &str) -> EngineResult<u64> {
    let bad = || {
        EngineError::statement(
            StatusCode::InvalidParameterValue,
            format!(
                "invalid retrain interval '{text}': write a number and a unit, e.g. '6 hours' or \
                 '1 day' (seconds, minutes, hours, days, weeks)"
            ),
        )
    };
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit) {
        Some(s) if s > 0 && s <= 366 * 86_400 => Ok(s),
        _ => Err(bad()),
    }
}

fn time_of_day(text: &str) -> EngineResult<NaiveTime> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M").map_err(|_| {
        EngineError::statement(
            StatusCode::InvalidParameterValue,
            format!("invalid time of day '{text}': write HH:MM in UTC, e.g. '02:00'"),
        )
    })
}

/// The first run of `s` after `after`.
fn next_run(s: &RetrainSchedule, after: DateTime<Utc>) -> DateTime<Utc> {
    let every = chrono::Duration::seconds(s.every_seconds as i64);
    match s.at.as_deref().and_then(|a| time_of_day(a).ok()) {
        Some(t) => {
            // The next time of day `t`, then whole intervals past it.
            let mut next = after.date_naive().and_time(t).and_utc();
            while next <= after {
                next += chrono::Duration::days(1);
            }
            next
        }
        None => after + every,
    }
}

/// Marks a monitor pass as running until dropped (even by a panic in the pass).
struct PassRunning(Arc<std::sync::atomic::AtomicBool>);

impl Drop for PassRunning {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Run due schedules, every `tick`, for as long as the engine lives; and every
/// `models.rule_check_seconds` a monitor pass ([`crate::model_rules::check`]) in a task of its
/// own, so a slow pass (a large prediction log) never delays a due retrain. Passes never
/// overlap: one that is still running when the next falls due is not doubled.
pub(crate) fn start_scheduler(engine: &Arc<Engine>, tick: Duration) {
    let engine: Weak<Engine> = Arc::downgrade(engine);
    let monitoring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        let mut last_check = std::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            run_due(&engine).await;
            let every = Duration::from_secs(engine.models_config.rule_check_seconds.max(1));
            if last_check.elapsed() >= every
                && !monitoring.swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                last_check = std::time::Instant::now();
                let running = PassRunning(Arc::clone(&monitoring));
                tokio::spawn(async move {
                    crate::model_rules::check(&engine).await;
                    drop(running);
                });
            }
        }
    });
}

/// Start the scheduled retrains that are due (each in its own task).
async fn run_due(engine: &Arc<Engine>) {
    let now = Utc::now();
    for (name, schedule) in engine.registry.retrain_schedules() {
        let due = DateTime::parse_from_rfc3339(&schedule.next_run)
            .map(|t| t.with_timezone(&Utc) <= now)
            .unwrap_or(true);
        if !due || engine.jobs.is_running(&name) {
            continue;
        }
        // The next run is set before this one starts: a crash mid-run does not repeat it.
        // With AT, runs keep to the time of day, `every` whole days apart.
        let mut next = schedule.clone();
        let from = if schedule.at.is_some() {
            now + chrono::Duration::seconds(schedule.every_seconds as i64 - 86_400)
        } else {
            now
        };
        next.next_run = next_run(&schedule, from).to_rfc3339();
        if let Err(e) = engine.registry.set_retrain(&name, Some(next)).await {
            tracing::warn!(model = %name, error = %e, "could not store a retrain schedule");
            continue;
        }
        let engine = Arc::clone(engine);
        tokio::spawn(async move {
            let session = engine.owner_session(&Securable::Model(name.clone()));
            match retrain(&engine, &session, &name, Trigger::Schedule).await {
                Ok((version, admission)) => tracing::info!(
                    model = %name, version, outcome = ?admission, "scheduled retrain finished"
                ),
                Err(e) => tracing::warn!(model = %name, error = %e, "scheduled retrain failed"),
            }
        });
    }
}

/// `system.model_jobs`: one row per retrain run, for the models the role may see.
pub(crate) struct JobsTable {
    engine: Weak<Engine>,
    schema: SchemaRef,
}

impl fmt::Debug for JobsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobsTable")
    }
}

impl JobsTable {
    pub(crate) fn new(engine: Weak<Engine>) -> Self {
        let s = |n: &str| Field::new(n, DataType::Utf8, true);
        let i = |n: &str| Field::new(n, DataType::Int64, true);
        Self {
            engine,
            schema: Arc::new(Schema::new(vec![
                s("model"),
                s("trigger"),
                s("user"),
                s("started_at"),
                s("ended_at"),
                s("outcome"),
                i("version"),
                i("rows"),
                s("message"),
            ])),
        }
    }
}

#[async_trait]
impl TableProvider for JobsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut records = self
            .engine
            .upgrade()
            .map(|e| e.jobs.records())
            .unwrap_or_default();
        if let Some(role) = state
            .config()
            .get_extension::<prognos_catalog::grants::SessionRole>()
        {
            let p = role.privileges();
            records.retain(|r| p.sees(&Securable::Model(r.model.clone())));
        }
        let text = |f: &dyn Fn(&JobRecord) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from_iter(records.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            text(&|r| Some(r.model.clone())),
            text(&|r| Some(r.trigger.clone())),
            text(&|r| Some(r.user.clone())),
            text(&|r| Some(r.started_at.clone())),
            text(&|r| (!r.ended_at.is_empty()).then(|| r.ended_at.clone())),
            text(&|r| Some(r.outcome.clone())),
            Arc::new(Int64Array::from_iter(
                records.iter().map(|r| r.version.map(i64::from)),
            )),
            Arc::new(Int64Array::from_iter(
                records.iter().map(|r| r.rows.map(|n| n as i64)),
            )),
            text(&|r| Some(r.message.clone())),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_as_postgres_writes_them() {
        assert_eq!(interval_seconds("1 day").expect("day"), 86_400);
        assert_eq!(interval_seconds("90 seconds").expect("s"), 90);
        assert_eq!(interval_seconds(" 6 hours ").expect("h"), 21_600);
        assert_eq!(interval_seconds("2w").expect("w"), 1_209_600);
        for bad in ["", "day", "0 days", "1 fortnight", "-1 day", "400 days"] {
            assert!(interval_seconds(bad).is_err(), "{bad}");
        }
        assert!(
            schedule("6 hours", Some("02:00")).is_err(),
            "AT needs whole days"
        );
        assert!(schedule("1 day", Some("25:00")).is_err());
    }

    #[test]
    fn runs_fall_at_the_time_of_day_or_one_interval_on() {
        let s = schedule("1 day", Some("02:00")).expect("schedule");
        let after = DateTime::parse_from_rfc3339("2026-12-07T03:10:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            next_run(&s, after).to_rfc3339(),
            "2026-12-08T02:00:00+00:00"
        );
        let early = DateTime::parse_from_rfc3339("2026-12-07T01:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            next_run(&s, early).to_rfc3339(),
            "2026-12-07T02:00:00+00:00"
        );
        let s = schedule("90 seconds", None).expect("schedule");
        assert_eq!(
            next_run(&s, after).to_rfc3339(),
            "2026-12-07T03:11:30+00:00"
        );
    }
}
