//! `pg_class.relowner` and `pg_class.relacl` from prognos's owners and grants, so psql's `\dt`
//! shows each table's owner and `\dp` its privileges (datafusion-pg-catalog gives every
//! relation owner 0 and has no ACL column).
//!
//! `relacl` is written as PostgreSQL writes an `aclitem[]`: NULL while a table has no grants
//! (its owner's default privileges), otherwise the owner's entry first and then one per
//! grantee, `grantee=letters/grantor` (the grantor is the owner, `PUBLIC` has no name):
//! `{prognos=arwdD/prognos,alice=r/prognos}`. The letters are PostgreSQL's (`a` INSERT,
//! `r` SELECT, `w` UPDATE, `d` DELETE, `D` TRUNCATE) in its order. Role oids are
//! [`role_oid`]'s, the ones `pg_roles` lists; an object without a recorded owner (the catalog's
//! own tables, the demo data) belongs to the bootstrap superuser.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, ListBuilder, RecordBatch, StringBuilder,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::{Result as DfResult, plan_err};
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use prognos_catalog::RoleStore;
use prognos_catalog::grants::{Acl, PUBLIC, Privilege, Securable};

use super::role_tables::role_oid;

/// The privilege letters of a table ACL, in PostgreSQL's order.
const TABLE_LETTERS: &str = "arwdDxtm";

/// `pg_class` with `relowner` and `relacl` filled in (see the module documentation).
#[derive(Debug)]
pub(crate) struct PgClassWithAcl {
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    roles: Arc<RoleStore>,
    bootstrap: String,
    schema: SchemaRef,
}

impl PgClassWithAcl {
    /// `classes` (the library's `pg_class`) read with `namespaces` (its `pg_namespace`).
    pub(crate) fn new(
        classes: Arc<dyn TableProvider>,
        namespaces: Arc<dyn TableProvider>,
        roles: Arc<RoleStore>,
        bootstrap: &str,
    ) -> DfResult<Self> {
        let inner = classes.schema();
        for (column, ty) in [
            ("relname", DataType::Utf8),
            ("relnamespace", DataType::Int32),
            ("relowner", DataType::Int32),
        ] {
            if inner.field_with_name(column).ok().map(|f| f.data_type()) != Some(&ty) {
                return plan_err!("pg_class has no {column} column of type {ty}");
            }
        }
        let mut fields: Vec<Field> = inner
            .fields()
            .iter()
            .filter(|f| f.name() != "relacl")
            .map(|f| f.as_ref().clone())
            .collect();
        if inner.field_with_name("reloptions").is_err() {
            fields.push(Field::new("reloptions", text_array(), true));
        }
        fields.push(Field::new("relacl", text_array(), true));
        Ok(Self {
            classes,
            namespaces,
            roles,
            bootstrap: bootstrap.to_string(),
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// Every row of the table, owners and ACLs as the roles are now.
    async fn rows(&self, state: &dyn Session) -> DfResult<RecordBatch> {
        let namespaces = all_rows(self.namespaces.as_ref(), state).await?;
        let names = namespace_names(&namespaces)?;
        let classes = all_rows(self.classes.as_ref(), state).await?;
        let acl = self.roles.acl();
        let relname = classes
            .column_by_name("relname")
            .map(|c| c.as_string::<i32>());
        let relnamespace = classes
            .column_by_name("relnamespace")
            .map(|c| c.as_primitive::<Int32Type>());
        let (Some(relname), Some(relnamespace)) = (relname, relnamespace) else {
            return plan_err!("pg_class lacks relname or relnamespace");
        };
        let mut owners = Vec::with_capacity(classes.num_rows());
        let mut acls = ListBuilder::new(StringBuilder::new());
        for row in 0..classes.num_rows() {
            let schema = names.get(&relnamespace.value(row)).map(String::as_str);
            let table = schema.map(|s| Securable::table(s, relname.value(row)));
            let owner = table
                .as_ref()
                .and_then(|t| acl.owner(t))
                .unwrap_or(&self.bootstrap);
            owners.push(role_oid(owner, &self.bootstrap));
            match table.as_ref().map(|t| acl_items(&acl, t, owner)) {
                Some(items) if !items.is_empty() => {
                    for item in items {
                        acls.values().append_value(item);
                    }
                    acls.append(true);
                }
                _ => acls.append(false),
            }
        }
        let relowner: ArrayRef = Arc::new(Int32Array::from(owners));
        let relacl: ArrayRef = Arc::new(acls.finish());
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| -> DfResult<ArrayRef> {
                Ok(match f.name().as_str() {
                    "relowner" => Arc::clone(&relowner),
                    "relacl" => Arc::clone(&relacl),
                    name => match classes.column_by_name(name) {
                        Some(c) => Arc::clone(c),
                        None => datafusion::arrow::array::new_null_array(
                            f.data_type(),
                            classes.num_rows(),
                        ),
                    },
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

fn text_array() -> DataType {
    DataType::new_list(DataType::Utf8, true)
}

/// All rows of `table`, as one batch.
async fn all_rows(table: &dyn TableProvider, state: &dyn Session) -> DfResult<RecordBatch> {
    let plan = table.scan(state, None, &[], None).await?;
    let batches = collect(plan, state.task_ctx()).await?;
    Ok(concat_batches(&table.schema(), &batches)?)
}

/// `pg_namespace`'s oid → name.
fn namespace_names(namespaces: &RecordBatch) -> DfResult<HashMap<i32, String>> {
    let oid = namespaces.column_by_name("oid");
    let name = namespaces.column_by_name("nspname");
    let (Some(oid), Some(name)) = (oid, name) else {
        return plan_err!("pg_namespace lacks oid or nspname");
    };
    let (Some(oid), Some(name)) = (
        oid.as_primitive_opt::<Int32Type>(),
        name.as_string_opt::<i32>(),
    ) else {
        return plan_err!("pg_namespace's oid or nspname has an unexpected type");
    };
    Ok((0..namespaces.num_rows())
        .filter(|&i| oid.is_valid(i) && name.is_valid(i))
        .map(|i| (oid.value(i), name.value(i).to_string()))
        .collect())
}

/// The letters of `privileges`, in PostgreSQL's order (`UNMASK`'s `u` last).
fn acl_letters<'a>(privileges: impl IntoIterator<Item = &'a Privilege>) -> String {
    let mut found: Vec<char> = privileges.into_iter().map(Privilege::acl_letter).collect();
    found.sort_by_key(|c| TABLE_LETTERS.find(*c).unwrap_or(TABLE_LETTERS.len()));
    found.dedup();
    found.into_iter().collect()
}

/// The `aclitem`s of `table` owned by `owner`: empty while it has no grants.
fn acl_items(acl: &Acl, table: &Securable, owner: &str) -> Vec<String> {
    let Some(grants) = acl
        .grants_on(table)
        .filter(|g| g.values().any(|p| !p.is_empty()))
    else {
        return Vec::new();
    };
    let mut items = vec![format!(
        "{owner}={}/{owner}",
        acl_letters(&table.all_privileges())
    )];
    for (grantee, privileges) in grants {
        if grantee == owner || privileges.is_empty() {
            continue;
        }
        let name = if grantee == PUBLIC { "" } else { grantee };
        items.push(format!("{name}={}/{owner}", acl_letters(privileges)));
    }
    items
}

#[async_trait]
impl TableProvider for PgClassWithAcl {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.classes.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.rows(state).await?;
        MemTable::try_new(Arc::clone(&self.schema), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn acl_items_are_postgres_aclitems() {
        let mut acl = Acl::default();
        let t = Securable::table("public", "sales");
        assert!(acl_items(&acl, &t, "prognos").is_empty());
        acl.grant(
            &t,
            "alice",
            &BTreeSet::from([Privilege::Insert, Privilege::Select]),
        );
        acl.grant(&t, PUBLIC, &BTreeSet::from([Privilege::Select]));
        assert_eq!(
            acl_items(&acl, &t, "prognos"),
            ["prognos=arwdD/prognos", "alice=ar/prognos", "=r/prognos"]
        );
    }
}
