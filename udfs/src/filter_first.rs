//! Keeps filters below the projections that compute values, so `PREDICT`, `FORECAST` and
//! every other computed select-list expression run only on the rows that pass `WHERE`.
//!
//! DataFusion's `ProjectionPushdown` rule moves a projection below a filter whenever the
//! projection has fewer columns than its input (`FilterExec::try_swapping_with_projection`),
//! on the assumption that expressions are cheap: narrowing first copies fewer columns. For a
//! model call that assumption is wrong by orders of magnitude — a keyed lookup
//! `SELECT PREDICT_PROBA('m', a, b) FROM t WHERE id = $1` would score every row of `t` and then
//! keep one — and it also evaluates expressions on rows PostgreSQL never evaluates them on
//! (an error from a row the filter removes). [`FilterFirst`] runs after DataFusion's rules and
//! swaps such a pair back when the predicate reads only columns the projection passes through.
//! The filter keeps its own column selection out of the picture: the projection above it picks
//! the columns, so nothing is copied that the projection does not read anyway.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

/// The physical optimizer rule (see the module documentation).
#[derive(Debug, Default)]
pub struct FilterFirst;

impl PhysicalOptimizerRule for FilterFirst {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match filter_before_projection(&node)? {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "FilterFirst"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `Filter(Projection(input))` as `Projection(Filter(input))` when the projection computes
/// something and the predicate reads only pass-through columns; `None` otherwise.
fn filter_before_projection(
    node: &Arc<dyn ExecutionPlan>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(filter) = node.downcast_ref::<FilterExec>() else {
        return Ok(None);
    };
    let Some(projection) = filter.input().downcast_ref::<ProjectionExec>() else {
        return Ok(None);
    };
    let exprs = projection.expr();
    if exprs.iter().all(|e| e.expr.is::<Column>()) {
        return Ok(None);
    }
    let Some(predicate) = below_projection(filter.predicate(), exprs)? else {
        return Ok(None);
    };
    let input = Arc::clone(projection.input());
    let below = FilterExecBuilder::from(filter)
        .apply_projection(None)?
        .with_input(input)
        .with_predicate(predicate)
        .build()?;
    // The filter's own column selection (if any) moves into the projection; the output
    // schema, field metadata included, stays the one the pair had.
    let (above, schema): (Vec<ProjectionExpr>, _) = match filter.projection() {
        Some(selected) => (
            selected.iter().map(|&i| exprs[i].clone()).collect(),
            projection.schema().project(selected)?,
        ),
        None => (exprs.to_vec(), projection.schema().as_ref().clone()),
    };
    Ok(Some(Arc::new(
        ProjectionExec::try_new_with_schema_metadata(above, Arc::new(below), &schema)?,
    )))
}

/// The predicate over the projection's input: each column it reads must be a plain column of
/// the projection (`None` when one is computed there).
fn below_projection(
    predicate: &Arc<dyn PhysicalExpr>,
    exprs: &[ProjectionExpr],
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let mut computed = false;
    let rewritten = Arc::clone(predicate).transform_down(|e| {
        let Some(column) = e.downcast_ref::<Column>() else {
            return Ok(Transformed::no(e));
        };
        match exprs
            .get(column.index())
            .and_then(|p| p.expr.downcast_ref::<Column>())
        {
            Some(source) => Ok(Transformed::yes(
                Arc::new(source.clone()) as Arc<dyn PhysicalExpr>
            )),
            None => {
                computed = true;
                Ok(Transformed::new(e, false, TreeNodeRecursion::Stop))
            }
        }
    })?;
    Ok((!computed).then_some(rewritten.data))
}
