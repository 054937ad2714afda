//! Per-connection session state: a DataFusion context of its own (so `SET` stays local), the
//! Postgres run-time parameters clients set and show, and the cancellation token of the running
//! statement.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::streams::{CancelReason, StatementCancel};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use prognos_models::onnx::device::DeviceRequest;

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::transaction::TxnSlot;

type Settings = Arc<Mutex<BTreeMap<String, String>>>;
/// Every run-time parameter's default: [`DEFAULT_PG_SETTINGS`] with the server's own
/// (`statement_timeout`) over them; made once by the engine, shared by its sessions.
pub(crate) type Defaults = Arc<BTreeMap<String, String>>;
pub(crate) type User = Arc<Mutex<String>>;

/// What a session's model functions were registered for: the registry's generation, the
/// roles' generation and the role (the models it may use), and the device.
pub(crate) type ModelFunctionsKey = (u64, u64, String, Option<DeviceRequest>);

/// Run-time parameters that describe the session's role: shown, never set by `SET`.
pub(crate) const ROLE_SETTINGS: &[&str] = &["is_superuser", "session_authorization"];

/// The session setting that picks the device models run on (`SET prognos.device = 'cpu'`),
/// over each model's own `device` option.
pub(crate) const DEVICE_SETTING: &str = "prognos.device";

/// Postgres run-time parameters a fresh session reports (`SHOW x`, `current_setting('x')`).
pub const DEFAULT_PG_SETTINGS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("lc_collate", "C.UTF-8"),
    ("lc_ctype", "C.UTF-8"),
    ("lc_messages", "C.UTF-8"),
    ("lc_monetary", "C.UTF-8"),
    ("lc_numeric", "C.UTF-8"),
    ("lc_time", "C.UTF-8"),
    ("max_identifier_length", "63"),
    // Empty: each model runs on its own `device`.
    (DEVICE_SETTING, ""),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version", prognos_udfs::PG_SERVER_VERSION),
    ("server_version_num", "160000"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// A message for the client while a statement runs (a NOTICE or WARNING over pgwire).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// A warning rather than progress.
    pub warning: bool,
    /// The text.
    pub message: String,
}
/// One client session.
pub struct Session {
    ctx: SessionContext,
    settings: Settings,
    /// The role the session runs as (`session_user`).
    user: User,
    cancel: Mutex<StatementCancel>,
    /// The timer that cancels the running statement at its `statement_timeout`.
    timeout: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What `RESET` goes back to.
    defaults: Defaults,
    /// The registry generation and the `prognos.device` the model functions registered in
    /// `ctx` were made for.
    model_functions: Mutex<Option<ModelFunctionsKey>>,
    /// Where progress messages (Postgres NOTICEs) of the running statement go.
    notices: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<Notice>>>>,
    /// The open transaction block, if any (shared with the session's catalog overlay).
    txn: Arc<TxnSlot>,
    /// Bumped whenever the context's configuration or functions change.
    state_version: std::sync::atomic::AtomicU64,
    /// A snapshot of the context's state and a task context made from it, for executions of
    /// prepared plans (cloning the state copies every function registry), with the
    /// `state_version` it was taken at.
    planning: Mutex<Option<PlanningState>>,
    /// What the running (or last) statement read or wrote, for the audit log.
    touched: Mutex<Touched>,
}

/// The tables and models a statement touched (`schema.table`, model names), for the audit
/// log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Tables and views read or written.
    pub tables: std::collections::BTreeSet<String>,
    /// Models used, trained or changed.
    pub models: std::collections::BTreeSet<String>,
}

/// See [`Session::block_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// No transaction block is open.
    Idle,
    /// A block is open and accepts statements.
    InBlock,
    /// A statement of the open block failed: only ROLLBACK (TO SAVEPOINT) is accepted.
    Failed,
}

/// See [`Session::planning_state`].
type PlanningState = (
    u64,
    Arc<datafusion::execution::session_state::SessionState>,
    Arc<datafusion::execution::TaskContext>,
);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.ctx.session_id())
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    /// A connection that closes inside a transaction block discards the block's writes.
    fn drop(&mut self) {
        if let Some(timer) = self
            .timeout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            timer.abort();
        }
        if let Some(block) = self.txn.take() {
            crate::transaction::commit::discard_in_background(block.into_changes());
        }
    }
}

impl Session {
    /// A session over `ctx`, whose catalog list is the overlay of `txn`.
    pub(crate) fn new(
        ctx: SessionContext,
        txn: Arc<TxnSlot>,
        user: User,
        superuser: bool,
        defaults: Defaults,
    ) -> Self {
        let settings: Settings = Arc::new(Mutex::new(defaults.as_ref().clone()));
        ctx.register_udf(ScalarUDF::new_from_impl(SessionUser {
            signature: Signature::exact(vec![], Volatility::Stable),
            user: Arc::clone(&user),
        }));
        ctx.register_udf(ScalarUDF::new_from_impl(CurrentSetting {
            signature: Signature::variadic_any(Volatility::Stable),
            settings: Arc::clone(&settings),
        }));
        let notices: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<Notice>>>> =
            Arc::new(Mutex::new(None));
        // FORECAST's series notes (regularisation, fallbacks) become this session's NOTICEs.
        ctx.register_udaf(datafusion::logical_expr::AggregateUDF::new_from_impl(
            prognos_udfs::forecast::ForecastAgg::with_notes(note_sink(&notices)),
        ));
        let session = Self {
            ctx,
            settings,
            user,
            cancel: Mutex::new(StatementCancel::default()),
            timeout: Mutex::new(None),
            defaults,
            model_functions: Mutex::new(None),
            notices,
            txn,
            state_version: std::sync::atomic::AtomicU64::new(0),
            planning: Mutex::new(None),
            touched: Mutex::new(Touched::default()),
        };
        session.show_role(superuser);
        session
    }

    /// The role the session runs as.
    pub fn user(&self) -> String {
        self.user.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bind the session to the role a frontend authenticated (`superuser`: its attribute now,
    /// shown as `is_superuser`).
    pub fn set_user(&self, name: &str, superuser: bool) {
        *self.user.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
        self.show_role(superuser);
    }

    fn show_role(&self, superuser: bool) {
        let user = self.user();
        let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        s.insert("session_authorization".into(), user);
        s.insert(
            "is_superuser".into(),
            if superuser { "on" } else { "off" }.into(),
        );
    }

    /// The context's configuration or functions changed (SET, model functions, CREATE
    /// FUNCTION): the next [`Session::planning_state`] takes a new snapshot.
    pub(crate) fn state_changed(&self) {
        self.state_version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The context's state and a task context, shared between executions while the state
    /// stays as it is.
    /// Returns the state's version too: it changes exactly when the snapshot does.
    pub(crate) fn planning_state(
        &self,
    ) -> (
        Arc<datafusion::execution::session_state::SessionState>,
        Arc<datafusion::execution::TaskContext>,
        u64,
    ) {
        let version = self.state_version.load(std::sync::atomic::Ordering::SeqCst);
        let mut slot = self.planning.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, state, task)) = slot.as_ref()
            && *v == version
        {
            return (Arc::clone(state), Arc::clone(task), version);
        }
        let state = Arc::new(self.ctx.state());
        let task = Arc::new(datafusion::execution::TaskContext::from(state.as_ref()));
        *slot = Some((version, Arc::clone(&state), Arc::clone(&task)));
        (state, task, version)
    }

    /// What the last statement touched (see [`Touched`]); the next statement starts afresh.
    pub fn touched(&self) -> Touched {
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Start a statement's list of what it touches.
    pub(crate) fn clear_touched(&self) {
        *self.touched.lock().unwrap_or_else(|p| p.into_inner()) = Touched::default();
    }

    /// Note a table (`schema.table`) or model the statement touches.
    pub(crate) fn touch(&self, table: Option<String>, model: Option<String>) {
        let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        t.tables.extend(table);
        t.models.extend(model);
    }

    /// The session's transaction slot.
    pub(crate) fn txn(&self) -> &Arc<TxnSlot> {
        &self.txn
    }

    /// Whether a transaction block is open (`BEGIN` without `COMMIT` / `ROLLBACK` yet).
    pub fn in_transaction(&self) -> bool {
        self.txn.active()
    }

    /// Whether the session is outside a block, inside one, or inside a failed one — what
    /// PostgreSQL's ReadyForQuery reports (`I`, `T`, `E`). `ROLLBACK TO SAVEPOINT` brings a
    /// failed block back to `T`.
    pub fn block_state(&self) -> BlockState {
        if !self.txn.active() {
            BlockState::Idle
        } else if self.txn.failed() {
            BlockState::Failed
        } else {
            BlockState::InBlock
        }
    }

    /// A statement failed where the engine did not see it (a frontend's parse or protocol
    /// error): an open transaction block fails, as in PostgreSQL.
    pub fn statement_failed(&self) {
        self.txn.fail();
    }

    /// What the session's model functions were registered for.
    pub(crate) fn model_functions(&self) -> Option<ModelFunctionsKey> {
        self.model_functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Record what the model functions were registered for.
    pub(crate) fn set_model_functions(&self, key: ModelFunctionsKey) {
        self.state_changed();
        *self
            .model_functions
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(key);
    }

    /// The device the session's queries run models on (`SET prognos.device`), when set
    /// (empty, the default, leaves each model on its own `device`). Values are checked when
    /// set.
    pub(crate) fn device(&self) -> Option<DeviceRequest> {
        self.setting(DEVICE_SETTING)
            .filter(|v| !v.is_empty())
            .and_then(|v| DeviceRequest::parse(&v).ok())
    }

    /// Send the running statement's progress messages to `sink` (`None` = drop them).
    pub fn set_notice_sink(&self, sink: Option<tokio::sync::mpsc::UnboundedSender<Notice>>) {
        *self.notices.lock().unwrap_or_else(|p| p.into_inner()) = sink;
    }

    /// Where the model functions' messages go: this session's NOTICEs.
    pub(crate) fn note_sink(&self) -> prognos_udfs::forecast::NoteSink {
        note_sink(&self.notices)
    }

    /// A progress message for the client (a NOTICE over pgwire); also logged.
    pub fn notice(&self, message: String) {
        tracing::info!(session = %self.ctx.session_id(), "{message}");
        self.send_notice(Notice {
            warning: false,
            message,
        });
    }

    /// A warning for the client (a WARNING over pgwire): the statement succeeds, but not as
    /// the user may expect (a model version rejected by its gate). Also logged.
    pub fn warning(&self, message: String) {
        tracing::warn!(session = %self.ctx.session_id(), "{message}");
        self.send_notice(Notice {
            warning: true,
            message,
        });
    }

    fn send_notice(&self, notice: Notice) {
        if let Some(tx) = self
            .notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = tx.send(notice);
        }
    }

    /// A sender for progress messages usable from other threads.
    pub(crate) fn notice_sender(&self) -> Option<tokio::sync::mpsc::UnboundedSender<Notice>> {
        self.notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The session's DataFusion context.
    pub fn ctx(&self) -> &SessionContext {
        &self.ctx
    }

    /// Value of a Postgres run-time parameter (lower-case name).
    pub fn setting(&self, name: &str) -> Option<String> {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Set a Postgres run-time parameter.
    pub fn set_setting(&self, name: &str, value: &str) {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase(), value.to_string());
    }

    /// All parameters, sorted by name.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Reset one parameter to its default.
    pub fn reset_setting(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        if ROLE_SETTINGS.contains(&name.as_str()) {
            return;
        }
        let default = self.defaults.get(&name).cloned();
        let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        match default {
            Some(v) => {
                s.insert(name, v);
            }
            None => {
                s.remove(&name);
            }
        }
    }

    /// Set the session time zone (`SET TIME ZONE`, `SET timezone = …`) for DataFusion too.
    pub fn set_time_zone(&self, tz: &str) -> EngineResult<()> {
        self.state_changed();
        let tz = if tz.eq_ignore_ascii_case("local") || tz.eq_ignore_ascii_case("default") {
            "UTC"
        } else {
            tz
        };
        let state = self.ctx.state_ref();
        let mut state = state.write();
        state
            .config_mut()
            .options_mut()
            .set("datafusion.execution.time_zone", tz)
            .map_err(|e| {
                EngineError::statement(
                    StatusCode::InvalidParameterValue,
                    format!("invalid value for parameter \"TimeZone\": \"{tz}\": {e}"),
                )
            })
    }

    /// Reset all parameters to their defaults (`RESET ALL`, `DISCARD ALL`).
    pub fn reset_settings(&self) {
        let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|k, _| ROLE_SETTINGS.contains(&k.as_str()));
        s.extend(self.defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// Start a new statement: returns the handle that a cancel request for this session, or
    /// its `statement_timeout`, fires.
    pub fn begin_statement(&self) -> StatementCancel {
        let cancel = StatementCancel::default();
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = cancel.clone();
        let mut timer = self.timeout.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = timer.take() {
            previous.abort();
        }
        let limit = self
            .setting("statement_timeout")
            .and_then(|v| parse_timeout(&v).ok())
            .filter(|d| !d.is_zero());
        if let (Some(limit), Ok(runtime)) = (limit, tokio::runtime::Handle::try_current()) {
            let c = cancel.clone();
            *timer = Some(runtime.spawn(async move {
                tokio::time::sleep(limit).await;
                c.cancel(CancelReason::StatementTimeout);
            }));
        }
        cancel
    }

    /// Cancel the statement running in this session, if any.
    pub fn cancel_running(&self) {
        self.cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel(CancelReason::UserRequest);
    }
}

/// A `statement_timeout` value as PostgreSQL reads it: a number of milliseconds, or a number
/// with a unit (`us`, `ms`, `s`, `min`, `h`, `d`); `0` is no limit.
pub(crate) fn parse_timeout(value: &str) -> Result<std::time::Duration, String> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("invalid value for parameter \"statement_timeout\": \"{value}\""))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        "min" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        "d" => n * 86_400_000.0,
        other => {
            return Err(format!(
                "invalid unit \"{other}\" for parameter \"statement_timeout\": use us, ms, s, min, h or d"
            ));
        }
    };
    if !ms.is_finite() || !(0.0..=i32::MAX as f64).contains(&ms) {
        return Err(format!(
            "{value} is outside the valid range for parameter \"statement_timeout\" (0 .. 2147483647 ms)"
        ));
    }
    Ok(std::time::Duration::from_micros((ms * 1000.0) as u64))
}

/// `session_user()` (and `current_user`, `user`, which the parser maps to it): the session's
/// role.
#[derive(Debug)]
struct SessionUser {
    signature: Signature,
    user: User,
}

impl PartialEq for SessionUser {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.user, &other.user)
    }
}
impl Eq for SessionUser {}
impl std::hash::Hash for SessionUser {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "session_user".hash(state);
    }
}

impl ScalarUDFImpl for SessionUser {
    fn name(&self) -> &str {
        "session_user"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    /// Never NULL: a described result column and the executed one (where the optimizer folds
    /// the call to a literal) then agree, which Flight SQL clients check.
    fn return_field_from_args(
        &self,
        _args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> DfResult<datafusion::arrow::datatypes::FieldRef> {
        Ok(Arc::new(datafusion::arrow::datatypes::Field::new(
            self.name(),
            DataType::Utf8,
            false,
        )))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let user = self.user.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(user))))
    }
}

/// `current_setting(name [, missing_ok])`: the session's value of a run-time parameter.
#[derive(Debug)]
struct CurrentSetting {
    signature: Signature,
    settings: Settings,
}

impl PartialEq for CurrentSetting {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.settings, &other.settings)
    }
}
impl Eq for CurrentSetting {}
impl std::hash::Hash for CurrentSetting {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "current_setting".hash(state);
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let lookup = |name: &str| -> DfResult<Option<String>> {
            let key = name.to_ascii_lowercase();
            match settings.get(&key) {
                Some(v) => Ok(Some(v.clone())),
                None if key.starts_with("datafusion.") || key.contains('.') => Ok(None),
                None => {
                    datafusion::common::exec_err!("unrecognized configuration parameter \"{name}\"")
                }
            }
        };
        match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => {
                let name = match s {
                    ScalarValue::Utf8(Some(n))
                    | ScalarValue::LargeUtf8(Some(n))
                    | ScalarValue::Utf8View(Some(n)) => n.clone(),
                    _ => return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(lookup(&name)?)))
            }
            Some(ColumnarValue::Array(a)) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                let a = a.as_string::<i32>();
                let mut b = StringBuilder::new();
                for i in 0..a.len() {
                    if a.is_null(i) {
                        b.append_null();
                    } else {
                        b.append_option(lookup(a.value(i))?);
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(b.finish()) as ArrayRef))
            }
            None => datafusion::common::exec_err!("current_setting needs a parameter name"),
        }
    }
}

/// A sink that sends each message as a NOTICE of the statement running in the session whose
/// notices these are.
fn note_sink(
    notices: &Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<Notice>>>>,
) -> prognos_udfs::forecast::NoteSink {
    let notices = Arc::clone(notices);
    Arc::new(move |message: String| {
        if let Some(tx) = notices.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(Notice {
                warning: false,
                message,
            });
        }
    })
}
