//! HTTP endpoints: `/health` (liveness) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::METRICS;

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
}

async fn metrics() -> impl IntoResponse {
    METRICS.set_gpus(&crate::gpu::read().await);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
}

/// Serve HTTP on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// The address a listener is bound to, for logs.
pub fn describe(addr: &SocketAddr) -> String {
    format!("http://{addr}")
}
