//! `system.masking_policies`: one row per masking policy — `name`, `schema_name`,
//! `table_name`, `column_name`, `method` — of the tables the reading role sees (the role of
//! the session that runs the scan), read from the roles' store when the scan is planned.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use prognos_catalog::grants::SessionRole;
use prognos_catalog::{RoleStore, Securable};

/// The name of the table in the `system` schema.
pub(crate) const POLICY_TABLE: &str = "masking_policies";

/// The table (see the module docs).
#[derive(Debug)]
pub(crate) struct PolicyTable {
    roles: Arc<RoleStore>,
    schema: SchemaRef,
}

impl PolicyTable {
    pub(crate) fn new(roles: Arc<RoleStore>) -> Self {
        let text = |n: &str| Field::new(n, DataType::Utf8, false);
        Self {
            roles,
            schema: Arc::new(Schema::new(vec![
                text("name"),
                text("schema_name"),
                text("table_name"),
                text("column_name"),
                text("method"),
            ])),
        }
    }
}

#[async_trait]
impl TableProvider for PolicyTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let privileges = state
            .config()
            .get_extension::<SessionRole>()
            .map(|r| r.privileges());
        let mut rows: Vec<[String; 5]> = vec![];
        for (object, policy) in self.roles.acl().masks() {
            if privileges.as_ref().is_some_and(|p| !p.sees(&object)) {
                continue;
            }
            let Securable::Table { schema, name } = object else {
                continue;
            };
            rows.push([
                policy.name,
                schema,
                name,
                policy.column,
                policy.method.to_string(),
            ]);
        }
        let columns: Vec<ArrayRef> = (0..5)
            .map(|i| {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r[i]))) as ArrayRef
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}
