//! Tables as a session reads them: through their masking policies.
//!
//! A session's catalog view ([`crate::transaction::overlay`]) hands out every user table
//! wrapped in a [`MaskedTable`]. Its scan looks up, when the scan is planned, the table's
//! policies and which of them apply to the role of the session that runs the scan
//! ([`Privileges::masks_for`](prognos_catalog::Privileges::masks_for)), and masks those columns
//! right above the table's own scan, so every consumer — query results, `COPY … TO`, Flight
//! SQL, `CREATE TABLE … AS`, the training query of `CREATE MODEL`, the relation arguments of
//! the model functions, views — gets masked values. Both are looked up then, not when the
//! wrapper was made, so a view planned by its owner (or before a policy existed) masks for
//! the role that reads it. Filters on a masked column are never pushed into the table's
//! scan: they run above the masking, on masked values, so a predicate cannot probe the
//! hidden ones.

use std::any::Any;
use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Constraints, Result as DfResult, Statistics};
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableProviderFilterPushDown, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use prognos_catalog::Securable;
use prognos_catalog::grants::SessionRole;
use prognos_catalog::masking::{MaskMethod, MaskPolicy, MaskingKey, mask};

/// A table read through its masking policies (see the module docs).
#[derive(Debug)]
pub(crate) struct MaskedTable {
    inner: Arc<dyn TableProvider>,
    table: Securable,
    /// The role of the session that looked the table up: the policies' source, and whose
    /// privileges apply when a scan's session carries no role.
    role: SessionRole,
    key: MaskingKey,
}

impl MaskedTable {
    pub(crate) fn new(
        inner: Arc<dyn TableProvider>,
        table: Securable,
        role: SessionRole,
        key: MaskingKey,
    ) -> Self {
        Self {
            inner,
            table,
            role,
            key,
        }
    }

    /// The table underneath.
    pub(crate) fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn policies(&self) -> Vec<MaskPolicy> {
        self.role.policies_on(&self.table)
    }
}

/// The table provider underneath a session's masking wrapper (itself when there is none).
pub(crate) fn unmasked(provider: &Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
    let any: &dyn Any = provider.as_ref();
    match any.downcast_ref::<MaskedTable>() {
        Some(m) => Arc::clone(m.inner()),
        None => Arc::clone(provider),
    }
}

#[async_trait]
impl TableProvider for MaskedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    /// A view's plan, which the planner puts in the statement's — only for a role that may
    /// read the view: for any other the view stays a scan of its own, which the privilege
    /// check refuses (`42501`), as it does the tables a view reads for a role without
    /// `SELECT` on them.
    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        let plan = self.inner.get_logical_plan()?;
        self.role
            .privileges()
            .has(&self.table, prognos_catalog::Privilege::Select)
            .then_some(plan)
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let policies = self.policies();
        let touches_masked = |f: &Expr| {
            f.column_refs()
                .iter()
                .any(|c| policies.iter().any(|p| p.column == c.name))
        };
        let passable: Vec<&Expr> = filters
            .iter()
            .copied()
            .filter(|f| !touches_masked(f))
            .collect();
        let mut inner = self.inner.supports_filters_pushdown(&passable)?.into_iter();
        Ok(filters
            .iter()
            .map(|f| {
                if touches_masked(f) {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    inner
                        .next()
                        .unwrap_or(TableProviderFilterPushDown::Unsupported)
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, projection, filters, limit).await?;
        if self.policies().is_empty() {
            return Ok(input);
        }
        // The role of the session running the scan (a view's reader, not its owner).
        let role = state
            .config()
            .get_extension::<SessionRole>()
            .map(|r| r.as_ref().clone())
            .unwrap_or_else(|| self.role.clone());
        let applying = role.privileges().masks_for(&self.table);
        if applying.is_empty() {
            return Ok(input);
        }
        let schema = input.schema();
        let config = Arc::new(state.config_options().clone());
        let exprs = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), i));
                let expr = match applying.iter().find(|p| &p.column == field.name()) {
                    Some(policy) => Arc::new(ScalarFunctionExpr::new(
                        "prognos_mask",
                        Arc::new(ScalarUDF::new_from_impl(MaskFunction {
                            method: policy.method.clone(),
                            nullable: field.is_nullable(),
                            key: self.key.clone(),
                            signature: Signature::any(1, Volatility::Immutable),
                        })),
                        vec![column],
                        Arc::clone(field),
                        Arc::clone(&config),
                    )) as Arc<dyn PhysicalExpr>,
                    None => column,
                };
                (expr, field.name().clone())
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner.insert_into(state, input, insert_op).await
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner.delete_from(state, filters).await
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner.update(state, assignments, filters).await
    }

    async fn truncate(&self, state: &dyn Session) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner.truncate(state).await
    }
}

/// One policy's masking of one column, as a physical expression's function.
#[derive(Debug)]
struct MaskFunction {
    method: MaskMethod,
    /// Whether the column may hold NULL (else `redact` gives the type's zero value).
    nullable: bool,
    key: MaskingKey,
    signature: Signature,
}

impl PartialEq for MaskFunction {
    fn eq(&self, other: &Self) -> bool {
        self.method == other.method && self.nullable == other.nullable
    }
}
impl Eq for MaskFunction {}
impl Hash for MaskFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.method.hash(state);
    }
}

impl ScalarUDFImpl for MaskFunction {
    fn name(&self) -> &str {
        "prognos_mask"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let values = match args.args.first() {
            Some(v) => v.to_array(args.number_rows)?,
            None => return datafusion::common::exec_err!("prognos_mask takes one column"),
        };
        Ok(ColumnarValue::Array(mask(
            &self.method,
            &self.key,
            &values,
            self.nullable,
        )?))
    }
}
