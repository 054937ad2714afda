//! The model functions that take a relation, planned from the syntax tree (a DataFusion
//! [`RelationPlanner`]) over the scalar / aggregate model functions:
//!
//! * `FROM PREDICT('m', TABLE t)` (or `(SELECT ...)` instead of `TABLE t`) → every column of
//!   `t` plus `predicted_<target>` (and `probability` for binary classifiers, `probabilities`
//!   for multiclass ones, `cluster` for k-means, `anomaly_score` for `DETECT ANOMALIES`
//!   models). Features are matched **by column name**.
//! * `FROM EXPLAIN_PREDICT('m', TABLE t)` → every column of `t`, then `<feature>_contribution`
//!   for each feature and `base_value`.
//! * `FROM EVALUATE('m', TABLE t)` → one row per metric (`metric`, `value`) of the model on
//!   `t`, which must hold the target column and the features (by name).
//! * `FROM DRIFT('m', TABLE t)` → one row per feature and for the prediction: `feature, psi,
//!   training_null_share, null_share, unseen_share, rows`, `t` against the model's training
//!   profile (the `model_drift` aggregate, its list unnested). With a forecasting model: one
//!   row per series of `t`, `id columns, method, observations, trained_mase, recent_mase,
//!   mase_ratio, trained_smape, recent_smape` (`prognos_forecast_drift`).
//! * `FROM FORECAST(TABLE t, time => 'ts', value => 'v' [, id => 'a, b'] [, horizon => 28]
//!   [, level => 95] [, method => 'auto'] [, season_length => 24])` → `id columns, time,
//!   forecast, lower, upper, method`, `horizon` rows per series: the `prognos_forecast`
//!   aggregate grouped by the id columns, its lists unnested.
//! * `FROM FORECAST('m' [, horizon => n] [, level => p])` → the stored forecast of a
//!   forecasting model (`prognos_forecast_model`); `FROM EVALUATE('m')` → its held-out scores
//!   per series (`prognos_forecast_evaluation`); `FROM FORECAST('m', TABLE future
//!   [, level => p])` → a `gbdt_lag` model's forecast from future exogenous values.
//! * `FROM MODEL_MONITOR('m' [, window => '1 day'] [, since => '7 days'])` → the model's
//!   logged predictions joined with its outcomes: `version, window_start, window_end,
//!   predictions, outcomes, metric, value`, one row per live metric, version and window.
//! * `FROM ANOMALY('m', TABLE t)` with an isolation forest → every column of `t` plus
//!   `anomaly_score`;
//!   `FROM ANOMALY(TABLE t, time => 'ts', value => 'v' [, id => 'a, b']
//!   [, sensitivity => 0.998] [, season_length => n] [, cooldown => n])` → `time, id columns,
//!   value, expected, lower, upper, score, novelty, is_anomaly` for every row
//!   (`prognos_anomaly`); with a series detector (`CREATE MODEL ... DETECT ANOMALIES IN v
//!   TIME t`), `FROM ANOMALY('m', TABLE t)` → the same columns, from the model's columns and
//!   settings.
//!
//! The relation argument is planned by DataFusion's own planner; the functions are the ones
//! registered in the session (so the plan uses the session's model snapshot), and the plan
//! is built with [`LogicalPlanBuilder`]: nothing is printed to SQL and parsed again.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalUnit};
use datafusion::common::{
    Column, DataFusionError, NullHandling, Result, ScalarValue, UnnestOptions,
};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::first_value;
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{Cast, Expr, LogicalPlan, LogicalPlanBuilder, ScalarUDF, lit};
use datafusion::sql::sqlparser::ast::{
    self as sql, FunctionArg, FunctionArgExpr, Ident, TableAlias, TableFactor, Value,
};
use prognos_catalog::{CatalogError, ModelSnapshot};
use prognos_models::anomaly::stored::SeriesDetector;
use prognos_models::target::TargetKind;
use prognos_models::{ModelArtifact, ModelError, Task};

use crate::models::external;

/// The relation functions this planner answers, by lower-case name.
pub const RELATION_FUNCTIONS: &[&str] = &[
    "predict",
    "evaluate",
    "drift",
    "explain_predict",
    "forecast",
    "anomaly",
    "model_monitor",
];

/// The hidden argument of `MODEL_MONITOR` holding the model's log table as a subquery (the
/// engine adds it, so the statement's table resolution sees the table).
pub const MONITOR_LOG_ARG: &str = "__log";
/// The hidden argument of `MODEL_MONITOR` holding the model's outcomes query.
pub const MONITOR_OUTCOMES_ARG: &str = "__outcomes";

/// Plans the relation forms of the model functions (see the module docs).
#[derive(Debug, Default)]
pub struct ModelRelations;

fn invalid(msg: String) -> DataFusionError {
    external(ModelError::InvalidParameter(msg))
}

/// A setting of a relation function: `name => value`.
struct NamedArgs<'a> {
    func: &'static str,
    named: Vec<(String, &'a sql::Expr)>,
}

impl<'a> NamedArgs<'a> {
    fn parse(func: &'static str, args: &'a [FunctionArg], known: &[&str]) -> Result<Self> {
        let mut named = vec![];
        for a in args {
            match a {
                FunctionArg::Named {
                    name,
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => named.push((name.value.to_ascii_lowercase(), e)),
                FunctionArg::ExprNamed {
                    name: sql::Expr::Identifier(name),
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => named.push((name.value.to_ascii_lowercase(), e)),
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

    fn get(&self, k: &str) -> Option<&'a sql::Expr> {
        self.named.iter().find(|(n, _)| n == k).map(|(_, e)| *e)
    }

    /// The setting's query parameter (`$1`) when it is one.
    fn parameter(&self, k: &str) -> Option<String> {
        match self.get(k) {
            Some(sql::Expr::Value(v)) => match &v.value {
                Value::Placeholder(p) => Some(p.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The error for a setting that is not the literal it must be; a query parameter gets its
    /// own message: this setting is read when the query is planned, before values are bound.
    fn not_literal(&self, k: &str, what: &str) -> DataFusionError {
        let func = self.func;
        if let Some(p) = self.parameter(k) {
            return invalid(format!(
                "{func}: {k} must be written into the query as {what}; a query parameter \
                 ({p}) is not accepted for it, because it is read when the query is planned"
            ));
        }
        invalid(format!("{func}: {k} must be {what}"))
    }

    /// A setting the per-series functions check when they run: its query parameter as
    /// `CAST($n AS cast_to)` (bound before the plan runs), else the literal `literal` makes
    /// after checking it here.
    fn passed(
        &self,
        k: &str,
        cast_to: DataType,
        literal: impl FnOnce(&Self) -> Result<Expr>,
    ) -> Result<Expr> {
        match self.parameter(k) {
            Some(p) => Ok(Expr::Cast(Cast::new(
                Box::new(Expr::Placeholder(
                    datafusion::logical_expr::expr::Placeholder::new_with_field(p, None),
                )),
                cast_to,
            ))),
            None => literal(self),
        }
    }

    fn text(&self, k: &str) -> Result<Option<String>> {
        match self.get(k) {
            None => Ok(None),
            Some(sql::Expr::Value(v)) => match &v.value {
                Value::SingleQuotedString(s) => Ok(Some(s.clone())),
                _ => Err(self.not_literal(k, "a quoted string")),
            },
            Some(_) => Err(self.not_literal(k, "a quoted string")),
        }
    }

    /// A column-name setting the function needs (`time => 'ts'`).
    fn column(&self, k: &str) -> Result<String> {
        self.text(k)?
            .ok_or_else(|| invalid(format!("{} needs {k} => 'column'", self.func)))
    }

    fn number(&self, k: &str) -> Result<Option<f64>> {
        let func = self.func;
        let Some(e) = self.get(k) else {
            return Ok(None);
        };
        let (neg, e) = match e {
            sql::Expr::UnaryOp {
                op: sql::UnaryOperator::Minus,
                expr,
            } => (true, expr.as_ref()),
            e => (false, e),
        };
        match e {
            sql::Expr::Value(v) => match &v.value {
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
    fn horizon(&self) -> Result<Option<f64>> {
        let max_h = crate::forecast::MAX_HORIZON as f64;
        match self.number("horizon")? {
            Some(h) if !(h >= 1.0 && h <= max_h && h.fract() == 0.0) => Err(invalid(format!(
                "{}: horizon must be an integer in [1, {max_h}], got {h}",
                self.func
            ))),
            h => Ok(h),
        }
    }

    /// `season_length`: an integer in [0, 100000] (0 = detect, 1 = none); 0 when not given.
    fn season_length(&self) -> Result<i64> {
        let season = self.number("season_length")?.unwrap_or(0.0);
        let max = prognos_models::forecast::stored::MAX_SEASON_LENGTH as f64;
        if !((0.0..=max).contains(&season) && season.fract() == 0.0) {
            return Err(invalid(format!(
                "{}: season_length must be a positive integer (0 = detect), got {season}",
                self.func
            )));
        }
        Ok(season as i64)
    }

    /// `level`: in (0, 100).
    fn level(&self) -> Result<Option<f64>> {
        match self.number("level")? {
            Some(l) if !(l > 0.0 && l < 100.0) => Err(invalid(format!(
                "{}: level must be in (0, 100), got {l}",
                self.func
            ))),
            l => Ok(l),
        }
    }
}

/// `window => '1 day'` as an interval of days and time (months vary in length, so a window
/// may not be given in them).
fn window_interval(text: &str) -> Result<ScalarValue> {
    let parsed = ScalarValue::Utf8(Some(text.to_string()))
        .cast_to(&DataType::Interval(IntervalUnit::MonthDayNano))
        .ok();
    match parsed {
        Some(ScalarValue::IntervalMonthDayNano(Some(i)))
            if i.months == 0 && (i.days > 0 || (i.days == 0 && i.nanoseconds > 0)) =>
        {
            Ok(ScalarValue::IntervalMonthDayNano(Some(i)))
        }
        _ => Err(invalid(format!(
            "MODEL_MONITOR: window and since must be positive intervals in days, hours, minutes or \
             seconds ('1 day', '6 hours'), got '{text}'"
        ))),
    }
}

/// The model name when a relation function's first argument is a string literal.
fn model_name_arg(args: &[FunctionArg]) -> Option<&str> {
    match args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(sql::Expr::Value(v)))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// The subquery of a relation argument (`TABLE t` arrives as `(SELECT * FROM t)`).
fn relation_arg(arg: Option<&FunctionArg>) -> Option<&sql::Query> {
    match arg {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(sql::Expr::Subquery(q)))) => Some(q),
        _ => None,
    }
}

/// Name of the input relation inside the plans built here.
const SRC: &str = "__src";

/// A column of the input relation by its exact name.
fn src_col(name: &str) -> Expr {
    Expr::Column(Column::new(Some(SRC), name))
}

/// A column of the plan being built by its exact (unqualified) name.
fn out_col(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// What the planner needs of the planning context.
struct Planning<'a, 'b> {
    ctx: &'a mut (dyn RelationPlannerContext + 'b),
    snapshot: Arc<ModelSnapshot>,
}

impl Planning<'_, '_> {
    /// A subquery, planned by DataFusion and named `alias`.
    fn relation(&mut self, query: sql::Query, alias: &str) -> Result<LogicalPlanBuilder> {
        let plan = self.ctx.plan(TableFactor::Derived {
            lateral: false,
            subquery: Box::new(query),
            alias: Some(TableAlias {
                explicit: true,
                name: Ident::new(alias),
                columns: vec![],
                at: None,
            }),
            sample: None,
        })?;
        Ok(LogicalPlanBuilder::from(plan))
    }

    /// The input relation, planned by DataFusion and named [`SRC`].
    fn source(&mut self, query: &sql::Query) -> Result<LogicalPlanBuilder> {
        let plan = self.ctx.plan(TableFactor::Derived {
            lateral: false,
            subquery: Box::new(query.clone()),
            alias: Some(TableAlias {
                explicit: true,
                name: Ident::new(SRC),
                columns: vec![],
                at: None,
            }),
            sample: None,
        })?;
        Ok(LogicalPlanBuilder::from(plan))
    }

    fn scalar(&self, name: &str, args: Vec<Expr>) -> Result<Expr> {
        let udf: Arc<ScalarUDF> = self
            .ctx
            .context_provider()
            .get_function_meta(name)
            .ok_or_else(|| DataFusionError::Plan(format!("function {name} is not registered")))?;
        Ok(Expr::ScalarFunction(ScalarFunction::new_udf(udf, args)))
    }

    fn aggregate(&self, name: &str, args: Vec<Expr>) -> Result<Expr> {
        let udaf = self
            .ctx
            .context_provider()
            .get_aggregate_meta(name)
            .ok_or_else(|| DataFusionError::Plan(format!("aggregate {name} is not registered")))?;
        Ok(Expr::AggregateFunction(AggregateFunction::new_udf(
            udaf,
            args,
            false,
            None,
            vec![],
            None,
        )))
    }

    fn table_function(&self, name: &str, args: Vec<Expr>) -> Result<LogicalPlanBuilder> {
        let source = self
            .ctx
            .context_provider()
            .get_table_function_source(name, args)?;
        LogicalPlanBuilder::scan(name, source, None)
    }

    fn model(&self, name: &str) -> Result<Arc<ModelArtifact>> {
        self.snapshot.get(name).map(|(_, m)| m).map_err(external)
    }
}

/// Every column of a plan, by qualified reference.
fn all_columns(plan: &LogicalPlanBuilder) -> Vec<Expr> {
    plan.schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect()
}

/// The per-series aggregate `call` over `source` grouped by `ids`, its list unnested to one row
/// per item; `columns` picks the output from the item (`item`) and the ids (unqualified).
///
/// The ids leave the aggregate through `first_value`, not as the group keys: DataFusion keeps
/// the keys' functional dependencies across the unnest above, and would then drop `time` from a
/// later GROUP BY / ORDER BY on (id, time) as "determined by id".
fn per_series(
    source: LogicalPlanBuilder,
    ids: &[String],
    call: Expr,
    columns: impl FnOnce(&Expr) -> Vec<Expr>,
) -> Result<LogicalPlan> {
    const LIST: &str = "__s";
    let groups: Vec<Expr> = ids.iter().map(|c| src_col(c)).collect();
    let mut aggs: Vec<Expr> = ids
        .iter()
        .enumerate()
        .map(|(i, c)| first_value(src_col(c), vec![]).alias(format!("__id{i}")))
        .collect();
    aggs.push(call.alias(LIST));
    let mut keep: Vec<Expr> = ids
        .iter()
        .enumerate()
        .map(|(i, c)| out_col(&format!("__id{i}")).alias(c.as_str()))
        .collect();
    keep.push(out_col(LIST));
    // `columns` orders the output: the ids (unqualified) and the item's fields.
    let out = columns(&out_col(LIST));
    source
        .aggregate(groups, aggs)?
        .project(keep)?
        .unnest_column_with_options(
            Column::new_unqualified(LIST),
            UnnestOptions::new().with_null_handling(NullHandling::Drop),
        )?
        .project(out)?
        .build()
}

/// The id columns of a series function (`id => 'a, b'`).
fn series_ids(named: &NamedArgs<'_>) -> Result<Vec<String>> {
    Ok(named
        .text("id")?
        .map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default())
}

/// A forecast's output columns: the ids, then the item's time (named `time`), forecast,
/// lower, upper and method.
fn forecast_columns(ids: &[String], item: &Expr, time: &str) -> Vec<Expr> {
    let mut cols: Vec<Expr> = ids.iter().map(|c| out_col(c)).collect();
    cols.extend([
        get_field(item.clone(), "time").alias(time),
        get_field(item.clone(), "forecast").alias("forecast"),
        get_field(item.clone(), "lower").alias("lower"),
        get_field(item.clone(), "upper").alias("upper"),
        get_field(item.clone(), "method").alias("method"),
    ]);
    cols
}

impl Planning<'_, '_> {
    /// `FORECAST(relation, name => value, ...)` (see the module docs).
    fn adhoc_forecast(&mut self, query: &sql::Query, args: &[FunctionArg]) -> Result<LogicalPlan> {
        const KNOWN: &[&str] = &[
            "time",
            "value",
            "id",
            "horizon",
            "level",
            "method",
            "season_length",
        ];
        let named = NamedArgs::parse("FORECAST", args, KNOWN)?;
        let time = named.column("time")?;
        let value = named.column("value")?;
        let ids = series_ids(&named)?;
        // Horizon, level, method and season length may be query parameters: the aggregate
        // checks them when it runs, after they are bound.
        let horizon = named.passed("horizon", DataType::Float64, |n| {
            Ok(lit(n.horizon()?.unwrap_or(10.0) as i64))
        })?;
        let level = named.passed("level", DataType::Float64, |n| {
            Ok(lit(n.level()?.unwrap_or(95.0)))
        })?;
        let method = named.passed("method", DataType::Utf8, |n| {
            let method = n.text("method")?.unwrap_or_else(|| "auto".into());
            if !method.eq_ignore_ascii_case("auto") {
                prognos_models::forecast::Method::parse_local(&method)
                    .map_err(|e| invalid(format!("FORECAST: {e}")))?;
            }
            Ok(lit(method))
        })?;
        let season = named.passed("season_length", DataType::Float64, |n| {
            Ok(lit(n.season_length()?))
        })?;
        let call = self.aggregate(
            crate::forecast::NAME,
            vec![
                src_col(&time),
                src_col(&value),
                horizon,
                level,
                method,
                season,
            ],
        )?;
        let source = self.source(query)?;
        per_series(source, &ids, call, |item| {
            forecast_columns(&ids, item, &time)
        })
    }

    /// `ANOMALY(relation, time => 'ts', value => 'v', ...)` (see the module docs).
    fn adhoc_anomaly(&mut self, query: &sql::Query, args: &[FunctionArg]) -> Result<LogicalPlan> {
        let named = NamedArgs::parse(
            "ANOMALY",
            args,
            &[
                "time",
                "value",
                "id",
                "sensitivity",
                "season_length",
                "cooldown",
            ],
        )?;
        let time = named.column("time")?;
        let value = named.column("value")?;
        let sensitivity = named.passed("sensitivity", DataType::Float64, |named| {
            let s = named
                .number("sensitivity")?
                .unwrap_or(prognos_models::anomaly::AnomalySpec::default().sensitivity);
            if !(s > 0.0 && s < 1.0) {
                return Err(invalid(format!(
                    "ANOMALY: sensitivity must be in (0, 1), got {s}"
                )));
            }
            Ok(lit(s))
        })?;
        let season = named.passed("season_length", DataType::Float64, |n| {
            Ok(lit(n.season_length()?))
        })?;
        let cooldown = named.passed("cooldown", DataType::Float64, |n| {
            let c = n
                .number("cooldown")?
                .unwrap_or(prognos_models::anomaly::AnomalySpec::default().cooldown as f64);
            let max = prognos_models::anomaly::stored::MAX_COOLDOWN;
            if !((0.0..=max as f64).contains(&c) && c.fract() == 0.0) {
                return Err(invalid(format!(
                    "ANOMALY: cooldown must be an integer in [0, {max}] (points), got {c}"
                )));
            }
            Ok(lit(c))
        })?;
        let ids = series_ids(&named)?;
        self.anomaly_series(
            query,
            &ids,
            &time,
            &value,
            vec![sensitivity, season, cooldown],
        )
    }

    /// `ANOMALY('m', TABLE t)` with a series detector: its columns and settings.
    fn stored_anomaly(
        &mut self,
        name: &str,
        detector: &SeriesDetector,
        args: &[FunctionArg],
    ) -> Result<LogicalPlan> {
        let (Some(query), []) = (relation_arg(args.get(1)), args.get(2..).unwrap_or_default())
        else {
            return Err(invalid(format!(
                "ANOMALY('{name}', TABLE t) takes the model and a relation only: \"{name}\" \
                 is a series detector, whose settings are the model's (CREATE OR REPLACE MODEL \
                 changes them)"
            )));
        };
        self.anomaly_series(
            query,
            &detector.ids,
            &detector.time,
            &detector.value,
            vec![
                lit(detector.sensitivity),
                lit(detector.season_length as f64),
                lit(detector.cooldown as f64),
                lit(detector.novelty_window as f64),
                lit(detector.novelty_gate),
            ],
        )
    }

    /// `prognos_anomaly(time, value, settings...)` per series of `query` (grouped by `ids`),
    /// one row per input row: time, ids, value, expected, lower, upper, score, novelty,
    /// is_anomaly.
    fn anomaly_series(
        &mut self,
        query: &sql::Query,
        ids: &[String],
        time: &str,
        value: &str,
        settings: Vec<Expr>,
    ) -> Result<LogicalPlan> {
        let mut args = vec![src_col(time), src_col(value)];
        args.extend(settings);
        let call = self.aggregate(crate::anomaly::NAME, args)?;
        let source = self.source(query)?;
        per_series(source, ids, call, |item| {
            let mut cols = vec![get_field(item.clone(), "time").alias(time)];
            cols.extend(ids.iter().map(|c| out_col(c)));
            for (field, name) in [
                ("value", value),
                ("expected", "expected"),
                ("lower", "lower"),
                ("upper", "upper"),
                ("score", "score"),
                ("novelty", "novelty"),
                ("is_anomaly", "is_anomaly"),
            ] {
                cols.push(get_field(item.clone(), field).alias(name));
            }
            cols
        })
    }

    /// `FORECAST('m' [, horizon => n] [, level => p])`: the stored forecast.
    fn stored_forecast(&mut self, name: &str, args: &[FunctionArg]) -> Result<LogicalPlan> {
        let named = NamedArgs::parse("FORECAST", args, &["horizon", "level"])?;
        let horizon = named.horizon()?.unwrap_or(0.0);
        let level = named.level()?.unwrap_or(0.0);
        self.table_function(
            "prognos_forecast_model",
            vec![lit(name), lit(horizon as i64), lit(level)],
        )?
        .build()
    }

    /// `FORECAST('m', TABLE future [, level => p])`: a `gbdt_lag` model's forecast from the
    /// future values of its exogenous columns, grouped by the model's id columns (read from
    /// `future` by name, like the exogenous columns).
    fn future_forecast(
        &mut self,
        name: &str,
        query: &sql::Query,
        args: &[FunctionArg],
    ) -> Result<LogicalPlan> {
        let named = NamedArgs::parse("FORECAST", args, &["level"])?;
        let level = named.level()?.unwrap_or(0.0);
        let model = self.model(name)?;
        let Some(f) = model.forecast_model() else {
            return Err(invalid(format!(
                "FORECAST('{name}', TABLE future) needs a forecasting model; \"{name}\" is a \
                 {:?} model (score rows with PREDICT('{name}', TABLE t))",
                model.task
            )));
        };
        if f.global.is_none() || f.network().is_some() {
            return Err(invalid(format!(
                "FORECAST('{name}', TABLE future): only gbdt_lag models read future values; \
                 \"{name}\" forecasts on its own: FORECAST('{name}' [, horizon => n])"
            )));
        }
        let ids: Vec<String> = f.ids.iter().map(|c| c.name.clone()).collect();
        let mut call = vec![lit(name), lit(level), src_col(&f.time.name)];
        call.extend(
            ids.iter()
                .map(|c| Expr::Cast(Cast::new(Box::new(src_col(c)), DataType::Utf8))),
        );
        call.extend(
            f.exogenous()
                .iter()
                .map(|c| Expr::Cast(Cast::new(Box::new(src_col(c)), DataType::Float64))),
        );
        let call = self.aggregate(crate::forecast_future::NAME, call)?;
        let time = f.time.name.clone();
        let source = self.source(query)?;
        per_series(source, &ids, call, |item| {
            forecast_columns(&ids, item, &time)
        })
    }

    /// `DRIFT('m', TABLE recent)` of a forecasting model: per series of `recent` (its time,
    /// value and id columns read by the model's names), the stored method's backtest on the
    /// newest `horizon` values against the stored one.
    fn forecast_drift(
        &mut self,
        name: &str,
        query: &sql::Query,
        f: &prognos_models::forecast::stored::ForecastModel,
    ) -> Result<LogicalPlan> {
        let ids: Vec<String> = f.ids.iter().map(|c| c.name.clone()).collect();
        let mut call = vec![lit(name), src_col(&f.time.name)];
        call.extend(
            ids.iter()
                .map(|c| Expr::Cast(Cast::new(Box::new(src_col(c)), DataType::Utf8))),
        );
        call.push(Expr::Cast(Cast::new(
            Box::new(src_col(&f.value.name)),
            DataType::Float64,
        )));
        let call = self.aggregate(crate::forecast_drift::NAME, call)?;
        let source = self.source(query)?;
        per_series(source, &ids, call, |item| {
            let mut cols: Vec<Expr> = ids.iter().map(|c| out_col(c)).collect();
            cols.extend(
                crate::forecast_drift::drift_fields().iter().map(|field| {
                    get_field(item.clone(), field.name().as_str()).alias(field.name())
                }),
            );
            cols
        })
    }

    /// `PREDICT` / `EXPLAIN_PREDICT` / `EVALUATE` / `ANOMALY` with a model and a relation.
    fn model_over_rows(
        &mut self,
        func: &str,
        model_name: &str,
        query: &sql::Query,
    ) -> Result<LogicalPlan> {
        let model = self.model(model_name)?;
        if func == "drift"
            && let Some(f) = model.forecast_model()
        {
            return self.forecast_drift(model_name, query, f);
        }
        if model.forecast_model().is_some() {
            return Err(invalid(format!(
                "\"{model_name}\" is a forecasting model: read it with FORECAST('{model_name}') \
                 and its backtest with EVALUATE('{model_name}')"
            )));
        }
        let features: Vec<Expr> = model
            .features
            .features
            .iter()
            .map(|f| src_col(&f.name))
            .collect();
        let source = self.source(query)?;
        let call = |f: &str, extra: Option<Expr>| -> Result<Expr> {
            let mut args = vec![lit(model_name)];
            args.extend(extra);
            args.extend(features.iter().cloned());
            self.scalar(f, args)
        };
        let mut columns = all_columns(&source);
        match func {
            "predict" => {
                match (&model.task, &model.target) {
                    (Task::Clustering, _) => columns.push(call("predict", None)?.alias("cluster")),
                    (Task::AnomalyDetection, _) => {
                        let score = call("predict", None)?;
                        // A model trained with labelled rows knows its threshold.
                        if let Some(t) = model.anomaly_threshold() {
                            columns.push(score.clone().alias("anomaly_score"));
                            columns.push(score.gt_eq(lit(t as f64)).alias("is_anomaly"));
                        } else {
                            columns.push(score.alias("anomaly_score"));
                        }
                    }
                    (_, Some(t)) => {
                        columns.push(call("predict", None)?.alias(format!("predicted_{}", t.name)));
                        if let TargetKind::Classes { labels } = &t.kind
                            && model.proba_type().is_some()
                        {
                            let alias = if labels.len() == 2 {
                                "probability"
                            } else {
                                "probabilities"
                            };
                            columns.push(call("predict_proba", None)?.alias(alias));
                        }
                    }
                    _ => columns.push(call("predict", None)?.alias("prediction")),
                }
                source.project(columns)?.build()
            }
            "explain_predict" => {
                const C: &str = "__c";
                let mut outer = columns.clone();
                columns.push(call("predict_contributions", None)?.alias(C));
                let contributions = out_col(C);
                for f in &model.features.features {
                    outer.push(
                        get_field(contributions.clone(), f.name.as_str())
                            .alias(format!("{}_contribution", f.name)),
                    );
                }
                outer.push(
                    get_field(contributions, crate::models::BASE_VALUE_FIELD).alias("base_value"),
                );
                source.project(columns)?.project(outer)?.build()
            }
            "drift" => {
                crate::drift::profile_of(&model, model_name)?;
                const D: &str = "__d";
                let drift = self.aggregate("model_drift", {
                    let mut args = vec![lit(model_name)];
                    args.extend(features.iter().cloned());
                    args
                })?;
                let fields: Vec<Expr> = crate::drift::drift_fields()
                    .iter()
                    .map(|f| get_field(out_col(D), f.name().as_str()).alias(f.name()))
                    .collect();
                source
                    .aggregate(Vec::<Expr>::new(), vec![drift.alias(D)])?
                    .unnest_column_with_options(
                        Column::new_unqualified(D),
                        UnnestOptions::new().with_null_handling(NullHandling::Drop),
                    )?
                    .project(fields)?
                    .build()
            }
            _ => {
                let Some(target) = &model.target else {
                    return Err(invalid(format!(
                        "EVALUATE needs a supervised model; \"{model_name}\" has no target"
                    )));
                };
                const M: &str = "__m";
                let metrics = self.aggregate("model_metrics", {
                    let mut args = vec![lit(model_name), src_col(&target.name)];
                    args.extend(features.iter().cloned());
                    args
                })?;
                source
                    .aggregate(Vec::<Expr>::new(), vec![metrics.alias(M)])?
                    .unnest_column_with_options(
                        Column::new_unqualified(M),
                        UnnestOptions::new().with_null_handling(NullHandling::Drop),
                    )?
                    .project(vec![
                        get_field(out_col(M), "metric").alias("metric"),
                        get_field(out_col(M), "value").alias("value"),
                    ])?
                    .build()
            }
        }
    }

    fn plan(&mut self, func: &str, args: &[FunctionArg]) -> Result<LogicalPlan> {
        match func {
            "forecast" => {
                let usage = || {
                    invalid(
                        "FORECAST takes a relation and named settings: FORECAST(TABLE t, \
                         time => 'ts', value => 'v' [, id => 'a, b'] [, horizon => n] \
                         [, level => 95] [, method => 'auto'] [, season_length => n]), or a \
                         forecasting model: FORECAST('model' [, horizon => n] [, level => 95])"
                            .to_string(),
                    )
                };
                match (model_name_arg(args), relation_arg(args.first())) {
                    (Some(name), _) => match relation_arg(args.get(1)) {
                        Some(q) => self.future_forecast(name, q, &args[2..]),
                        None => self.stored_forecast(name, &args[1..]),
                    },
                    (None, Some(q)) => self.adhoc_forecast(q, &args[1..]),
                    (None, None) => Err(usage()),
                }
            }
            "anomaly" => {
                let Some(name) = model_name_arg(args) else {
                    let Some(q) = relation_arg(args.first()) else {
                        return Err(invalid(
                            "ANOMALY takes a relation and named settings: ANOMALY(TABLE t, \
                             time => 'ts', value => 'v' [, id => 'a, b'] \
                             [, sensitivity => 0.998] [, season_length => n] [, cooldown => n]), \
                             or a series detector or isolation forest: ANOMALY('model', TABLE t)"
                                .to_string(),
                        ));
                    };
                    return self.adhoc_anomaly(q, &args[1..]);
                };
                // ANOMALY('m', TABLE t): every row of t with its score from a DETECT
                // ANOMALIES model.
                let model = self.model(name)?;
                if let Some(detector) = model.series_detector() {
                    return self.stored_anomaly(name, detector, args);
                }
                if model.task != Task::AnomalyDetection {
                    return Err(invalid(format!(
                        "ANOMALY('{name}', TABLE t) needs a model made with CREATE MODEL ... \
                         DETECT ANOMALIES; \"{name}\" does {:?}",
                        model.task
                    )));
                }
                self.with_model_and_relation("predict", args)
            }
            "evaluate" if args.len() == 1 && model_name_arg(args).is_some() => {
                let name = model_name_arg(args).unwrap_or_default();
                let model = self.model(name)?;
                if model.forecast_model().is_none() {
                    return Err(invalid(format!(
                        "EVALUATE('{name}') without a relation reads a forecasting model's \
                         backtest; score \"{name}\" on rows with EVALUATE('{name}', TABLE t)"
                    )));
                }
                self.table_function("prognos_forecast_evaluation", vec![lit(name)])?
                    .build()
            }
            "model_monitor" => self.model_monitor(args),
            _ => self.with_model_and_relation(func, args),
        }
    }

    /// `MODEL_MONITOR('m' [, window => '1 day'] [, since => '7 days'])`: the model's logged
    /// predictions (those of the last `since` only, when given) joined with its outcomes by
    /// key, per version and time window (by prediction time): `version,
    /// window_start, window_end, predictions, outcomes, metric, value`, one row per metric
    /// (`rows` is the number of predictions with an outcome).
    fn model_monitor(&mut self, args: &[FunctionArg]) -> Result<LogicalPlan> {
        use datafusion::functions::datetime::expr_fn::date_bin;
        use datafusion::functions_aggregate::expr_fn::count;
        use datafusion::logical_expr::JoinType;
        let Some(name) = model_name_arg(args) else {
            return Err(invalid(
                "MODEL_MONITOR takes a model name and named settings: MODEL_MONITOR('model' \
                 [, window => '1 day'])"
                    .to_string(),
            ));
        };
        let settings = NamedArgs::parse(
            "MODEL_MONITOR",
            &args[1..],
            &["window", "since", MONITOR_LOG_ARG, MONITOR_OUTCOMES_ARG],
        )?;
        let window = settings.text("window")?.unwrap_or_else(|| "1 day".into());
        let stride = window_interval(&window)?;
        let since = settings
            .text("since")?
            .map(|s| window_interval(&s))
            .transpose()?;
        let (model, logging, outcomes) = self.snapshot.monitoring(name).map_err(external)?;
        let not_set = |what: &str, how: &str| {
            external(CatalogError::Model(ModelError::InvalidInput(format!(
                "model \"{model}\" has no {what}: ALTER MODEL {model} {how}"
            ))))
        };
        if logging.is_none() {
            return Err(not_set(
                "prediction log",
                "SET LOGGING (sample = 0.1, key = 'id')",
            ));
        }
        if outcomes.is_none() {
            return Err(not_set(
                "outcomes query",
                "SET OUTCOMES FROM (SELECT key, actual, ts FROM ...)",
            ));
        }
        const LOG: &str = "__log";
        const OUT: &str = "__out";
        let hidden = |arg: &str| match settings.get(arg) {
            Some(sql::Expr::Subquery(q)) => Ok(q.as_ref().clone()),
            _ => Err(invalid(format!(
                "MODEL_MONITOR('{model}'): the model's {arg} relation is missing (the model \
                 changed while the statement was planned; run it again)"
            ))),
        };
        let (log_query, out_query) = (hidden(MONITOR_LOG_ARG)?, hidden(MONITOR_OUTCOMES_ARG)?);
        let mut log = self.relation(log_query, LOG)?;
        if let Some(since) = since {
            log = log.filter(
                Expr::Column(Column::new(Some(LOG), "ts"))
                    .gt_eq(datafusion::functions::datetime::expr_fn::now() - lit(since)),
            )?;
        }
        let out = self.relation(out_query, OUT)?.build()?;
        let col = |q: &str, c: &str| Expr::Column(Column::new(Some(q), c));
        let as_text = |e: Expr| Expr::Cast(Cast::new(Box::new(e), DataType::Utf8));
        let window_start = date_bin(
            lit(stride.clone()),
            col(LOG, "ts"),
            lit(ScalarValue::TimestampMicrosecond(
                Some(0),
                Some("UTC".into()),
            )),
        );
        const M: &str = "__m";
        let metrics = self.aggregate(
            "model_live_metrics",
            vec![lit(model.as_str()), col(OUT, "actual"), col(LOG, "scores")],
        )?;
        log.join_on(
            out,
            JoinType::Left,
            [as_text(col(LOG, "key")).eq(as_text(col(OUT, "key")))],
        )?
        .aggregate(
            vec![
                col(LOG, "version").alias("version"),
                window_start.alias("window_start"),
            ],
            vec![
                count(col(LOG, "ts")).alias("predictions"),
                count(col(OUT, "actual")).alias("outcomes"),
                metrics.alias(M),
            ],
        )?
        .unnest_column_with_options(
            Column::new_unqualified(M),
            UnnestOptions::new().with_null_handling(NullHandling::Drop),
        )?
        .project(vec![
            out_col("version"),
            out_col("window_start"),
            (out_col("window_start") + lit(stride)).alias("window_end"),
            out_col("predictions"),
            out_col("outcomes"),
            get_field(out_col(M), "metric").alias("metric"),
            get_field(out_col(M), "value").alias("value"),
        ])?
        .sort(vec![
            out_col("version").sort(true, false),
            out_col("window_start").sort(true, false),
            out_col("metric").sort(true, false),
        ])?
        .build()
    }

    fn with_model_and_relation(&mut self, func: &str, args: &[FunctionArg]) -> Result<LogicalPlan> {
        let usage = || {
            invalid(format!(
                "{func} takes a model name and a relation: {func}('model', TABLE t) or \
                 {func}('model', (SELECT ...))"
            ))
        };
        let [_, relation] = args else {
            return Err(usage());
        };
        match (model_name_arg(args), relation_arg(Some(relation))) {
            (Some(name), Some(q)) => self.model_over_rows(func, name, q),
            _ => Err(usage()),
        }
    }
}

/// The model snapshot the session's model functions were registered with (so the relation
/// forms and the scalar functions of one statement see the same model versions).
fn session_snapshot(ctx: &dyn RelationPlannerContext) -> Result<Arc<ModelSnapshot>> {
    ctx.context_provider()
        .get_function_meta("predict")
        .and_then(|udf| crate::models::snapshot_of(&udf))
        .ok_or_else(|| {
            external(CatalogError::Model(ModelError::InvalidInput(
                "the model functions are not registered in this session".into(),
            )))
        })
}

impl RelationPlanner for ModelRelations {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } = &relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let func = name.to_string().to_ascii_lowercase();
        let Some(func) = RELATION_FUNCTIONS.iter().find(|f| **f == func) else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let snapshot = session_snapshot(context)?;
        let plan = Planning {
            ctx: context,
            snapshot,
        }
        .plan(func, &args.args)?;
        // Unaliased, the relation is named after the function (`predict.cluster`).
        let alias = alias.clone().unwrap_or_else(|| TableAlias {
            explicit: true,
            name: Ident::new(*func),
            columns: vec![],
            at: None,
        });
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan,
            Some(alias),
        ))))
    }
}
