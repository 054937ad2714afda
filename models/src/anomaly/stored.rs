//! Stored series detectors: `CREATE MODEL m DETECT ANOMALIES IN value TIME t [BY ids]
//! [WITH (...)] AS query`. The model keeps the detector's settings (sensitivity, novelty
//! window and gate, cooldown, season) and its columns, so `ANOMALY('m', TABLE t)` scores new
//! data the way it was defined, and a new version of the model changes the alerting of every
//! query that names it.
//!
//! With `labels = 'col'` the training query marks incidents: rows labelled as anomalies
//! (`true` or non-zero), normal (`false` or 0) or unlabelled (NULL). A run of consecutive
//! rows labelled as anomalies (in a series, in time order) is one incident. The settings not
//! given in `WITH` are chosen from a grid ([`tune`]) to maximise the `objective`: the F1 of
//! incidents found (`'f1'`, the default: an incident is found when an alert onset falls on
//! one of its rows, an alert onset on a row labelled normal is a false alarm, and onsets on
//! unlabelled rows do not count), or NAB's standard-profile score with the incidents as its
//! windows (`'nab'`: early detection pays, a false alarm costs 0.11 of a missed incident).
//! Without labels the model keeps the defaults and the given settings.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use serde::{Deserialize, Serialize};

use super::{AnomalySpec, SeasonPhases, alert_onsets, detect, season_phases};
use crate::Task;
use crate::error::{ModelError, ModelResult};
use crate::features::FeatureSet;
use crate::forecast::stored::MAX_SEASON_LENGTH;
use crate::forecast::time::{times_as_i64, unit_nanos};
use crate::metrics::Metrics;
use crate::model::{Algorithm, Estimator, FORMAT_VERSION, ModelArtifact, Trial};
use crate::train::{TrainContext, column_position as position, num};

/// Largest `cooldown` (points).
pub const MAX_COOLDOWN: usize = 1_000_000;
/// Largest `novelty_window` (points).
pub const MAX_NOVELTY_WINDOW: usize = 1_000;

/// `WITH (...)` keys a series detector reads.
const OPTIONS: &[&str] = &[
    "sensitivity",
    "novelty_window",
    "novelty_gate",
    "cooldown",
    "season_length",
    "labels",
    "objective",
];

/// A stored series detector: its columns and settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesDetector {
    /// The time column.
    pub time: String,
    /// The value column.
    pub value: String,
    /// The series id columns (none: one series).
    pub ids: Vec<String>,
    /// Score at or above which a point may alert, in (0, 1).
    pub sensitivity: f64,
    /// Values per stretch whose novelty gates the alerts (0: no gate).
    pub novelty_window: usize,
    /// Novelty below which a high score does not alert.
    pub novelty_gate: f64,
    /// Points after an alert during which no other alert fires.
    pub cooldown: usize,
    /// The season in points: 0 = the seasons the timestamps suggest, 1 = none.
    pub season_length: usize,
}

impl SeriesDetector {
    /// The detector's settings as [`detect`] takes them.
    pub fn spec(&self) -> AnomalySpec {
        AnomalySpec {
            sensitivity: self.sensitivity,
            novelty_window: self.novelty_window,
            novelty_gate: self.novelty_gate,
            cooldown: self.cooldown,
            ..AnomalySpec::default()
        }
    }

    /// Its settings as `key value` lines (`season_length auto` when the timestamps choose).
    pub fn setting_lines(&self) -> Vec<String> {
        let season = match self.season_length {
            0 => "auto".to_string(),
            1 => "none".to_string(),
            m => m.to_string(),
        };
        vec![
            format!("sensitivity {}", self.sensitivity),
            format!("novelty_window {}", self.novelty_window),
            format!("novelty_gate {}", self.novelty_gate),
            format!("cooldown {}", self.cooldown),
            format!("season_length {season}"),
        ]
    }

    /// Its columns as `name (role)`.
    pub fn column_descriptions(&self) -> Vec<String> {
        let mut out = vec![
            format!("{} (time)", self.time),
            format!("{} (value)", self.value),
        ];
        out.extend(self.ids.iter().map(|c| format!("{c} (id)")));
        out
    }
}

fn settings_text(s: &AnomalySpec) -> String {
    format!(
        "sensitivity={} novelty_window={} novelty_gate={} cooldown={}",
        s.sensitivity, s.novelty_window, s.novelty_gate, s.cooldown
    )
}

/// What `CREATE MODEL ... DETECT ANOMALIES IN value TIME t [BY ids]` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesDetectorRequest {
    /// `IN <value>`.
    pub value: String,
    /// `TIME <time>`.
    pub time: String,
    /// `BY <ids>`.
    pub ids: Vec<String>,
    /// `WITH (...)`, keys lower-cased.
    pub options: BTreeMap<String, String>,
}

/// The order ANOMALY scores a series' rows in: by time, rows with equal times by value
/// (missing values last), so the scores do not depend on the order the rows arrived in.
pub fn series_order(times: &[i64], values: &[Option<f64>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    let key = |v: Option<f64>| v.unwrap_or(f64::INFINITY);
    order.sort_by(|&a, &b| {
        times[a]
            .cmp(&times[b])
            .then_with(|| key(values[a]).total_cmp(&key(values[b])))
    });
    order
}

/// Alerts counted against labels (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LabelledAlerts {
    /// Runs of rows labelled as anomalies.
    pub incidents: usize,
    /// Incidents with an alert onset on one of their rows.
    pub found: usize,
    /// Alert onsets on rows labelled normal.
    pub false_alarms: usize,
    /// NAB's raw reward under its standard profile, with the incidents as its windows: each
    /// found incident earns up to 1 by how early in it the first onset fell, each missed one
    /// costs 1, each false alarm up to 0.11 (less just after an incident).
    pub reward: f64,
}

/// NAB's standard profile: the weight of a false positive (a true positive and a missed
/// window weigh 1).
const NAB_FP_WEIGHT: f64 = 0.11;

/// NAB's scaled sigmoid of a position relative to a window.
fn nab_sigmoid(x: f64) -> f64 {
    if x > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

impl LabelledAlerts {
    /// Count one series' alerts (`alerts[i]`: an onset at row `i`) against its labels.
    pub fn add(&mut self, alerts: &[bool], labels: &[Option<bool>]) {
        let n = alerts.len().min(labels.len());
        // The incidents: runs of rows labelled as anomalies.
        let mut runs: Vec<(usize, usize)> = vec![];
        for i in (0..n).filter(|&i| labels[i] == Some(true)) {
            match runs.last_mut() {
                Some(run) if run.1 + 1 == i => run.1 = i,
                _ => runs.push((i, i)),
            }
        }
        let mut found = vec![false; runs.len()];
        // The first incident that has not ended before the onset.
        let mut next = 0;
        for i in (0..n).filter(|&i| alerts[i]) {
            while next < runs.len() && runs[next].1 < i {
                next += 1;
            }
            match labels[i] {
                Some(true) if !found[next] => {
                    found[next] = true;
                    self.found += 1;
                    let (s, e) = runs[next];
                    let position = -((e - i + 1) as f64) / (e - s + 1) as f64;
                    self.reward += nab_sigmoid(position) / nab_sigmoid(-1.0);
                }
                Some(false) => {
                    self.false_alarms += 1;
                    self.reward += match next.checked_sub(1).map(|p| runs[p]) {
                        None => -NAB_FP_WEIGHT,
                        Some((s, e)) => {
                            let position = (i - e) as f64 / ((e - s) as f64).max(1.0);
                            nab_sigmoid(position) * NAB_FP_WEIGHT
                        }
                    };
                }
                _ => {}
            }
        }
        self.incidents += runs.len();
        self.reward -= found.iter().filter(|f| !**f).count() as f64;
    }

    /// Found incidents over found incidents and false alarms (0 without either).
    pub fn precision(&self) -> f64 {
        ratio(self.found, self.found + self.false_alarms)
    }

    /// Found incidents over incidents.
    pub fn recall(&self) -> f64 {
        ratio(self.found, self.incidents)
    }

    /// The harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self) -> f64 {
        ratio(
            2 * self.found,
            2 * self.found + self.false_alarms + self.incidents - self.found,
        )
    }

    /// NAB's normalised score (standard profile): 100 for every incident found at its first
    /// row and no false alarm, 0 for no alert at all (0 without incidents).
    pub fn nab_score(&self) -> f64 {
        if self.incidents == 0 {
            return 0.0;
        }
        let null = -(self.incidents as f64);
        100.0 * (self.reward - null) / (self.incidents as f64 - null)
    }
}

impl std::ops::AddAssign for LabelledAlerts {
    fn add_assign(&mut self, other: LabelledAlerts) {
        self.incidents += other.incidents;
        self.found += other.found;
        self.false_alarms += other.false_alarms;
        self.reward += other.reward;
    }
}

/// What [`tune`] maximises (`objective = 'f1' | 'nab'`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Objective {
    /// The F1 of incidents found.
    #[default]
    F1,
    /// NAB's normalised score, standard profile: early detection pays, false alarms cost a
    /// ninth of a missed incident.
    Nab,
}

impl Objective {
    /// Parse an `objective` option.
    pub fn parse(s: &str) -> ModelResult<Objective> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f1" => Ok(Objective::F1),
            "nab" => Ok(Objective::Nab),
            other => Err(ModelError::InvalidParameter(format!(
                "objective must be 'f1' or 'nab', got '{other}'"
            ))),
        }
    }

    /// Its name, as the metric is called.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::F1 => "f1",
            Objective::Nab => "nab_score",
        }
    }

    /// Its value for `counts`.
    pub fn value(&self, counts: &LabelledAlerts) -> f64 {
        match self {
            Objective::F1 => counts.f1(),
            Objective::Nab => counts.nab_score(),
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// One series of the training query, in [`series_order`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledSeries {
    /// Values (NaN: missing).
    pub values: Vec<f64>,
    /// Its seasons (see [`season_phases`]).
    pub seasons: Vec<SeasonPhases>,
    /// Labels (all `None` without a labels column).
    pub labels: Vec<Option<bool>>,
}

/// The settings `WITH (...)` fixes; the rest are tuned on labels (or left at the defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FixedSettings {
    /// `sensitivity`.
    pub sensitivity: Option<f64>,
    /// `novelty_window`.
    pub novelty_window: Option<usize>,
    /// `novelty_gate`.
    pub novelty_gate: Option<f64>,
    /// `cooldown`.
    pub cooldown: Option<usize>,
}

impl FixedSettings {
    /// The defaults with the given settings on top.
    pub fn spec(&self) -> AnomalySpec {
        let d = AnomalySpec::default();
        AnomalySpec {
            sensitivity: self.sensitivity.unwrap_or(d.sensitivity),
            novelty_window: self.novelty_window.unwrap_or(d.novelty_window),
            novelty_gate: self.novelty_gate.unwrap_or(d.novelty_gate),
            cooldown: self.cooldown.unwrap_or(d.cooldown),
            ..d
        }
    }
}

/// The grid [`tune`] searches, for each setting not fixed.
const SENSITIVITIES: &[f64] = &[0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999];
const NOVELTY_WINDOWS: &[usize] = &[0, 8, 16, 32, 64];
const NOVELTY_GATES: &[f64] = &[0.05, 0.1, 0.2, 0.3];
const COOLDOWNS: &[usize] = &[0, 12, 50, 100];

/// The outcome of [`tune`].
#[derive(Debug, Clone, PartialEq)]
pub struct Tuned {
    /// The settings chosen.
    pub spec: AnomalySpec,
    /// How they do on the labels.
    pub chosen: LabelledAlerts,
    /// How the defaults with the fixed settings do.
    pub defaults: LabelledAlerts,
    /// Candidates compared.
    pub candidates: usize,
}

/// Choose the settings not in `fixed` by `objective` over `series` (ties: fewer false alarms,
/// then the defaults, then the order of the grid). The scores are computed once per novelty
/// window; each candidate only re-applies the alert rule ([`alert_onsets`]).
pub fn tune(
    series: &[LabelledSeries],
    fixed: &FixedSettings,
    objective: Objective,
    ctx: &mut TrainContext<'_>,
) -> ModelResult<Tuned> {
    let one = |v: f64| vec![v];
    let sensitivities = fixed.sensitivity.map(one).unwrap_or(SENSITIVITIES.to_vec());
    let gates = fixed
        .novelty_gate
        .map(one)
        .unwrap_or(NOVELTY_GATES.to_vec());
    let windows = fixed
        .novelty_window
        .map(|w| vec![w])
        .unwrap_or(NOVELTY_WINDOWS.to_vec());
    let cooldowns = fixed
        .cooldown
        .map(|c| vec![c])
        .unwrap_or(COOLDOWNS.to_vec());
    let base = fixed.spec();
    let score_of = |scored: &[(Vec<f64>, Vec<f64>)], spec: &AnomalySpec| {
        let mut counts = LabelledAlerts::default();
        for (s, (score, novelty)) in series.iter().zip(scored) {
            counts.add(&alert_onsets(score, novelty, spec), &s.labels);
        }
        counts
    };
    let mut best: Option<(AnomalySpec, LabelledAlerts)> = None;
    let mut defaults = None;
    let mut candidates = 0;
    // The defaults' window first, so their counts are known before any other candidate.
    let mut order = windows.clone();
    if let Some(i) = order.iter().position(|&w| w == base.novelty_window) {
        order[..=i].rotate_right(1);
    }
    for window in order {
        if ctx.cancel.load(Ordering::Relaxed) {
            return Err(ModelError::Cancelled);
        }
        let at_window = AnomalySpec {
            novelty_window: window,
            ..base
        };
        let scored: Vec<(Vec<f64>, Vec<f64>)> = series
            .iter()
            .map(|s| {
                let d = detect(&s.values, &s.seasons, &at_window);
                (d.score, d.novelty)
            })
            .collect();
        if window == base.novelty_window {
            let counts = score_of(&scored, &base);
            defaults = Some(counts);
            best = Some((base, counts));
        }
        // Without a window the gate plays no part: one gate is enough.
        let gates: &[f64] = if window == 0 { &gates[..1] } else { &gates };
        for &sensitivity in &sensitivities {
            for &novelty_gate in gates {
                for &cooldown in &cooldowns {
                    let spec = AnomalySpec {
                        sensitivity,
                        novelty_gate,
                        cooldown,
                        ..at_window
                    };
                    candidates += 1;
                    let counts = score_of(&scored, &spec);
                    let better = best.as_ref().is_none_or(|(_, b)| {
                        (
                            objective.value(&counts),
                            std::cmp::Reverse(counts.false_alarms),
                        ) > (objective.value(b), std::cmp::Reverse(b.false_alarms))
                    });
                    if better {
                        best = Some((spec, counts));
                    }
                }
            }
        }
        (ctx.progress)(format!(
            "novelty window {window}: best {} so far {:.3}",
            objective.name(),
            best.as_ref().map(|b| objective.value(&b.1)).unwrap_or(0.0)
        ));
    }
    let (spec, chosen) = best.unwrap_or((base, LabelledAlerts::default()));
    Ok(Tuned {
        spec,
        chosen,
        defaults: defaults.unwrap_or(chosen),
        candidates,
    })
}

/// A whole-number option in `range`.
fn whole(
    options: &BTreeMap<String, String>,
    key: &str,
    range: std::ops::RangeInclusive<usize>,
) -> ModelResult<Option<usize>> {
    let Some(v) = num(options, key)? else {
        return Ok(None);
    };
    if v.fract() != 0.0 || v < *range.start() as f64 || v > *range.end() as f64 {
        return Err(ModelError::InvalidParameter(format!(
            "{key} must be an integer in [{}, {}], got {v}",
            range.start(),
            range.end()
        )));
    }
    Ok(Some(v as usize))
}

/// The settings `WITH (...)` fixes, checked.
fn fixed_settings(options: &BTreeMap<String, String>) -> ModelResult<FixedSettings> {
    let sensitivity = num(options, "sensitivity")?;
    if let Some(s) = sensitivity
        && !(s > 0.0 && s < 1.0)
    {
        return Err(ModelError::InvalidParameter(format!(
            "sensitivity must be in (0, 1), got {s}"
        )));
    }
    let novelty_gate = num(options, "novelty_gate")?;
    if let Some(g) = novelty_gate
        && !(g.is_finite() && g >= 0.0)
    {
        return Err(ModelError::InvalidParameter(format!(
            "novelty_gate must be a number ≥ 0, got {g}"
        )));
    }
    Ok(FixedSettings {
        sensitivity,
        novelty_window: whole(options, "novelty_window", 0..=MAX_NOVELTY_WINDOW)?,
        novelty_gate,
        cooldown: whole(options, "cooldown", 0..=MAX_COOLDOWN)?,
    })
}

/// Train a series detector on the training query's columns.
pub fn train(
    names: &[String],
    columns: &[ArrayRef],
    req: &SeriesDetectorRequest,
    ctx: &mut TrainContext<'_>,
) -> ModelResult<ModelArtifact> {
    let started = Instant::now();
    if let Some(k) = req.options.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return Err(ModelError::InvalidParameter(format!(
            "unknown option \"{k}\" for a series detector (it takes {})",
            OPTIONS.join(", ")
        )));
    }
    let fixed = fixed_settings(&req.options)?;
    let objective = req
        .options
        .get("objective")
        .map(|o| Objective::parse(o))
        .transpose()?
        .unwrap_or_default();
    let season_length = whole(&req.options, "season_length", 0..=MAX_SEASON_LENGTH)?.unwrap_or(0);
    let time = position(names, &req.time, "time")?;
    let value = position(names, &req.value, "value")?;
    let ids = req
        .ids
        .iter()
        .map(|i| position(names, i, "id"))
        .collect::<ModelResult<Vec<_>>>()?;
    let time_type = columns[time].data_type();
    let nanos = unit_nanos(time_type).ok_or_else(|| {
        ModelError::WrongType(format!(
            "the time column \"{}\" must be a timestamp, a date or an integer, not {time_type}",
            req.time
        ))
    })?;
    let value_type = columns[value].data_type();
    if !value_type.is_numeric() && *value_type != DataType::Null {
        return Err(ModelError::WrongType(format!(
            "the value column \"{}\" must be numeric, not {value_type}",
            req.value
        )));
    }
    // The labels column's name and its labels.
    let labelled = match req.options.get("labels") {
        None => None,
        Some(l) => {
            let i = position(names, l, "labels")?;
            Some((l, crate::labelled::read_labels(&columns[i], l)?))
        }
    };
    let times = times_as_i64(&columns[time])?;
    let times = times.as_primitive::<Int64Type>();
    let values = cast(&columns[value], &DataType::Float64)?;
    let values = values.as_primitive::<Float64Type>();
    let id_text: Vec<ArrayRef> = ids
        .iter()
        .map(|&i| cast(&columns[i], &DataType::Utf8))
        .collect::<Result<_, _>>()?;
    let id_text: Vec<_> = id_text.iter().map(|c| c.as_string::<i32>()).collect();
    // Rows per series, in first-seen order (rows without a time cannot be placed).
    let mut groups: HashMap<Vec<Option<&str>>, usize> = HashMap::new();
    let mut rows: Vec<Vec<usize>> = vec![];
    for r in (0..times.len()).filter(|&r| times.is_valid(r)) {
        let key: Vec<Option<&str>> = id_text
            .iter()
            .map(|c| c.is_valid(r).then(|| c.value(r)))
            .collect();
        let g = *groups.entry(key).or_insert_with(|| {
            rows.push(vec![]);
            rows.len() - 1
        });
        rows[g].push(r);
    }
    let points: usize = rows.iter().map(Vec::len).sum();
    if points == 0 {
        return Err(ModelError::BadTrainingData(
            "the training query returned no rows with a time".into(),
        ));
    }
    let season = (season_length > 0).then_some(season_length);
    let series: Vec<LabelledSeries> = rows
        .iter()
        .map(|rows| {
            let t: Vec<i64> = rows.iter().map(|&r| times.value(r)).collect();
            let v: Vec<Option<f64>> = rows
                .iter()
                .map(|&r| values.is_valid(r).then(|| values.value(r)))
                .collect();
            let order = series_order(&t, &v);
            let sorted: Vec<i64> = order.iter().map(|&i| t[i]).collect();
            LabelledSeries {
                values: order.iter().map(|&i| v[i].unwrap_or(f64::NAN)).collect(),
                seasons: season_phases(&sorted, nanos, season),
                labels: order
                    .iter()
                    .map(|&i| labelled.as_ref().and_then(|(_, l)| l[rows[i]]))
                    .collect(),
            }
        })
        .collect();
    (ctx.progress)(format!(
        "{} series, {points} point(s){}",
        series.len(),
        if labelled.is_some() {
            "; choosing the settings on the labels"
        } else {
            ""
        }
    ));
    let mut metrics = Metrics::default();
    let mut trials = vec![];
    let spec = match &labelled {
        Some((name, labels)) => {
            let anomalies = labels.iter().filter(|l| **l == Some(true)).count();
            let normal = labels.iter().filter(|l| **l == Some(false)).count();
            if anomalies == 0 || normal == 0 {
                return Err(ModelError::BadTrainingData(format!(
                    "the labels column \"{name}\" needs rows labelled as anomalies (true or \
                     non-zero) and rows labelled as normal (false or 0); it has {anomalies} \
                     anomalies and {normal} normal rows"
                )));
            }
            let t = tune(&series, &fixed, objective, ctx)?;
            let seconds = started.elapsed().as_secs_f64();
            (ctx.progress)(format!(
                "labels: {} incident(s), {} candidates by {}; chosen {}: F1 {:.3}, NAB score \
                 {:.1} ({} found, {} false alarm(s)); the defaults: F1 {:.3}, NAB score {:.1} \
                 ({} found, {} false alarm(s))",
                t.chosen.incidents,
                t.candidates,
                objective.name(),
                settings_text(&t.spec),
                t.chosen.f1(),
                t.chosen.nab_score(),
                t.chosen.found,
                t.chosen.false_alarms,
                t.defaults.f1(),
                t.defaults.nab_score(),
                t.defaults.found,
                t.defaults.false_alarms,
            ));
            for (k, v) in [
                ("f1", t.chosen.f1()),
                ("precision", t.chosen.precision()),
                ("recall", t.chosen.recall()),
                ("incidents", t.chosen.incidents as f64),
                ("found", t.chosen.found as f64),
                ("false_alarms", t.chosen.false_alarms as f64),
                ("default_f1", t.defaults.f1()),
                ("nab_score", t.chosen.nab_score()),
                ("default_nab_score", t.defaults.nab_score()),
            ] {
                metrics.values.insert(k.into(), v);
            }
            let trial = |spec: &AnomalySpec, counts: &LabelledAlerts, chosen: bool| Trial {
                algorithm: Algorithm::SeriesDetector,
                params: settings_text(spec),
                metric: objective.name().into(),
                value: objective.value(counts),
                seconds,
                chosen,
            };
            if t.spec != fixed.spec() {
                trials.push(trial(&fixed.spec(), &t.defaults, false));
            }
            trials.push(trial(&t.spec, &t.chosen, true));
            t.spec
        }
        None => fixed.spec(),
    };
    // Alerts the chosen settings raise on the training data.
    let mut alerts = 0usize;
    for s in &series {
        if ctx.cancel.load(Ordering::Relaxed) {
            return Err(ModelError::Cancelled);
        }
        alerts += detect(&s.values, &s.seasons, &spec)
            .is_anomaly
            .iter()
            .filter(|&&a| a)
            .count();
    }
    metrics.values.insert("alerts".into(), alerts as f64);
    metrics.values.insert("series".into(), series.len() as f64);
    (ctx.progress)(format!(
        "{alerts} alert(s) on the training data with {}",
        settings_text(&spec)
    ));
    let detector = SeriesDetector {
        time: names[time].clone(),
        value: names[value].clone(),
        ids: ids.iter().map(|&i| names[i].clone()).collect(),
        sensitivity: spec.sensitivity,
        novelty_window: spec.novelty_window,
        novelty_gate: spec.novelty_gate,
        cooldown: spec.cooldown,
        season_length,
    };
    Ok(ModelArtifact {
        format_version: FORMAT_VERSION,
        task: Task::AnomalyDetection,
        algorithm: Algorithm::SeriesDetector,
        features: FeatureSet::default(),
        target: None,
        estimator: Estimator::SeriesDetector(detector),
        metrics,
        metrics_on_validation: false,
        importance: vec![],
        trials,
        options: req.options.clone(),
        train_rows: points,
        validation_rows: 0,
        train_seconds: started.elapsed().as_secs_f64(),
        calibration: None,
        profile: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use datafusion::arrow::array::{BooleanArray, Float64Array, StringArray, TimestampSecondArray};

    use super::super::tests::noise;
    use super::*;

    fn with_ctx<T>(f: impl FnOnce(&mut TrainContext<'_>) -> T) -> (T, Vec<String>) {
        let mut lines = vec![];
        let mut progress = |l: String| lines.push(l);
        let cancel = AtomicBool::new(false);
        let out = f(&mut TrainContext {
            progress: &mut progress,
            cancel: &cancel,
        });
        (out, lines)
    }

    #[test]
    fn alerts_are_counted_per_incident_against_the_labels() {
        let (t, f, u) = (Some(true), Some(false), None);
        let labels = [f, t, t, f, u, t, t, f, f, t];
        // Two onsets in the first incident count once; the onset on an unlabelled row does
        // not count; the one on row 7 is a false alarm; the last incident is missed.
        let alerts = [
            false, true, true, false, true, false, true, true, false, false,
        ];
        let mut c = LabelledAlerts::default();
        c.add(&alerts, &labels);
        assert_eq!((c.incidents, c.found, c.false_alarms), (3, 2, 1), "{c:?}");
        // NAB's reward: the first incident found at its first row (1), the second at its
        // last of two (position -1/2), a false alarm one row after it, the third missed.
        let sig = |x: f64| 2.0 / (1.0 + (5.0 * x).exp()) - 1.0;
        let reward = 1.0 + sig(-0.5) / sig(-1.0) + 0.11 * sig(1.0) - 1.0;
        assert!((c.reward - reward).abs() < 1e-12, "{c:?} vs {reward}");
        assert!((c.nab_score() - 100.0 * (reward + 3.0) / 6.0).abs() < 1e-9);
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.f1() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(LabelledAlerts::default().f1(), 0.0);
    }

    /// Spikes in pairs 30 points apart, each labelled: the default cooldown (100 points) and
    /// novelty gate (the second spike of a pair repeats the first) find one of each pair.
    fn paired_spikes() -> LabelledSeries {
        let mut values: Vec<f64> = noise(4000, 2.0).iter().map(|e| 50.0 + e).collect();
        let mut labels = vec![Some(false); values.len()];
        for (k, start) in [800usize, 1600, 2400, 3200].into_iter().enumerate() {
            for (j, at) in [start, start + 30].into_iter().enumerate() {
                values[at] += 8.0 + 2.0 * (k + j) as f64;
                for l in &mut labels[at..at + 3] {
                    *l = Some(true);
                }
            }
        }
        LabelledSeries {
            values,
            seasons: vec![],
            labels,
        }
    }

    #[test]
    fn labels_choose_settings_that_find_close_incidents() {
        let series = [paired_spikes()];
        let (tuned, lines) =
            with_ctx(|ctx| tune(&series, &FixedSettings::default(), Objective::F1, ctx));
        let tuned = tuned.expect("tuned");
        assert_eq!(tuned.defaults.incidents, 8);
        assert!(tuned.defaults.found <= 5, "{:?}", tuned.defaults);
        assert_eq!(tuned.chosen.found, 8, "{tuned:?}");
        assert!(
            tuned.chosen.false_alarms <= tuned.defaults.false_alarms,
            "{tuned:?}"
        );
        assert!(tuned.spec.cooldown < 30, "{tuned:?}");
        assert!(!lines.is_empty());
        // A fixed setting is kept: with the default cooldown the pairs cannot both alert.
        let fixed = FixedSettings {
            cooldown: Some(100),
            ..FixedSettings::default()
        };
        let (kept, _) = with_ctx(|ctx| tune(&series, &fixed, Objective::F1, ctx));
        let kept = kept.expect("tuned");
        assert_eq!(kept.spec.cooldown, 100);
        assert_eq!(kept.chosen.found, 4, "{kept:?}");
    }

    fn training_columns(labels: bool) -> (Vec<String>, Vec<ArrayRef>) {
        let a = paired_spikes();
        let b: Vec<f64> = noise(a.values.len(), 9.0)
            .iter()
            .map(|e| 10.0 + e)
            .collect();
        let n = a.values.len();
        // Two hosts, their rows interleaved and the second host's in reverse time order.
        let mut host = vec![];
        let mut ts = vec![];
        let mut value = vec![];
        let mut label = vec![];
        for i in 0..n {
            host.extend(["a", "b"]);
            ts.extend([i as i64 * 60, (n - 1 - i) as i64 * 60]);
            value.extend([a.values[i], b[n - 1 - i]]);
            label.extend([a.labels[i], (i % 2 == 0).then_some(false)]);
        }
        let mut names = vec!["host".to_string(), "ts".into(), "latency".into()];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(host)),
            Arc::new(TimestampSecondArray::from(ts)),
            Arc::new(Float64Array::from(value)),
        ];
        if labels {
            names.push("incident".into());
            columns.push(Arc::new(BooleanArray::from(label)));
        }
        (names, columns)
    }

    fn request(options: &[(&str, &str)]) -> SeriesDetectorRequest {
        SeriesDetectorRequest {
            value: "latency".into(),
            time: "TS".into(),
            ids: vec!["host".into()],
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_detector_trains_per_series_from_labelled_rows() {
        let (names, columns) = training_columns(true);
        let (artifact, lines) = with_ctx(|ctx| {
            let options = [("labels", "incident"), ("season_length", "1")];
            train(&names, &columns, &request(&options), ctx)
        });
        let artifact = artifact.expect("trained");
        let Some(d) = artifact.series_detector() else {
            panic!("not a detector: {:?}", artifact.estimator)
        };
        assert_eq!((d.time.as_str(), d.value.as_str()), ("ts", "latency"));
        assert_eq!(d.ids, vec!["host".to_string()]);
        assert!(d.cooldown < 30, "{d:?}");
        assert_eq!(d.season_length, 1);
        assert_eq!(d.setting_lines()[4], "season_length none");
        let m = &artifact.metrics.values;
        assert_eq!(m["incidents"], 8.0);
        assert!(m["found"] >= 6.0, "{m:?}");
        assert_eq!(m["series"], 2.0);
        assert!(m["f1"] > m["default_f1"], "{m:?}");
        assert_eq!(artifact.train_rows, 8000);
        assert_eq!(artifact.trials.iter().filter(|t| t.chosen).count(), 1);
        assert!(
            lines.iter().any(|l| l.contains("8 incident(s)")),
            "{lines:?}"
        );
        // The stored settings reproduce the alerts the tuning counted.
        let series = paired_spikes();
        let alerts = detect(&series.values, &[], &d.spec()).is_anomaly;
        let mut c = LabelledAlerts::default();
        c.add(&alerts, &series.labels);
        assert_eq!(c.found as f64, m["found"]);
        // Round trip through the artifact's JSON.
        let back = ModelArtifact::from_bytes(&artifact.to_bytes().expect("bytes")).expect("read");
        assert_eq!(back.series_detector(), Some(d));
    }

    #[test]
    fn without_labels_the_given_settings_are_kept() {
        let (names, columns) = training_columns(false);
        let (artifact, _) = with_ctx(|ctx| {
            train(
                &names,
                &columns,
                &request(&[("sensitivity", "0.99"), ("cooldown", "5")]),
                ctx,
            )
        });
        let artifact = artifact.expect("trained");
        let d = artifact.series_detector().expect("detector");
        let expected = AnomalySpec {
            sensitivity: 0.99,
            cooldown: 5,
            ..AnomalySpec::default()
        };
        assert_eq!(d.spec(), expected);
        assert!(artifact.metrics.values["alerts"] >= 4.0);
        assert!(artifact.trials.is_empty());
    }

    #[test]
    fn bad_requests_are_clear_errors() {
        let (names, columns) = training_columns(true);
        let fails = |req: SeriesDetectorRequest| {
            with_ctx(|ctx| train(&names, &columns, &req, ctx))
                .0
                .expect_err("should fail")
        };
        let e = fails(request(&[("sensitivity", "1")]));
        assert!(matches!(e, ModelError::InvalidParameter(_)), "{e}");
        let e = fails(request(&[("cooldown", "2.5")]));
        assert!(matches!(e, ModelError::InvalidParameter(_)), "{e}");
        let e = fails(request(&[("labels", "incident"), ("objective", "auc")]));
        assert!(e.to_string().contains("'f1' or 'nab'"), "{e}");
        // Checked with the other options, labels or not.
        let e = fails(request(&[("objective", "auc")]));
        assert!(e.to_string().contains("'f1' or 'nab'"), "{e}");
        let e = fails(request(&[("horizon", "3")]));
        assert!(e.to_string().contains("unknown option \"horizon\""), "{e}");
        let e = fails(request(&[("labels", "nope")]));
        assert!(matches!(e, ModelError::UnknownColumn(_)), "{e}");
        let e = fails(request(&[("labels", "host")]));
        assert!(matches!(e, ModelError::WrongType(_)), "{e}");
        let e = fails(SeriesDetectorRequest {
            value: "host".into(),
            ..request(&[])
        });
        assert!(matches!(e, ModelError::WrongType(_)), "{e}");
        let e = fails(SeriesDetectorRequest {
            time: "latency".into(),
            ..request(&[])
        });
        assert!(matches!(e, ModelError::WrongType(_)), "{e}");
        // Labels with no anomaly among them.
        let only_normal: ArrayRef = Arc::new(BooleanArray::from(vec![Some(false); 8000]));
        let mut columns = columns.clone();
        columns[3] = only_normal;
        let e = with_ctx(|ctx| train(&names, &columns, &request(&[("labels", "incident")]), ctx))
            .0
            .expect_err("no anomalies");
        assert!(matches!(e, ModelError::BadTrainingData(_)), "{e}");
    }
}
