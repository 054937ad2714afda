//! The model registry: every model, its versions, and their artifacts.
//!
//! Layout: `<data dir>/models/registry.json` lists models and versions (format version
//! [`REGISTRY_FORMAT_VERSION`]). Each version is a directory, the artifact container:
//! `artifact.json` (the format documented in `prognos_models::model`) and the binary payload
//! files it names (an imported ONNX graph, later neural weights). It is
//! `models/<name>/v<NNNN>/` in the data dir, or, when the registry has an artifact URL
//! (`storage.models_url`), the prefix `<url>/models/<name>/v<NNNN>-<uuid>/` in that object
//! store (the suffix keeps servers that share a bucket apart). The registry records the path or
//! URL of each version's `artifact.json` and its payload names, so a model stays readable where
//! it was written when the setting changes; versions written before the container existed are
//! a lone `v<NNNN>.json` (`v<NNNN>-<uuid>.json`) and load as they are. A new version writes
//! (and, locally, fsyncs) its payloads and artifact first and then replaces `registry.json`
//! atomically, so a crash leaves the old registry intact.
//!
//! Versions load lazily: opening the registry reads only `registry.json`, so a multi-GB model
//! does not slow start-up. The engine loads the models a statement names before planning it
//! ([`ModelSnapshot::preload`]); anything else is loaded on first use. Payloads of object-store
//! versions are copied to `models/.cache/` in the data dir, where ONNX Runtime opens them. A
//! model whose artifact is unreadable fails alone, with its reason, while the others keep
//! working. Readers take a [`ModelSnapshot`]: an immutable map that a running query keeps, so
//! `CREATE OR REPLACE MODEL` never changes the model under a query that already started.

use prognos_storage::durable;
use std::collections::BTreeMap;
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
use crate::model_snapshot::{ModelSlots, ModelSnapshot, Slot};
use crate::model_states::{Admission, StateChange, VersionState};

/// On-disk format version of `registry.json`.
/// Format 2 added version states; a format-1 registry is adopted on open (its current
/// version deployed, see [`ModelEntry::adopt_legacy`]) and written as format 2 at the next
/// change.
pub const REGISTRY_FORMAT_VERSION: u32 = 2;

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
    /// The training query (`AS ...` text), or the source of an imported model.
    pub query: String,
    /// Payload files stored beside `artifact.json` (names relative to its directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payloads: Vec<String>,
    /// An imported graph's inputs and outputs (`input x float32[?, 4]`), as `DESCRIBE MODEL`
    /// shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// The device an imported graph asks for (`auto`, `cpu`, `cuda:0`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Where the version is in its lifecycle (see [`crate::model_states`]).
    #[serde(default)]
    pub state: VersionState,
    /// RFC 3339 time of the last state change.
    #[serde(default)]
    pub state_changed_at: String,
    /// The role that made the last state change (`system` for the server's own).
    #[serde(default)]
    pub state_changed_by: String,
    /// Why the state last changed, when there is more to say (a gate's verdict, a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// The `CREATE OR REPLACE MODEL` statement that made this version, as `RETRAIN MODEL`
    /// runs it again (absent for imports and versions made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
}

/// A model and its versions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelEntry {
    /// Model name.
    pub name: String,
    /// The deployed version, the one `PREDICT` uses; `0` when none is.
    pub current: u32,
    /// All versions, oldest first.
    pub versions: Vec<ModelVersion>,
    /// Versions deployed before the current one, oldest first (what `ROLLBACK` returns to).
    #[serde(default)]
    pub history: Vec<u32>,
    /// The highest version number ever given (a dropped version's number is not reused).
    #[serde(default)]
    pub last_version: u32,
    /// When the server retrains the model by itself (`ALTER MODEL … SET RETRAIN EVERY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain: Option<RetrainSchedule>,
    /// Which of its `PREDICT` calls are logged, and where (`ALTER MODEL … SET LOGGING`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<PredictionLogging>,
    /// The query giving what happened (`key, actual, ts`), as written in `ALTER MODEL … SET
    /// OUTCOMES FROM (…)`: `MODEL_MONITOR` joins it with the logged predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<String>,
    /// `ALTER MODEL … SET ROLLBACK WHEN …`: when the server rolls the model back by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_when: Option<LiveRule>,
    /// `ALTER MODEL … SET RETRAIN WHEN …`: when the server retrains the model by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain_when: Option<LiveRule>,
    /// `ALTER MODEL … SET FALLBACK 'other'`: the model that answers when this one fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// `ALTER MODEL … SET CACHE (entries = n)`: how many answers the prediction cache keeps
    /// per version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_entries: Option<u64>,
}

/// A rule on a model's live metrics (`live_auc < 0.7`), computed from its logged predictions
/// and outcomes over a recent window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveRule {
    /// The condition as written (`live_auc < 0.7`).
    pub rule: String,
    /// The window as written (`'1 day'`).
    pub over: String,
}

/// A model's monitoring settings, as the monitor reads them.
#[derive(Debug, Clone)]
pub struct ModelRules {
    /// The model.
    pub name: String,
    /// Its deployed version.
    pub deployed: Option<u32>,
    /// `SET ROLLBACK WHEN`.
    pub rollback: Option<LiveRule>,
    /// `SET RETRAIN WHEN`.
    pub retrain: Option<LiveRule>,
    /// Whether its predictions are logged.
    pub logged: bool,
    /// Whether it has an outcomes query.
    pub outcomes: bool,
}

/// Which live rule of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveRuleKind {
    /// `SET ROLLBACK WHEN`.
    Rollback,
    /// `SET RETRAIN WHEN`.
    Retrain,
}

/// How a model's predictions are logged (`ALTER MODEL m SET LOGGING (sample = 0.1, key =
/// 'customer_id')`): a sample of the rows each `PREDICT` call scores, with their inputs, the
/// output, the version, the time and the key, appended to a managed table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PredictionLogging {
    /// Share of the scored rows logged, in (0, 1].
    pub sample: f64,
    /// The column whose value identifies a row (joined with the outcomes); `None` logs no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Schema of the log table.
    pub schema: String,
    /// Name of the log table.
    pub table: String,
    /// The most rows the table keeps: the oldest are removed beyond it.
    pub max_rows: u64,
}

/// A model's retraining schedule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetrainSchedule {
    /// The interval as written (`'1 day'`).
    pub every: String,
    /// The interval in seconds.
    pub every_seconds: u64,
    /// `AT 'HH:MM'` (UTC): runs are aligned to that time of day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// RFC 3339 time of the next run.
    pub next_run: String,
}

impl ModelEntry {
    /// Model `name` with no versions and no settings.
    pub(crate) fn new(name: &str) -> ModelEntry {
        ModelEntry {
            name: name.to_string(),
            current: 0,
            versions: vec![],
            history: vec![],
            last_version: 0,
            retrain: None,
            logging: None,
            outcomes: None,
            rollback_when: None,
            retrain_when: None,
            fallback: None,
            cache_entries: None,
        }
    }

    /// The deployed version's record.
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

/// Where a version's files are and how to reach them.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The registry's directory (`<data dir>/models`).
    dir: PathBuf,
    /// Object stores of URL artifacts.
    stores: Arc<dyn ObjectStoreRegistry>,
}

impl Source {
    pub(crate) fn new(dir: &Path, artifacts: &ArtifactStores) -> Source {
        Source {
            dir: dir.to_path_buf(),
            stores: Arc::clone(&artifacts.stores),
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
    /// The largest version (artifact and payloads) that may be stored, in MiB; `0` is none.
    pub max_mb: u64,
}

/// The registry of a data dir.
#[derive(Debug)]
pub struct ModelRegistry {
    dir: PathBuf,
    artifacts: ArtifactStores,
    state: Mutex<State>,
    /// Serialises registering and dropping (artifact writes happen outside `state`'s lock).
    writes: tokio::sync::Mutex<()>,
    /// Versions being trained now, by model (shown as `training`, never stored).
    training: Mutex<Vec<(String, String, ModelVersion)>>,
}

/// A version being trained; it stops being shown when dropped.
#[derive(Debug)]
pub struct Training<'a> {
    registry: &'a ModelRegistry,
    id: String,
}

impl Drop for Training<'_> {
    fn drop(&mut self) {
        self.registry
            .training
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(id, _, _)| *id != self.id);
    }
}

/// Whether a model name can be stored (it becomes a directory name).
pub fn valid_model_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

/// Whether a recorded artifact location is an object-store URL (else a path in the data dir).
/// Copy the files under `from` to `to` durably; how many.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<usize> {
    let mut copied = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copied += copy_tree(&path, &target)?;
        } else {
            durable::copy_file(&path, &target)?;
            copied += 1;
        }
    }
    Ok(copied)
}

pub(crate) fn is_url(artifact: &str) -> bool {
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

/// Read the object at `url` whole.
async fn fetch(stores: &dyn ObjectStoreRegistry, url: &str) -> Result<bytes::Bytes, String> {
    let (store, path) = resolve(stores, url)?;
    let got = store.get(&path).await.map_err(|e| format!("{url}: {e}"))?;
    got.bytes().await.map_err(|e| format!("{url}: {e}"))
}

/// The URL of payload `file` of the version whose `artifact.json` is at `artifact_url`.
fn payload_url(artifact_url: &str, file: &str) -> String {
    match artifact_url.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{file}"),
        None => file.to_string(),
    }
}

/// Local directory where payloads of the object-store version whose `artifact.json` is at
/// `artifact` are copied.
fn cache_dir(dir: &Path, name: &str, artifact: &str, version: u32) -> PathBuf {
    let folder = artifact
        .rsplit('/')
        .nth(1)
        .filter(|f| !f.is_empty() && *f != "." && *f != "..")
        .map(str::to_string)
        .unwrap_or_else(|| format!("v{version:04}"));
    dir.join(CACHE_DIR).join(name).join(folder)
}

/// Load one version: its artifact, and its payloads made local.
pub(crate) async fn load_version(source: &Source, name: &str, v: &ModelVersion) -> Loaded {
    let (bytes, payload_dir) = if is_url(&v.artifact) {
        let bytes = fetch(source.stores.as_ref(), &v.artifact).await?.to_vec();
        let local = cache_dir(&source.dir, name, &v.artifact, v.version);
        for file in &v.payloads {
            check_payload_name(file)?;
            let target = local.join(file);
            if target.is_file() {
                continue;
            }
            let data = fetch(source.stores.as_ref(), &payload_url(&v.artifact, file)).await?;
            let parent = target.parent().unwrap_or(&local);
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            durable::write_atomically(&target, &data)
                .map_err(|e| format!("{}: {e}", target.display()))?;
        }
        (bytes, local)
    } else {
        let path = source.dir.join(&v.artifact);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (bytes, dir)
    };
    let artifact = ModelArtifact::from_bytes(&bytes).map_err(|e| e.to_string())?;
    for file in artifact.payload_files() {
        check_payload_name(&file)?;
        let path = payload_dir.join(&file);
        if !path.is_file() {
            return Err(format!("payload {} is missing", path.display()));
        }
    }
    artifact.attach_payloads(&payload_dir);
    Ok(Arc::new(artifact))
}

/// Refuse a payload name that could leave its version's directory (a tampered registry or
/// artifact): names are normalised relative paths (as imports make them), and not the
/// artifact's own.
fn check_payload_name(name: &str) -> Result<(), String> {
    match prognos_models::onnx::external::contained_path(name) {
        Ok(plain) if plain == name && name != ARTIFACT_FILE => Ok(()),
        _ => Err(format!(
            "payload name \"{name}\" is not a file inside its version"
        )),
    }
}

/// Folder under the registry's directory where object-store payloads are copied.
const CACHE_DIR: &str = ".cache";

/// The artifact document's name in a version's directory.
const ARTIFACT_FILE: &str = "artifact.json";

/// The snapshot entry of `entry`: a slot per version, taking `fresh` for a version just
/// written. The deployed version's slot is carried over from `old` (it stays loaded); the
/// others start unloaded, so a version pinned once (`m@n`) is freed when no query holds the
/// snapshot that loaded it, and a model with many versions keeps one of them in memory.
fn slots_of(
    entry: &ModelEntry,
    old: Option<&ModelSlots>,
    source: &Source,
    fresh: Option<Arc<Slot>>,
) -> Arc<ModelSlots> {
    let mut versions = BTreeMap::new();
    for v in &entry.versions {
        let kept = old
            .filter(|_| entry.deployed() == Some(v.version))
            .and_then(|o| o.versions.get(&v.version));
        let slot = match (&fresh, kept) {
            (Some(f), _) if f.record.version == v.version => Arc::clone(f),
            (_, Some(existing)) => Arc::clone(existing),
            _ => Slot::new(&entry.name, v.clone(), source.clone()),
        };
        versions.insert(v.version, slot);
    }
    if let Some(d) = entry.deployed()
        && !versions.contains_key(&d)
    {
        let reason = format!("version {d} is missing");
        tracing::warn!(model = %entry.name, %reason, "model unreadable");
        let record = ModelVersion {
            version: d,
            ..placeholder_version()
        };
        versions.insert(
            d,
            Slot::loaded(&entry.name, record, source.clone(), Err(reason)),
        );
    }
    Arc::new(ModelSlots {
        name: entry.name.clone(),
        deployed: entry.deployed(),
        versions,
        logging: entry.logging.clone(),
        outcomes: entry.outcomes.clone(),
        fallback: entry.fallback.clone(),
        cache_entries: entry.cache_entries,
    })
}

/// The time now, as the registry records it (RFC 3339, UTC, seconds).
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A version record standing for one that cannot be read.
pub(crate) fn placeholder_version() -> ModelVersion {
    ModelVersion {
        version: 0,
        created_at: String::new(),
        artifact: String::new(),
        algorithm: String::new(),
        task: prognos_models::Task::Regression,
        target: None,
        features: vec![],
        metrics: Metrics::default(),
        trials: vec![],
        train_rows: 0,
        validation_rows: 0,
        train_seconds: 0.0,
        query: String::new(),
        payloads: vec![],
        ports: vec![],
        device: None,
        state: VersionState::Candidate,
        state_changed_at: String::new(),
        state_changed_by: String::new(),
        state_reason: None,
        definition: None,
    }
}

/// A payload file to store with a new version.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Its name in the version's directory.
    pub name: String,
    /// Where its bytes are now.
    pub data: PayloadData,
}

/// Where a payload's bytes are before the version is stored.
#[derive(Debug, Clone)]
pub enum PayloadData {
    /// A local file (e.g. the graph an import downloaded).
    File(PathBuf),
    /// Bytes in memory (e.g. the weights of a network just trained).
    Memory(Arc<Vec<u8>>),
}

impl Payload {
    fn len(&self) -> std::io::Result<u64> {
        match &self.data {
            PayloadData::File(path) => Ok(std::fs::metadata(path)?.len()),
            PayloadData::Memory(bytes) => Ok(bytes.len() as u64),
        }
    }

    fn bytes(&self) -> std::io::Result<Vec<u8>> {
        match &self.data {
            PayloadData::File(path) => std::fs::read(path),
            PayloadData::Memory(bytes) => Ok(bytes.as_ref().clone()),
        }
    }

    /// Write the payload to `target` durably.
    fn write_to(&self, target: &Path) -> std::io::Result<()> {
        match &self.data {
            PayloadData::File(path) => durable::copy_file(path, target),
            PayloadData::Memory(bytes) => durable::write_atomically(target, bytes),
        }
    }
}

impl ModelRegistry {
    /// Open (or create) the registry of `data_dir`. Nothing is loaded yet (see the module docs).
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
        let mut file = file;
        if file.format_version < 2 {
            let now = now_rfc3339();
            for entry in file.models.values_mut() {
                entry.adopt_legacy(&now);
            }
            file.format_version = REGISTRY_FORMAT_VERSION;
        }
        let source = Source::new(&dir, &artifacts);
        let models = file
            .models
            .values()
            .map(|entry| (entry.name.clone(), slots_of(entry, None, &source, None)))
            .collect();
        Ok(Self {
            dir,
            artifacts,
            state: Mutex::new(State {
                file,
                snapshot: Arc::new(ModelSnapshot::new(models)),
                generation: 0,
            }),
            writes: tokio::sync::Mutex::new(()),
            training: Mutex::new(Vec::new()),
        })
    }

    /// Show a version of `name` as `training` (by role `by`) until the guard is dropped.
    pub fn begin_training(&self, name: &str, by: &str) -> Training<'_> {
        let version = self.get(name).map(|e| e.next_version()).unwrap_or(1);
        let now = now_rfc3339();
        let record = ModelVersion {
            version,
            created_at: now.clone(),
            state: VersionState::Training,
            state_changed_at: now,
            state_changed_by: by.to_string(),
            ..placeholder_version()
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.training
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id.clone(), name.to_string(), record));
        Training { registry: self, id }
    }

    /// The versions being trained now, as `(model, record)`.
    pub fn training(&self) -> Vec<(String, ModelVersion)> {
        let training = self.training.lock().unwrap_or_else(|p| p.into_inner());
        training
            .iter()
            .map(|(_, name, record)| (name.clone(), record.clone()))
            .collect()
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

    /// The models with a retraining schedule, and their schedules (what the scheduler reads
    /// on every tick, without copying the version records).
    pub fn retrain_schedules(&self) -> Vec<(String, RetrainSchedule)> {
        self.lock()
            .file
            .models
            .values()
            .filter_map(|e| e.retrain.clone().map(|r| (e.name.clone(), r)))
            .collect()
    }

    /// Whether a model of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().file.models.contains_key(name)
    }

    /// One model's record.
    pub fn get(&self, name: &str) -> Option<ModelEntry> {
        self.lock().file.models.get(name).cloned()
    }

    /// Version `version` of a model (any version, not only the current one), loaded from its
    /// artifact.
    pub async fn load_version(
        &self,
        name: &str,
        version: u32,
    ) -> CatalogResult<Arc<ModelArtifact>> {
        let entry = self
            .get(name)
            .ok_or_else(|| CatalogError::ModelNotFound(name.to_string()))?;
        let record = entry
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| CatalogError::ModelVersionNotFound {
                name: name.to_string(),
                version,
            })?;
        load_version(&self.source(), name, record)
            .await
            .map_err(|reason| CatalogError::ModelUnavailable {
                name: name.to_string(),
                reason,
            })
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

    fn source(&self) -> Source {
        Source::new(&self.dir, &self.artifacts)
    }

    /// Store a model as a new version (the first, or the next with `replace`) with its
    /// payload files, admitted as `admission` says (deployed, a candidate, or rejected by its
    /// gate) by role `by`. Returns the version number.
    #[allow(clippy::too_many_arguments)]
    pub async fn register(
        &self,
        name: &str,
        artifact: ModelArtifact,
        payloads: &[Payload],
        query: &str,
        created_at: &str,
        replace: bool,
        admission: &Admission,
        by: &str,
        definition: Option<&str>,
    ) -> CatalogResult<u32> {
        self.check_create(name, replace)?;
        let bytes = artifact.to_bytes()?;
        let held = artifact
            .held_payloads()
            .into_iter()
            .map(|(name, bytes)| Payload {
                name,
                data: PayloadData::Memory(bytes),
            });
        let payloads: &[Payload] = &payloads.iter().cloned().chain(held).collect::<Vec<_>>();
        self.check_size(name, &bytes, payloads)?;
        let expected = artifact.payload_files();
        if let Some(reason) = expected.iter().find_map(|f| check_payload_name(f).err()) {
            return Err(CatalogError::ArtifactStore { reason });
        }
        if let Some(missing) = expected
            .iter()
            .find(|f| !payloads.iter().any(|p| &&p.name == f))
        {
            return Err(CatalogError::ArtifactStore {
                reason: format!("payload {missing} was not supplied"),
            });
        }
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
                .map(ModelEntry::next_version)
                .unwrap_or(1)
        };
        // Where the version is recorded, and the local directory its payloads are opened from.
        let (location, payload_dir) = match &self.artifacts.base_url {
            Some(base) => {
                let prefix = format!(
                    "{}/models/{name}/v{version:04}-{}",
                    base.trim_end_matches('/'),
                    uuid::Uuid::new_v4().simple()
                );
                for p in payloads {
                    self.put(&format!("{prefix}/{}", p.name), p.bytes()?)
                        .await?;
                }
                let url = format!("{prefix}/{ARTIFACT_FILE}");
                self.put(&url, bytes).await?;
                // Graphs are opened from local disk: keep a copy in the cache.
                let cache = cache_dir(&self.dir, name, &url, version);
                for p in payloads {
                    let target = cache.join(&p.name);
                    std::fs::create_dir_all(target.parent().unwrap_or(&cache))?;
                    p.write_to(&target)?;
                }
                (url, cache)
            }
            None => {
                let folder = self.dir.join(name).join(format!("v{version:04}"));
                durable::create_dir_all(&folder)?;
                for p in payloads {
                    p.write_to(&folder.join(&p.name))?;
                }
                durable::write_atomically(&folder.join(ARTIFACT_FILE), &bytes)?;
                (format!("{name}/v{version:04}/{ARTIFACT_FILE}"), folder)
            }
        };
        artifact.attach_payloads(&payload_dir);
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
            payloads: expected,
            ports: artifact.port_descriptions(),
            device: artifact.devices().map(|d| d.0),
            // Set by `add_version`.
            state: VersionState::Candidate,
            state_changed_at: String::new(),
            state_changed_by: String::new(),
            state_reason: None,
            definition: definition.map(str::to_string),
        };
        let mut state = self.lock();
        let mut next = state.file.clone();
        let entry = next
            .models
            .entry(name.to_string())
            .or_insert_with(|| ModelEntry::new(name));
        let change = StateChange {
            at: created_at.to_string(),
            by: by.to_string(),
            reason: None,
        };
        entry.add_version(record.clone(), admission, &change);
        let slot = Slot::loaded(name, record, self.source(), Ok(Arc::new(artifact)));
        self.commit(&mut state, next, name, Some(slot))?;
        Ok(version)
    }

    /// Apply `change` to model `name`'s entry and store the result; what `change` returns.
    async fn change_model<T>(
        &self,
        name: &str,
        change: impl FnOnce(&mut ModelEntry) -> CatalogResult<T>,
    ) -> CatalogResult<T> {
        let _writing = self.writes.lock().await;
        let mut state = self.lock();
        let mut next = state.file.clone();
        let entry = next
            .models
            .get_mut(name)
            .ok_or_else(|| CatalogError::ModelNotFound(name.to_string()))?;
        let out = change(entry)?;
        self.commit(&mut state, next, name, None)?;
        Ok(out)
    }

    /// `ALTER MODEL name DEPLOY VERSION version`; returns the version it replaced.
    pub async fn deploy(
        &self,
        name: &str,
        version: u32,
        change: &StateChange,
    ) -> CatalogResult<Option<u32>> {
        self.change_model(name, |e| e.deploy(version, change)).await
    }

    /// `ALTER MODEL name ROLLBACK`; returns `(from, to)`.
    pub async fn rollback(&self, name: &str, change: &StateChange) -> CatalogResult<(u32, u32)> {
        self.change_model(name, |e| e.rollback(change)).await
    }

    /// `ALTER MODEL name SET RETRAIN …` (`None`: `RESET RETRAIN`), or the next run of a
    /// schedule after one ran.
    pub async fn set_retrain(
        &self,
        name: &str,
        schedule: Option<RetrainSchedule>,
    ) -> CatalogResult<()> {
        self.change_model(name, |e| {
            e.retrain = schedule;
            Ok(())
        })
        .await
    }

    /// `ALTER MODEL name SET LOGGING (…)` (`None`: `RESET LOGGING`).
    pub async fn set_logging(
        &self,
        name: &str,
        logging: Option<PredictionLogging>,
    ) -> CatalogResult<()> {
        self.change_model(name, |e| {
            e.logging = logging;
            Ok(())
        })
        .await
    }

    /// `ALTER MODEL name SET ROLLBACK | RETRAIN WHEN …` (`None`: `RESET ROLLBACK`, or the
    /// `WHEN` part of `RESET RETRAIN`).
    pub async fn set_live_rule(
        &self,
        name: &str,
        kind: LiveRuleKind,
        rule: Option<LiveRule>,
    ) -> CatalogResult<()> {
        self.change_model(name, |e| {
            match kind {
                LiveRuleKind::Rollback => e.rollback_when = rule,
                LiveRuleKind::Retrain => e.retrain_when = rule,
            }
            Ok(())
        })
        .await
    }

    /// The models that log their predictions or have live rules: what the monitor checks.
    pub fn live_rules(&self) -> Vec<ModelRules> {
        self.lock()
            .file
            .models
            .values()
            .filter(|e| {
                e.logging.is_some() || e.rollback_when.is_some() || e.retrain_when.is_some()
            })
            .map(|e| ModelRules {
                name: e.name.clone(),
                deployed: e.deployed(),
                rollback: e.rollback_when.clone(),
                retrain: e.retrain_when.clone(),
                logged: e.logging.is_some(),
                outcomes: e.outcomes.is_some(),
            })
            .collect()
    }

    /// `ALTER MODEL name SET FALLBACK 'other'` (`None`: `RESET FALLBACK`).
    pub async fn set_fallback(&self, name: &str, fallback: Option<String>) -> CatalogResult<()> {
        self.change_model(name, |e| {
            e.fallback = fallback;
            Ok(())
        })
        .await
    }

    /// `ALTER MODEL name SET CACHE (entries = n)` (`None`: `RESET CACHE`).
    pub async fn set_cache(&self, name: &str, entries: Option<u64>) -> CatalogResult<()> {
        self.change_model(name, |e| {
            e.cache_entries = entries;
            Ok(())
        })
        .await
    }

    /// `ALTER MODEL name SET OUTCOMES FROM (query)` (`None`: `RESET OUTCOMES`).
    pub async fn set_outcomes(&self, name: &str, query: Option<String>) -> CatalogResult<()> {
        self.change_model(name, |e| {
            e.outcomes = query;
            Ok(())
        })
        .await
    }

    /// `ALTER MODEL name RETIRE VERSION version`.
    pub async fn retire(
        &self,
        name: &str,
        version: u32,
        change: &StateChange,
    ) -> CatalogResult<()> {
        self.change_model(name, |e| e.retire(version, change)).await
    }

    /// `DROP MODEL name VERSION version`: forget the version, then delete its files (a file
    /// that cannot be deleted is only logged; the start-up sweep removes it later).
    pub async fn drop_version(&self, name: &str, version: u32) -> CatalogResult<()> {
        let removed = self
            .change_model(name, |e| e.remove_version(version))
            .await?;
        self.delete_files(name, &removed).await;
        Ok(())
    }

    /// Delete the stored files of version `v` of model `name`. Best effort, logged.
    async fn delete_files(&self, name: &str, v: &ModelVersion) {
        if is_url(&v.artifact) {
            let urls = v
                .payloads
                .iter()
                .map(|p| payload_url(&v.artifact, p))
                .chain([v.artifact.clone()]);
            for url in urls {
                let deleted = match resolve(self.artifacts.stores.as_ref(), &url) {
                    Ok((store, path)) => store.delete(&path).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                if let Err(error) = deleted {
                    tracing::warn!(model = name, %error, "could not delete a model artifact");
                }
            }
            let cache = cache_dir(&self.dir, name, &v.artifact, v.version);
            if let Err(e) = std::fs::remove_dir_all(&cache)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(model = name, error = %e, "could not delete cached model payloads");
            }
        } else if let Some(folder) = Path::new(&v.artifact).parent()
            && folder.parent().is_some_and(|p| p == Path::new(name))
            && let Err(e) = durable::remove_dir_all(&self.dir.join(folder))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(model = name, error = %e, "could not delete a model version");
        }
    }

    /// Refuse a version whose artifact and payloads exceed `max_mb`.
    fn check_size(&self, name: &str, bytes: &[u8], payloads: &[Payload]) -> CatalogResult<()> {
        let limit_mb = self.artifacts.max_mb;
        if limit_mb == 0 {
            return Ok(());
        }
        let mut total = bytes.len() as u64;
        for p in payloads {
            total += p.len()?;
        }
        if total > limit_mb.saturating_mul(1024 * 1024) {
            return Err(CatalogError::ArtifactTooLarge {
                name: name.to_string(),
                bytes: total,
                limit_mb,
            });
        }
        Ok(())
    }

    /// Write one object of a version to the artifact store.
    async fn put(&self, url: &str, bytes: Vec<u8>) -> CatalogResult<()> {
        let (store, path) = resolve(self.artifacts.stores.as_ref(), url)
            .map_err(|reason| CatalogError::ArtifactStore { reason })?;
        store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| CatalogError::ArtifactStore {
                reason: format!("{url}: {e}"),
            })?;
        Ok(())
    }

    /// Write the registry as it is now, with the local folders of its versions, under
    /// `dir/models/` (for a backup); returns the number of files copied. Versions stored in an
    /// object store are referred to, not copied. Registering and dropping wait meanwhile.
    pub async fn backup_to(&self, dir: &Path) -> CatalogResult<usize> {
        let _writing = self.writes.lock().await;
        let file = self.lock().file.clone();
        let target = dir.join("models");
        durable::create_dir_all(&target)?;
        let mut copied = 0;
        for entry in file.models.values() {
            for v in &entry.versions {
                if is_url(&v.artifact) {
                    continue;
                }
                let Some(folder) = std::path::Path::new(&v.artifact).parent() else {
                    continue;
                };
                copied += copy_tree(&self.dir.join(folder), &target.join(folder))?;
            }
        }
        crate::persist::write_json_atomically(&target.join("registry.json"), &file)?;
        Ok(copied + 1)
    }

    /// Write `next` as the registry, then publish a snapshot where model `name` is as `next`
    /// has it (gone when `next` has no such model); `fresh` is a version just written, with
    /// its artifact already in memory.
    fn commit(
        &self,
        state: &mut State,
        next: RegistryFile,
        name: &str,
        fresh: Option<Arc<Slot>>,
    ) -> CatalogResult<()> {
        crate::persist::write_json_atomically(&self.dir.join("registry.json"), &next)?;
        let mut models = state.snapshot.models().clone();
        match next.models.get(name) {
            Some(entry) => {
                let slots = slots_of(
                    entry,
                    models.get(name).map(Arc::as_ref),
                    &self.source(),
                    fresh,
                );
                models.insert(name.to_string(), slots);
            }
            None => {
                models.remove(name);
            }
        }
        state.file = next;
        state.snapshot = Arc::new(ModelSnapshot::new(models));
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
        // Object-store versions one by one; the local folders (and caches) go whole below.
        for v in removed.versions.iter().filter(|v| is_url(&v.artifact)) {
            self.delete_files(name, v).await;
        }
        if valid_model_name(name)
            && let Err(e) = std::fs::remove_dir_all(self.dir.join(CACHE_DIR).join(name))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(model = name, error = %e, "could not delete cached model payloads");
        }
        if valid_model_name(name)
            && let Err(e) = durable::remove_dir_all(&self.dir.join(name))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(model = name, error = %e, "could not delete model artifacts");
        }
        Ok(true)
    }
}
