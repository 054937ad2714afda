//! Reading the next batch while the model scores this one.
//!
//! A DataFusion partition is one pull-based stream: a projection that calls `PREDICT` asks its
//! input for a batch, waits while the scan decodes it, scores it, and only then asks for the
//! next. Reading and scoring take turns on one thread, so a query that calls a cheap model (an
//! imported MLP scores millions of rows a second) spends as long reading its rows as scoring
//! them, however many cores sit idle. [`ReadAhead`] runs after DataFusion's rules and puts a
//! [`ReadAheadExec`] under every operator whose own expressions call a model function: the
//! input of such an operator runs in a task of its own, on a runtime of its own (see [`readers`]),
//! and keeps at most [`BATCHES_AHEAD`] batches ready in a channel, so the scan decodes batch
//! n + 1 while the model scores batch n on another core.
//!
//! Nothing else changes: the partitioning, the order of the rows and their batches are the
//! input's, an error from the input arrives in its place in the stream, and dropping the stream
//! (a cancelled query, a `LIMIT` that is satisfied) stops the reading task. DataFusion's own
//! `RepartitionExec` also moves its input into tasks, but it takes part in distribution
//! planning, buffers batches without a bound per channel and runs on the query's runtime;
//! this operator is a plain bounded hand-over.

use std::fmt;
use std::sync::{Arc, OnceLock};

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use tokio::runtime::{Handle, Runtime};

/// How many finished batches the reading task may hold beyond the one it is making.
pub const BATCHES_AHEAD: usize = 2;

/// The physical optimizer rule (see the module documentation).
#[derive(Debug, Default)]
pub struct ReadAhead;

impl PhysicalOptimizerRule for ReadAhead {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if !calls_a_model(node.as_ref())? {
                return Ok(Transformed::no(node));
            }
            let mut wrapped = false;
            let children = node
                .children()
                .into_iter()
                .map(|c| {
                    if needs_read_ahead(c) {
                        wrapped = true;
                        Arc::new(ReadAheadExec::new(Arc::clone(c))) as Arc<dyn ExecutionPlan>
                    } else {
                        Arc::clone(c)
                    }
                })
                .collect();
            if !wrapped {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(replace_children_if_necessary(
                node, children,
            )?))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ReadAhead"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether an operator's own expressions (not its children's) call a model function.
fn calls_a_model(node: &dyn ExecutionPlan) -> Result<bool> {
    let mut found = false;
    node.apply_expressions(&mut |e: &Arc<dyn PhysicalExpr>| {
        e.apply(|sub| {
            let is_model = sub
                .downcast_ref::<ScalarFunctionExpr>()
                .is_some_and(|call| crate::models::is_model_function(call.fun()));
            if is_model {
                found = true;
                Ok(TreeNodeRecursion::Stop)
            } else {
                Ok(TreeNodeRecursion::Continue)
            }
        })
    })?;
    Ok(found)
}

/// Whether a child still needs a read-ahead above it. A repartition gets one too: its tasks
/// run on the query's runtime, and its channel wakes the scoring task into the LIFO slot
/// [`readers`] is there to avoid.
fn needs_read_ahead(child: &Arc<dyn ExecutionPlan>) -> bool {
    !child.is::<ReadAheadExec>()
}

/// Runs its input in a task of its own, at most [`BATCHES_AHEAD`] batches ahead of its reader.
#[derive(Debug)]
pub struct ReadAheadExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl ReadAheadExec {
    /// A read-ahead over `input`, with the input's properties.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        Self { input, properties }
    }
}

impl DisplayAs for ReadAheadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadAheadExec: batches_ahead={BATCHES_AHEAD}")
    }
}

impl ExecutionPlan for ReadAheadExec {
    fn name(&self) -> &str {
        "ReadAheadExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self::new(input))),
            _ => internal_err!("ReadAheadExec takes exactly one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context)?;
        let mut builder = RecordBatchReceiverStream::builder(self.schema(), BATCHES_AHEAD);
        let tx = builder.tx();
        // The task ends at the input's end, after its first error, or as soon as the reader
        // is gone (the send fails); dropping the stream also aborts it.
        builder.spawn_on(
            async move {
                while let Some(item) = input.next().await {
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
                Ok(())
            },
            &readers(),
        );
        Ok(builder.build())
    }
}

/// The runtime the reading tasks run on: one worker per core, started on first use.
///
/// Not the query's own runtime: there a task woken by a send goes to the sending worker's
/// LIFO slot, which no other worker may steal, so the scoring task would wait for the reading
/// task to fill the channel and yield, and reading and scoring would take turns again (measured:
/// the model query gained a third as much as it does here). Woken from another runtime, the
/// scoring task goes to the shared queue and the next free worker runs it.
fn readers() -> Handle {
    static READERS: OnceLock<Option<Runtime>> = OnceLock::new();
    READERS
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
                .thread_name("prognos-read-ahead")
                .enable_all()
                .build()
                .inspect_err(|e| tracing::warn!(error = %e, "no read-ahead runtime"))
                .ok()
        })
        .as_ref()
        .map_or_else(Handle::current, |r| r.handle().clone())
}
