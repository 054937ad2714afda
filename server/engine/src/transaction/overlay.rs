//! The catalog a session sees: the shared catalog, changed by the session's open transaction
//! block (tables it created or dropped, managed tables with its staged writes).
//!
//! Each session's DataFusion state gets its own [`SessionCatalogList`]; lookups go through it
//! to the shared providers, and registrations pass straight through to them. Outside a block
//! every answer is the shared catalog's.
//!
//! The view also lists only the tables the session's role sees (holds some privilege on),
//! so `information_schema`, `pg_catalog` and Flight SQL's `GetTables` do not reveal the
//! others; looking a table up by name still finds it (using it is then `42501`, as in
//! PostgreSQL). A session has its own `pg_catalog`, built over this filtered view.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::common::Result as DfResult;

use prognos_catalog::Securable;
use prognos_catalog::grants::SessionRole;

use super::TxnSlot;

/// Schemas listed whole to every role (catalogs, which filter their own rows).
const LISTED_WHOLE: [&str; 3] = ["pg_catalog", "information_schema", crate::SYSTEM_SCHEMA];

/// What a session's view adds to the shared catalog.
#[derive(Debug, Clone)]
pub(crate) struct SessionView {
    /// The open transaction block.
    pub(crate) txn: Arc<TxnSlot>,
    /// Whose privileges decide what is listed.
    pub(crate) role: SessionRole,
    /// The session's own `pg_catalog` (see the module docs).
    pub(crate) pg_catalog: Option<Arc<dyn SchemaProvider>>,
    /// The key of the `hash` masking method ([`crate::masked_table`]).
    pub(crate) masking_key: prognos_catalog::masking::MaskingKey,
}

/// A session's view of the shared catalog list.
#[derive(Debug)]
pub(crate) struct SessionCatalogList {
    shared: Arc<dyn CatalogProviderList>,
    view: SessionView,
}

impl SessionCatalogList {
    pub(crate) fn new(shared: Arc<dyn CatalogProviderList>, view: SessionView) -> Self {
        Self { shared, view }
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
            view: self.view.clone(),
        }))
    }
}

/// A session's view of one catalog.
#[derive(Debug)]
struct SessionCatalog {
    shared: Arc<dyn CatalogProvider>,
    view: SessionView,
}

impl CatalogProvider for SessionCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.shared.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == "pg_catalog"
            && let Some(pg) = &self.view.pg_catalog
        {
            return Some(Arc::clone(pg));
        }
        let shared = self.shared.schema(name)?;
        Some(Arc::new(SessionSchema {
            name: name.to_string(),
            shared,
            view: self.view.clone(),
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
    view: SessionView,
}

#[async_trait]
impl SchemaProvider for SessionSchema {
    fn owner_name(&self) -> Option<&str> {
        self.shared.owner_name()
    }

    fn table_names(&self) -> Vec<String> {
        let mut names = self
            .view
            .txn
            .table_names(&self.name, self.shared.table_names());
        if !LISTED_WHOLE.contains(&self.name.as_str()) {
            let p = self.view.role.privileges();
            if !p.is_superuser() {
                names.retain(|n| p.sees(&Securable::table(&self.name, n)));
            }
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let table = if !self.view.txn.active() {
            self.shared.table(name).await?
        } else {
            let committed = self.shared.table(name).await?;
            self.view.txn.resolve(&self.name, name, committed)
        };
        // User tables are read through their masking policies (looked up at each scan).
        let Some(table) = table else {
            return Ok(None);
        };
        if LISTED_WHOLE.contains(&self.name.as_str()) {
            return Ok(Some(table));
        }
        Ok(Some(Arc::new(crate::masked_table::MaskedTable::new(
            table,
            Securable::table(&self.name, name),
            self.view.role.clone(),
            self.view.masking_key.clone(),
        ))))
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
        self.view
            .txn
            .exists(&self.name, name, self.shared.table_exist(name))
    }
}
