//! `EXPORT MODEL m [VERSION n] TO '<path or URL>'`: write a model as an ONNX graph that any
//! ONNX Runtime scores as prognos does (what the graph holds: `prognos_models::onnx::export`).
//!
//! A local path is written by the server process (relative paths from its working directory,
//! as COPY's are; an existing file is replaced); a URL is written through the object stores
//! the server has credentials for.

use object_store::{ObjectStoreExt, PutPayload};
use prognos_catalog::CatalogError;

use crate::Engine;
use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_files::{FileLocation, locate};
use crate::server_files::Access;
use crate::session::Session;

fn unwritable(target: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::statement(
        StatusCode::UndefinedFile,
        format!("could not write \"{target}\": {e}"),
    )
}

/// Export `name` (its current version, or `version`) to `target`; returns the bytes written.
pub(crate) async fn export(
    engine: &Engine,
    session: &Session,
    name: &str,
    version: Option<u32>,
    target: &str,
) -> EngineResult<usize> {
    let artifact = match version {
        Some(v) => engine.registry.load_version(name, v).await?,
        None => engine.registry.snapshot().load(name).await?.1,
    };
    let bytes = artifact.to_onnx().map_err(CatalogError::Model)?;
    let size = bytes.len();
    match locate(engine, session, target, Access::Write, |e| {
        unwritable(target, e)
    })? {
        FileLocation::Store(store, path) => {
            store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| unwritable(target, e))?;
        }
        FileLocation::Local(path) => {
            prognos_storage::durable::write_atomically(&path, &bytes)
                .map_err(|e| unwritable(target, e))?;
        }
    }
    Ok(size)
}
