//! The catalog a session sees: the shared catalog, changed by the session's open transaction
//! block (tables it created or dropped, managed tables with its staged writes).
//!
//! Each session's DataFusion state gets its own [`SessionCatalogList`]; lookups go through it
//! to the shared providers, and registrations pass straight through to them. Outside a block
//! every answer is the shared catalog's.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::common::Result as DfResult;

use super::TxnSlot;

/// A session's view of the shared catalog list.
#[derive(Debug)]
pub(crate) struct SessionCatalogList {
    shared: Arc<dyn CatalogProviderList>,
    txn: Arc<TxnSlot>,
}

impl SessionCatalogList {
    pub(crate) fn new(shared: Arc<dyn CatalogProviderList>, txn: Arc<TxnSlot>) -> Self {
        Self { shared, txn }
    }
}

impl CatalogProviderList for SessionCatalogList {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.shared.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.shared.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let shared = self.shared.catalog(name)?;
        Some(Arc::new(SessionCatalog {
            shared,
            txn: Arc::clone(&self.txn),
        }))
    }
}

/// A session's view of one catalog.
#[derive(Debug)]
struct SessionCatalog {
    shared: Arc<dyn CatalogProvider>,
    txn: Arc<TxnSlot>,
}

impl CatalogProvider for SessionCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.shared.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let shared = self.shared.schema(name)?;
        Some(Arc::new(SessionSchema {
            name: name.to_string(),
            shared,
            txn: Arc::clone(&self.txn),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        self.shared.register_schema(name, schema)
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        self.shared.deregister_schema(name, cascade)
    }
}

/// A session's view of one schema.
#[derive(Debug)]
struct SessionSchema {
    name: String,
    shared: Arc<dyn SchemaProvider>,
    txn: Arc<TxnSlot>,
}

#[async_trait]
impl SchemaProvider for SessionSchema {
    fn owner_name(&self) -> Option<&str> {
        self.shared.owner_name()
    }

    fn table_names(&self) -> Vec<String> {
        self.txn.table_names(&self.name, self.shared.table_names())
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if !self.txn.active() {
            return self.shared.table(name).await;
        }
        let committed = self.shared.table(name).await?;
        Ok(self.txn.resolve(&self.name, name, committed))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.shared.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.shared.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.txn
            .exists(&self.name, name, self.shared.table_exist(name))
    }
}
