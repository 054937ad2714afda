//! Model health on `/metrics`: the live metrics and drift the monitor computes for each
//! logged model's deployed version on every pass ([`crate::model_rules::check`]), and the
//! retrain runs by trigger and outcome. The server registers [`collectors`] in its registry
//! (names get its `prognos_` prefix).

use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, Opts};

struct Health {
    live: GaugeVec,
    drift: GaugeVec,
    retrains: IntCounterVec,
}

#[allow(clippy::expect_used)] // metric definitions are static; failing here is a programming error
static HEALTH: LazyLock<Health> = LazyLock::new(|| Health {
    live: GaugeVec::new(
        Opts::new(
            "model_live_metric",
            "Live metrics of a model's deployed version over the last day (logged predictions \
             joined with outcomes), by model, version and metric",
        ),
        &["model", "version", "metric"],
    )
    .expect("metric"),
    drift: GaugeVec::new(
        Opts::new(
            "model_drift_psi",
            "PSI between a deployed version's training profile and its inputs logged over \
             the last day, by model, version and feature (and `prediction`)",
        ),
        &["model", "version", "feature"],
    )
    .expect("metric"),
    retrains: IntCounterVec::new(
        Opts::new(
            "model_retrains_total",
            "Retrain runs, by model, trigger (manual, schedule, rule) and outcome (deployed, \
             candidate, rejected, failed)",
        ),
        &["model", "trigger", "outcome"],
    )
    .expect("metric"),
});

/// The metrics, for the server's registry.
pub fn collectors() -> Vec<Box<dyn Collector>> {
    vec![
        Box::new(HEALTH.live.clone()),
        Box::new(HEALTH.drift.clone()),
        Box::new(HEALTH.retrains.clone()),
    ]
}

/// Count a finished retrain run.
pub(crate) fn retrain_finished(model: &str, trigger: &str, outcome: &str) {
    HEALTH
        .retrains
        .with_label_values(&[model, trigger, outcome])
        .inc();
}

/// What one monitor pass saw of one model's deployed version.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub(crate) model: String,
    pub(crate) version: u32,
    /// Live metrics (`rows` included), when the model has outcomes.
    pub(crate) live: Vec<(String, f64)>,
    /// PSI per feature and for the prediction, when inputs were logged.
    pub(crate) drift: Vec<(String, f64)>,
}

/// Replace the gauges with one pass's observations (models no longer observed disappear).
pub(crate) fn publish(observed: &[Observed]) {
    HEALTH.live.reset();
    HEALTH.drift.reset();
    for o in observed {
        let v = o.version.to_string();
        for (metric, value) in &o.live {
            HEALTH
                .live
                .with_label_values(&[o.model.as_str(), v.as_str(), metric.as_str()])
                .set(*value);
        }
        for (feature, psi) in &o.drift {
            HEALTH
                .drift
                .with_label_values(&[o.model.as_str(), v.as_str(), feature.as_str()])
                .set(*psi);
        }
    }
}
