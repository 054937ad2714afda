//! `CREATE [OR REPLACE] MODEL m FROM '<path or URL>'`: bring a model file onto local disk,
//! read it, and register its bytes as a new version.
//!
//! A local path is read where it is (relative paths from the server's working directory, as
//! COPY's are); a URL (`s3://`, `hdfs://`, any store the server has credentials for) is
//! downloaded into `models/.incoming/` in the data dir first, because ONNX Runtime opens graphs
//! from files. Either way the file must not exceed `models.max_import_mb`, and the registry
//! copies it into the version's artifact directory, so the source may disappear afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use prognos_catalog::{CatalogError, Payload};
use prognos_models::ModelArtifact;
use prognos_models::onnx::device;
use tokio::io::AsyncWriteExt;

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_files::{FileLocation, locate};
use crate::{Engine, Session};

/// Name of an imported ONNX graph inside its version's directory.
const GRAPH_FILE: &str = "model.onnx";

/// A model file on local disk, removed on drop when it was downloaded.
struct Staged {
    path: PathBuf,
    downloaded: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.downloaded {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn too_large(source: &str, size: u64, limit_mb: u64) -> EngineError {
    EngineError::statement(
        StatusCode::ProgramLimitExceeded,
        format!(
            "{source} is {} MiB, more than models.max_import_mb ({limit_mb} MiB) allows",
            size.div_ceil(1024 * 1024)
        ),
    )
}

fn unreadable(source: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::statement(
        StatusCode::UndefinedFile,
        format!("could not read model file \"{source}\": {e}"),
    )
}

/// Put the file `source` names on local disk, within the size limit.
async fn stage(engine: &Engine, source: &str) -> EngineResult<Staged> {
    let limit_mb = engine.models_config.max_import_mb;
    let limit = limit_mb.saturating_mul(1024 * 1024);
    let (store, path) = match locate(engine, source).map_err(|e| unreadable(source, e))? {
        FileLocation::Store(store, path) => (store, path),
        FileLocation::Local(path) => {
            let meta = std::fs::metadata(&path).map_err(|e| unreadable(source, e))?;
            if !meta.is_file() {
                return Err(unreadable(source, "not a regular file"));
            }
            if meta.len() > limit {
                return Err(too_large(source, meta.len(), limit_mb));
            }
            return Ok(Staged {
                path,
                downloaded: false,
            });
        }
    };
    let meta = store.head(&path).await.map_err(|e| unreadable(source, e))?;
    if meta.size > limit {
        return Err(too_large(source, meta.size, limit_mb));
    }
    let incoming = engine.data_dir.join("models").join(".incoming");
    std::fs::create_dir_all(&incoming).map_err(|e| unreadable(source, e))?;
    let staged = Staged {
        path: incoming.join(format!("{}.onnx", uuid::Uuid::new_v4().simple())),
        downloaded: true,
    };
    let mut file = tokio::fs::File::create(&staged.path)
        .await
        .map_err(|e| unreadable(source, e))?;
    let mut stream = store
        .get(&path)
        .await
        .map_err(|e| unreadable(source, e))?
        .into_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unreadable(source, e))?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(too_large(source, written, limit_mb));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| unreadable(source, e))?;
    }
    file.flush().await.map_err(|e| unreadable(source, e))?;
    Ok(staged)
}

/// Import the model file at `source` as the next version of `name`; returns the version and
/// a one-line summary for the client.
pub(crate) async fn import(
    engine: &Engine,
    session: &Session,
    name: &str,
    source: &str,
    options: &BTreeMap<String, String>,
    replace: bool,
) -> EngineResult<(u32, String)> {
    let staged = stage(engine, source).await?;
    let path = staged.path.clone();
    let opts = options.clone();
    // ONNX Runtime parses and optimises the graph: seconds for a large one.
    let artifact =
        tokio::task::spawn_blocking(move || ModelArtifact::import_onnx(&path, GRAPH_FILE, &opts))
            .await
            .map_err(|e| {
                EngineError::statement(StatusCode::Internal, format!("import failed: {e}"))
            })?
            .map_err(CatalogError::Model)?;
    let summary = summary(&artifact);
    if let Some(why) = artifact
        .onnx()
        .and_then(|o| device::fallback_reason(o.device))
    {
        session.notice(format!("model \"{name}\": {why}; it runs on the CPU"));
    }
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let version = engine
        .registry
        .register(
            name,
            artifact,
            &[Payload {
                name: GRAPH_FILE.to_string(),
                path: staged.path.clone(),
            }],
            source,
            &created,
            replace,
        )
        .await?;
    Ok((version, summary))
}

/// `onnx classification of 3 classes, 4 inputs`.
fn summary(artifact: &ModelArtifact) -> String {
    let what = match artifact.target.as_ref().map(|t| t.n_classes()) {
        Some(k) if k > 0 => format!("classification of {k} classes"),
        _ => "regression".to_string(),
    };
    format!(
        "onnx {what} taking {} argument(s)",
        artifact.features.features.len()
    )
}
