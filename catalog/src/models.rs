//! The model registry: every model, its versions, and their artifacts.
//!
//! Layout: `<data dir>/models/registry.json` lists models and versions (format version
//! [`REGISTRY_FORMAT_VERSION`]). Each version's artifact (the format documented in
//! `prognos_models::model`) is `models/<name>/v<NNNN>.json` in the data dir, or, when the
//! registry has an artifact URL (`storage.models_url`), the object
//! `<url>/models/<name>/v<NNNN>-<uuid>.json` in that object store (the suffix keeps servers that
//! share a bucket apart); the registry records each artifact's relative path or full URL, so
//! a model stays readable where it was written when the setting changes. A new version writes
//! (and, locally, fsyncs) its artifact first and then replaces `registry.json` atomically, so a
//! crash leaves the old registry intact.
//!
//! The current version of every model is loaded into memory at start-up; a model whose artifact
//! is unreadable is kept with its error, so it fails alone while the others keep working.
//! Readers take a [`ModelSnapshot`]: an immutable map that a running query keeps, so
//! `CREATE OR REPLACE MODEL` never changes the model under a query that already started.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prognos_models::metrics::Metrics;
use prognos_models::model::Trial;
use prognos_models::{ModelArtifact, Task};
use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, CatalogResult};

/// On-disk format version of `registry.json`.
pub const REGISTRY_FORMAT_VERSION: u32 = 1;

/// One stored version of a model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelVersion {
    /// 1, 2, ...
    pub version: u32,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Artifact file relative to the models directory, or the URL of an object-store artifact.
    pub artifact: String,
    /// Algorithm of the fitted estimator.
    pub algorithm: String,
    /// Task.
    pub task: Task,
    /// Target column (supervised models).
    pub target: Option<String>,
    /// `name type` of each feature, in argument order.
    pub features: Vec<String>,
    /// Quality on the validation split.
    pub metrics: Metrics,
    /// Candidates tried while training.
    pub trials: Vec<Trial>,
    /// Rows used for fitting.
    pub train_rows: usize,
    /// Rows held out.
    pub validation_rows: usize,
    /// Training time.
    pub train_seconds: f64,
    /// The training query (`AS ...` text).
    pub query: String,
}

/// A model and its versions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelEntry {
    /// Model name.
    pub name: String,
    /// Version `PREDICT` uses.
    pub current: u32,
    /// All versions, oldest first.
    pub versions: Vec<ModelVersion>,
}

impl ModelEntry {
    /// The current version's record.
    pub fn current_version(&self) -> Option<&ModelVersion> {
        self.versions.iter().find(|v| v.version == self.current)
    }
}

/// Contents of `registry.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryFile {
    /// Format version.
    pub format_version: u32,
    /// Models by name.
    pub models: BTreeMap<String, ModelEntry>,
}

impl Default for RegistryFile {
    fn default() -> Self {
        Self {
            format_version: REGISTRY_FORMAT_VERSION,
            models: BTreeMap::new(),
        }
    }
}

/// A loaded model version, or why it could not be loaded.
pub type Loaded = Result<Arc<ModelArtifact>, String>;

/// The models visible to one query: name → (version, artifact).
#[derive(Debug, Default)]
pub struct ModelSnapshot {
    models: HashMap<String, (u32, Loaded)>,
}

impl ModelSnapshot {
    /// The current version of a model (exact name first, then lower-cased).
    pub fn get(&self, name: &str) -> CatalogResult<(u32, Arc<ModelArtifact>)> {
        let found = self
            .models
            .get(name)
            .or_else(|| self.models.get(&name.to_ascii_lowercase()));
        match found {
            None => Err(CatalogError::ModelNotFound(name.to_string())),
            Some((v, Ok(a))) => Ok((*v, Arc::clone(a))),
            Some((_, Err(reason))) => Err(CatalogError::ModelUnavailable {
                name: name.to_string(),
                reason: reason.clone(),
            }),
        }
    }
}

#[derive(Debug)]
struct State {
    file: RegistryFile,
    snapshot: Arc<ModelSnapshot>,
    generation: u64,
}

/// Where artifacts are written, and how object-store artifacts are reached.
#[derive(Debug, Clone)]
pub struct ArtifactStores {
    /// Base URL for new artifacts (e.g. `s3://bucket/prefix`); `None` = the data dir.
    pub base_url: Option<String>,
    /// Resolves the URL of a stored artifact to its object store.
    pub stores: Arc<dyn ObjectStoreRegistry>,
}

/// The registry of a data dir.
#[derive(Debug)]
pub struct ModelRegistry {
    dir: PathBuf,
    artifacts: ArtifactStores,
    state: Mutex<State>,
    /// Serialises registering and dropping (artifact writes happen outside `state`'s lock).
    writes: tokio::sync::Mutex<()>,
}

/// Whether a model name can be stored (it becomes a directory name).
pub fn valid_model_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

fn write_atomic(path: &Path, bytes: &[u8]) -> CatalogResult<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether a recorded artifact location is an object-store URL (else a path in the data dir).
fn is_url(artifact: &str) -> bool {
    artifact.contains("://")
}

/// The object store and path of an artifact URL.
fn resolve(
    stores: &dyn ObjectStoreRegistry,
    url: &str,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let store = stores
        .get_store(&parsed)
        .map_err(|e| format!("{url}: {e}"))?;
    let path = ObjectPath::from_url_path(parsed.path()).map_err(|e| format!("{url}: {e}"))?;
    Ok((store, path))
}

async fn load_artifact(dir: &Path, stores: &dyn ObjectStoreRegistry, v: &ModelVersion) -> Loaded {
    let bytes = if is_url(&v.artifact) {
        let (store, path) = resolve(stores, &v.artifact)?;
        let got = store
            .get(&path)
            .await
            .map_err(|e| format!("{}: {e}", v.artifact))?;
        got.bytes()
            .await
            .map_err(|e| format!("{}: {e}", v.artifact))?
            .to_vec()
    } else {
        let path = dir.join(&v.artifact);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    ModelArtifact::from_bytes(&bytes)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

impl ModelRegistry {
    /// Open (or create) the registry of `data_dir` and load every model's current version.
    pub async fn open(data_dir: &Path, artifacts: ArtifactStores) -> CatalogResult<Self> {
        let dir = data_dir.join("models");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("registry.json");
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: RegistryFile =
                    serde_json::from_slice(&bytes).map_err(|e| CatalogError::Corrupt {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                if file.format_version > REGISTRY_FORMAT_VERSION {
                    return Err(CatalogError::Corrupt {
                        path: path.display().to_string(),
                        reason: format!(
                            "format {} is newer than this release understands \
                             ({REGISTRY_FORMAT_VERSION})",
                            file.format_version
                        ),
                    });
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryFile::default(),
            Err(e) => return Err(e.into()),
        };
        let mut models = HashMap::new();
        for entry in file.models.values() {
            let loaded = match entry.current_version() {
                Some(v) => load_artifact(&dir, artifacts.stores.as_ref(), v).await,
                None => Err(format!("version {} is missing", entry.current)),
            };
            if let Err(reason) = &loaded {
                tracing::warn!(model = %entry.name, %reason, "model artifact unreadable");
            }
            models.insert(entry.name.clone(), (entry.current, loaded));
        }
        Ok(Self {
            dir,
            artifacts,
            state: Mutex::new(State {
                file,
                snapshot: Arc::new(ModelSnapshot { models }),
                generation: 0,
            }),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The models as of now (kept by a query for its whole run).
    pub fn snapshot(&self) -> Arc<ModelSnapshot> {
        Arc::clone(&self.lock().snapshot)
    }

    /// Changes with every registered or dropped model.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Every model, in name order.
    pub fn entries(&self) -> Vec<ModelEntry> {
        self.lock().file.models.values().cloned().collect()
    }

    /// One model's record.
    pub fn get(&self, name: &str) -> Option<ModelEntry> {
        self.lock().file.models.get(name).cloned()
    }

    /// Fail unless `name` can be created (`replace` allows an existing one).
    pub fn check_create(&self, name: &str, replace: bool) -> CatalogResult<()> {
        if !valid_model_name(name) {
            return Err(CatalogError::InvalidModelName(name.to_string()));
        }
        if !replace && self.lock().file.models.contains_key(name) {
            return Err(CatalogError::ModelExists(name.to_string()));
        }
        Ok(())
    }

    /// Store a trained model as a new version (the first, or the next with `replace`) and
    /// make it current. Returns the version number.
    pub async fn register(
        &self,
        name: &str,
        artifact: ModelArtifact,
        query: &str,
        created_at: &str,
        replace: bool,
    ) -> CatalogResult<u32> {
        self.check_create(name, replace)?;
        let bytes = artifact.to_bytes()?;
        let _writing = self.writes.lock().await;
        let version = {
            let state = self.lock();
            if !replace && state.file.models.contains_key(name) {
                return Err(CatalogError::ModelExists(name.to_string()));
            }
            state
                .file
                .models
                .get(name)
                .and_then(|e| e.versions.iter().map(|v| v.version).max())
                .unwrap_or(0)
                + 1
        };
        let location = match &self.artifacts.base_url {
            Some(base) => {
                let url = format!(
                    "{}/models/{name}/v{version:04}-{}.json",
                    base.trim_end_matches('/'),
                    uuid::Uuid::new_v4().simple()
                );
                let (store, path) = resolve(self.artifacts.stores.as_ref(), &url)
                    .map_err(|reason| CatalogError::ArtifactStore { reason })?;
                store
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map_err(|e| CatalogError::ArtifactStore {
                        reason: format!("{url}: {e}"),
                    })?;
                url
            }
            None => {
                let rel = format!("{name}/v{version:04}.json");
                std::fs::create_dir_all(self.dir.join(name))?;
                write_atomic(&self.dir.join(&rel), &bytes)?;
                rel
            }
        };
        let record = ModelVersion {
            version,
            created_at: created_at.to_string(),
            artifact: location,
            algorithm: artifact.algorithm_label(),
            task: artifact.task,
            target: artifact.target_name(),
            features: artifact.input_descriptions(),
            metrics: artifact.metrics.clone(),
            trials: artifact.trials.clone(),
            train_rows: artifact.train_rows,
            validation_rows: artifact.validation_rows,
            train_seconds: artifact.train_seconds,
            query: query.to_string(),
        };
        let mut state = self.lock();
        let mut next = state.file.clone();
        let entry = next
            .models
            .entry(name.to_string())
            .or_insert_with(|| ModelEntry {
                name: name.to_string(),
                current: version,
                versions: vec![],
            });
        entry.current = version;
        entry.versions.push(record);
        self.commit(
            &mut state,
            next,
            name,
            Some((version, Ok(Arc::new(artifact)))),
        )?;
        Ok(version)
    }

    /// Write `next` as the registry, then publish a snapshot where `name` is `loaded`
    /// (`None` = removed).
    fn commit(
        &self,
        state: &mut State,
        next: RegistryFile,
        name: &str,
        loaded: Option<(u32, Loaded)>,
    ) -> CatalogResult<()> {
        write_atomic(
            &self.dir.join("registry.json"),
            &serde_json::to_vec_pretty(&next)?,
        )?;
        state.file = next;
        let mut models = state.snapshot.models.clone();
        match loaded {
            Some(l) => models.insert(name.to_string(), l),
            None => models.remove(name),
        };
        state.snapshot = Arc::new(ModelSnapshot { models });
        state.generation += 1;
        Ok(())
    }

    /// Remove a model and its artifacts. `Ok(false)` when it did not exist. The registry
    /// forgets the model first; artifacts that cannot be deleted afterwards are only logged.
    pub async fn drop_model(&self, name: &str) -> CatalogResult<bool> {
        let _writing = self.writes.lock().await;
        let removed = {
            let mut state = self.lock();
            let Some(entry) = state.file.models.get(name).cloned() else {
                return Ok(false);
            };
            let mut next = state.file.clone();
            next.models.remove(name);
            self.commit(&mut state, next, name, None)?;
            entry
        };
        for v in removed.versions.iter().filter(|v| is_url(&v.artifact)) {
            let deleted = match resolve(self.artifacts.stores.as_ref(), &v.artifact) {
                Ok((store, path)) => store.delete(&path).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(error) = deleted {
                tracing::warn!(model = name, %error, "could not delete a model artifact");
            }
        }
        if valid_model_name(name)
            && let Err(e) = std::fs::remove_dir_all(self.dir.join(name))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(model = name, error = %e, "could not delete model artifacts");
        }
        Ok(true)
    }
}
