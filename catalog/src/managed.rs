//! Managed tables: Parquet files under the data dir, versioned by atomic manifests.
//!
//! Reads resolve the newest manifest and scan exactly its files through DataFusion's listing
//! table (so projection, predicate and row-group pruning work as for any Parquet table).
//! `INSERT` streams the new rows into fresh files and then commits a manifest that adds them;
//! `INSERT OVERWRITE` commits a manifest that replaces the file list.
//!
//! Inside a transaction block the engine wraps a table in a [`StagedTable`]: its inserts write
//! data files but commit nothing, handing the files to the transaction's [`WriteStage`]
//! instead, and its scans read the files the transaction sees. The transaction commits them
//! later under the table's [`CommitLock`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use prognos_storage::manifest::{DataFile, Manifest, TableStore, schema_to_columns};
use prognos_storage::parquet_files::{DEFAULT_ROWS_PER_FILE, write_data_files};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::CatalogResult;
use crate::group_commit::{self, CommitQueue, Queued, WriteRequest};
use prognos_storage::StorageError;

/// Shared state of one managed table (shared by the provider and its insert sinks).
#[derive(Debug)]
struct Inner {
    name: String,
    schema: SchemaRef,
    store: TableStore,
    /// URL of the table root, ending in `/` (e.g. `file:///data/tables/public/t/`).
    root_url: String,
    /// Serialises writers of this process; the manifest put also rejects foreign writers.
    commit_lock: Arc<Mutex<()>>,
    /// The newest manifest this process has seen. Only this process writes the table (a
    /// foreign writer's commit would conflict on the version number), so it is refreshed on
    /// our own commits and read from storage only when empty.
    cached: std::sync::RwLock<Option<Manifest>>,
    /// A small table's rows in memory, with the version they are of (see
    /// [`SMALL_TABLE_BYTES`]).
    rows: std::sync::RwLock<Option<(u64, Arc<Vec<datafusion::arrow::array::RecordBatch>>)>>,
    /// Writes waiting to be committed together (see [`crate::group_commit`]).
    queue: CommitQueue,
}

/// A table whose data files take at most this many bytes is served from memory once read:
/// keyed lookups on small tables (online prediction) then skip opening and decoding Parquet.
/// The rows are read again when a new version is committed.
pub const SMALL_TABLE_BYTES: u64 = 8 * 1024 * 1024;

/// A managed table (see the module docs).
#[derive(Debug, Clone)]
pub struct ManagedTable {
    inner: Arc<Inner>,
}

impl ManagedTable {
    /// Create a new, empty table: commits manifest version 1 with no files.
    pub async fn create(
        name: &str,
        schema: SchemaRef,
        store: TableStore,
        root_url: String,
    ) -> CatalogResult<Self> {
        let base = store.latest().await?.map(|m| m.version).unwrap_or(0);
        store
            .commit(base, schema_to_columns(&schema), Vec::new())
            .await?;
        Ok(Self::with_schema(name, schema, store, root_url))
    }

    /// Open an existing table from its newest manifest.
    pub async fn open(name: &str, store: TableStore, root_url: String) -> CatalogResult<Self> {
        let manifest = store.latest().await?.ok_or_else(|| {
            prognos_storage::StorageError::CorruptMetadata {
                path: store.root().to_string(),
                reason: "table has no committed manifest".into(),
            }
        })?;
        let schema = manifest.schema()?;
        Ok(Self::with_schema(name, schema, store, root_url))
    }

    fn with_schema(name: &str, schema: SchemaRef, store: TableStore, root_url: String) -> Self {
        let root_url = if root_url.ends_with('/') {
            root_url
        } else {
            format!("{root_url}/")
        };
        Self {
            inner: Arc::new(Inner {
                name: name.to_string(),
                schema,
                store,
                root_url,
                commit_lock: Arc::new(Mutex::new(())),
                cached: std::sync::RwLock::new(None),
                rows: std::sync::RwLock::new(None),
                queue: CommitQueue::default(),
            }),
        }
    }

    /// The version of the newest manifest this process has seen (committed or read), without
    /// touching storage; `None` before the table was first read.
    pub fn committed_version(&self) -> Option<u64> {
        self.inner
            .cached
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|m| m.version)
    }

    /// The table's storage.
    pub fn table_store(&self) -> &TableStore {
        &self.inner.store
    }

    /// Append the rows of `data` as one new table version; returns rows written.
    pub async fn append(&self, data: SendableRecordBatchStream) -> DfResult<u64> {
        self.inner.write(data, InsertOp::Append).await
    }

    /// Keep at most `max_rows` rows, the newest: commit a version without the oldest data
    /// files beyond that (whole files; the newest file is always kept) and return the files
    /// it no longer lists, for the caller to delete once no scan can be reading them.
    pub async fn keep_newest(&self, max_rows: u64) -> CatalogResult<Vec<DataFile>> {
        let lock = self.lock_commits().await;
        let Some(manifest) = lock.latest().await? else {
            return Ok(vec![]);
        };
        if manifest.rows() <= max_rows {
            return Ok(vec![]);
        }
        // Appends add files at the end: the newest are last.
        let mut kept_rows = 0u64;
        let mut split = manifest.files.len();
        for (i, f) in manifest.files.iter().enumerate().rev() {
            if split < manifest.files.len() && kept_rows + f.rows > max_rows {
                break;
            }
            kept_rows += f.rows;
            split = i;
        }
        let mut files = manifest.files;
        let kept = files.split_off(split);
        lock.commit(manifest.version, kept).await?;
        Ok(files)
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// What identifies the table's storage (its root URL): two handles on the same table
    /// compare equal here.
    pub fn key(&self) -> &str {
        &self.inner.root_url
    }

    /// The newest committed version.
    pub async fn manifest(&self) -> DfResult<Manifest> {
        self.current().await
    }

    /// A view of this table for a transaction: scans read `files` (the committed version when
    /// `None`) and inserts are handed to `stage` instead of being committed.
    pub fn staged(&self, files: Option<Vec<DataFile>>, stage: Arc<dyn WriteStage>) -> StagedTable {
        StagedTable {
            table: self.clone(),
            files,
            stage,
        }
    }

    /// Hold the table's commit lock: no other writer of this process commits a version until
    /// the returned lock is dropped.
    pub async fn lock_commits(&self) -> CommitLock {
        CommitLock {
            table: self.clone(),
            _guard: Arc::clone(&self.inner.commit_lock).lock_owned().await,
        }
    }

    async fn current(&self) -> DfResult<Manifest> {
        if let Some(m) = self
            .inner
            .cached
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(m.clone());
        }
        let m = self.inner.store.latest().await?.ok_or_else(|| {
            DataFusionError::Execution(format!(
                "table '{}' has no committed manifest",
                self.inner.name
            ))
        })?;
        *self.inner.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
        Ok(m)
    }

    async fn listing(&self, files: &[DataFile]) -> DfResult<ListingTable> {
        let urls = files
            .iter()
            .map(|f| ListingTableUrl::parse(format!("{}{}", self.inner.root_url, f.path)))
            .collect::<DfResult<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::clone(&self.inner.schema));
        ListingTable::try_new(config)
    }

    /// The rows of `manifest` (a small table's current version), read once per version.
    async fn rows_in_memory(
        &self,
        manifest: &Manifest,
        state: &dyn Session,
    ) -> DfResult<Arc<Vec<datafusion::arrow::array::RecordBatch>>> {
        if let Some((version, rows)) = self
            .inner
            .rows
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && *version == manifest.version
        {
            return Ok(Arc::clone(rows));
        }
        let plan = self
            .scan_files(&manifest.files, state, None, &[], None)
            .await?;
        let task = state.task_ctx();
        let batches = datafusion::physical_plan::collect(plan, task).await?;
        let rows = Arc::new(batches);
        *self.inner.rows.write().unwrap_or_else(|p| p.into_inner()) =
            Some((manifest.version, Arc::clone(&rows)));
        Ok(rows)
    }

    /// Scan exactly `files` (a version of this table).
    async fn scan_files(
        &self,
        files: &[DataFile],
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.inner.schema.project(p)?),
                None => Arc::clone(&self.inner.schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        self.listing(files)
            .await?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// A table's commit lock, held (see [`ManagedTable::lock_commits`]).
pub struct CommitLock {
    table: ManagedTable,
    _guard: OwnedMutexGuard<()>,
}

impl fmt::Debug for CommitLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitLock")
            .field("table", &self.table.inner.name)
            .finish()
    }
}

impl CommitLock {
    /// The newest version in storage (not the cached one).
    pub async fn latest(&self) -> CatalogResult<Option<Manifest>> {
        Ok(self.table.inner.store.latest().await?)
    }

    /// Commit `files` as the version after `base_version`; fails with a commit conflict when
    /// that version exists already.
    pub async fn commit(&self, base_version: u64, files: Vec<DataFile>) -> CatalogResult<Manifest> {
        let inner = &self.table.inner;
        let committed = inner
            .store
            .commit(base_version, schema_to_columns(&inner.schema), files)
            .await?;
        *inner.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(committed.clone());
        inner.prune_manifests(committed.version).await;
        Ok(committed)
    }
}

/// Where a transaction's writes go instead of a commit (the engine's transaction block).
#[async_trait]
pub trait WriteStage: Send + Sync + fmt::Debug {
    /// Record the files one statement wrote to `table`; `overwrite` means they replace the
    /// table's rows instead of adding to them.
    async fn stage(
        &self,
        table: &ManagedTable,
        files: Vec<DataFile>,
        overwrite: bool,
    ) -> DfResult<()>;
}

/// A managed table as a transaction sees it (see the module docs).
#[derive(Debug)]
pub struct StagedTable {
    table: ManagedTable,
    files: Option<Vec<DataFile>>,
    stage: Arc<dyn WriteStage>,
}

impl StagedTable {
    /// The managed table this is a view of.
    pub fn table(&self) -> &ManagedTable {
        &self.table
    }
}

#[async_trait]
impl TableProvider for StagedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table.inner.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match &self.files {
            Some(files) => {
                self.table
                    .scan_files(files, state, projection, filters, limit)
                    .await
            }
            None => self.table.scan(state, projection, filters, limit).await,
        }
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.table.supports_filters_pushdown(filters)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let sink = StagedSink {
            table: self.table.clone(),
            op: insert_op,
            stage: Arc::clone(&self.stage),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Insert target of a [`StagedTable`]: writes the files, then hands them to the stage.
struct StagedSink {
    table: ManagedTable,
    op: InsertOp,
    stage: Arc<dyn WriteStage>,
}

impl fmt::Debug for StagedSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedSink")
            .field("table", &self.table.inner.name)
            .finish()
    }
}

impl DisplayAs for StagedSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StagedSink: table={}", self.table.inner.name)
    }
}

#[async_trait]
impl DataSink for StagedSink {
    fn schema(&self) -> &SchemaRef {
        &self.table.inner.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let files = write_data_files(&self.table.inner.store, data, DEFAULT_ROWS_PER_FILE).await?;
        let rows = files.iter().map(|f| f.rows).sum();
        let overwrite = matches!(self.op, InsertOp::Overwrite | InsertOp::Replace);
        self.stage.stage(&self.table, files, overwrite).await?;
        Ok(rows)
    }
}

impl Inner {
    /// Write `data` as new files, then commit them with whatever other writes of this table
    /// are waiting (see [`crate::group_commit`]); returns the rows written.
    async fn write(
        self: &Arc<Self>,
        data: SendableRecordBatchStream,
        op: InsertOp,
    ) -> DfResult<u64> {
        let files = write_data_files(&self.store, data, DEFAULT_ROWS_PER_FILE).await?;
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        let overwrite = matches!(op, InsertOp::Overwrite | InsertOp::Replace);
        let ticket = self.queue.enqueue(WriteRequest { files, overwrite });
        let guard = Arc::clone(&self.commit_lock).lock_owned().await;
        let group = self.queue.take();
        if group.is_empty() {
            // An earlier writer took this request into its group, which has finished.
            drop(guard);
        } else {
            let leader = Arc::clone(self);
            tokio::spawn(async move {
                let outcome = leader.commit_group(&group).await;
                for q in group {
                    q.finish(&outcome);
                }
                drop(guard);
            });
        }
        ticket.outcome().await?;
        Ok(rows)
    }

    /// Commit `group` as one version on top of the newest one. Runs under the commit lock.
    async fn commit_group(&self, group: &[Queued]) -> Result<(), StorageError> {
        let result = self.commit_on_newest(group).await;
        if result.is_err() {
            // Read the newest version from storage next time.
            *self.cached.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        result
    }

    async fn commit_on_newest(&self, group: &[Queued]) -> Result<(), StorageError> {
        let cached = self
            .cached
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Only this process writes the table and every commit refreshes the cache, so it
        // holds the newest version; a foreign commit would still be caught by the manifest's
        // create-only put.
        let base = match cached {
            Some(m) => Some(m),
            None => self.store.latest().await?,
        };
        let (base_version, files) = match base {
            Some(m) => (m.version, m.files),
            None => (0, Vec::new()),
        };
        let files = group_commit::apply(files, group.iter().map(|q| &q.request));
        let committed = self
            .store
            .commit(base_version, schema_to_columns(&self.schema), files)
            .await?;
        let version = committed.version;
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(committed);
        self.prune_manifests(version).await;
        Ok(())
    }

    /// Remove the manifest that `version`'s commit superseded twice over. Best effort: a
    /// manifest left behind is never read (readers take the newest) and the start-up sweep
    /// removes it.
    async fn prune_manifests(&self, version: u64) {
        if let Err(e) = self.store.remove_superseded(version).await {
            tracing::warn!(error = %e, table = %self.name, "could not remove an old manifest");
        }
    }
}

#[async_trait]
impl TableProvider for ManagedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.inner.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let manifest = self.current().await?;
        let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
        if !manifest.files.is_empty() && bytes <= SMALL_TABLE_BYTES {
            let rows = self.rows_in_memory(&manifest, state).await?;
            let exec = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[rows.as_ref().clone()],
                Arc::clone(&self.inner.schema),
                projection.cloned(),
            )?;
            return Ok(exec);
        }
        self.scan_files(&manifest.files, state, projection, filters, limit)
            .await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Parquet pruning is best effort: DataFusion keeps the filter above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    fn statistics(&self) -> Option<Statistics> {
        None
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let sink = ManagedSink {
            inner: Arc::clone(&self.inner),
            op: insert_op,
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Insert target of a managed table.
struct ManagedSink {
    inner: Arc<Inner>,
    op: InsertOp,
}

impl fmt::Debug for ManagedSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedSink")
            .field("table", &self.inner.name)
            .finish()
    }
}

impl DisplayAs for ManagedSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManagedSink: table={}", self.inner.name)
    }
}

#[async_trait]
impl DataSink for ManagedSink {
    fn schema(&self) -> &SchemaRef {
        &self.inner.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        self.inner.write(data, self.op).await
    }
}
