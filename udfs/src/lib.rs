//! SQL functions of prognos, as DataFusion UDFs.
//!
//! * [`pg_compat`]: Postgres-compatibility functions that clients call and DataFusion or
//!   `datafusion-pg-catalog` do not provide (`version()`, `pg_sleep()`).
//! * [`models`]: `PREDICT`, `PREDICT_PROBA`, `FEATURE_IMPORTANCE` over the model registry.
//! * [`prediction_log`]: the sampled log of `PREDICT` calls (`ALTER MODEL … SET LOGGING`).
//! * [`forecast`]: the per-series forecasting aggregate behind `FORECAST(TABLE t, ...)` and
//!   the stored forecasts' table functions.
//! * [`anomaly`]: the per-series anomaly-scoring aggregate behind `ANOMALY(TABLE t, ...)`.
//! * [`relations`]: the relation forms (`FROM PREDICT('m', TABLE t)`, `FROM FORECAST(TABLE t,
//!   ...)`, ...) planned from the syntax tree.
//! * [`series_plan`]: the physical optimizer rule that runs those aggregates one series at a
//!   time over rows sorted by id (streamed, memory bounded by a series).

pub mod anomaly;
pub mod call_metrics;
mod drift;
pub mod filter_first;
pub mod forecast;
mod forecast_drift;
mod forecast_future;
pub mod models;
pub mod pg_compat;
mod prediction_cache;
pub mod prediction_log;
pub mod read_ahead;
pub mod relations;
mod series;
pub mod series_plan;
pub mod single_row;
pub mod value_limits;

pub use models::register_model_functions;

/// Server version string reported to clients (`SELECT version()` and the `server_version`
/// start-up parameter). Clients such as pgjdbc and Grafana parse the leading `PostgreSQL N`.
pub const PG_SERVER_VERSION: &str = "16.0";

/// Register every prognos function with a DataFusion context.
pub fn register_all(ctx: &datafusion::prelude::SessionContext) -> datafusion::error::Result<()> {
    ctx.register_udf(pg_compat::version_udf());
    ctx.register_udf(pg_compat::pg_sleep_udf());
    for udf in pg_compat::const_helpers() {
        ctx.register_udf(udf);
    }
    ctx.register_udaf(datafusion::logical_expr::AggregateUDF::new_from_impl(
        forecast::ForecastAgg::default(),
    ));
    ctx.register_udaf(datafusion::logical_expr::AggregateUDF::new_from_impl(
        anomaly::AnomalyAgg::default(),
    ));
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        single_row::SingleValue::default(),
    ));
    ctx.register_udf(pg_compat::pg_type_name_udf());
    ctx.register_udf(pg_compat::catalog_array_udf());
    ctx.register_udf(pg_compat::like_escape_udf());
    Ok(())
}
