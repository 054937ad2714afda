//! Prometheus metrics of the server, served as text on `/metrics`.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::gpu::GpuReading;

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open connections by protocol.
    pub connections: IntGaugeVec,
    /// Connections accepted since start, by protocol.
    pub connections_total: IntCounterVec,
    /// Statements executed, by protocol.
    pub queries_total: IntCounterVec,
    /// Statement latency (until the last row was sent), by protocol.
    pub query_seconds: HistogramVec,
    /// Errors returned to clients, by protocol and SQLSTATE.
    pub errors_total: IntCounterVec,
    /// Prepared executions by physical plan outcome: `planned` (a reusable plan was made) or
    /// `reused`; taken from the engine's counters when rendered.
    pub prepared_plans_total: IntCounterVec,
    /// ONNX Runtime runs of imported models by device (`cpu`, `cuda`); taken from the
    /// runtime's counters when rendered.
    pub inference_runs_total: IntCounterVec,
    /// Rows scored by imported models by device.
    pub inference_rows_total: IntCounterVec,
    /// Alerts raised by live-metric rules, by model and action (`rollback`, `retrain`,
    /// `rollback_failed`); taken from the engine's counts when rendered.
    pub model_alerts_total: IntCounterVec,
    /// Device memory in use per GPU (index as in `cuda:<n>`), when the machine has any.
    pub gpu_memory_used_bytes: IntGaugeVec,
    /// Device memory per GPU.
    pub gpu_memory_total_bytes: IntGaugeVec,
    /// Share of time a kernel ran per GPU, 0–1.
    pub gpu_utilization_ratio: GaugeVec,
}

#[allow(clippy::expect_used)] // metric definitions are static; failing here is a programming error
fn build() -> Metrics {
    let registry =
        Registry::new_custom(Some("prognos".into()), None).expect("valid registry prefix");
    let connections = IntGaugeVec::new(
        Opts::new("connections", "Open client connections"),
        &["protocol"],
    )
    .expect("metric");
    let connections_total = IntCounterVec::new(
        Opts::new("connections_total", "Client connections accepted"),
        &["protocol"],
    )
    .expect("metric");
    let queries_total = IntCounterVec::new(
        Opts::new("queries_total", "Statements executed"),
        &["protocol"],
    )
    .expect("metric");
    let query_seconds = HistogramVec::new(
        HistogramOpts::new("query_duration_seconds", "Statement latency in seconds").buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ]),
        &["protocol"],
    )
    .expect("metric");
    let errors_total = IntCounterVec::new(
        Opts::new("errors_total", "Errors returned to clients"),
        &["protocol", "sqlstate"],
    )
    .expect("metric");
    let prepared_plans_total = IntCounterVec::new(
        Opts::new(
            "prepared_plans_total",
            "Prepared statement executions that planned a reusable physical plan or reused one",
        ),
        &["outcome"],
    )
    .expect("metric");
    let inference_runs_total = IntCounterVec::new(
        Opts::new(
            "inference_runs_total",
            "ONNX Runtime runs of imported models, by device",
        ),
        &["device"],
    )
    .expect("metric");
    let inference_rows_total = IntCounterVec::new(
        Opts::new(
            "inference_rows_total",
            "Rows scored by imported models, by device",
        ),
        &["device"],
    )
    .expect("metric");
    let model_alerts_total = IntCounterVec::new(
        Opts::new(
            "model_alerts_total",
            "Alerts raised by live-metric rules (SET ROLLBACK | RETRAIN WHEN), by model and action",
        ),
        &["model", "action"],
    )
    .expect("metric");
    let gpu_memory_used_bytes = IntGaugeVec::new(
        Opts::new("gpu_memory_used_bytes", "GPU memory in use, per GPU"),
        &["gpu"],
    )
    .expect("metric");
    let gpu_memory_total_bytes = IntGaugeVec::new(
        Opts::new("gpu_memory_total_bytes", "GPU memory, per GPU"),
        &["gpu"],
    )
    .expect("metric");
    let gpu_utilization_ratio = GaugeVec::new(
        Opts::new(
            "gpu_utilization_ratio",
            "Share of the last sample period a GPU kernel ran, per GPU",
        ),
        &["gpu"],
    )
    .expect("metric");
    for c in [
        Box::new(connections.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(gpu_memory_used_bytes.clone()),
        Box::new(gpu_memory_total_bytes.clone()),
        Box::new(gpu_utilization_ratio.clone()),
        Box::new(inference_runs_total.clone()),
        Box::new(inference_rows_total.clone()),
        Box::new(model_alerts_total.clone()),
        Box::new(prepared_plans_total.clone()),
        Box::new(connections_total.clone()),
        Box::new(queries_total.clone()),
        Box::new(query_seconds.clone()),
        Box::new(errors_total.clone()),
    ] {
        registry.register(c).expect("unique metric");
    }
    // Per model and version: calls, rows, latency, errors, fallbacks, cache hits (the model
    // functions'), live metrics, drift and retrain runs (the monitor's).
    for c in prognos_udfs::call_metrics::collectors()
        .into_iter()
        .chain(prognos_engine::model_health_collectors())
    {
        registry.register(c).expect("unique metric");
    }
    // CPU seconds, resident and virtual memory, open files and threads of this process.
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
    Metrics {
        registry,
        connections,
        connections_total,
        queries_total,
        query_seconds,
        errors_total,
        prepared_plans_total,
        inference_runs_total,
        inference_rows_total,
        model_alerts_total,
        gpu_memory_used_bytes,
        gpu_memory_total_bytes,
        gpu_utilization_ratio,
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(build);

impl Metrics {
    /// Record the GPUs' state (as [`crate::gpu::read`] gives it) for the next render.
    pub fn set_gpus(&self, gpus: &[GpuReading]) {
        for g in gpus {
            let gpu = [g.index.as_str()];
            self.gpu_memory_used_bytes
                .with_label_values(&gpu)
                .set(g.memory_used_bytes);
            self.gpu_memory_total_bytes
                .with_label_values(&gpu)
                .set(g.memory_total_bytes);
            self.gpu_utilization_ratio
                .with_label_values(&gpu)
                .set(g.utilization);
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let (planned, reused) = prognos_engine::physical_template::template_counts();
        for (outcome, total) in [("planned", planned), ("reused", reused)] {
            let counter = self.prepared_plans_total.with_label_values(&[outcome]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        for (device, runs, rows) in prognos_engine::inference_counts() {
            for (metric, total) in [
                (&self.inference_runs_total, runs),
                (&self.inference_rows_total, rows),
            ] {
                let counter = metric.with_label_values(&[device]);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        for ((model, action), total) in prognos_engine::alert_counts() {
            let counter = self
                .model_alerts_total
                .with_label_values(&[model.as_str(), action.as_str()]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Count one error.
    pub fn error(&self, protocol: &str, sqlstate: &str) {
        self.errors_total
            .with_label_values(&[protocol, sqlstate])
            .inc();
    }
}

/// Keeps the open-connection gauge right for the life of one connection.
#[derive(Debug)]
pub struct ConnectionGauge(&'static str);

impl ConnectionGauge {
    /// Count a new connection of `protocol`.
    pub fn open(protocol: &'static str) -> Self {
        METRICS.connections.with_label_values(&[protocol]).inc();
        METRICS
            .connections_total
            .with_label_values(&[protocol])
            .inc();
        Self(protocol)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        METRICS.connections.with_label_values(&[self.0]).dec();
    }
}

/// Times one statement; records when dropped.
#[derive(Debug)]
pub struct QueryTimer {
    protocol: &'static str,
    start: Instant,
}

impl QueryTimer {
    /// Start timing a statement of `protocol`.
    pub fn start(protocol: &'static str) -> Self {
        METRICS.queries_total.with_label_values(&[protocol]).inc();
        Self {
            protocol,
            start: Instant::now(),
        }
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        METRICS
            .query_seconds
            .with_label_values(&[self.protocol])
            .observe(self.start.elapsed().as_secs_f64());
    }
}
