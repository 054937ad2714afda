//! A one-row `SELECT` without `FROM` — a prepared point `PREDICT(...)`, `SELECT $1 + 1`,
//! a driver's `SELECT version()` — evaluated directly on its one row.
//!
//! Through the normal path such a statement pays for the logical optimizer, the physical
//! planner and the physical optimizer on every execution (measured: about half of the
//! server's CPU time of a prepared point `PREDICT_PROBA`), although there is nothing to
//! optimise. Here its expressions get the same type coercion, function rewrites and
//! simplification as the planned path gives them and are evaluated at once. Anything else
//! (subqueries, aggregates, window functions, async functions such as `pg_sleep`, a result
//! type that differs from the planned one) takes the normal path.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::Schema;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::create_physical_expr;

use super::Session;
use crate::error::EngineResult;

/// Whether an expression can be evaluated on its own row, with no plan around it.
fn evaluable(expr: &Expr) -> bool {
    !expr
        .exists(|e| {
            Ok(match e {
                Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::SetComparison(_)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
                | Expr::Placeholder(_)
                | Expr::OuterReferenceColumn(..)
                | Expr::GroupingSet(_) => true,
                Expr::ScalarFunction(f) => f.func.as_async().is_some(),
                _ => false,
            })
        })
        .unwrap_or(true)
}

/// The result of `plan` when it is a one-row projection without `FROM`; `None` otherwise.
pub(super) fn try_evaluate(
    session: &Session,
    plan: &LogicalPlan,
) -> EngineResult<Option<RecordBatch>> {
    let LogicalPlan::Projection(p) = plan else {
        return Ok(None);
    };
    let LogicalPlan::EmptyRelation(e) = p.input.as_ref() else {
        return Ok(None);
    };
    if !e.produce_one_row || !p.expr.iter().all(evaluable) {
        return Ok(None);
    }
    let state_ref = session.ctx().state_ref();
    let state = state_ref.read();
    let config = Arc::clone(state.config_options());
    let mut props = state.execution_props().clone();
    props.mark_start_execution(Arc::clone(&config));
    let input = p.input.schema();
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::clone(input))
            .with_config_options(Arc::clone(&config))
            .with_query_execution_start_time(props.query_execution_start_time)
            .build(),
    );
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let mut columns = Vec::with_capacity(p.expr.len());
    for (expr, field) in p.expr.iter().zip(p.schema.fields()) {
        let mut expr = simplifier.coerce(expr.clone(), input)?;
        for rewrite in state.analyzer().function_rewrites() {
            expr = expr
                .transform_up(|e| rewrite.rewrite(e, input, &config))?
                .data;
        }
        // Some functions exist only until simplified (`coalesce` becomes `CASE`); constants
        // are folded on the way, so what is left to evaluate is usually a literal.
        let expr = simplifier.simplify(expr)?;
        let physical =
            create_physical_expr(&expr, input, &props, &PhysicalPlanningContext::default())?;
        let array = physical.evaluate(&one_row)?.into_array(1)?;
        if array.data_type() != field.data_type()
            || (!field.is_nullable() && array.null_count() > 0)
        {
            return Ok(None);
        }
        columns.push(array);
    }
    drop(state);
    Ok(Some(RecordBatch::try_new(
        Arc::new(p.schema.as_arrow().clone()),
        columns,
    )?))
}
