//! Model functions that take a relation, rewritten into plain SQL over the scalar/aggregate
//! model functions:
//!
//! * `FROM PREDICT('m', TABLE t)` (or `(SELECT ...)` instead of `TABLE t`) → every column of
//!   `t` plus `predicted_<target>` (and `probability` for binary classifiers, `probabilities`
//!   for multiclass ones, `cluster` for k-means). Features are matched **by column name**.
//! * `FROM EXPLAIN_PREDICT('m', TABLE t)` → every column of `t`, then `<feature>_contribution`
//!   for each feature and `base_value` (TreeSHAP for trees, coefficient × value for linear
//!   models; they add up to the raw score: log-odds for classifiers, the value for regression).
//! * `FROM EVALUATE('m', TABLE t)` → one row per metric (`metric`, `value`) of the model on
//!   `t`, which must hold the target column and the features (by name).
//!
//! * `FROM FORECAST(TABLE t, time => 'ts', value => 'v' [, id => 'a, b'] [, horizon => 28]
//!   [, level => 95] [, method => 'auto'] [, season_length => 24])` → `id columns, time,
//!   forecast, lower, upper, method`, `horizon` rows per series: a `GROUP BY` of the id columns
//!   over the `prognos_forecast` aggregate, whose lists are unnested.
//!
//! * `FROM FORECAST('m' [, horizon => n] [, level => p])` → the stored forecast of a
//!   forecasting model (`prognos_forecast_model`); `FROM EVALUATE('m')` → its held-out scores
//!   per series (`prognos_forecast_evaluation`).
//!
//! * `FROM ANOMALY('m', TABLE t)` → every column of `t` plus `anomaly_score` from a
//!   `DETECT ANOMALIES` model (isolation forest), features matched by column name.
//! * `FROM ANOMALY(TABLE t, time => 'ts', value => 'v' [, id => 'a, b']
//!   [, sensitivity => 0.999] [, season_length => n])` → `time, id columns, value, expected,
//!   lower, upper, score, is_anomaly` for every row, per series (`prognos_anomaly`).
//!
//! `TABLE t` arrives as the subquery `(SELECT * FROM t)` ([`crate::parser::dialect`]).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Statement, TableFactor, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::parser::Parser;
use prognos_catalog::ModelSnapshot;
use prognos_models::Task;
use prognos_models::target::TargetKind;

use crate::error::{EngineError, EngineResult, StatusCode};

const RELATION_FUNCTIONS: &[&str] = &[
    "predict",
    "evaluate",
    "explain_predict",
    "forecast",
    "anomaly",
];

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

struct ModelRelations<'a> {
    snapshot: &'a ModelSnapshot,
}

fn invalid(msg: String) -> EngineError {
    EngineError::statement(StatusCode::InvalidParameterValue, msg)
}

/// `name => value` settings of a relation function.
struct NamedArgs {
    func: &'static str,
    named: Vec<(String, Expr)>,
}

impl NamedArgs {
    fn parse(func: &'static str, args: &[FunctionArg], known: &[&str]) -> EngineResult<Self> {
        let mut named: Vec<(String, Expr)> = vec![];
        for a in args {
            match a {
                FunctionArg::Named {
                    name,
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => named.push((name.value.to_ascii_lowercase(), e.clone())),
                FunctionArg::ExprNamed {
                    name: Expr::Identifier(name),
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => named.push((name.value.to_ascii_lowercase(), e.clone())),
                other => return Err(invalid(format!("{func}: unexpected argument {other}"))),
            }
        }
        if let Some((k, _)) = named.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(invalid(format!(
                "unknown {func} setting \"{k}\" (known: {})",
                known.join(", ")
            )));
        }
        Ok(NamedArgs { func, named })
    }

    fn get(&self, k: &str) -> Option<&Expr> {
        self.named.iter().find(|(n, _)| n == k).map(|(_, e)| e)
    }

    /// The error for a setting that is not the literal it must be; a query parameter (`$1`)
    /// gets its own message: this setting (a column name, a stored model's horizon or level)
    /// is read when the query is planned, before values are bound.
    fn not_literal(&self, k: &str, what: &str) -> EngineError {
        let func = self.func;
        if let Some(p) = self.parameter(k) {
            return invalid(format!(
                "{func}: {k} must be written into the query as {what}; a query parameter \
                 ({p}) is not accepted for it, because it is read when the query is planned"
            ));
        }
        invalid(format!("{func}: {k} must be {what}"))
    }

    /// The setting's query parameter (`$1`) when it is one.
    fn parameter(&self, k: &str) -> Option<String> {
        match self.get(k) {
            Some(Expr::Value(v)) if matches!(v.value, Value::Placeholder(_)) => {
                Some(v.value.to_string())
            }
            _ => None,
        }
    }

    /// A setting the per-series functions check when they run: its query parameter as
    /// `CAST($n AS sql_type)` (bound before the plan runs), else the literal SQL `literal`
    /// makes after checking it here.
    fn passed(
        &self,
        k: &str,
        sql_type: &str,
        literal: impl FnOnce(&Self) -> EngineResult<String>,
    ) -> EngineResult<String> {
        match self.parameter(k) {
            Some(p) => Ok(format!("CAST({p} AS {sql_type})")),
            None => literal(self),
        }
    }

    fn text(&self, k: &str) -> EngineResult<Option<String>> {
        match self.get(k) {
            None => Ok(None),
            Some(Expr::Value(v)) => match &v.value {
                Value::SingleQuotedString(s) => Ok(Some(s.clone())),
                _ => Err(self.not_literal(k, "a quoted string")),
            },
            Some(_) => Err(self.not_literal(k, "a quoted string")),
        }
    }

    fn number(&self, k: &str) -> EngineResult<Option<f64>> {
        let func = self.func;
        let e = match self.get(k) {
            None => return Ok(None),
            Some(e) => e,
        };
        let (neg, e) = match e {
            Expr::UnaryOp { op, expr } if op.to_string() == "-" => (true, expr.as_ref()),
            e => (false, e),
        };
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<f64>()
                    .map(|x| Some(if neg { -x } else { x }))
                    .map_err(|_| invalid(format!("{func}: {k} must be a number"))),
                _ => Err(self.not_literal(k, "a number")),
            },
            _ => Err(self.not_literal(k, "a number")),
        }
    }

    /// `horizon`: an integer in [1, MAX_HORIZON].
    fn horizon(&self) -> EngineResult<Option<f64>> {
        let max_h = prognos_udfs::forecast::MAX_HORIZON as f64;
        match self.number("horizon")? {
            Some(h) if !(h >= 1.0 && h <= max_h && h.fract() == 0.0) => Err(invalid(format!(
                "{}: horizon must be an integer in [1, {max_h}], got {h}",
                self.func
            ))),
            h => Ok(h),
        }
    }

    /// `season_length`: an integer in [0, 100000] (0 = detect, 1 = none); 0 when not given.
    fn season_length(&self) -> EngineResult<i64> {
        let season = self.number("season_length")?.unwrap_or(0.0);
        if !((0.0..=100_000.0).contains(&season) && season.fract() == 0.0) {
            return Err(invalid(format!(
                "{}: season_length must be a positive integer (0 = detect), got {season}",
                self.func
            )));
        }
        Ok(season as i64)
    }

    /// `level`: in (0, 100).
    fn level(&self) -> EngineResult<Option<f64>> {
        match self.number("level")? {
            Some(l) if !(l > 0.0 && l < 100.0) => Err(invalid(format!(
                "{}: level must be in (0, 100), got {l}",
                self.func
            ))),
            l => Ok(l),
        }
    }
}

/// The model name when a relation function's first argument is a string literal.
fn model_name_arg(args: &[FunctionArg]) -> Option<&str> {
    match args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// `FORECAST('m' [, horizon => n] [, level => p])` → the stored forecast's table function.
fn stored_forecast_replacement(name: &str, args: &[FunctionArg]) -> EngineResult<String> {
    let named = NamedArgs::parse("FORECAST", args, &["horizon", "level"])?;
    let horizon = named.horizon()?.unwrap_or(0.0);
    let level = named.level()?.unwrap_or(0.0);
    Ok(format!(
        "SELECT * FROM prognos_forecast_model({}, {}, {level:?})",
        sql_string(name),
        horizon as i64
    ))
}

/// The id columns of a series function (`id => 'a, b'`), quoted, and the SQL pieces that carry
/// them through the grouped aggregate and the unnest above it.
struct SeriesIds(Vec<String>);

impl SeriesIds {
    fn parse(named: &NamedArgs) -> EngineResult<Self> {
        Ok(SeriesIds(
            named
                .text("id")?
                .map(|s| {
                    s.split(',')
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .map(|p| quote(&p))
                        .collect()
                })
                .unwrap_or_default(),
        ))
    }

    /// `p.a, p.b, ` (empty without ids).
    fn prefixed(&self, prefix: &str) -> String {
        self.0.iter().map(|c| format!("{prefix}{c}, ")).collect()
    }

    /// `first_value(a) AS a, ...`: the ids leave the grouped aggregate through first_value,
    /// not as the group keys: DataFusion 55 keeps the keys' functional dependencies across
    /// the unnest above, and would then drop `time` from a later GROUP BY / ORDER BY on
    /// (id, time) as "determined by id".
    fn first_values(&self) -> String {
        self.0
            .iter()
            .map(|c| format!("first_value({c}) AS {c}, "))
            .collect()
    }

    /// ` GROUP BY a, b` (empty without ids).
    fn group_by(&self) -> String {
        if self.0.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", self.0.join(", "))
        }
    }

    /// The per-series aggregate `call` over `source` grouped by the ids, its lists unnested to
    /// one row per item `__f`: `SELECT <before> <ids> <after> FROM ...`.
    fn unnested(
        &self,
        before: &str,
        after: &str,
        call: &str,
        source: &impl std::fmt::Display,
    ) -> String {
        format!(
            "SELECT {before}{ids_u}{after} FROM (SELECT {ids_g}unnest(__s) AS __f FROM \
             (SELECT {ids_s}{call} AS __s FROM ({source}) AS __src{group}) AS __g) AS __u",
            ids_u = self.prefixed("__u."),
            ids_g = self.prefixed("__g."),
            ids_s = self.first_values(),
            group = self.group_by(),
        )
    }
}

/// `ANOMALY(relation, time => 'ts', value => 'v' [, id => 'a, b'] [, sensitivity => 0.999]
/// [, season_length => n])` → `time, ids, value, expected, lower, upper, score, is_anomaly` for every row: a grouped
/// `prognos_anomaly` aggregate whose lists are unnested (see `FORECAST` for the shape).
fn anomaly_replacement(args: &[FunctionArg]) -> EngineResult<String> {
    let usage = || {
        invalid(
            "ANOMALY takes a relation and named settings: ANOMALY(TABLE t, time => 'ts', \
             value => 'v' [, id => 'a, b'] [, sensitivity => 0.999] [, season_length => n])"
                .to_string(),
        )
    };
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Subquery(q)))) = args.first() else {
        return Err(usage());
    };
    let named = NamedArgs::parse(
        "ANOMALY",
        &args[1..],
        &["time", "value", "id", "sensitivity", "season_length"],
    )?;
    let time = named
        .text("time")?
        .ok_or_else(|| invalid("ANOMALY needs time => 'column'".into()))?;
    let value = named
        .text("value")?
        .ok_or_else(|| invalid("ANOMALY needs value => 'column'".into()))?;
    let sensitivity = named.passed("sensitivity", "DOUBLE", |named| {
        let s = named
            .number("sensitivity")?
            .unwrap_or(prognos_models::anomaly::AnomalySpec::default().sensitivity);
        if !(s > 0.0 && s < 1.0) {
            return Err(invalid(format!(
                "ANOMALY: sensitivity must be in (0, 1), got {s}"
            )));
        }
        Ok(format!("{s:?}"))
    })?;
    let season = named.passed("season_length", "DOUBLE", |n| {
        Ok(n.season_length()?.to_string())
    })?;
    let ids = SeriesIds::parse(&named)?;
    let (time_q, value_q) = (quote(&time), quote(&value));
    Ok(ids.unnested(
        &format!("__f['time'] AS {time_q}, "),
        &format!(
            "__f['value'] AS {value_q}, __f['expected'] AS expected, __f['lower'] AS lower, \
             __f['upper'] AS upper, __f['score'] AS score, __f['is_anomaly'] AS is_anomaly"
        ),
        &format!("prognos_anomaly({time_q}, {value_q}, {sensitivity}, {season})"),
        q,
    ))
}

/// The columns of a forecast's unnested items after the ids: time (as `time_q`), forecast,
/// lower, upper, method.
fn forecast_items(time_q: &str) -> String {
    format!(
        "__f['time'] AS {time_q}, __f['forecast'] AS forecast, __f['lower'] AS lower, \
         __f['upper'] AS upper, __f['method'] AS method"
    )
}

/// `FORECAST(relation, name => value, ...)` rewritten (see the module docs).
fn forecast_replacement(args: &[FunctionArg]) -> EngineResult<String> {
    let usage = || {
        invalid(
            "FORECAST takes a relation and named settings: FORECAST(TABLE t, time => 'ts', \
             value => 'v' [, id => 'a, b'] [, horizon => n] [, level => 95] \
             [, method => 'auto'] [, season_length => n]), or a forecasting model: \
             FORECAST('model' [, horizon => n] [, level => 95])"
                .to_string(),
        )
    };
    if let Some(name) = model_name_arg(args) {
        return stored_forecast_replacement(name, &args[1..]);
    }
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Subquery(q)))) = args.first() else {
        return Err(usage());
    };
    const KNOWN: &[&str] = &[
        "time",
        "value",
        "id",
        "horizon",
        "level",
        "method",
        "season_length",
    ];
    let named = NamedArgs::parse("FORECAST", &args[1..], KNOWN)?;
    let text = |k: &str| named.text(k);
    let time = text("time")?.ok_or_else(|| invalid("FORECAST needs time => 'column'".into()))?;
    let value = text("value")?.ok_or_else(|| invalid("FORECAST needs value => 'column'".into()))?;
    let ids = SeriesIds::parse(&named)?;
    // Horizon, level, method and season length may be query parameters: the aggregate
    // checks them when it runs, after they are bound.
    let horizon = named.passed("horizon", "DOUBLE", |n| {
        Ok((n.horizon()?.unwrap_or(10.0) as i64).to_string())
    })?;
    let level = named.passed("level", "DOUBLE", |n| {
        Ok(format!("{:?}", n.level()?.unwrap_or(95.0)))
    })?;
    let method = named.passed("method", "VARCHAR", |n| {
        let method = n.text("method")?.unwrap_or_else(|| "auto".into());
        if !method.eq_ignore_ascii_case("auto") {
            prognos_models::forecast::Method::parse_local(&method)
                .map_err(|e| invalid(format!("FORECAST: {e}")))?;
        }
        Ok(sql_string(&method))
    })?;
    let season = named.passed("season_length", "DOUBLE", |n| {
        Ok(n.season_length()?.to_string())
    })?;
    let time_q = quote(&time);
    Ok(ids.unnested(
        "",
        &forecast_items(&time_q),
        &format!(
            "prognos_forecast({time_q}, {value_q}, {horizon}, {level}, {method}, {season})",
            value_q = quote(&value),
        ),
        q,
    ))
}

impl ModelRelations<'_> {
    /// `FORECAST('m', TABLE future [, level => p])` → a `gbdt_lag` model's forecast from the
    /// future values of its exogenous columns: `prognos_forecast_future` grouped by the
    /// model's id columns (read from `future` by name, like the exogenous columns).
    fn future_forecast_replacement(
        &self,
        name: &str,
        q: &impl std::fmt::Display,
        args: &[FunctionArg],
    ) -> EngineResult<String> {
        let named = NamedArgs::parse("FORECAST", args, &["level"])?;
        let level = named.level()?.unwrap_or(0.0);
        let (_, model) = self.snapshot.get(name)?;
        let Some(f) = model.forecast_model() else {
            return Err(invalid(format!(
                "FORECAST('{name}', TABLE future) needs a forecasting model; \"{name}\" is a \
                 {:?} model (score rows with PREDICT('{name}', TABLE t))",
                model.task
            )));
        };
        if f.global.is_none() {
            return Err(invalid(format!(
                "FORECAST('{name}', TABLE future): only gbdt_lag models read future values; \
                 \"{name}\" forecasts on its own: FORECAST('{name}' [, horizon => n])"
            )));
        }
        let ids = SeriesIds(f.ids.iter().map(|c| quote(&c.name)).collect());
        let mut call = vec![
            sql_string(name),
            format!("{level:?}"),
            format!("__src.{}", quote(&f.time.name)),
        ];
        call.extend(
            f.ids
                .iter()
                .map(|c| format!("CAST(__src.{} AS VARCHAR)", quote(&c.name))),
        );
        call.extend(
            f.exogenous()
                .iter()
                .map(|c| format!("CAST(__src.{} AS DOUBLE)", quote(c))),
        );
        Ok(ids.unnested(
            "",
            &forecast_items(&quote(&f.time.name)),
            &format!("prognos_forecast_future({})", call.join(", ")),
            q,
        ))
    }

    fn replacement(&self, func: &str, args: &[FunctionArg]) -> EngineResult<String> {
        if func == "forecast" {
            if let (
                Some(name),
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Subquery(q)))),
            ) = (model_name_arg(args), args.get(1))
            {
                return self.future_forecast_replacement(name, q, &args[2..]);
            }
            return forecast_replacement(args);
        }
        if func == "anomaly" {
            let Some(name) = model_name_arg(args) else {
                return anomaly_replacement(args);
            };
            // ANOMALY('m', TABLE t): every row of t with its score from a DETECT ANOMALIES model.
            let (_, model) = self.snapshot.get(name)?;
            if model.task != Task::AnomalyDetection {
                return Err(invalid(format!(
                    "ANOMALY('{name}', TABLE t) needs a model made with CREATE MODEL ... DETECT \
                     ANOMALIES; \"{name}\" does {:?}",
                    model.task
                )));
            }
            return self.replacement("predict", args);
        }
        if func == "evaluate"
            && args.len() == 1
            && let Some(name) = model_name_arg(args)
        {
            let (_, model) = self.snapshot.get(name)?;
            if model.forecast_model().is_none() {
                return Err(invalid(format!(
                    "EVALUATE('{name}') without a relation reads a forecasting model's backtest; \
                     score \"{name}\" on rows with EVALUATE('{name}', TABLE t)"
                )));
            }
            return Ok(format!(
                "SELECT * FROM prognos_forecast_evaluation({})",
                sql_string(name)
            ));
        }
        let usage = || {
            invalid(format!(
                "{func} takes a model name and a relation: {func}('model', TABLE t) or \
                 {func}('model', (SELECT ...))"
            ))
        };
        let expr = |a: &FunctionArg| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        };
        let [a0, a1] = args else { return Err(usage()) };
        let (Some(Expr::Value(v)), Some(Expr::Subquery(q))) = (expr(a0), expr(a1)) else {
            return Err(usage());
        };
        let Value::SingleQuotedString(model_name) = &v.value else {
            return Err(usage());
        };
        let (_, model) = self.snapshot.get(model_name)?;
        if model.forecast_model().is_some() {
            return Err(invalid(format!(
                "\"{model_name}\" is a forecasting model: read it with FORECAST('{model_name}') \
                 and its backtest with EVALUATE('{model_name}')"
            )));
        }
        let features: Vec<String> = model
            .features
            .features
            .iter()
            .map(|f| format!("__src.{}", quote(&f.name)))
            .collect();
        let call = |f: &str, extra: Option<String>| {
            let mut parts = vec![format!("'{}'", model_name.replace('\'', "''"))];
            parts.extend(extra);
            parts.extend(features.iter().cloned());
            format!("{f}({})", parts.join(", "))
        };
        Ok(match func {
            "predict" => {
                let mut cols = vec!["__src.*".to_string()];
                match (&model.task, &model.target) {
                    (Task::Clustering, _) => {
                        cols.push(format!("{} AS cluster", call("predict", None)))
                    }
                    (Task::AnomalyDetection, _) => {
                        cols.push(format!("{} AS anomaly_score", call("predict", None)))
                    }
                    (_, Some(t)) => {
                        cols.push(format!(
                            "{} AS {}",
                            call("predict", None),
                            quote(&format!("predicted_{}", t.name))
                        ));
                        if let TargetKind::Classes { labels } = &t.kind {
                            let alias = if labels.len() == 2 {
                                "probability"
                            } else {
                                "probabilities"
                            };
                            cols.push(format!("{} AS {alias}", call("predict_proba", None)));
                        }
                    }
                    _ => cols.push(format!("{} AS prediction", call("predict", None))),
                }
                format!("SELECT {} FROM ({q}) AS __src", cols.join(", "))
            }
            "explain_predict" => {
                let mut cols = vec!["__i.* EXCLUDE (__c)".to_string()];
                for f in &model.features.features {
                    cols.push(format!(
                        "__c[{}] AS {}",
                        sql_string(&f.name),
                        quote(&format!("{}_contribution", f.name))
                    ));
                }
                cols.push(format!(
                    "__c[{}] AS base_value",
                    sql_string(prognos_udfs::models::BASE_VALUE_FIELD)
                ));
                format!(
                    "SELECT {} FROM (SELECT __src.*, {} AS __c FROM ({q}) AS __src) AS __i",
                    cols.join(", "),
                    call("predict_contributions", None)
                )
            }
            _ => {
                let Some(target) = &model.target else {
                    return Err(invalid(format!(
                        "EVALUATE needs a supervised model; \"{model_name}\" has no target"
                    )));
                };
                let metrics = call(
                    "model_metrics",
                    Some(format!("__src.{}", quote(&target.name))),
                );
                format!(
                    "SELECT __m['metric'] AS metric, __m['value'] AS value FROM \
                     (SELECT unnest({metrics}) AS __m FROM ({q}) AS __src) AS __e"
                )
            }
        })
    }
}

impl VisitorMut for ModelRelations<'_> {
    type Break = EngineError;

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<EngineError> {
        let TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } = tf
        else {
            return ControlFlow::Continue(());
        };
        let func = name.to_string().to_ascii_lowercase();
        if !RELATION_FUNCTIONS.contains(&func.as_str()) {
            return ControlFlow::Continue(());
        }
        let sql = match self.replacement(&func, &args.args) {
            Ok(s) => s,
            Err(e) => return ControlFlow::Break(e),
        };
        // The generic dialect reads `* EXCLUDE (...)`, which DataFusion plans in any dialect.
        let query = match Parser::new(&datafusion::sql::sqlparser::dialect::GenericDialect {})
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_query())
        {
            Ok(q) => q,
            Err(e) => {
                return ControlFlow::Break(EngineError::statement(
                    StatusCode::SyntaxError,
                    e.to_string(),
                ));
            }
        };
        *tf = crate::pg_compat::syntax::derived_table(query, alias.clone(), &func);
        ControlFlow::Continue(())
    }
}

/// Rewrite `PREDICT(...)` / `EVALUATE(...)` relations of a statement (see module docs).
pub(super) fn rewrite(stmt: &mut Statement, snapshot: &ModelSnapshot) -> EngineResult<()> {
    match stmt.visit(&mut ModelRelations { snapshot }) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}
