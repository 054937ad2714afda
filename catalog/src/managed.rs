//! Managed tables: Parquet files under the data dir, versioned by atomic manifests.
//!
//! Reads resolve the newest manifest and scan exactly its files through DataFusion's listing
//! table (so projection, predicate and row-group pruning work as for any Parquet table).
//! `INSERT` streams the new rows into fresh files and then commits a manifest that adds them;
//! `INSERT OVERWRITE` commits a manifest that replaces the file list.

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
use prognos_storage::manifest::{Manifest, TableStore, schema_to_columns};
use prognos_storage::parquet_files::{DEFAULT_ROWS_PER_FILE, write_data_files};
use tokio::sync::Mutex;

use crate::error::CatalogResult;

/// Shared state of one managed table (shared by the provider and its insert sinks).
#[derive(Debug)]
struct Inner {
    name: String,
    schema: SchemaRef,
    store: TableStore,
    /// URL of the table root, ending in `/` (e.g. `file:///data/tables/public/t/`).
    root_url: String,
    /// Serialises writers of this process; the manifest put also rejects foreign writers.
    commit_lock: Mutex<()>,
    /// The newest manifest this process has seen. Only this process writes the table (a
    /// foreign writer's commit would conflict on the version number), so it is refreshed on
    /// our own commits and read from storage only when empty.
    cached: std::sync::RwLock<Option<Manifest>>,
}

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
                commit_lock: Mutex::new(()),
                cached: std::sync::RwLock::new(None),
            }),
        }
    }

    /// The table's storage.
    pub fn table_store(&self) -> &TableStore {
        &self.inner.store
    }

    /// Append the rows of `data` as one new table version; returns rows written.
    pub async fn append(&self, data: SendableRecordBatchStream) -> DfResult<u64> {
        self.inner.write(data, InsertOp::Append).await
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

    async fn listing(&self, manifest: &Manifest) -> DfResult<ListingTable> {
        let urls = manifest
            .files
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
}

impl Inner {
    async fn write(&self, data: SendableRecordBatchStream, op: InsertOp) -> DfResult<u64> {
        let files = write_data_files(&self.store, data, DEFAULT_ROWS_PER_FILE).await?;
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        let _guard = self.commit_lock.lock().await;
        let base = self.store.latest().await?;
        let (base_version, mut all_files) = match base {
            Some(m) => (m.version, m.files),
            None => (0, Vec::new()),
        };
        if matches!(op, InsertOp::Overwrite | InsertOp::Replace) {
            all_files.clear();
        }
        all_files.extend(files);
        let committed = self
            .store
            .commit(base_version, schema_to_columns(&self.schema), all_files)
            .await?;
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(committed);
        Ok(rows)
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
        if manifest.files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.inner.schema.project(p)?),
                None => Arc::clone(&self.inner.schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        self.listing(&manifest)
            .await?
            .scan(state, projection, filters, limit)
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
