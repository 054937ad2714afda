//! The prognos server: DataFusion over Parquet/CSV on local disk, S3 and HDFS, served over the
//! Postgres wire protocol and Arrow Flight SQL, with HTTP health and metrics.
//!
//! Layering: frontends ([`pg`], [`flight`], [`http`]) → the engine (`prognos-engine`) → udfs →
//! catalog/models → storage. A frontend never reaches past the engine's API.

pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod flight;
pub mod gpu;
pub mod http;
pub mod metrics;
pub mod pg;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Config;
use crate::error::{EngineError, StatusCode};
use prognos_engine::Engine;

/// Addresses the frontends actually listen on (ports resolved when `:0` was asked for).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// Postgres wire protocol.
    pub pg: SocketAddr,
    /// Arrow Flight SQL.
    pub flight: SocketAddr,
    /// HTTP.
    pub http: SocketAddr,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, EngineError> {
    TcpListener::bind(addr).await.map_err(|e| {
        EngineError::statement(
            StatusCode::IoError,
            format!("cannot listen for {what} on {addr}: {e}"),
        )
    })
}

/// Open the engine, bind every frontend, call `ready` with the bound addresses, and serve until
/// `shutdown` fires.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(BoundAddrs),
) -> Result<(), EngineError> {
    let policy = auth::Policy::resolve(&config, &[config.pg.listen, config.flight.listen])?;
    info!("{}", policy.describe(&config));
    let pg_tls = config.tls.as_ref().map(tls::pg_server_config).transpose()?;
    let flight_tls = config.tls.as_ref().map(tls::pem_pair).transpose()?;
    let engine = Engine::open(&config.engine_options()).await?;
    if policy == auth::Policy::Password && !engine.any_password() {
        return Err(EngineError::statement(
            StatusCode::ConfigFileError,
            format!(
                "passwords are required but no role has one, so nobody could log in: set PROGNOS_PASSWORD (or superuser_password) for \"{}\"",
                config.superuser
            ),
        ));
    }
    let pg = bind(config.pg.listen, "postgres").await?;
    let flight = bind(config.flight.listen, "flight sql").await?;
    let http = bind(config.http.listen, "http").await?;
    let addrs = BoundAddrs {
        pg: pg
            .local_addr()
            .map_err(|e| EngineError::statement(StatusCode::IoError, e.to_string()))?,
        flight: flight
            .local_addr()
            .map_err(|e| EngineError::statement(StatusCode::IoError, e.to_string()))?,
        http: http
            .local_addr()
            .map_err(|e| EngineError::statement(StatusCode::IoError, e.to_string()))?,
    };
    info!(data_dir = %engine.data_dir().display(), pg = %addrs.pg, flight = %addrs.flight, http = %http::describe(&addrs.http), "prognos listening");
    // Crash points (`PROGNOS_CRASH_AT`, for the crash tests) count client statements' writes only.
    prognos_storage::fs_steps::arm();
    ready(addrs);

    let pg_security = pg::PgSecurity::new(
        policy,
        &engine,
        pg_tls,
        config.tls.as_ref().is_some_and(|t| t.require),
        config.max_connections,
    );
    let pg_task = tokio::spawn(pg::serve(
        pg,
        Arc::clone(&engine),
        pg_security,
        shutdown.clone(),
    ));
    let flight_task = tokio::spawn(flight::serve(
        flight,
        Arc::clone(&engine),
        policy,
        std::time::Duration::from_secs(config.token_ttl_s.max(1)),
        flight_tls,
        shutdown.clone(),
    ));
    let http_task = tokio::spawn(http::serve(http, shutdown.clone()));

    shutdown.cancelled().await;
    info!("shutting down");
    let _ = pg_task.await;
    match flight_task.await {
        Ok(Err(e)) => error!(error = %e, "flight frontend failed"),
        Err(e) => error!(error = %e, "flight frontend panicked"),
        Ok(Ok(())) => {}
    }
    if let Ok(Err(e)) = http_task.await {
        error!(error = %e, "http frontend failed");
    }
    Ok(())
}
