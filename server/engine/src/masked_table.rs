//! Tables with masking policies, as a session reads them.
//!
//! A session's catalog view ([`crate::transaction::overlay`]) hands out a table that has
//! masking policies wrapped in a [`MaskedTable`]. Its scan asks, at the moment the scan is
//! planned, which policies apply to the session's role
//! ([`Privileges::masks_for`](prognos_catalog::Privileges::masks_for)) and masks those columns
//! right above the table's own scan, so every consumer — query results, `COPY … TO`, Flight
//! SQL, `CREATE TABLE … AS`, the training query of `CREATE MODEL`, the relation arguments of
//! the model functions — gets masked values. Filters on a masked column are never pushed
//! into the table's scan: they run above the masking, on masked values, so a predicate cannot
//! probe the hidden ones.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, Statistics};
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
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

/// A table with masking policies, for one session (see the module docs).
#[derive(Debug)]
pub(crate) struct MaskedTable {
    inner: Arc<dyn TableProvider>,
    table: Securable,
    /// Every policy of the table (which of them apply is decided per scan).
    policies: Vec<MaskPolicy>,
    role: SessionRole,
    key: MaskingKey,
}

impl MaskedTable {
    pub(crate) fn new(
        inner: Arc<dyn TableProvider>,
        table: Securable,
        policies: Vec<MaskPolicy>,
        role: SessionRole,
        key: MaskingKey,
    ) -> Self {
        Self {
            inner,
            table,
            policies,
            role,
            key,
        }
    }

    /// The table underneath.
    pub(crate) fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn masks_column(&self, name: &str) -> bool {
        self.policies.iter().any(|p| p.column == name)
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

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let touches_masked = |f: &Expr| f.column_refs().iter().any(|c| self.masks_column(&c.name));
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
        let applying = self.role.privileges().masks_for(&self.table);
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
