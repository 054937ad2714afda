//! Physical plans of prepared statements, reused across executions with new parameter values.
//!
//! A prepared statement keeps its logical plan optimized with its parameters unbound; without
//! this module every execution still binds the values into that plan and runs DataFusion's
//! physical planner and its optimizer rules again — for a keyed lookup most of the server's
//! time. DataFusion's physical planner does not take placeholders, so the template is planned
//! with each `$n` replaced by a [`ParamMarker`] call (a volatile function of the parameter's
//! type, which no rule folds or moves), and an execution copies the plan with the markers
//! replaced by the bound values as literals. Only the nodes that hold the markers (and their
//! ancestors) are rebuilt.
//!
//! A template is made only where reusing it cannot change a result:
//! * every table the plan reads is a managed table, and the template remembers each one's
//!   committed version: a commit to any of them (INSERT, COPY, another session's transaction)
//!   makes the next execution plan again, since a scan holds the files or rows it planned;
//! * the plan's nodes are the stateless ones a lookup needs (projection, filter, scan, limit,
//!   repartition, coalesce) — no join, sort or aggregate, whose dynamic filters and buffers
//!   live in the plan — and the markers sit only in filters and projections, which can be
//!   rebuilt with literals;
//! * every parameter's type is known, and the session's state (settings, functions) is the
//!   one the template was planned with.
//!
//! Otherwise the statement runs as before: bind, then plan.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr::{Placeholder, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::repartition::RepartitionExec;
use prognos_catalog::ManagedTable;
use prognos_udfs::read_ahead::ReadAheadExec;

/// Executions of prepared statements that planned a template.
static PLANNED: AtomicU64 = AtomicU64::new(0);
/// Executions of prepared statements that reused a template.
static REUSED: AtomicU64 = AtomicU64::new(0);

/// How many prepared executions planned a physical template and how many reused one, since
/// the process started (the server's `/metrics`).
pub fn template_counts() -> (u64, u64) {
    (
        PLANNED.load(Ordering::Relaxed),
        REUSED.load(Ordering::Relaxed),
    )
}

/// Count an execution that planned a template (`reused` false) or reused one.
pub(crate) fn count(reused: bool) {
    let counter = if reused { &REUSED } else { &PLANNED };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A prepared statement's physical plan, planned once, and what it was planned against.
#[derive(Debug)]
pub(crate) struct Template {
    plan: Arc<dyn ExecutionPlan>,
    /// The managed tables the plan reads, each with the committed version it was planned at.
    tables: Vec<(ManagedTable, u64)>,
    /// The session state version ([`crate::session::Session::planning_state`]) planned with.
    state_version: u64,
}

/// The template slot of one prepared statement: empty until the first execution, then a
/// template or the knowledge that the statement cannot have one.
#[derive(Debug, Default)]
pub(crate) struct TemplateSlot(Mutex<Slot>);

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Untried,
    Ready(Arc<Template>),
    /// The plan's shape rules a template out (see the module docs); tables changing does not
    /// change that, so it is not tried again.
    Unsupported,
}

impl TemplateSlot {
    /// The template, when it is still valid for `state_version` and the tables' versions.
    pub(crate) fn valid(&self, state_version: u64) -> Option<Arc<Template>> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Slot::Ready(t) = &*slot else {
            return None;
        };
        let current = t.state_version == state_version
            && t.tables
                .iter()
                .all(|(table, v)| table.committed_version() == Some(*v));
        current.then(|| Arc::clone(t))
    }

    /// Whether making a template is worth trying.
    pub(crate) fn worth_trying(&self) -> bool {
        !matches!(
            *self.0.lock().unwrap_or_else(|p| p.into_inner()),
            Slot::Unsupported
        )
    }

    fn set(&self, slot: Slot) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = slot;
    }
}

/// A plan made ready to be planned as a template, or why not.
pub(crate) enum Prepared {
    /// The plan with markers for its parameters, and the managed tables it reads with their
    /// versions (read before planning, so a commit racing with the planner only makes the
    /// template stale).
    Marked(LogicalPlan, Vec<(ManagedTable, u64)>),
    /// A table's version is not known before its first read: try again next time.
    NotYet,
    /// The plan cannot have a template (see the module docs), or reads no table at all (the
    /// one-row path answers those without planning).
    Never,
}

/// See [`Prepared`].
pub(crate) fn prepare(plan: &LogicalPlan, params: &[Option<DataType>]) -> Result<Prepared> {
    let Some(types) = params.iter().cloned().collect::<Option<Vec<_>>>() else {
        return Ok(Prepared::Never);
    };
    let tables = match managed_tables(plan)? {
        Tables::Managed(t) if !t.is_empty() => t,
        Tables::Managed(_) | Tables::Other => return Ok(Prepared::Never),
        Tables::Unread => return Ok(Prepared::NotYet),
    };
    let marked = plan
        .clone()
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::Placeholder(Placeholder { id, .. }) => {
                        let index = parameter_index(&id)?;
                        let Some(data_type) = types.get(index) else {
                            return exec_err!("parameter {id} has no type");
                        };
                        Ok(Transformed::yes(ParamMarker::call(
                            index,
                            data_type.clone(),
                        )))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })?
        .data;
    Ok(Prepared::Marked(marked, tables))
}

/// Keep `physical` (planned from [`prepare`]'s plan) in `slot` when its shape allows reuse.
/// Returns the template, or `None` after recording that this statement cannot have one.
pub(crate) fn store(
    slot: &TemplateSlot,
    physical: Arc<dyn ExecutionPlan>,
    tables: Vec<(ManagedTable, u64)>,
    state_version: u64,
) -> Result<Option<Arc<Template>>> {
    if !reusable(&physical)? {
        slot.set(Slot::Unsupported);
        return Ok(None);
    }
    let template = Arc::new(Template {
        plan: physical,
        tables,
        state_version,
    });
    slot.set(Slot::Ready(Arc::clone(&template)));
    Ok(Some(template))
}

/// Record that this statement's plan cannot become a template.
pub(crate) fn unsupported(slot: &TemplateSlot) {
    slot.set(Slot::Unsupported);
}

impl Template {
    /// The plan with `values` (already of the parameters' types) in place of the markers.
    pub(crate) fn bind(&self, values: &[ScalarValue]) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = Arc::clone(&self.plan).transform_up(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>()
                && has_marker(filter.predicate())?
            {
                let predicate = with_values(filter.predicate(), values)?;
                let rebuilt = FilterExecBuilder::from(filter)
                    .with_predicate(predicate)
                    .build()?;
                return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
            }
            if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
                let mut marked = false;
                for e in projection.expr() {
                    marked |= has_marker(&e.expr)?;
                }
                if marked {
                    let exprs = projection
                        .expr()
                        .iter()
                        .map(|e| {
                            Ok(ProjectionExpr::new(
                                with_values(&e.expr, values)?,
                                e.alias.clone(),
                            ))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let rebuilt = ProjectionExec::try_new_with_schema_metadata(
                        exprs,
                        Arc::clone(projection.input()),
                        projection.schema().as_ref(),
                    )?;
                    return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
                }
            }
            Ok(Transformed::no(node))
        })?;
        Ok(plan.data)
    }
}

/// `$n` → `n - 1`.
fn parameter_index(id: &str) -> Result<usize> {
    match id.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if n >= 1 => Ok(n - 1),
        _ => exec_err!("invalid parameter {id}"),
    }
}

/// What a plan reads.
enum Tables {
    /// Managed tables only, with their committed versions.
    Managed(Vec<(ManagedTable, u64)>),
    /// A managed table whose version is not known before its first read.
    Unread,
    /// Something else: an external or system table, a table function.
    Other,
}

fn managed_tables(plan: &LogicalPlan) -> Result<Tables> {
    let mut tables = vec![];
    let mut outcome = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let provider = crate::masked_table::unmasked(&source_as_provider(&scan.source)?);
            let any: &dyn Any = provider.as_ref();
            match any.downcast_ref::<ManagedTable>() {
                Some(t) => match t.committed_version() {
                    Some(v) => tables.push((t.clone(), v)),
                    None => outcome = Some(Tables::Unread),
                },
                None => outcome = Some(Tables::Other),
            }
            if outcome.is_some() {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(outcome.unwrap_or(Tables::Managed(tables)))
}

/// Whether every node of `plan` is one that can run again (no state kept between executions)
/// and markers sit only where [`Template::bind`] replaces them.
fn reusable(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let mut ok = true;
    plan.apply(|node| {
        let any: &dyn Any = node.as_ref();
        let rebinds = any.is::<FilterExec>() || any.is::<ProjectionExec>();
        let stateless = rebinds
            || any.is::<DataSourceExec>()
            || any.is::<CoalescePartitionsExec>()
            || any.is::<RepartitionExec>()
            || any.is::<ReadAheadExec>()
            || any.is::<GlobalLimitExec>()
            || any.is::<LocalLimitExec>()
            || any.is::<EmptyExec>()
            || any.is::<PlaceholderRowExec>();
        if !stateless || !node.dynamic_expressions_produced().is_empty() {
            ok = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        if !rebinds {
            node.apply_expressions(&mut |e| {
                if has_marker(e)? {
                    ok = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    })?;
    Ok(ok)
}

/// The marker inside a physical expression, if `e` is one.
fn marker(e: &Arc<dyn PhysicalExpr>) -> Option<&ParamMarker> {
    let call = e.downcast_ref::<ScalarFunctionExpr>()?;
    let inner: &dyn Any = call.fun().inner().as_ref();
    inner.downcast_ref::<ParamMarker>()
}

fn has_marker(e: &Arc<dyn PhysicalExpr>) -> Result<bool> {
    e.exists(|e| Ok(marker(e).is_some()))
}

fn with_values(e: &Arc<dyn PhysicalExpr>, values: &[ScalarValue]) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(Arc::clone(e)
        .transform_up(|e| {
            let Some(m) = marker(&e) else {
                return Ok(Transformed::no(e));
            };
            let Some(value) = values.get(m.index) else {
                return exec_err!("parameter ${} was not bound", m.index + 1);
            };
            if value.data_type() != m.data_type {
                return exec_err!(
                    "parameter ${} bound as {} for a plan of {}",
                    m.index + 1,
                    value.data_type(),
                    m.data_type
                );
            }
            Ok(Transformed::yes(
                Arc::new(Literal::new(value.clone())) as Arc<dyn PhysicalExpr>
            ))
        })?
        .data)
}

/// Stands for parameter `$index + 1` in a template (see the module docs). Volatile, so the
/// optimizers neither fold nor duplicate it; never evaluated, since every execution replaces
/// it with the bound value first.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ParamMarker {
    index: usize,
    data_type: DataType,
    signature: Signature,
}

impl ParamMarker {
    fn call(index: usize, data_type: DataType) -> Expr {
        let marker = ParamMarker {
            index,
            data_type,
            signature: Signature::nullary(Volatility::Volatile),
        };
        Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(ScalarUDF::new_from_impl(marker)),
            vec![],
        ))
    }
}

impl ScalarUDFImpl for ParamMarker {
    fn name(&self) -> &str {
        "prognos_parameter"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            self.name(),
            self.data_type.clone(),
            true,
        )))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("parameter ${} was not bound", self.index + 1)
    }
}
