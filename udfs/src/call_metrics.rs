//! Serving metrics of the model functions, by model and version, for `/metrics`: calls (one
//! per batch a `PREDICT` / `PREDICT_PROBA` / `ANOMALY` / `predict_contributions` call
//! scores), rows scored, time per call, errors, and answers from a fallback model
//! (`ALTER MODEL m SET FALLBACK 'other'`) and from the prediction cache.
//!
//! The server registers [`collectors`] in its registry; the names it exposes carry its
//! `prognos_` prefix.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

struct CallMetrics {
    calls: IntCounterVec,
    rows: IntCounterVec,
    seconds: HistogramVec,
    errors: IntCounterVec,
    fallbacks: IntCounterVec,
    cache_hits: IntCounterVec,
}

#[allow(clippy::expect_used)] // metric definitions are static; failing here is a programming error
static METRICS: LazyLock<CallMetrics> = LazyLock::new(|| {
    let labels = &["model", "version"];
    CallMetrics {
        calls: IntCounterVec::new(
            Opts::new(
                "model_calls_total",
                "Batches scored by a model function, by model and version",
            ),
            labels,
        )
        .expect("metric"),
        rows: IntCounterVec::new(
            Opts::new(
                "model_rows_scored_total",
                "Rows scored, by model and version",
            ),
            labels,
        )
        .expect("metric"),
        seconds: HistogramVec::new(
            HistogramOpts::new(
                "model_call_duration_seconds",
                "Time to score one batch, by model and version",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            labels,
        )
        .expect("metric"),
        errors: IntCounterVec::new(
            Opts::new(
                "model_errors_total",
                "Batches a model failed to score, by model and version (0: no version loaded)",
            ),
            labels,
        )
        .expect("metric"),
        fallbacks: IntCounterVec::new(
            Opts::new(
                "model_fallbacks_total",
                "Batches answered by a fallback model because the model failed, by model and \
                 fallback",
            ),
            &["model", "fallback"],
        )
        .expect("metric"),
        cache_hits: IntCounterVec::new(
            Opts::new(
                "model_cache_hits_total",
                "Batches answered from the prediction cache, by model and version",
            ),
            labels,
        )
        .expect("metric"),
    }
});

/// The metrics, for the server's registry.
pub fn collectors() -> Vec<Box<dyn Collector>> {
    let m = &*METRICS;
    vec![
        Box::new(m.calls.clone()),
        Box::new(m.rows.clone()),
        Box::new(m.seconds.clone()),
        Box::new(m.errors.clone()),
        Box::new(m.fallbacks.clone()),
        Box::new(m.cache_hits.clone()),
    ]
}

/// Record a batch of `rows` that `model` version `version` scored since `started`.
pub(crate) fn scored(model: &str, version: u32, rows: usize, started: Instant) {
    let v = version.to_string();
    let labels = [model, v.as_str()];
    METRICS.calls.with_label_values(&labels).inc();
    METRICS.rows.with_label_values(&labels).inc_by(rows as u64);
    METRICS
        .seconds
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
}

/// Record a batch that `model` (version `version`, 0 when none loaded) failed to score.
pub(crate) fn failed(model: &str, version: u32) {
    let v = version.to_string();
    METRICS.errors.with_label_values(&[model, v.as_str()]).inc();
}

/// Record a batch of `model` answered by `fallback`.
pub(crate) fn fell_back(model: &str, fallback: &str) {
    METRICS
        .fallbacks
        .with_label_values(&[model, fallback])
        .inc();
}

/// Record a batch of `model` version `version` answered from the prediction cache.
pub(crate) fn cache_hit(model: &str, version: u32) {
    let v = version.to_string();
    METRICS
        .cache_hits
        .with_label_values(&[model, v.as_str()])
        .inc();
}
