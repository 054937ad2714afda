//! SQL functions of prognos, as DataFusion UDFs.
//!
//! Today this holds the Postgres-compatibility functions that clients call and DataFusion or
//! `datafusion-pg-catalog` do not provide (`version()`, `pg_sleep()`). The prediction functions
//! (`PREDICT`, `FORECAST`, `ANOMALY`, …) are added here on top of the catalog's model registry.

pub mod pg_compat;

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
    Ok(())
}
