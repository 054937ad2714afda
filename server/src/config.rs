//! Server configuration: defaults → TOML file → `PROGNOS__SECTION__KEY` environment variables →
//! command-line flags, each layer overriding the one before.
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `data_dir` | path | `./prognos-data` | catalog, managed tables, models |
//! | `demo_data` | bool | `true` | load the demo dataset into an empty data dir |
//! | `pg.listen` | host:port | `127.0.0.1:5432` | Postgres wire protocol |
//! | `flight.listen` | host:port | `127.0.0.1:50051` | Arrow Flight SQL (gRPC) |
//! | `http.listen` | host:port | `127.0.0.1:9187` | `/health` and `/metrics` |
//! | `engine.target_partitions` | int | CPU count | DataFusion parallelism |
//! | `engine.batch_size` | int | `8192` | rows per Arrow batch |
//! | `engine.memory_limit_mb` | int | `0` (none) | query memory pool size (fair spill pool) |
//! | `engine.statement_timeout_ms` | int | `0` (none) | every session's default `statement_timeout` |
//! | `engine.max_value_mb` | int | `1024` | the largest value `repeat`, `lpad`, `rpad` build (`54000` beyond) |
//! | `engine.max_result_mb` | int | `0` (none) | the largest result a statement sends (`54000` beyond) |
//! | `engine.query_memory_mb` | int | `0` (none) | one session's share of the memory pool (`53200` beyond) |
//! | `max_connections` | int | `100` | pgwire connections at once (`53300` beyond) |
//! | `storage.tables_url` | URL | unset (data dir) | object-store location of new managed tables |
//! | `storage.models_url` | URL | `storage.tables_url` | object-store location of new model artifacts |
//! | `s3.endpoint` … `s3.allow_http` | see `S3Settings` | unset | S3 / S3-compatible access |
//! | `models.onnx_library` | path | `ORT_DYLIB_PATH` | ONNX Runtime library (`libonnxruntime.so.1.31.1`) |
//! | `models.max_import_mb` | int | `4096` | largest file `CREATE MODEL … FROM` accepts |
//! | `models.max_artifact_mb` | int | `8192` | largest model version the registry stores |
//! | `models.max_training_rows` | int | `0` (none) | most rows a training query may return |
//! | `models.alert_webhook` | URL | unset | where live-metric rule alerts are POSTed (JSON) |
//! | `models.rule_check_seconds` | int | `10` | seconds between checks of live-metric rules |
//! | `auth` | `"scram-sha-256"` \| `"none"` | see [`crate::auth`] | how clients prove who they are |
//! | `superuser` | name | `prognos` | the bootstrap superuser, created when missing |
//! | `superuser_password` | string | `PROGNOS_PASSWORD` | its first password |
//! | `tls.cert_file`, `tls.key_file` | paths (PEM) | unset (no TLS) | TLS for pgwire and Flight SQL |
//! | `tls.require` | bool | `true` | refuse pgwire connections that do not start TLS (`28000`) |
//! | `token_ttl_s` | int | `3600` | lifetime of a Flight SQL bearer token |
//! | `server_files.allow` | paths | `[]` | folders besides `<data_dir>/files` where every role may name files |
//! | `audit.enabled` | bool | `true` | record every statement and login in `<data_dir>/audit/` |
//! | `audit.max_file_mb` | integer | `64` | size at which an audit file is closed and a new one started |
//! | `audit.max_files` | integer | `16` | audit files kept (the oldest go first) |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use prognos_engine::config::{
    AuditConfig, EngineConfig, ModelsConfig, ServerFilesConfig, StorageConfig,
};
use prognos_engine::config::{Bootstrap, DEFAULT_SUPERUSER, OpenOptions, Secret};
use prognos_storage::stores::S3Settings;
use serde::{Deserialize, Serialize};

/// Full server configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the catalog, managed tables and models.
    pub data_dir: PathBuf,
    /// Load the demo dataset when the data dir has no tables.
    pub demo_data: bool,
    /// Postgres wire protocol frontend.
    pub pg: ListenConfig,
    /// Arrow Flight SQL frontend.
    pub flight: ListenConfig,
    /// HTTP endpoints (`/health`, `/metrics`).
    pub http: ListenConfig,
    /// Query engine settings.
    pub engine: EngineConfig,
    /// Where managed tables are stored.
    pub storage: StorageConfig,
    /// S3 access.
    pub s3: S3Settings,
    /// Imported models and their runtimes.
    pub models: ModelsConfig,
    /// How clients authenticate; unset: see [`crate::auth::Policy::resolve`].
    pub auth: Option<AuthMethod>,
    /// The bootstrap superuser's name.
    pub superuser: String,
    /// The bootstrap superuser's first password (the `PROGNOS_PASSWORD` variable sets it too).
    pub superuser_password: Option<Secret>,
    /// TLS certificate and key; unset: connections are not encrypted.
    pub tls: Option<TlsConfig>,
    /// How long a Flight SQL bearer token stays valid, in seconds.
    pub token_ttl_s: u64,
    /// Where roles other than superusers may name local files.
    pub server_files: ServerFilesConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// pgwire connections served at once; the next is refused with `53300`.
    pub max_connections: usize,
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum AuthMethod {
    /// Passwords, checked by SCRAM-SHA-256 (pgwire) and basic auth (Flight SQL).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// Every connection is trusted as the role it names.
    #[serde(rename = "none")]
    None,
}

/// TLS material, PEM files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Refuse pgwire connections that do not start TLS (PostgreSQL's `hostssl`); Flight SQL
    /// serves only TLS whenever TLS is configured.
    #[serde(default = "yes")]
    pub require: bool,
}

fn yes() -> bool {
    true
}

/// Where a frontend listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Socket address, `host:port`.
    pub listen: SocketAddr,
}

fn listen(addr: &str) -> ListenConfig {
    ListenConfig {
        listen: addr
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./prognos-data"),
            demo_data: true,
            pg: listen("127.0.0.1:5432"),
            flight: listen("127.0.0.1:50051"),
            http: listen("127.0.0.1:9187"),
            engine: EngineConfig::default(),
            storage: StorageConfig::default(),
            s3: S3Settings::default(),
            models: ModelsConfig::default(),
            auth: None,
            superuser: DEFAULT_SUPERUSER.to_string(),
            superuser_password: None,
            tls: None,
            token_ttl_s: 3600,
            server_files: ServerFilesConfig::default(),
            audit: AuditConfig::default(),
            max_connections: 100,
        }
    }
}

/// Errors while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file '{path}': {source}")]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// What the engine needs of this configuration to open.
    pub fn engine_options(&self) -> OpenOptions {
        OpenOptions {
            data_dir: self.data_dir.clone(),
            demo_data: self.demo_data,
            engine: self.engine.clone(),
            storage: self.storage.clone(),
            s3: self.s3.clone(),
            models: self.models.clone(),
            bootstrap: Bootstrap {
                name: self.superuser.clone(),
                password: self.superuser_password.clone(),
            },
            server_files: self.server_files.clone(),
            audit: self.audit.clone(),
        }
    }

    /// Load defaults, then `file` (if any), then `PROGNOS__…` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let overlay: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            merge(&mut value, overlay);
        }
        for (k, v) in env {
            if k == PASSWORD_VARIABLE {
                set_path(
                    &mut value,
                    &["superuser_password".to_string()],
                    toml::Value::String(v),
                );
                continue;
            }
            let Some(rest) = k.strip_prefix("PROGNOS__") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut value, &path, parse_scalar(&v));
        }
        value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))
    }
}

/// The variable that holds the bootstrap superuser's password.
pub const PASSWORD_VARIABLE: &str = "PROGNOS_PASSWORD";

/// Environment values are typed by their look: booleans, integers, otherwise strings.
fn parse_scalar(v: &str) -> toml::Value {
    if let Ok(b) = v.parse::<bool>() {
        toml::Value::Boolean(b)
    } else if let Ok(i) = v.parse::<i64>() {
        toml::Value::Integer(i)
    } else {
        toml::Value::String(v.to_string())
    }
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn set_path(value: &mut toml::Value, path: &[String], leaf: toml::Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let toml::Value::Table(t) = value else {
        return;
    };
    if rest.is_empty() {
        t.insert(first.clone(), leaf);
    } else {
        let child = t
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        set_path(child, rest, leaf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("p.toml");
        std::fs::write(
            &f,
            "data_dir = '/tmp/a'\n[pg]\nlisten = '0.0.0.0:6000'\n[s3]\nendpoint = 'http://x'\n",
        )
        .expect("write");
        let env = vec![
            (
                "PROGNOS__PG__LISTEN".to_string(),
                "127.0.0.1:7000".to_string(),
            ),
            ("PROGNOS__S3__ALLOW_HTTP".to_string(), "true".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&f), env).expect("load");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/a"));
        assert_eq!(c.pg.listen.port(), 7000);
        assert_eq!(c.s3.endpoint.as_deref(), Some("http://x"));
        assert!(c.s3.allow_http);
        assert_eq!(c.flight.listen.port(), 50051);
        assert_eq!(c.auth, None);
        assert_eq!(c.superuser, "prognos");
    }

    #[test]
    fn security_keys_load_and_the_password_stays_out_of_debug() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("p.toml");
        std::fs::write(
            &f,
            "auth = 'scram-sha-256'\nsuperuser = 'admin'\n[tls]\ncert_file = 'c.pem'\nkey_file = 'k.pem'\n",
        )
        .expect("write");
        let env = vec![("PROGNOS_PASSWORD".to_string(), "12345".to_string())];
        let c = Config::load(Some(&f), env).expect("load");
        assert_eq!(c.auth, Some(AuthMethod::ScramSha256));
        assert_eq!(c.superuser, "admin");
        assert_eq!(
            c.superuser_password.as_ref().map(|s| s.expose()),
            Some("12345")
        );
        assert!(!format!("{c:?}").contains("12345"));
        assert_eq!(
            c.tls.as_ref().map(|t| t.key_file.clone()),
            Some(PathBuf::from("k.pem"))
        );
        std::fs::write(&f, "auth = 'md5'\n").expect("write");
        assert!(matches!(
            Config::load(Some(&f), Vec::new()),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("p.toml");
        std::fs::write(&f, "nope = 1\n").expect("write");
        assert!(matches!(
            Config::load(Some(&f), Vec::new()),
            Err(ConfigError::Invalid(_))
        ));
    }
}
