//! The durable catalog file.
//!
//! `catalog.json` lists every table with enough information to rebuild it at start-up: managed
//! tables by their storage root, external tables by the `CREATE EXTERNAL TABLE` text that created
//! them (replayed on start), views by their `CREATE VIEW` text. The file is replaced atomically
//! (write a temporary file, fsync, rename), so a crash leaves either the old or the new catalog.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, CatalogResult};

/// On-disk format version of `catalog.json`.
pub const CATALOG_FORMAT_VERSION: u32 = 1;

/// How a table is stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TableKind {
    /// Parquet files under the data dir managed by prognos; `root` is relative to the data dir.
    Managed {
        /// Table root relative to the data dir, e.g. `tables/public/sales`.
        root: String,
    },
    /// Data owned elsewhere (local path, S3, HDFS); re-created by replaying `sql`.
    External {
        /// The `CREATE EXTERNAL TABLE` statement as the user wrote it.
        sql: String,
    },
    /// A view; re-created by replaying `sql`.
    View {
        /// The `CREATE VIEW` statement as the user wrote it.
        sql: String,
    },
}

/// One table in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableEntry {
    /// Schema (namespace) name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Storage kind.
    #[serde(flatten)]
    pub kind: TableKind,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Contents of `catalog.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogFile {
    /// Format version (see [`CATALOG_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Tables keyed by `schema.name`.
    pub tables: BTreeMap<String, TableEntry>,
}

impl Default for CatalogFile {
    fn default() -> Self {
        Self {
            format_version: CATALOG_FORMAT_VERSION,
            tables: BTreeMap::new(),
        }
    }
}

/// The catalog file of a data dir, with serialised updates.
#[derive(Debug)]
pub struct PersistentCatalog {
    path: PathBuf,
    state: Mutex<CatalogFile>,
}

fn key(schema: &str, name: &str) -> String {
    format!("{schema}.{name}")
}

impl PersistentCatalog {
    /// Open (or create) the catalog of `data_dir`.
    pub fn open(data_dir: &Path) -> CatalogResult<Self> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("catalog.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: CatalogFile =
                    serde_json::from_slice(&bytes).map_err(|e| CatalogError::Corrupt {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                if file.format_version > CATALOG_FORMAT_VERSION {
                    return Err(CatalogError::Corrupt {
                        path: path.display().to_string(),
                        reason: format!(
                            "format {} is newer than this release understands ({CATALOG_FORMAT_VERSION})",
                            file.format_version
                        ),
                    });
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogFile::default(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            path,
            state: Mutex::new(state),
        })
    }

    /// Write the catalog as it is now to `dir/catalog.json` (for a backup).
    pub fn backup_to(&self, dir: &Path) -> CatalogResult<()> {
        let state = self.lock();
        write_json_atomically(&dir.join("catalog.json"), &*state)
    }

    /// Whether the catalog has no tables at all (a fresh data dir).
    pub fn is_empty(&self) -> bool {
        self.lock().tables.is_empty()
    }

    /// Every table, in name order.
    pub fn entries(&self) -> Vec<TableEntry> {
        self.lock().tables.values().cloned().collect()
    }

    /// Look one table up.
    pub fn get(&self, schema: &str, name: &str) -> Option<TableEntry> {
        self.lock().tables.get(&key(schema, name)).cloned()
    }

    /// Add a table and persist; fails if it exists unless `replace`.
    pub fn insert(&self, entry: TableEntry, replace: bool) -> CatalogResult<()> {
        let mut state = self.lock();
        let k = key(&entry.schema, &entry.name);
        if !replace && state.tables.contains_key(&k) {
            return Err(CatalogError::TableExists(k));
        }
        let mut next = state.clone();
        next.tables.insert(k, entry);
        self.write(&next)?;
        *state = next;
        Ok(())
    }

    /// Remove a table and persist; returns the removed entry.
    pub fn remove(&self, schema: &str, name: &str) -> CatalogResult<Option<TableEntry>> {
        let mut state = self.lock();
        let mut next = state.clone();
        let removed = next.tables.remove(&key(schema, name));
        if removed.is_some() {
            self.write(&next)?;
            *state = next;
        }
        Ok(removed)
    }

    /// Apply a transaction's table changes in one atomic write: `drops` are removed first
    /// (absent ones ignored), then `creates` are added, replacing entries of the same name.
    /// Replaying the same changes is harmless (crash recovery relies on that).
    pub fn apply(&self, drops: &[(String, String)], creates: &[TableEntry]) -> CatalogResult<()> {
        let mut state = self.lock();
        let mut next = state.clone();
        for (schema, name) in drops {
            next.tables.remove(&key(schema, name));
        }
        for entry in creates {
            next.tables
                .insert(key(&entry.schema, &entry.name), entry.clone());
        }
        if next != *state {
            self.write(&next)?;
            *state = next;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CatalogFile> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, file: &CatalogFile) -> CatalogResult<()> {
        write_json_atomically(&self.path, file)
    }
}

/// Replace the JSON file at `path` with `value` so that a crash leaves the old or the new file:
/// write a temporary file beside it, fsync it, rename it over, fsync the directory.
pub(crate) fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> CatalogResult<()> {
    Ok(prognos_storage::durable::write_atomically(
        path,
        &serde_json::to_vec_pretty(value)?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> TableEntry {
        TableEntry {
            schema: "public".into(),
            name: name.into(),
            kind: TableKind::Managed {
                root: format!("tables/public/{name}"),
            },
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let cat = PersistentCatalog::open(dir.path()).expect("open");
        assert!(cat.is_empty());
        cat.insert(entry("a"), false).expect("insert");
        cat.insert(
            TableEntry {
                kind: TableKind::External {
                    sql: "CREATE EXTERNAL TABLE b STORED AS CSV LOCATION 'x'".into(),
                },
                ..entry("b")
            },
            false,
        )
        .expect("insert b");
        assert!(matches!(
            cat.insert(entry("a"), false),
            Err(CatalogError::TableExists(_))
        ));
        drop(cat);
        let cat = PersistentCatalog::open(dir.path()).expect("reopen");
        assert_eq!(cat.entries().len(), 2);
        cat.remove("public", "a").expect("remove");
        let cat = PersistentCatalog::open(dir.path()).expect("reopen");
        assert_eq!(cat.entries().len(), 1);
        assert!(cat.get("public", "b").is_some());
    }

    #[test]
    fn apply_is_atomic_and_replayable() {
        let dir = tempfile::tempdir().expect("tmp");
        let cat = PersistentCatalog::open(dir.path()).expect("open");
        cat.insert(entry("a"), false).expect("insert");
        let drops = vec![("public".to_string(), "a".to_string())];
        let creates = vec![entry("b"), entry("c")];
        cat.apply(&drops, &creates).expect("apply");
        cat.apply(&drops, &creates).expect("replay");
        let cat = PersistentCatalog::open(dir.path()).expect("reopen");
        let names: Vec<String> = cat.entries().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["b", "c"]);
    }

    #[test]
    fn corrupt_file_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("catalog.json"), b"{not json").expect("write");
        assert!(matches!(
            PersistentCatalog::open(dir.path()),
            Err(CatalogError::Corrupt { .. })
        ));
    }
}
