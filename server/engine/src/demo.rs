//! The demo dataset loaded into an empty data dir, so a fresh server has something to query.
//!
//! Three small managed tables, generated deterministically:
//! * `daily_sales(day, store, sales)` — a year of daily sales for three stores, with weekly
//!   seasonality and trend (forecasting);
//! * `customers(customer_id, plan, tenure_months, monthly_charges, support_calls, churned)` —
//!   a churn-style table (classification);
//! * `service_metrics(ts, host, latency_ms)` — a week of hourly latency per host with a few
//!   incidents (Grafana panels, anomaly detection).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tracing::info;

use super::Engine;
use crate::error::EngineResult;

/// Deterministic pseudo-random numbers (64-bit LCG), so the demo data is the same everywhere.
struct Lcg(u64);

impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
    /// Roughly normal noise (sum of uniforms).
    fn noise(&mut self) -> f64 {
        (0..6).map(|_| self.next_f64()).sum::<f64>() - 3.0
    }
}

fn daily_sales(rng: &mut Lcg) -> EngineResult<RecordBatch> {
    let start = 20089; // 2025-01-01 as days since the epoch
    let stores = [("north", 120.0), ("south", 80.0), ("online", 200.0)];
    let (mut day, mut store, mut sales) = (Vec::new(), Vec::new(), Vec::new());
    for (name, base) in stores {
        for d in 0..365 {
            let weekly = [0.8, 0.9, 1.0, 1.0, 1.1, 1.4, 1.3][(d % 7) as usize];
            let trend = 1.0 + d as f64 / 730.0;
            day.push(start + d);
            store.push(name);
            sales.push(
                ((base * weekly * trend + rng.noise() * base * 0.05) * 100.0).round() / 100.0,
            );
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("store", DataType::Utf8, false),
        Field::new("sales", DataType::Float64, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Date32Array::from(day)) as ArrayRef,
            Arc::new(StringArray::from(store)),
            Arc::new(Float64Array::from(sales)),
        ],
    )?)
}

fn customers(rng: &mut Lcg) -> EngineResult<RecordBatch> {
    let n = 1000;
    let plans = ["monthly", "annual", "two_year"];
    let (mut id, mut plan, mut tenure, mut charges, mut calls, mut churned) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for i in 0..n {
        let p = (rng.next_f64() * 3.0) as usize % 3;
        let t = (rng.next_f64() * 72.0) as i32 + 1;
        let c = ((20.0 + rng.next_f64() * 100.0) * 100.0).round() / 100.0;
        let s = (rng.next_f64() * rng.next_f64() * 8.0) as i32;
        let logit = -1.0 + if p == 0 { 1.5 } else { -0.5 * p as f64 } - t as f64 / 24.0
            + c / 80.0
            + s as f64 * 0.4;
        let prob = 1.0 / (1.0 + (-logit).exp());
        id.push(i as i64 + 1);
        plan.push(plans[p]);
        tenure.push(t);
        charges.push(c);
        calls.push(s);
        churned.push(rng.next_f64() < prob);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("plan", DataType::Utf8, false),
        Field::new("tenure_months", DataType::Int32, false),
        Field::new("monthly_charges", DataType::Float64, false),
        Field::new("support_calls", DataType::Int32, false),
        Field::new("churned", DataType::Boolean, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(id)) as ArrayRef,
            Arc::new(StringArray::from(plan)),
            Arc::new(Int32Array::from(tenure)),
            Arc::new(Float64Array::from(charges)),
            Arc::new(Int32Array::from(calls)),
            Arc::new(BooleanArray::from(churned)),
        ],
    )?)
}

fn service_metrics(rng: &mut Lcg) -> EngineResult<RecordBatch> {
    let start_us: i64 = 1_735_689_600 * 1_000_000; // 2025-01-01T00:00:00Z
    let hosts = ["api-1", "api-2", "db-1"];
    let (mut ts, mut host, mut latency) = (Vec::new(), Vec::new(), Vec::new());
    for (hi, h) in hosts.iter().enumerate() {
        for hour in 0..(24 * 7) {
            let daily = 1.0 + 0.3 * ((hour % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
            let incident = if hour == 50 + hi as i64 * 30 {
                6.0
            } else {
                1.0
            };
            ts.push(start_us + hour * 3_600_000_000);
            host.push(*h);
            latency.push(((40.0 * daily + rng.noise() * 3.0) * incident * 100.0).round() / 100.0);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("host", DataType::Utf8, false),
        Field::new("latency_ms", DataType::Float64, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts)) as ArrayRef,
            Arc::new(StringArray::from(host)),
            Arc::new(Float64Array::from(latency)),
        ],
    )?)
}

/// Create the demo tables as managed tables.
pub(super) async fn load(engine: &Engine) -> EngineResult<()> {
    let mut rng = Lcg(42);
    // Each batch is registered under a staging name and copied into a managed table by a
    // fixed CREATE TABLE … AS statement.
    let tables = [
        (
            "__demo_daily_sales",
            "CREATE TABLE daily_sales AS SELECT * FROM __demo_daily_sales",
            daily_sales(&mut rng)?,
        ),
        (
            "__demo_customers",
            "CREATE TABLE customers AS SELECT * FROM __demo_customers",
            customers(&mut rng)?,
        ),
        (
            "__demo_service_metrics",
            "CREATE TABLE service_metrics AS SELECT * FROM __demo_service_metrics",
            service_metrics(&mut rng)?,
        ),
    ];
    let session = engine.new_session();
    for (staging, create, batch) in tables {
        session.ctx().register_batch(staging, batch)?;
        for stmt in engine.parse(create)? {
            engine.execute(&session, &stmt, None).await?;
        }
        session.ctx().deregister_table(staging)?;
    }
    info!("loaded demo tables: daily_sales, customers, service_metrics");
    Ok(())
}
