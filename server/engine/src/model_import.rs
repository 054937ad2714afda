//! `CREATE [OR REPLACE] MODEL m FROM '<path or URL>'`: bring a model file onto local disk,
//! read it, and register its bytes as a new version.
//!
//! A local path is read where it is (relative paths from the server's working directory, as
//! COPY's are); a URL (`s3://`, `hdfs://`, any store the server has credentials for) is
//! downloaded into `models/.incoming/` in the data dir first, because ONNX Runtime opens graphs
//! from files. A graph's external-data files (tensors kept beside it) come along from the
//! same folder or prefix, at the relative names the graph gives them. Together the files must
//! not exceed `models.max_import_mb`, and the registry copies them into the version's
//! artifact directory, so the source may disappear afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use prognos_catalog::{CatalogError, Payload};
use prognos_models::ModelArtifact;
use prognos_models::onnx::device;
use tokio::io::AsyncWriteExt;

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_files::{FileLocation, locate};
use crate::{Engine, Session};

/// Name of an imported ONNX graph inside its version's directory.
const GRAPH_FILE: &str = "model.onnx";

/// A model's files on local disk: the graph and its external-data files at their relative
/// names beside it. A download's folder is removed on drop.
struct Staged {
    graph: PathBuf,
    /// External-data files: (name relative to the graph's directory, where it is now).
    external: Vec<(String, PathBuf)>,
    /// The folder a download went to.
    downloaded: Option<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(dir) = &self.downloaded {
            let _ = std::fs::remove_dir_all(dir);
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

/// The external-data files the graph at `graph` names (see
/// `prognos_models::onnx::external`); none for bytes that are not ONNX, which the import
/// then reports in ONNX Runtime's words.
fn external_names(source: &str, graph: &std::path::Path) -> EngineResult<Vec<String>> {
    let bytes = std::fs::read(graph).map_err(|e| unreadable(source, e))?;
    let names = prognos_models::onnx::external::external_files(&bytes)
        .map_err(CatalogError::Model)?
        .unwrap_or_default();
    if let Some(clash) = names
        .iter()
        .find(|n| *n == GRAPH_FILE || *n == "artifact.json")
    {
        return Err(EngineError::statement(
            StatusCode::InvalidParameterValue,
            format!("the graph keeps tensor data in \"{clash}\", a name its version needs"),
        ));
    }
    Ok(names)
}

/// Put the graph `source` names on local disk with its external-data files, within the
/// size limit (which counts them all).
async fn stage(engine: &Engine, source: &str) -> EngineResult<Staged> {
    let limit_mb = engine.models_config.max_import_mb;
    let limit = limit_mb.saturating_mul(1024 * 1024);
    let (store, path) = match locate(engine, source).map_err(|e| unreadable(source, e))? {
        FileLocation::Store(store, path) => (store, path),
        FileLocation::Local(path) => {
            let size = |p: &std::path::Path, what: &str| -> EngineResult<u64> {
                let meta = std::fs::metadata(p).map_err(|e| unreadable(what, e))?;
                if !meta.is_file() {
                    return Err(unreadable(what, "not a regular file"));
                }
                Ok(meta.len())
            };
            let mut total = size(&path, source)?;
            if total > limit {
                return Err(too_large(source, total, limit_mb));
            }
            let dir = path.parent().map(PathBuf::from).unwrap_or_default();
            let mut external = Vec::new();
            for name in external_names(source, &path)? {
                let file = dir.join(&name);
                total += size(&file, &file.display().to_string())?;
                if total > limit {
                    return Err(too_large(source, total, limit_mb));
                }
                external.push((name, file));
            }
            return Ok(Staged {
                graph: path,
                external,
                downloaded: None,
            });
        }
    };
    let folder = engine
        .data_dir
        .join("models")
        .join(".incoming")
        .join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&folder).map_err(|e| unreadable(source, e))?;
    let mut staged = Staged {
        graph: folder.join(GRAPH_FILE),
        external: Vec::new(),
        downloaded: Some(folder.clone()),
    };
    let mut budget = Budget {
        left: limit,
        limit_mb,
        source,
    };
    download(&store, &path, &staged.graph, &mut budget).await?;
    let parent: Vec<_> = path.parts().collect();
    let parent = &parent[..parent.len().saturating_sub(1)];
    for name in external_names(source, &staged.graph)? {
        let object = parent
            .iter()
            .cloned()
            .chain(
                name.split('/')
                    .filter(|p| !p.is_empty() && *p != ".")
                    .map(Into::into),
            )
            .collect::<ObjectPath>();
        let file = folder.join(&name);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| unreadable(source, e))?;
        }
        download(&store, &object, &file, &mut budget).await?;
        staged.external.push((name, file));
    }
    Ok(staged)
}

/// Bytes an import may still download.
struct Budget<'a> {
    left: u64,
    limit_mb: u64,
    source: &'a str,
}

/// Download `path` from `store` into the local file `target`, within `budget`.
async fn download(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    path: &ObjectPath,
    target: &std::path::Path,
    budget: &mut Budget<'_>,
) -> EngineResult<()> {
    let what = format!("{} ({path})", budget.source);
    let limit = budget.limit_mb.saturating_mul(1024 * 1024);
    let meta = store.head(path).await.map_err(|e| unreadable(&what, e))?;
    if meta.size > budget.left {
        return Err(too_large(
            budget.source,
            limit - budget.left + meta.size,
            budget.limit_mb,
        ));
    }
    let mut file = tokio::fs::File::create(target)
        .await
        .map_err(|e| unreadable(&what, e))?;
    let mut stream = store
        .get(path)
        .await
        .map_err(|e| unreadable(&what, e))?
        .into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unreadable(&what, e))?;
        let n = chunk.len() as u64;
        if n > budget.left {
            return Err(too_large(
                budget.source,
                limit + n - budget.left,
                budget.limit_mb,
            ));
        }
        budget.left -= n;
        file.write_all(&chunk)
            .await
            .map_err(|e| unreadable(&what, e))?;
    }
    file.flush().await.map_err(|e| unreadable(&what, e))?;
    Ok(())
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
    let path = staged.graph.clone();
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
            &payloads(&staged),
            source,
            &created,
            replace,
        )
        .await?;
    Ok((version, summary))
}

/// The files a staged import stores in its version: the graph, then its external data.
fn payloads(staged: &Staged) -> Vec<Payload> {
    let graph = Payload {
        name: GRAPH_FILE.to_string(),
        path: staged.graph.clone(),
    };
    let external = staged.external.iter().map(|(name, path)| Payload {
        name: name.clone(),
        path: path.clone(),
    });
    std::iter::once(graph).chain(external).collect()
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
