//! Physical planning of the per-series aggregates (`prognos_forecast`, `prognos_anomaly`,
//! `prognos_forecast_future`): one series at a time per partition, in id order.
//!
//! DataFusion plans a grouped aggregate as a partial aggregate per input partition, a hash
//! repartition of the partial states and a final aggregate. For these aggregates a state is a
//! whole series, so every partition would hold all of its series until its input ends: memory
//! grows with the table, and nothing is returned before the last row has been read.
//!
//! [`SeriesAggregation`] rewrites that into a hash repartition of the input rows by the id
//! columns, a sort by the ids within each partition, and one aggregate per partition over the
//! sorted rows (by id, then time). DataFusion's aggregate sees input ordered by its group
//! keys and runs in streaming mode: a series is finished, forecast (or scored) and emitted as soon as the next
//! id begins, so a partition holds one series at a time; the sort spills to disk when the
//! memory pool (`engine.memory_limit_mb`) is full, and rows flow to the client while later
//! series are still being read. Series still run in parallel: one partition per core.
//!
//! The rule runs last (before DataFusion's sanity check), after the rules that would otherwise
//! remove a sort no operator requires.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::udaf::AggregateFunctionExpr;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, InputOrderMode, Partitioning,
};

/// The aggregates that collect a whole series per group.
pub const SERIES_AGGREGATES: [&str; 3] = [
    crate::forecast::NAME,
    crate::anomaly::NAME,
    crate::forecast_future::NAME,
];

/// The physical optimizer rule (see the module documentation).
#[derive(Debug, Default)]
pub struct SeriesAggregation;

impl SeriesAggregation {
    /// DataFusion's default physical optimizer rules with this one,
    /// [`FilterFirst`](crate::filter_first::FilterFirst) and
    /// [`ReadAhead`](crate::read_ahead::ReadAhead) inserted before the final sanity check.
    pub fn with_default_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        let at = rules
            .iter()
            .position(|r| r.name() == "SanityCheckPlan")
            .unwrap_or(rules.len());
        // In this order: the read-ahead goes under the operators the other two leave in place.
        rules.insert(at, Arc::new(crate::read_ahead::ReadAhead));
        rules.insert(at, Arc::new(SeriesAggregation));
        rules.insert(at, Arc::new(crate::filter_first::FilterFirst));
        rules
    }
}

impl PhysicalOptimizerRule for SeriesAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions = config.execution.target_partitions.max(1);
        plan.transform_up(|node| {
            Ok(match streaming_series_aggregate(&node, partitions)? {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "SeriesAggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The call of one of [`SERIES_AGGREGATES`] in an aggregate, if any.
fn series_call(agg: &AggregateExec) -> Option<&Arc<AggregateFunctionExpr>> {
    agg.aggr_expr()
        .iter()
        .find(|e| SERIES_AGGREGATES.contains(&e.fun().name()))
}

/// The input rows of a final aggregate: below it, through repartitions and coalesces, the
/// partial aggregate whose input they are.
fn partial_below(plan: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    let mut node = plan;
    loop {
        if let Some(agg) = node.downcast_ref::<AggregateExec>() {
            return (*agg.mode() == AggregateMode::Partial).then_some(agg);
        }
        match node.children().as_slice() {
            [child] if node.name().contains("Repartition") || node.name().contains("Coalesce") => {
                node = child
            }
            _ => return None,
        }
    }
}

/// The streaming replacement of `node` if it is a grouped series aggregate.
fn streaming_series_aggregate(
    node: &Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(top) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    // Not a series aggregate, or already the streaming one (a plan optimised again).
    if series_call(top).is_none() || *top.input_order_mode() == InputOrderMode::Sorted {
        return Ok(None);
    }
    // The aggregate over the rows themselves: the partial one under a final one, or a
    // single-stage one.
    let rows_agg = match top.mode() {
        AggregateMode::Final | AggregateMode::FinalPartitioned => {
            match partial_below(top.input()) {
                Some(partial) => partial,
                None => return Ok(None),
            }
        }
        AggregateMode::Single | AggregateMode::SinglePartitioned => top,
        _ => return Ok(None),
    };
    let group_by = rows_agg.group_expr();
    if group_by.is_empty() || group_by.has_grouping_set() || !group_by.is_single() {
        // One series (no ids) is held whole by any plan; grouping sets are not series.
        return Ok(None);
    }
    let keys = group_by.input_exprs();
    let mut input = Arc::clone(rows_agg.input());
    if partitions > 1 || input.output_partitioning().partition_count() > 1 {
        input = Arc::new(RepartitionExec::try_new(
            input,
            Partitioning::Hash(keys.clone(), partitions),
        )?);
    }
    // Within a series, rows in time order (the first argument of the series aggregate), so
    // each series arrives sorted.
    let time = series_call(rows_agg).and_then(|e| e.expressions().into_iter().next());
    let Some(ordering) = LexOrdering::new(
        keys.iter()
            .cloned()
            .chain(time)
            .map(PhysicalSortExpr::new_default),
    ) else {
        return Ok(None);
    };
    let sorted = Arc::new(SortExec::new(ordering, input).with_preserve_partitioning(true));
    let streaming = AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        group_by.clone(),
        rows_agg.aggr_expr().to_vec(),
        rows_agg.filter_expr().to_vec(),
        sorted,
        rows_agg.input_schema(),
    )?;
    // Keep DataFusion's plan unless the replacement is the same relation, streamed.
    if streaming.schema() != top.schema() || *streaming.input_order_mode() != InputOrderMode::Sorted
    {
        return Ok(None);
    }
    // Series still run in parallel, but a parent planned over one partition (a sort, a
    // limit) keeps getting one.
    let streaming: Arc<dyn ExecutionPlan> = Arc::new(streaming);
    if node.output_partitioning().partition_count() == 1
        && streaming.output_partitioning().partition_count() > 1
    {
        return Ok(Some(Arc::new(CoalescePartitionsExec::new(streaming))));
    }
    Ok(Some(streaming))
}
