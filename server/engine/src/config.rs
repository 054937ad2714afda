//! What the engine is opened with: the data dir, query-engine settings, storage locations and
//! S3 access. The server's configuration file holds these beside the frontends' settings.

use std::path::PathBuf;

use prognos_storage::stores::S3Settings;
use serde::{Deserialize, Serialize};

/// Everything [`crate::Engine::open`] reads.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOptions {
    /// Directory for the catalog, managed tables and models.
    pub data_dir: PathBuf,
    /// Load the demo dataset when the data dir has no tables.
    pub demo_data: bool,
    /// Query engine settings.
    pub engine: EngineConfig,
    /// Where managed tables and model artifacts are stored.
    pub storage: StorageConfig,
    /// S3 access.
    pub s3: S3Settings,
    /// Imported models and their runtimes.
    pub models: ModelsConfig,
    /// The superuser made when the data dir has no role of that name.
    pub bootstrap: Bootstrap,
    /// Where roles other than superusers may name local files.
    pub server_files: ServerFilesConfig,
    /// The audit log.
    pub audit: AuditConfig,
}

/// The audit log (`<data_dir>/audit/*.jsonl`, read as `system.audit_log`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Record statements and logins.
    pub enabled: bool,
    /// A file is closed and a new one started when it reaches this size.
    pub max_file_mb: u64,
    /// Files kept; the oldest beyond this are deleted.
    pub max_files: usize,
    /// Records reach the disk (fsync) at most this many milliseconds after they are written;
    /// `0` syncs every record before the statement's answer is sent.
    pub sync_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_file_mb: 64,
            max_files: 16,
            sync_ms: 200,
        }
    }
}

/// Folders (besides the data dir's `files/`) where every role may read and write files that
/// statements name (`COPY … TO`, external tables, `CREATE MODEL … FROM`, `EXPORT MODEL … TO`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerFilesConfig {
    /// Absolute folders.
    pub allow: Vec<PathBuf>,
}

/// The bootstrap superuser: created at start when missing, and given `password` when it has
/// none (a password set later with `ALTER ROLE` is not overwritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// Role name.
    pub name: String,
    /// Its first password.
    pub password: Option<Secret>,
}

/// The bootstrap superuser's default name.
pub const DEFAULT_SUPERUSER: &str = "prognos";

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            name: DEFAULT_SUPERUSER.to_string(),
            password: None,
        }
    }
}

/// A password or other secret from configuration: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl OpenOptions {
    /// Defaults over `data_dir`, without demo data (tests and embedding).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            demo_data: false,
            engine: EngineConfig::default(),
            storage: StorageConfig::default(),
            s3: S3Settings::default(),
            models: ModelsConfig::default(),
            bootstrap: Bootstrap::default(),
            server_files: ServerFilesConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

/// Imported models and their runtimes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Path of the ONNX Runtime library (`libonnxruntime.so.*` from the PyPI `onnxruntime` or
    /// `onnxruntime-gpu` wheel); unset = the `ORT_DYLIB_PATH` variable.
    pub onnx_library: Option<PathBuf>,
    /// Largest model file `CREATE MODEL ... FROM` accepts, in MiB.
    pub max_import_mb: u64,
    /// Largest model version (artifact and payloads) the registry stores, in MiB; `0` is none.
    pub max_artifact_mb: u64,
    /// Most rows a training query may return to `CREATE MODEL`; `0` is none (the memory
    /// limits still apply).
    pub max_training_rows: u64,
    /// URL that alerts of live-metric rules are POSTed to as JSON; unset = none.
    pub alert_webhook: Option<String>,
    /// Seconds between checks of the live-metric rules (`SET ROLLBACK | RETRAIN WHEN`).
    pub rule_check_seconds: u64,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            onnx_library: None,
            max_import_mb: 4096,
            max_artifact_mb: 8192,
            max_training_rows: 0,
            alert_webhook: None,
            rule_check_seconds: 10,
        }
    }
}

/// Where managed tables are stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Object-store URL for new managed tables, e.g. `s3://bucket/prefix`; unset = the data dir.
    /// Tables keep the location they were created at.
    pub tables_url: Option<String>,
    /// Object-store URL for new model artifacts; unset = `tables_url`, and with neither, the
    /// data dir. The model registry itself stays in the data dir; each version keeps the
    /// location it was written to.
    pub models_url: Option<String>,
}

/// Engine settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Partitions DataFusion plans for (0 = number of CPUs).
    pub target_partitions: usize,
    /// Rows per Arrow batch.
    pub batch_size: usize,
    /// Memory pool for query execution in MiB (0 = unbounded).
    pub memory_limit_mb: usize,
    /// Every session's default `statement_timeout`, in milliseconds (0 = none).
    pub statement_timeout_ms: u64,
    /// The largest value `repeat`, `lpad` and `rpad` build, in MiB (larger is `54000`).
    pub max_value_mb: u64,
    /// The largest result a statement sends (rows, `COPY … TO STDOUT`), in MiB; `0` is none.
    pub max_result_mb: u64,
    /// One session's (so one statement's) share of the memory pool, in MiB; `0` is none.
    pub query_memory_mb: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            target_partitions: 0,
            batch_size: 8192,
            memory_limit_mb: 0,
            statement_timeout_ms: 0,
            max_value_mb: 1024,
            max_result_mb: 0,
            query_memory_mb: 0,
        }
    }
}
