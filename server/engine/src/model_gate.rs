//! Validation gates: whether a newly trained version of a model is deployed, kept as a
//! candidate, or rejected.
//!
//! `CREATE [OR REPLACE] MODEL … WITH (gate = '…', deploy = 'auto' | 'manual')`:
//!
//! * `gate = 'auc >= 0.80 AND log_loss <= 0.5'` — a rule over the metrics the version reports
//!   on its held-out rows (`AND`, `OR`, `NOT`, parentheses, `< <= > >= = <>`; `logloss` is
//!   read as `log_loss`).
//! * no `gate` — "not worse than the deployed version on the same held-out rows": a
//!   classifier or regression scores the candidate and the deployed version on the
//!   candidate's validation split by the task's headline metric (AUC for a binary classifier,
//!   log loss for a multiclass one, RMSE for a regression). When the deployed version cannot
//!   score those rows (its features are not among them), the stored validation metrics are
//!   compared instead and a NOTICE says so. Forecasting models compare their backtest MASE.
//!   Clustering, anomaly and imported models, and a model's first version, pass.
//! * `gate = 'none'` deploys every version (the behaviour before gates existed).
//!
//! A version that fails is stored as `rejected`, with the reason, and the statement still
//! succeeds with a WARNING; the deployed version keeps serving. `deploy = 'manual'` keeps a
//! passing version as a `candidate` until `ALTER MODEL … DEPLOY VERSION n`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};
use prognos_catalog::Admission;
use prognos_models::ModelArtifact;
use prognos_models::metrics::Metrics;

use crate::Engine;
use crate::error::{EngineError, EngineResult, StatusCode};

/// Every metric name some model reports (checked before training, so a typo costs nothing).
const KNOWN_METRICS: &[&str] = &[
    "auc",
    "log_loss",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "rmse",
    "mae",
    "r2",
    "mape",
    "mase",
    "smape",
    "coverage",
    "inertia",
    "silhouette",
];

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::statement(StatusCode::InvalidParameterValue, msg)
}

/// A gate rule, as parsed from its text.
#[derive(Debug, Clone, PartialEq)]
enum Rule {
    And(Box<Rule>, Box<Rule>),
    Or(Box<Rule>, Box<Rule>),
    Not(Box<Rule>),
    Compare {
        metric: String,
        op: Comparison,
        value: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Lt,
    LtEq,
    Gt,
    GtEq,
    Eq,
    NotEq,
}

impl Comparison {
    fn symbol(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::LtEq => "<=",
            Comparison::Gt => ">",
            Comparison::GtEq => ">=",
            Comparison::Eq => "=",
            Comparison::NotEq => "<>",
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Comparison::Lt => a < b,
            Comparison::LtEq => a <= b,
            Comparison::Gt => a > b,
            Comparison::GtEq => a >= b,
            Comparison::Eq => a == b,
            Comparison::NotEq => a != b,
        }
    }

    /// The comparison with its sides swapped (`0.8 <= auc` is `auc >= 0.8`).
    fn flipped(self) -> Comparison {
        match self {
            Comparison::Lt => Comparison::Gt,
            Comparison::LtEq => Comparison::GtEq,
            Comparison::Gt => Comparison::Lt,
            Comparison::GtEq => Comparison::LtEq,
            other => other,
        }
    }
}

/// What decides a new version's admission.
#[derive(Debug, Clone, PartialEq)]
enum Gate {
    /// Not worse than the deployed version (see the module docs).
    NotWorse,
    /// Every version passes.
    Open,
    /// A rule over the version's metrics, with its text.
    Rule(Rule, String),
}

/// A `CREATE MODEL`'s lifecycle options.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lifecycle {
    gate: Gate,
    /// `deploy = 'manual'`: a passing version stays a candidate.
    manual: bool,
}

impl Lifecycle {
    /// Take `gate` and `deploy` out of a `CREATE MODEL`'s `WITH` options (the rest go to the
    /// trainer); a rule is parsed and its metric names checked here, before any training.
    pub(crate) fn take_from(options: &mut BTreeMap<String, String>) -> EngineResult<Lifecycle> {
        let manual = match options.remove("deploy").as_deref().map(str::trim) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("auto") => false,
            Some(v) if v.eq_ignore_ascii_case("manual") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "deploy must be 'auto' or 'manual', not '{other}'"
                )));
            }
        };
        let gate = match options.remove("gate") {
            None => Gate::NotWorse,
            Some(text) if text.trim().eq_ignore_ascii_case("none") => Gate::Open,
            Some(text) => Gate::Rule(parse_rule(&text)?, text.trim().to_string()),
        };
        Ok(Lifecycle { gate, manual })
    }

    /// Whether an explicit rule was given (imported models cannot be judged by one).
    pub(crate) fn has_rule(&self) -> bool {
        matches!(self.gate, Gate::Rule(..))
    }

    /// How a version that passed is admitted.
    fn admitted(&self) -> Admission {
        if self.manual {
            Admission::Candidate
        } else {
            Admission::Deploy
        }
    }

    /// The verdict on a version that passed, with what to tell the client.
    fn pass(&self, notice: Option<String>) -> Verdict {
        Verdict {
            admission: self.admitted(),
            notice,
        }
    }

    /// The admission of a version that no gate judges (an imported model).
    pub(crate) fn ungated(&self) -> Admission {
        self.admitted()
    }
}

/// A rule on live metrics (`live_auc < 0.7`), as `ALTER MODEL … SET ROLLBACK | RETRAIN
/// WHEN` takes it.
#[derive(Debug, Clone)]
pub(crate) struct LiveCondition(Rule);

impl LiveCondition {
    /// Parse the condition (checked when the rule is set, evaluated on every check).
    pub(crate) fn parse(expr: &Expr) -> EngineResult<LiveCondition> {
        rule_of(expr, true)
            .map(LiveCondition)
            .map_err(|why| invalid(format!("rule '{expr}': {why}")))
    }

    /// Whether it holds on `live` (the metrics without their `live_` prefix, and `rows`).
    pub(crate) fn holds(&self, live: &Metrics) -> Result<bool, String> {
        holds(&self.0, live, &mut vec![])
    }

    /// Whether it names [`DRIFT_METRIC`].
    pub(crate) fn uses_drift(&self) -> bool {
        self.uses(&|m| m == DRIFT_METRIC)
    }

    /// Whether it names a metric of predictions joined with outcomes (`live_…`).
    pub(crate) fn uses_outcomes(&self) -> bool {
        self.uses(&|m| m != DRIFT_METRIC)
    }

    fn uses(&self, what: &dyn Fn(&str) -> bool) -> bool {
        fn walk(rule: &Rule, what: &dyn Fn(&str) -> bool) -> bool {
            match rule {
                Rule::And(a, b) | Rule::Or(a, b) => walk(a, what) || walk(b, what),
                Rule::Not(a) => walk(a, what),
                Rule::Compare { metric, .. } => what(metric),
            }
        }
        walk(&self.0, what)
    }
}

/// Parse a gate rule.
fn parse_rule(text: &str) -> EngineResult<Rule> {
    let bad = |why: String| invalid(format!("gate '{}': {why}", text.trim()));
    let expr = crate::parser::dialect::one_expr(text).map_err(|e| bad(e.to_string()))?;
    rule_of(&expr, false).map_err(bad)
}

fn rule_of(e: &Expr, live: bool) -> Result<Rule, String> {
    match e {
        Expr::Nested(inner) => rule_of(inner, live),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Ok(Rule::Not(Box::new(rule_of(expr, live)?))),
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And => Ok(Rule::And(
                Box::new(rule_of(left, live)?),
                Box::new(rule_of(right, live)?),
            )),
            BinaryOperator::Or => Ok(Rule::Or(
                Box::new(rule_of(left, live)?),
                Box::new(rule_of(right, live)?),
            )),
            op => {
                let cmp = match op {
                    BinaryOperator::Lt => Comparison::Lt,
                    BinaryOperator::LtEq => Comparison::LtEq,
                    BinaryOperator::Gt => Comparison::Gt,
                    BinaryOperator::GtEq => Comparison::GtEq,
                    BinaryOperator::Eq => Comparison::Eq,
                    BinaryOperator::NotEq => Comparison::NotEq,
                    other => return Err(format!("'{other}' is not a comparison")),
                };
                match (
                    metric_name(left, live),
                    number(right),
                    metric_name(right, live),
                    number(left),
                ) {
                    (Some(m), Some(v), _, _) => Ok(Rule::Compare {
                        metric: m?,
                        op: cmp,
                        value: v,
                    }),
                    (_, _, Some(m), Some(v)) => Ok(Rule::Compare {
                        metric: m?,
                        op: cmp.flipped(),
                        value: v,
                    }),
                    _ => Err(format!(
                        "'{e}' must compare a metric with a number (e.g. auc >= 0.8)"
                    )),
                }
            }
        },
        other => Err(format!(
            "'{other}' is not a comparison of a metric with a number"
        )),
    }
}

/// The rule metric that is the largest PSI of any feature or the prediction between the
/// training profile and the logged inputs of the rule's window.
pub(crate) const DRIFT_METRIC: &str = "drift";

/// A metric named by an identifier: `Some(Err)` for an unknown one.
/// A live rule names the metrics with `live_` (`live_auc`), and may name `live_rows`, the
/// number of predictions with an outcome, and [`DRIFT_METRIC`].
fn metric_name(e: &Expr, live: bool) -> Option<Result<String, String>> {
    let Expr::Identifier(i) = e else {
        return None;
    };
    let written = i.value.to_ascii_lowercase();
    let name = if live {
        if written == DRIFT_METRIC {
            return Some(Ok(DRIFT_METRIC.to_string()));
        }
        match written.strip_prefix("live_") {
            Some("rows") => return Some(Ok("rows".to_string())),
            Some(m) => m.to_string(),
            None => {
                return Some(Err(format!(
                    "'{}' is not a live metric (live_auc, live_rmse, live_rows, ..., drift)",
                    i.value
                )));
            }
        }
    } else {
        written
    };
    let name = if name == "logloss" {
        "log_loss".to_string()
    } else {
        name
    };
    Some(if KNOWN_METRICS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(format!(
            "unknown metric '{}' (metrics: {})",
            i.value,
            KNOWN_METRICS.join(", ")
        ))
    })
}

fn number(e: &Expr) -> Option<f64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => number(expr).map(|v| -v),
        Expr::Nested(inner) => number(inner),
        _ => None,
    }
}

/// Evaluate `rule` on `metrics`; the comparisons that failed are added to `failed`.
fn holds(rule: &Rule, metrics: &Metrics, failed: &mut Vec<String>) -> Result<bool, String> {
    Ok(match rule {
        Rule::And(a, b) => {
            let a = holds(a, metrics, failed)?;
            let b = holds(b, metrics, failed)?;
            a && b
        }
        Rule::Or(a, b) => {
            let mut mine = vec![];
            let ok = holds(a, metrics, &mut mine)? | holds(b, metrics, &mut mine)?;
            if !ok {
                failed.extend(mine);
            }
            ok
        }
        Rule::Not(a) => {
            let ok = !holds(a, metrics, &mut vec![])?;
            if !ok {
                failed.push("a NOT condition".to_string());
            }
            ok
        }
        Rule::Compare { metric, op, value } => {
            let Some(&actual) = metrics.values.get(metric) else {
                let mut have: Vec<&str> = metrics.values.keys().map(String::as_str).collect();
                have.sort_unstable();
                return Err(format!(
                    "this model does not report {metric} (it reports {})",
                    have.join(", ")
                ));
            };
            let ok = op.holds(actual, *value);
            if !ok {
                failed.push(format!(
                    "{metric} = {actual:.4} is not {} {value}",
                    op.symbol()
                ));
            }
            ok
        }
    })
}

/// The rows a version was validated on: the training query's column names and the held-out
/// rows of each column.
pub(crate) struct Holdout {
    /// Column names of the training query.
    pub(crate) names: Vec<String>,
    /// The held-out rows, one array per column.
    pub(crate) columns: Vec<ArrayRef>,
}

/// The verdict on a version that failed, for `reason`.
fn reject(reason: String) -> Verdict {
    Verdict {
        admission: Admission::Reject(reason),
        notice: None,
    }
}

impl Holdout {
    fn column(&self, name: &str) -> Option<&ArrayRef> {
        self.names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| &self.columns[i])
    }

    fn rows(&self) -> usize {
        self.columns.first().map(|c| c.len()).unwrap_or(0)
    }
}

/// A gate's decision and what to tell the client.
pub(crate) struct Verdict {
    /// How the version enters the model.
    pub(crate) admission: Admission,
    /// A NOTICE describing the comparison, when one was made.
    pub(crate) notice: Option<String>,
}

/// Judge `candidate`, about to become a version of model `name`.
pub(crate) async fn judge(
    engine: &Engine,
    name: &str,
    candidate: &Arc<ModelArtifact>,
    holdout: Option<Holdout>,
    lifecycle: &Lifecycle,
) -> EngineResult<Verdict> {
    match &lifecycle.gate {
        Gate::Open => Ok(lifecycle.pass(None)),
        Gate::Rule(rule, text) => {
            let mut failed = vec![];
            let ok = holds(rule, &candidate.metrics, &mut failed)
                .map_err(|why| invalid(format!("gate '{text}': {why}")))?;
            if ok {
                Ok(lifecycle.pass(Some(format!("validation gate '{text}' passed"))))
            } else {
                Ok(reject(format!(
                    "gate '{text}' failed: {}",
                    failed.join(", ")
                )))
            }
        }
        Gate::NotWorse => not_worse(engine, name, candidate, holdout, lifecycle).await,
    }
}

/// The default gate (see the module docs).
async fn not_worse(
    engine: &Engine,
    name: &str,
    candidate: &Arc<ModelArtifact>,
    holdout: Option<Holdout>,
    lifecycle: &Lifecycle,
) -> EngineResult<Verdict> {
    let pass = |notice: Option<String>| lifecycle.pass(notice);
    let Some((metric, higher_is_better)) = candidate.headline_metric() else {
        return Ok(pass(None));
    };
    let Some(entry) = engine.registry.get(name) else {
        return Ok(pass(None));
    };
    let Some(deployed_record) = entry.current_version().cloned() else {
        return Ok(pass(None));
    };
    let deployed_no = deployed_record.version;
    // Both versions on the same held-out rows, when the deployed one can read them.
    let mut fallback_note = None;
    if let Some(holdout) = holdout.filter(|h| h.rows() > 0) {
        match engine.registry.snapshot().load(name).await {
            Ok((_, deployed)) => {
                let cand = Arc::clone(candidate);
                let scored = tokio::task::spawn_blocking(move || {
                    let c = score(&cand, &holdout, metric);
                    let d = score(&deployed, &holdout, metric);
                    (c, d, holdout.rows())
                })
                .await
                .map_err(|e| {
                    EngineError::statement(StatusCode::Internal, format!("validation gate: {e}"))
                })?;
                match scored {
                    (Ok(c), Ok(d), rows) => {
                        let what = format!("on the same {rows} held-out rows");
                        return Ok(compare(
                            metric,
                            higher_is_better,
                            c,
                            d,
                            deployed_no,
                            &what,
                            lifecycle,
                        ));
                    }
                    (Err(why), _, _) | (_, Err(why), _) => fallback_note = Some(why),
                }
            }
            Err(e) => fallback_note = Some(e.to_string()),
        }
    }
    // Otherwise the metrics stored with each version.
    let stored = (
        candidate.metrics.values.get(metric).copied(),
        deployed_record.metrics.values.get(metric).copied(),
    );
    let (Some(c), Some(d)) = stored else {
        return Ok(pass(Some(format!(
            "validation gate: version {deployed_no} reports no {metric} to compare with, so \
             this version passes"
        ))));
    };
    let what = match &fallback_note {
        Some(why) => format!(
            "by the metrics stored with each version (the deployed version could not score \
             this version's held-out rows: {why})"
        ),
        None => "by the metrics stored with each version".to_string(),
    };
    Ok(compare(
        metric,
        higher_is_better,
        c,
        d,
        deployed_no,
        &what,
        lifecycle,
    ))
}

/// `metric` of `model` on the held-out rows, its features and target found by name.
fn score(model: &ModelArtifact, holdout: &Holdout, metric: &str) -> Result<f64, String> {
    let target = model
        .target_name()
        .and_then(|t| holdout.column(&t).cloned())
        .ok_or("its target is not among the training query's columns")?;
    let features = model
        .features
        .features
        .iter()
        .map(|f| {
            holdout
                .column(&f.name)
                .cloned()
                .ok_or_else(|| format!("feature {} is not among them", f.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (metrics, _) = model
        .evaluate(&target, &features)
        .map_err(|e| e.to_string())?;
    metrics
        .values
        .get(metric)
        .copied()
        .ok_or_else(|| format!("it reports no {metric} on them"))
}

fn compare(
    metric: &str,
    higher_is_better: bool,
    candidate: f64,
    deployed: f64,
    deployed_no: u32,
    what: &str,
    lifecycle: &Lifecycle,
) -> Verdict {
    let ok = if higher_is_better {
        candidate >= deployed
    } else {
        candidate <= deployed
    };
    let said = format!(
        "{metric} {candidate:.4} against the deployed version {deployed_no}'s {deployed:.4} {what}"
    );
    if ok {
        lifecycle.pass(Some(format!("validation gate passed: {said}")))
    } else {
        reject(format!("worse than the deployed version: {said}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, f64)]) -> Metrics {
        Metrics {
            values: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            confusion: None,
        }
    }

    fn lifecycle(options: &[(&str, &str)]) -> EngineResult<Lifecycle> {
        let mut o: BTreeMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        o.insert("num_trees".into(), "10".into());
        let l = Lifecycle::take_from(&mut o)?;
        assert_eq!(o.len(), 1, "only the lifecycle options are taken");
        Ok(l)
    }

    fn check(rule: &str, m: &Metrics) -> (bool, Vec<String>) {
        let r = parse_rule(rule).expect(rule);
        let mut failed = vec![];
        let ok = holds(&r, m, &mut failed).expect("evaluates");
        (ok, failed)
    }

    #[test]
    fn rules_combine_comparisons_and_name_what_failed() {
        let m = metrics(&[("auc", 0.83), ("log_loss", 0.41)]);
        assert!(check("auc >= 0.80 AND logloss <= 0.5", &m).0);
        assert!(check("(auc > 0.9 OR log_loss < 0.45) AND NOT auc < 0.5", &m).0);
        assert!(check("0.8 <= auc", &m).0);
        let (ok, failed) = check("auc >= 0.85 AND log_loss <= 0.4", &m);
        assert!(!ok);
        assert_eq!(
            failed,
            [
                "auc = 0.8300 is not >= 0.85",
                "log_loss = 0.4100 is not <= 0.4"
            ]
        );
    }

    #[test]
    fn bad_rules_are_refused_before_training() {
        for bad in [
            "auc >=",
            "auc >= 'high'",
            "auc + 1 > 2",
            "acc >= 0.8",
            "auc >= 0.8 extra",
            "",
        ] {
            let e = lifecycle(&[("gate", bad)]).expect_err(bad);
            assert_eq!(e.status(), StatusCode::InvalidParameterValue, "{bad}: {e}");
        }
        assert!(lifecycle(&[("deploy", "later")]).is_err());
    }

    #[test]
    fn a_metric_the_model_does_not_report_is_an_error() {
        let r = parse_rule("rmse < 3").expect("parse");
        let e = holds(&r, &metrics(&[("auc", 0.8)]), &mut vec![]).expect_err("no rmse");
        assert!(e.contains("does not report rmse"), "{e}");
    }

    #[test]
    fn options_choose_the_gate_and_the_deployment() {
        assert_eq!(lifecycle(&[]).expect("default").gate, Gate::NotWorse);
        assert_eq!(
            lifecycle(&[("gate", "NONE")]).expect("none").gate,
            Gate::Open
        );
        let l = lifecycle(&[("deploy", "manual")]).expect("manual");
        assert!(matches!(l.admitted(), Admission::Candidate));
        assert!(matches!(
            lifecycle(&[]).expect("auto").admitted(),
            Admission::Deploy
        ));
    }

    #[test]
    fn not_worse_compares_in_the_metrics_direction() {
        let l = lifecycle(&[]).expect("default");
        let better_auc = compare("auc", true, 0.84, 0.80, 2, "here", &l);
        assert!(matches!(better_auc.admission, Admission::Deploy));
        let worse_rmse = compare("rmse", false, 5.0, 4.0, 2, "here", &l);
        match worse_rmse.admission {
            Admission::Reject(why) => {
                assert!(
                    why.contains("rmse 5.0000 against the deployed version 2's 4.0000"),
                    "{why}"
                )
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        let equal = compare("rmse", false, 4.0, 4.0, 2, "here", &l);
        assert!(matches!(equal.admission, Admission::Deploy));
    }
}
