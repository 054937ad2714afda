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
use prognos_catalog::{CatalogError, Payload, PayloadData};
use prognos_models::ModelArtifact;
use prognos_models::onnx::device;
use prognos_models::onnx::external::{ExternalFiles, external_files};
use tokio::io::AsyncWriteExt;

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_files::{FileLocation, locate};
use crate::server_files::Access;
use crate::{Engine, Session};

/// Name of an imported ONNX graph inside its version's directory.
const GRAPH_FILE: &str = "model.onnx";

/// A model's files on local disk: the graph, and its external-data files at their relative
/// names in the graph's directory. A download's folder is removed on drop.
struct Staged {
    graph: PathBuf,
    /// The external-data files the graph names.
    external: ExternalFiles,
    /// The folder a download went to.
    downloaded: Option<PathBuf>,
}

impl Staged {
    /// Where external-data file `name` is: beside the graph.
    fn external_path(&self, name: &str) -> PathBuf {
        self.graph
            .parent()
            .map(|dir| dir.join(name))
            .unwrap_or_else(|| PathBuf::from(name))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(dir) = &self.downloaded {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn unreadable(source: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::statement(
        StatusCode::UndefinedFile,
        format!("could not read model file \"{source}\": {e}"),
    )
}

/// The bytes an import has taken so far against `models.max_import_mb`.
struct Budget<'a> {
    used: u64,
    limit_mb: u64,
    source: &'a str,
}

impl Budget<'_> {
    /// Fails when `more` bytes would not fit.
    fn check(&self, more: u64) -> EngineResult<()> {
        let total = self.used.saturating_add(more);
        if total > self.limit_mb.saturating_mul(1024 * 1024) {
            return Err(EngineError::statement(
                StatusCode::ProgramLimitExceeded,
                format!(
                    "{} is {} MiB, more than models.max_import_mb ({} MiB) allows",
                    self.source,
                    total.div_ceil(1024 * 1024),
                    self.limit_mb
                ),
            ));
        }
        Ok(())
    }

    /// Count `n` more bytes, failing when they do not fit.
    fn take(&mut self, n: u64) -> EngineResult<()> {
        self.check(n)?;
        self.used += n;
        Ok(())
    }
}

/// The external-data files the graph at `graph` names (see
/// `prognos_models::onnx::external`); none for bytes that are not ONNX, which the import
/// then reports in ONNX Runtime's words.
fn external_names(source: &str, graph: &std::path::Path) -> EngineResult<ExternalFiles> {
    let bytes = std::fs::read(graph).map_err(|e| unreadable(source, e))?;
    let files = external_files(&bytes)
        .map_err(CatalogError::Model)?
        .unwrap_or_default();
    if let Some(clash) = files
        .names()
        .iter()
        .find(|n| *n == GRAPH_FILE || *n == "artifact.json")
    {
        return Err(EngineError::statement(
            StatusCode::InvalidParameterValue,
            format!("the graph keeps tensor data in \"{clash}\", a name its version needs"),
        ));
    }
    Ok(files)
}

/// Put the graph `source` names on local disk with its external-data files, within the
/// size limit (which counts them all).
async fn stage(engine: &Engine, session: &Session, source: &str) -> EngineResult<Staged> {
    let mut budget = Budget {
        used: 0,
        limit_mb: engine.models_config.max_import_mb,
        source,
    };
    let located = locate(engine, session, source, Access::Read, |e| {
        unreadable(source, e)
    })?;
    let (store, path) = match located {
        FileLocation::Store(store, path) => (store, path),
        FileLocation::Local(path) => {
            let size = |p: &std::path::Path, what: &str| -> EngineResult<u64> {
                let meta = std::fs::metadata(p).map_err(|e| unreadable(what, e))?;
                if !meta.is_file() {
                    return Err(unreadable(what, "not a regular file"));
                }
                Ok(meta.len())
            };
            budget.take(size(&path, source)?)?;
            let staged = Staged {
                external: external_names(source, &path)?,
                graph: path,
                downloaded: None,
            };
            for name in staged.external.names() {
                let file = staged.external_path(name);
                budget.take(size(&file, &file.display().to_string())?)?;
            }
            return Ok(staged);
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
        external: ExternalFiles::default(),
        downloaded: Some(folder.clone()),
    };
    download(&store, &path, &staged.graph, &mut budget).await?;
    staged.external = external_names(source, &staged.graph)?;
    let parent: Vec<_> = path.parts().collect();
    let parent = &parent[..parent.len().saturating_sub(1)];
    for name in staged.external.names() {
        // Names are normalised relative paths: plain parts joined by `/`.
        let object = parent
            .iter()
            .cloned()
            .chain(name.split('/').map(Into::into))
            .collect::<ObjectPath>();
        let file = staged.external_path(name);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| unreadable(source, e))?;
        }
        download(&store, &object, &file, &mut budget).await?;
    }
    Ok(staged)
}

/// Download `path` from `store` into the local file `target`, within `budget`.
async fn download(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    path: &ObjectPath,
    target: &std::path::Path,
    budget: &mut Budget<'_>,
) -> EngineResult<()> {
    let what = format!("{} ({path})", budget.source);
    let meta = store.head(path).await.map_err(|e| unreadable(&what, e))?;
    budget.check(meta.size)?;
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
        budget.take(chunk.len() as u64)?;
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
    let mut opts = options.clone();
    let lifecycle = crate::model_gate::Lifecycle::take_from(&mut opts)?;
    if lifecycle.has_rule() {
        return Err(EngineError::statement(
            StatusCode::InvalidParameterValue,
            "an imported model reports no validation metrics, so a gate rule cannot judge it \
             (deploy = 'manual' keeps it a candidate)",
        ));
    }
    let staged = stage(engine, session, source).await?;
    let path = staged.graph.clone();
    let external = staged.external.clone();
    // ONNX Runtime parses and optimises the graph: seconds for a large one.
    let artifact = tokio::task::spawn_blocking(move || {
        ModelArtifact::import_onnx(&path, GRAPH_FILE, &external, &opts)
    })
    .await
    .map_err(|e| EngineError::statement(StatusCode::Internal, format!("import failed: {e}")))?
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
            &lifecycle.ungated(),
            &session.user(),
            None,
        )
        .await?;
    crate::model_lifecycle::announce(engine, session, name, version, &lifecycle.ungated());
    Ok((version, summary))
}

/// The files a staged import stores in its version: the graph, then its external data.
fn payloads(staged: &Staged) -> Vec<Payload> {
    let graph = Payload {
        name: GRAPH_FILE.to_string(),
        data: PayloadData::File(staged.graph.clone()),
    };
    let external = staged.external.names().iter().map(|name| Payload {
        name: name.clone(),
        data: PayloadData::File(staged.external_path(name)),
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
