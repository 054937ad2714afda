//! `pg_catalog` tables with the columns clients read that datafusion-pg-catalog's lack.
//!
//! The library's `pg_catalog` schema is wrapped; a table listed in [`MISSING_COLUMNS`] gets
//! those columns appended, NULL in every row — what PostgreSQL holds there for the objects
//! prognos has (no storage options, no ACLs). SQLAlchemy's index reflection reads
//! `pg_class.reloptions`, for example.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

/// A column some catalog table lacks: the table, the column, its type.
type MissingColumn = (&'static str, &'static str, fn() -> DataType);

/// Columns PostgreSQL's catalog tables have and the library's lack or gives another type
/// (then the column keeps its place, retyped and NULL).
const MISSING_COLUMNS: &[MissingColumn] = &[
    ("pg_class", "reloptions", text_array),
    ("pg_class", "relacl", text_array),
    // The library's is `text`; psql's `\dp` reads it with `array_to_string`.
    ("pg_attribute", "attacl", text_array),
];

fn text_array() -> DataType {
    DataType::new_list(DataType::Utf8, true)
}

/// The `pg_catalog` schema with the missing columns added (see the module docs).
/// `pg_roles` and `pg_auth_members` come from prognos's roles when it has them
/// ([`super::role_tables`]), and so do `pg_class`'s owners and ACLs ([`super::class_acl`]).
#[derive(Debug)]
pub(crate) struct PgCatalogSchema {
    inner: Arc<dyn SchemaProvider>,
    /// The roles and the bootstrap superuser's name.
    roles: Option<(Arc<prognos_catalog::RoleStore>, String)>,
}

impl PgCatalogSchema {
    pub(crate) fn new(inner: Arc<dyn SchemaProvider>) -> Self {
        Self { inner, roles: None }
    }

    /// Serve the role tables from `roles`.
    pub(crate) fn with_roles(
        mut self,
        roles: Arc<prognos_catalog::RoleStore>,
        bootstrap: &str,
    ) -> Self {
        self.roles = Some((roles, bootstrap.to_string()));
        self
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn owner_name(&self) -> Option<&str> {
        self.inner.owner_name()
    }

    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some((roles, bootstrap)) = &self.roles
            && super::role_tables::ROLE_TABLES.contains(&name)
        {
            return super::role_tables::role_table(roles, bootstrap, name);
        }
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        if name == "pg_class"
            && let Some((roles, bootstrap)) = &self.roles
            && let Some(namespaces) = self.inner.table("pg_namespace").await?
        {
            return Ok(Some(Arc::new(super::class_acl::PgClassWithAcl::new(
                table,
                namespaces,
                Arc::clone(roles),
                bootstrap,
            )?)));
        }
        let extra: Vec<Field> = MISSING_COLUMNS
            .iter()
            .filter(|(t, c, ty)| {
                *t == name
                    && table
                        .schema()
                        .field_with_name(c)
                        .map_or(true, |f| f.data_type() != &ty())
            })
            .map(|(_, c, ty)| Field::new(*c, ty(), true))
            .collect();
        if extra.is_empty() {
            return Ok(Some(table));
        }
        Ok(Some(Arc::new(WithNullColumns::new(table, extra))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// A table with extra or retyped columns that are NULL in every row.
#[derive(Debug)]
struct WithNullColumns {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    /// Per column of `schema`: its index in the inner table, `None` for a NULL column.
    sources: Vec<Option<usize>>,
}

impl WithNullColumns {
    /// `inner` with `extra`'s columns: one that `inner` has (by name) is retyped in place,
    /// the others are appended.
    fn new(inner: Arc<dyn TableProvider>, extra: Vec<Field>) -> Self {
        let inner_schema = inner.schema();
        let mut fields = Vec::new();
        let mut sources = Vec::new();
        for (i, f) in inner_schema.fields().iter().enumerate() {
            match extra.iter().find(|e| e.name() == f.name()) {
                Some(retyped) => {
                    fields.push(retyped.clone());
                    sources.push(None);
                }
                None => {
                    fields.push(f.as_ref().clone());
                    sources.push(Some(i));
                }
            }
        }
        for e in extra {
            if inner_schema.field_with_name(e.name()).is_err() {
                fields.push(e);
                sources.push(None);
            }
        }
        Self {
            inner,
            schema: Arc::new(Schema::new(fields)),
            sources,
        }
    }
}

#[async_trait]
impl TableProvider for WithNullColumns {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let inner_columns: Vec<usize> = wanted
            .iter()
            .filter_map(|&i| self.sources.get(i).copied().flatten())
            .collect();
        let input = self
            .inner
            .scan(state, Some(&inner_columns), &[], limit)
            .await?;
        let exprs = wanted
            .iter()
            .map(|&i| {
                let field = self.schema.field(i);
                let source = self.sources.get(i).copied().flatten();
                let expr: Arc<dyn PhysicalExpr> =
                    match source.and_then(|s| inner_columns.iter().position(|c| *c == s)) {
                        Some(pos) => Arc::new(Column::new(field.name(), pos)),
                        None => Arc::new(Literal::new(ScalarValue::try_from(field.data_type())?)),
                    };
                Ok((expr, field.name().clone()))
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
    }
}
