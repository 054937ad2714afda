//! Versioned table manifests with atomic commits.
//!
//! A managed table lives under one root (`<root>/data/*.parquet`, `<root>/_manifest/*.json`).
//! Writers first upload new data files, then create manifest `v<N+1>` with a create-if-absent
//! put. A reader takes the highest complete manifest version. A writer that dies before the
//! manifest put leaves only unreferenced files, never a half-visible table; two writers racing
//! for the same version get a [`StorageError::CommitConflict`] instead of losing data. Only the
//! newest manifest and the one before it are kept (see [`TableStore::remove_superseded`]), so a
//! writer must check the newest version under its commit lock rather than rely on the put to
//! reject a stale base.

use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{StorageError, StorageResult};

/// On-disk format version of manifests written by this release.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

const MANIFEST_DIR: &str = "_manifest";
/// Folder of a table root that holds its Parquet data files.
pub const DATA_DIR: &str = "data";

/// One column of a table schema as stored in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Arrow data type in its textual form (`Int64`, `Utf8`, `Timestamp(µs, "UTC")` …).
    pub data_type: String,
    /// Whether NULLs are allowed.
    pub nullable: bool,
}

/// A Parquet file that belongs to a table version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataFile {
    /// Path relative to the table root, e.g. `data/3f…e1.parquet`.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// One committed version of a table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Format version of this file (see [`MANIFEST_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Table version, starting at 1.
    pub version: u64,
    /// Table schema.
    pub columns: Vec<ColumnDef>,
    /// Data files of this version.
    pub files: Vec<DataFile>,
    /// RFC 3339 commit time.
    pub committed_at: String,
}

impl Manifest {
    /// Total rows over all files.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// The Arrow schema stored in the manifest.
    pub fn schema(&self) -> StorageResult<SchemaRef> {
        columns_to_schema(&self.columns)
    }
}

/// Encode an Arrow schema as manifest columns.
pub fn schema_to_columns(schema: &Schema) -> Vec<ColumnDef> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnDef {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// Decode manifest columns into an Arrow schema.
pub fn columns_to_schema(columns: &[ColumnDef]) -> StorageResult<SchemaRef> {
    let fields = columns
        .iter()
        .map(|c| {
            let dt =
                DataType::from_str(&c.data_type).map_err(|e| StorageError::CorruptMetadata {
                    path: c.name.clone(),
                    reason: format!("unknown data type '{}': {e}", c.data_type),
                })?;
            Ok(Field::new(&c.name, dt, c.nullable))
        })
        .collect::<StorageResult<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Where the manifest of `version` lies, relative to the table root.
pub fn manifest_file_name(version: u64) -> String {
    format!("{MANIFEST_DIR}/v{version:020}.json")
}

/// Access to the manifests and data files of one table root in an object store.
#[derive(Debug, Clone)]
pub struct TableStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

impl TableStore {
    /// A table rooted at `root` inside `store`.
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        Self { store, root }
    }

    /// The object store holding the table.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The table root inside the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Full object path of a file given relative to the root.
    pub fn child(&self, relative: &str) -> Path {
        let mut p = self.root.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    fn manifest_path(&self, version: u64) -> Path {
        self.child(&manifest_file_name(version))
    }

    /// The newest committed manifest, or `None` for a table that was never committed.
    pub async fn latest(&self) -> StorageResult<Option<Manifest>> {
        // A commit removes the manifest two versions back (see [`Self::remove_superseded`]):
        // one that vanished between the listing and the read was superseded meanwhile, so
        // list again.
        let mut attempts = 0;
        loop {
            let Some(path) = self.newest_manifest_path().await? else {
                return Ok(None);
            };
            match self.store.get(&path).await {
                Ok(found) => return decode_manifest(&path, &found.bytes().await?).map(Some),
                Err(object_store::Error::NotFound { .. }) if attempts < 3 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The manifest versions in storage, lowest first.
    async fn manifest_versions(&self) -> StorageResult<Vec<(u64, Path)>> {
        let prefix = self.root.clone().join(MANIFEST_DIR);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut versions: Vec<(u64, Path)> = metas
            .iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let digits = name.strip_prefix('v')?.strip_suffix(".json")?;
                digits.parse::<u64>().ok().map(|v| (v, m.location.clone()))
            })
            .collect();
        versions.sort_by_key(|(v, _)| *v);
        Ok(versions)
    }

    async fn newest_manifest_path(&self) -> StorageResult<Option<Path>> {
        Ok(self.manifest_versions().await?.pop().map(|(_, p)| p))
    }

    /// After committing `version`, remove the manifest of `version - 2`. Only the newest
    /// manifest is ever read; the one before it stays for a reader that listed the folder
    /// just before this commit. Without this a table kept one manifest per commit, each
    /// listing every data file: storage quadratic in the number of `INSERT`s.
    pub async fn remove_superseded(&self, version: u64) -> StorageResult<()> {
        let Some(old) = version.checked_sub(2).filter(|v| *v > 0) else {
            return Ok(());
        };
        match self.store.delete(&self.manifest_path(old)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove every manifest older than the one before the newest (what [`Self::remove_superseded`]
    /// left because of a crash, or tables written before it existed); returns how many.
    pub async fn remove_all_superseded(&self) -> StorageResult<usize> {
        let versions = self.manifest_versions().await?;
        let Some(&(newest, _)) = versions.last() else {
            return Ok(0);
        };
        let mut removed = 0;
        for (v, path) in versions {
            if v + 1 < newest {
                self.store.delete(&path).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Commit a new version on top of `base` (the version the writer started from).
    ///
    /// Fails with [`StorageError::CommitConflict`] when another writer committed that version.
    pub async fn commit(
        &self,
        base_version: u64,
        columns: Vec<ColumnDef>,
        files: Vec<DataFile>,
    ) -> StorageResult<Manifest> {
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            version: base_version + 1,
            columns,
            files,
            committed_at: now_rfc3339(),
        };
        let path = self.manifest_path(manifest.version);
        let body = serde_json::to_vec(&manifest)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(manifest),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StorageError::CommitConflict {
                path: self.root.to_string(),
                version: manifest.version,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove every object under the table root (used by `DROP TABLE` after the catalog commit).
    pub async fn delete_all(&self) -> StorageResult<()> {
        let metas: Vec<_> = self.store.list(Some(&self.root)).try_collect().await?;
        for m in metas {
            self.store.delete(&m.location).await?;
        }
        Ok(())
    }
}

/// Decode the manifest read from `path`.
fn decode_manifest(path: &Path, bytes: &[u8]) -> StorageResult<Manifest> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| StorageError::CorruptMetadata {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    if manifest.format_version > MANIFEST_FORMAT_VERSION {
        return Err(StorageError::CorruptMetadata {
            path: path.to_string(),
            reason: format!(
                "manifest format {} is newer than this release understands ({})",
                manifest.format_version, MANIFEST_FORMAT_VERSION
            ),
        });
    }
    Ok(manifest)
}

/// Current time in RFC 3339 (UTC), without pulling a date crate into storage.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    datafusion::arrow::temporal_conversions::timestamp_s_to_datetime(secs)
        .map(|dt| format!("{}Z", dt.format("%Y-%m-%dT%H:%M:%S")))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    Some("UTC".into()),
                ),
                true,
            ),
        ])
    }

    #[test]
    fn schema_round_trips() {
        let s = schema();
        let back = columns_to_schema(&schema_to_columns(&s)).expect("decode");
        assert_eq!(back.as_ref(), &s);
    }

    #[tokio::test]
    async fn commits_are_versioned_and_conflicts_detected() {
        let t = TableStore::new(Arc::new(InMemory::new()), Path::from("t"));
        assert!(t.latest().await.expect("latest").is_none());
        let cols = schema_to_columns(&schema());
        let m1 = t.commit(0, cols.clone(), vec![]).await.expect("v1");
        assert_eq!(m1.version, 1);
        let f = DataFile {
            path: "data/a.parquet".into(),
            rows: 3,
            bytes: 10,
        };
        let m2 = t.commit(1, cols.clone(), vec![f]).await.expect("v2");
        assert_eq!(t.latest().await.expect("latest"), Some(m2.clone()));
        assert_eq!(m2.rows(), 3);
        let err = t.commit(1, cols, vec![]).await.expect_err("conflict");
        assert!(matches!(
            err,
            StorageError::CommitConflict { version: 2, .. }
        ));
    }

    async fn versions(t: &TableStore) -> Vec<u64> {
        t.manifest_versions()
            .await
            .expect("list")
            .into_iter()
            .map(|(v, _)| v)
            .collect()
    }

    #[tokio::test]
    async fn only_the_newest_two_manifests_are_kept() {
        let t = TableStore::new(Arc::new(InMemory::new()), Path::from("t"));
        let cols = schema_to_columns(&schema());
        for v in 0..6 {
            t.commit(v, cols.clone(), vec![]).await.expect("commit");
        }
        // A table from before pruning: six manifests; the sweep leaves v5 and v6.
        assert_eq!(t.remove_all_superseded().await.expect("sweep"), 4);
        let kept = versions(&t).await;
        assert_eq!(kept, [5, 6]);
        let m7 = t.commit(6, cols, vec![]).await.expect("v7");
        t.remove_superseded(7).await.expect("prune");
        t.remove_superseded(7)
            .await
            .expect("pruning twice is harmless");
        let kept = versions(&t).await;
        assert_eq!(kept, [6, 7]);
        assert_eq!(t.latest().await.expect("latest"), Some(m7));
    }
}
