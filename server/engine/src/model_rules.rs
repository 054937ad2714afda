//! Automatic rollback and retraining on live metrics: `ALTER MODEL m SET ROLLBACK WHEN
//! live_auc < 0.7 [OVER '1 day']`, `SET RETRAIN WHEN live_rmse > 3 [OVER …]` and
//! `SET RETRAIN WHEN drift > 0.25`.
//!
//! A rule's `drift` is the largest PSI of `DRIFT` over the inputs the deployed version logged
//! in the window; it needs at least [`MIN_OUTCOMES`] logged rows, and no outcomes.
//!
//! Every `models.rule_check_seconds` the scheduler computes each ruled model's live metrics
//! for its deployed version: its logged predictions of the last `OVER` window (default one
//! day) joined with its outcomes, as `MODEL_MONITOR('m', since => …)` gives them, in a session
//! of the model's owner. With at least [`MIN_OUTCOMES`] outcomes, a rule that holds fires:
//! a rollback to the previously deployed version (its reason recorded in
//! `system.model_versions`) or a retrain; each firing raises an alert ([`Alerts`]): a log
//! line, a counter on `/metrics` and, when `models.alert_webhook` is set, an HTTP POST of a
//! JSON body. A rule fires at most once per window for a model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    self as sql, FunctionArg, FunctionArgExpr, SetExpr, TableFactor, Value,
};
use futures::TryStreamExt;
use prognos_catalog::{LiveRule, LiveRuleKind, Securable, StateChange};
use prognos_models::metrics::Metrics;

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_gate::{DRIFT_METRIC, LiveCondition};
use crate::session::Session;
use crate::{Engine, Output, Statement};

/// Outcomes a window needs before a rule is judged on it.
pub(crate) const MIN_OUTCOMES: f64 = 100.0;
/// The window of a rule without `OVER`.
const DEFAULT_OVER: &str = "1 day";

/// The query a check runs; its model name and `since` are set in the parsed tree.
const CHECK_QUERY: &str = "SELECT version, metric, value FROM MODEL_MONITOR('m', window => '36500 days', since => '1 day')";

/// `SET ROLLBACK | RETRAIN WHEN rule [OVER 'window']`: check the rule and the window, and that
/// the model has what live metrics need; returns what the NOTICE says.
pub(crate) async fn set_rule(
    engine: &Engine,
    name: &str,
    kind: LiveRuleKind,
    rule: &sql::Expr,
    over: Option<&str>,
) -> EngineResult<String> {
    let condition = LiveCondition::parse(rule)?;
    let over = over.unwrap_or(DEFAULT_OVER).to_string();
    crate::model_jobs::interval_seconds(&over)?;
    let entry = engine
        .registry
        .get(name)
        .ok_or_else(|| prognos_catalog::CatalogError::ModelNotFound(name.to_string()))?;
    if entry.logging.is_none() || (condition.uses_outcomes() && entry.outcomes.is_none()) {
        let needs = if condition.uses_outcomes() {
            "the model's predictions logged and its outcomes: ALTER MODEL {name} SET LOGGING \
             (...) and SET OUTCOMES FROM (...) first"
        } else {
            "the model's predictions logged: ALTER MODEL {name} SET LOGGING (...) first"
        };
        return Err(EngineError::statement(
            StatusCode::ObjectNotInPrerequisiteState,
            format!(
                "a rule on live metrics needs {}",
                needs.replace("{name}", name)
            ),
        ));
    }
    let what = match kind {
        LiveRuleKind::Rollback => "rolled back",
        LiveRuleKind::Retrain => "retrained",
    };
    let enough = if condition.uses_outcomes() {
        "outcomes"
    } else {
        "logged predictions"
    };
    let said = format!(
        "model \"{name}\": {what} when {rule} over the last {over} (with at least \
         {MIN_OUTCOMES} {enough})"
    );
    let rule = LiveRule {
        rule: rule.to_string(),
        over,
    };
    engine
        .registry
        .set_live_rule(name, kind, Some(rule))
        .await?;
    Ok(said)
}

/// When each live rule last fired (the alerts' counts are process-wide: [`alert_counts`]).
#[derive(Debug, Default)]
pub(crate) struct Alerts {
    /// When each `(model, rule)` last fired.
    fired: Mutex<HashMap<(String, &'static str), Instant>>,
}

static ALERT_COUNTS: std::sync::OnceLock<Mutex<HashMap<(String, String), u64>>> =
    std::sync::OnceLock::new();

/// Alerts raised since start by `(model, action)` (`rollback`, `retrain`, `rollback_failed`),
/// for `/metrics`.
pub fn alert_counts() -> Vec<((String, String), u64)> {
    ALERT_COUNTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

impl Alerts {
    /// Count an alert (in the process-wide counts that `/metrics` shows).
    fn count(&self, model: &str, action: &str) {
        *ALERT_COUNTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((model.to_string(), action.to_string()))
            .or_default() += 1;
    }

    /// Whether `(model, rule)` may fire now (not within `window` of its last firing); marks
    /// it fired when it may.
    fn may_fire(&self, model: &str, rule: &'static str, window: Duration) -> bool {
        let mut fired = self.fired.lock().unwrap_or_else(|p| p.into_inner());
        let key = (model.to_string(), rule);
        match fired.get(&key) {
            Some(at) if at.elapsed() < window => false,
            _ => {
                fired.insert(key, Instant::now());
                true
            }
        }
    }
}

/// One monitor pass: the live metrics and drift of every logged model's deployed version over
/// the last day (published on `/metrics`), then every live rule (see the module docs).
pub(crate) async fn check(engine: &Arc<Engine>) {
    let mut observed = vec![];
    for m in engine.registry.live_rules() {
        let Some(version) = m.deployed else {
            continue;
        };
        let session = engine.owner_session(&Securable::Model(m.name.clone()));
        let mut windows: HashMap<String, Window> = HashMap::new();
        if m.logged {
            let w = observe(engine, &session, &m.name, version, DEFAULT_OVER, m.outcomes).await;
            observed.push(crate::model_health::Observed {
                model: m.name.clone(),
                version,
                live: w
                    .live
                    .as_ref()
                    .map(|l| l.values.iter().map(|(k, v)| (k.clone(), *v)).collect())
                    .unwrap_or_default(),
                drift: w
                    .drift
                    .as_ref()
                    .map(|d| d.columns.clone())
                    .unwrap_or_default(),
            });
            windows.insert(DEFAULT_OVER.to_string(), w);
        }
        for (kind, rule) in [
            (LiveRuleKind::Rollback, m.rollback),
            (LiveRuleKind::Retrain, m.retrain),
        ] {
            let Some(rule) = rule else {
                continue;
            };
            let name = m.name.as_str();
            let checked = check_rule(engine, &session, name, version, kind, &rule, &mut windows);
            if let Err(e) = checked.await {
                tracing::warn!(model = %name, rule = %rule.rule, error = %e, "live rule not checked");
            }
        }
    }
    crate::model_health::publish(&observed);
}

/// What the log of one window shows of a version.
#[derive(Debug, Default)]
struct Window {
    /// Its live metrics (`rows` included), when the model has outcomes.
    live: Option<Metrics>,
    /// Its drift, when inputs were logged and the version has a training profile.
    drift: Option<WindowDrift>,
}

/// The drift of a window's logged inputs.
#[derive(Debug, Default)]
struct WindowDrift {
    /// PSI per feature and for the prediction.
    columns: Vec<(String, f64)>,
    /// Rows logged in the window.
    rows: i64,
}

impl WindowDrift {
    fn largest(&self) -> Option<f64> {
        self.columns.iter().map(|(_, psi)| *psi).reduce(f64::max)
    }
}

/// Compute what the log of the last `over` shows of `version` (a part that cannot be computed
/// is left out, and logged).
async fn observe(
    engine: &Engine,
    session: &Session,
    name: &str,
    version: u32,
    over: &str,
    outcomes: bool,
) -> Window {
    let mut w = Window::default();
    if outcomes {
        match live_metrics(engine, session, name, version, over).await {
            Ok(live) => w.live = Some(live),
            Err(e) => tracing::warn!(model = name, error = %e, "live metrics not computed"),
        }
    }
    match live_drift(engine, session, name, version, over).await {
        Ok(drift) => w.drift = Some(drift),
        // Models without a training profile have no drift.
        Err(e) => tracing::debug!(model = name, error = %e, "drift not computed"),
    }
    w
}

async fn check_rule(
    engine: &Arc<Engine>,
    session: &Session,
    name: &str,
    version: u32,
    kind: LiveRuleKind,
    rule: &LiveRule,
    windows: &mut HashMap<String, Window>,
) -> EngineResult<()> {
    let condition = parse_condition(&rule.rule)?;
    let window = crate::model_jobs::interval_seconds(&rule.over)?;
    if kind == LiveRuleKind::Retrain && engine.jobs.is_running(name) {
        return Ok(());
    }
    if !windows.contains_key(&rule.over) {
        let outcomes = condition.uses_outcomes();
        let w = observe(engine, session, name, version, &rule.over, outcomes).await;
        windows.insert(rule.over.clone(), w);
    }
    let Some(w) = windows.get(&rule.over) else {
        return Ok(());
    };
    let mut live = Metrics::default();
    if condition.uses_outcomes() {
        match &w.live {
            Some(m) if m.values.get("rows").is_some_and(|n| *n >= MIN_OUTCOMES) => {
                live = m.clone();
            }
            _ => return Ok(()),
        }
    }
    if condition.uses_drift() {
        match w.drift.as_ref().filter(|d| d.rows as f64 >= MIN_OUTCOMES) {
            Some(d) => {
                let Some(largest) = d.largest() else {
                    return Ok(());
                };
                live.values.insert(DRIFT_METRIC.to_string(), largest);
            }
            None => return Ok(()),
        }
    }
    if condition.holds(&live) != Ok(true) {
        return Ok(());
    }
    let label = match kind {
        LiveRuleKind::Rollback => "rollback",
        LiveRuleKind::Retrain => "retrain",
    };
    if !engine
        .alerts
        .may_fire(name, label, Duration::from_secs(window))
    {
        return Ok(());
    }
    let values: Vec<String> = live
        .values
        .iter()
        .map(|(k, v)| {
            if k == "rows" {
                format!("live_rows = {v}")
            } else if k == DRIFT_METRIC {
                format!("{k} = {v:.4}")
            } else {
                format!("live_{k} = {v:.4}")
            }
        })
        .collect();
    let why = format!(
        "{} WHEN {} over the last {}: {}",
        label.to_uppercase(),
        rule.rule,
        rule.over,
        values.join(", ")
    );
    match kind {
        LiveRuleKind::Rollback => {
            let change = StateChange {
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                by: "system".to_string(),
                reason: Some(why.clone()),
            };
            match engine.registry.rollback(name, &change).await {
                Ok((from, to)) => {
                    engine.bump_epoch();
                    alert(engine, name, "rollback", Some((from, to)), &why).await;
                }
                Err(e) => {
                    let why = format!("{why}; the rollback failed: {e}");
                    alert(engine, name, "rollback_failed", None, &why).await;
                }
            }
        }
        LiveRuleKind::Retrain => {
            alert(engine, name, "retrain", None, &why).await;
            let engine = Arc::clone(engine);
            let name = name.to_string();
            tokio::spawn(async move {
                let session = engine.owner_session(&Securable::Model(name.clone()));
                let trigger = crate::model_jobs::Trigger::Rule;
                if let Err(e) = crate::model_jobs::retrain(&engine, &session, &name, trigger).await
                {
                    tracing::warn!(model = %name, error = %e, "rule-triggered retrain failed");
                }
            });
        }
    }
    Ok(())
}

fn parse_condition(text: &str) -> EngineResult<LiveCondition> {
    let expr = crate::parser::dialect::one_expr(text).map_err(|e| {
        EngineError::statement(
            StatusCode::DataCorrupted,
            format!("stored rule '{text}' does not parse: {e}"),
        )
    })?;
    LiveCondition::parse(&expr)
}

/// The query a drift check runs; `$1` (the model), `$2` (the window), `$3` (the version) and
/// the relation `__log` (the model's log table) are set in its parsed tree.
const DRIFT_QUERY: &str = "SELECT feature, psi, \"rows\" FROM DRIFT($1, (SELECT * FROM __log \
     WHERE ts >= now() - CAST($2 AS INTERVAL) AND version = $3))";

/// The drift of `version` over the last `over`: the PSI of each feature and the prediction
/// between its training profile and the inputs logged in the window (`DRIFT` over the log).
async fn live_drift(
    engine: &Engine,
    session: &Session,
    name: &str,
    version: u32,
    over: &str,
) -> EngineResult<WindowDrift> {
    use datafusion::sql::sqlparser::ast::{VisitMut, visit_expressions_mut};
    let logging = engine
        .registry
        .get(name)
        .and_then(|e| e.logging)
        .ok_or_else(|| internal("the model logs no predictions"))?;
    let mut stmt = parse_one(engine, DRIFT_QUERY)?;
    let _ = stmt.visit(&mut crate::model_monitoring::RenameRelation::new(
        "__log",
        &logging.schema,
        &logging.table,
    ));
    let _ = visit_expressions_mut(&mut stmt, |e| {
        if let sql::Expr::Value(v) = e
            && let Value::Placeholder(p) = &v.value
        {
            v.value = match p.as_str() {
                "$1" => Value::SingleQuotedString(name.to_string()),
                "$2" => Value::SingleQuotedString(over.to_string()),
                _ => Value::Number(version.to_string(), false),
            };
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    let mut drift = WindowDrift::default();
    for b in run(engine, session, stmt).await? {
        let features = datafusion::arrow::compute::cast(
            b.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        let features = features.as_string::<i32>();
        let psi = b.column(1).as_primitive::<Float64Type>();
        let rows = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if !psi.is_null(i) && !features.is_null(i) {
                drift
                    .columns
                    .push((features.value(i).to_string(), psi.value(i)));
            }
            if !rows.is_null(i) {
                drift.rows = drift.rows.max(rows.value(i));
            }
        }
    }
    Ok(drift)
}

/// `text`, one query, parsed.
fn parse_one(engine: &Engine, text: &str) -> EngineResult<sql::Statement> {
    let mut statements = engine.parse(text)?;
    match statements.pop() {
        Some(Statement::Sql(DFStatement::Statement(stmt))) if statements.is_empty() => Ok(*stmt),
        _ => Err(internal("a rule check query did not parse as one query")),
    }
}

/// Run a check query in `session` through the engine's front door (so the session sees the
/// registry as it is now).
async fn run(
    engine: &Engine,
    session: &Session,
    stmt: sql::Statement,
) -> EngineResult<Vec<datafusion::arrow::array::RecordBatch>> {
    let out = engine
        .execute(
            session,
            &Statement::Sql(DFStatement::Statement(Box::new(stmt))),
            None,
        )
        .await?;
    let Output::Rows(stream) = out else {
        return Err(internal("a rule check query returned no rows"));
    };
    Ok(stream.try_collect().await?)
}

/// The live metrics of `version` over the last `over` (`rows`: predictions with an outcome).
async fn live_metrics(
    engine: &Engine,
    session: &Session,
    name: &str,
    version: u32,
    over: &str,
) -> EngineResult<Metrics> {
    let mut stmt = parse_one(engine, CHECK_QUERY)?;
    set_check_arguments(&mut stmt, name, over)?;
    let batches = run(engine, session, stmt).await?;
    let mut metrics = Metrics::default();
    for b in &batches {
        let versions = b.column(0).as_primitive::<Int64Type>();
        let names = datafusion::arrow::compute::cast(
            b.column(1),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        let names = names.as_string::<i32>();
        let values = b.column(2).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            if versions.value(i) == version as i64 && !values.is_null(i) && !names.is_null(i) {
                metrics
                    .values
                    .insert(names.value(i).to_string(), values.value(i));
            }
        }
    }
    Ok(metrics)
}

/// Put the model name and the window into the parsed check query.
fn set_check_arguments(stmt: &mut sql::Statement, name: &str, over: &str) -> EngineResult<()> {
    let sql::Statement::Query(q) = stmt else {
        return Err(internal("the rule check is not a query"));
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return Err(internal("the rule check is not a SELECT"));
    };
    let Some(TableFactor::Table {
        args: Some(args), ..
    }) = select.from.first_mut().map(|t| &mut t.relation)
    else {
        return Err(internal("the rule check reads no table function"));
    };
    for arg in args.args.iter_mut() {
        let (slot, text) = match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(sql::Expr::Value(v))) => (v, name),
            FunctionArg::Named {
                name: n,
                arg: FunctionArgExpr::Expr(sql::Expr::Value(v)),
                ..
            }
            | FunctionArg::ExprNamed {
                name: sql::Expr::Identifier(n),
                arg: FunctionArgExpr::Expr(sql::Expr::Value(v)),
                ..
            } if n.value.eq_ignore_ascii_case("since") => (v, over),
            _ => continue,
        };
        slot.value = Value::SingleQuotedString(text.to_string());
    }
    Ok(())
}

fn internal(msg: &str) -> EngineError {
    EngineError::statement(StatusCode::Internal, msg)
}

/// Raise an alert: a log line, the counter, and the webhook's POST when one is set.
async fn alert(
    engine: &Engine,
    model: &str,
    action: &str,
    versions: Option<(u32, u32)>,
    why: &str,
) {
    engine.alerts.count(model, action);
    tracing::warn!(model, action, reason = why, "model alert");
    let Some(url) = engine.models_config.alert_webhook.clone() else {
        return;
    };
    let body = serde_json::json!({
        "model": model,
        "action": action,
        "from_version": versions.map(|v| v.0),
        "to_version": versions.map(|v| v.1),
        "reason": why,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    tokio::spawn(async move {
        if let Err(e) = crate::webhook::post_json(&url, &body).await {
            tracing::warn!(%url, error = %e, "alert webhook failed");
        }
    });
}
