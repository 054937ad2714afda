//! The writer of the prediction log: one background task takes the rows that `PREDICT` calls
//! sampled (`prognos_udfs::prediction_log::LogSink`) and appends them to each model's log
//! table, at most every [`FLUSH_EVERY`] or every [`FLUSH_ROWS`] rows, so a busy model adds a
//! data file per second rather than one per query. After an append beyond the table's
//! `max_rows` the oldest files are dropped from it, and deleted a minute later (a scan that
//! started before still finds them).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use object_store::ObjectStoreExt;
use prognos_catalog::{ManagedTable, PredictionLogging};
use prognos_udfs::prediction_log::LoggedRows;
use tokio::sync::mpsc::Receiver;

use crate::Engine;

/// The longest logged rows wait before they are written.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Rows of one table that are written at once without waiting for [`FLUSH_EVERY`].
const FLUSH_ROWS: usize = 50_000;
/// How long files dropped from a log table are kept for scans already reading them.
const DELETE_AFTER: Duration = Duration::from_secs(60);

/// Rows waiting for one table.
struct Pending {
    logging: PredictionLogging,
    batches: Vec<RecordBatch>,
    rows: usize,
}

/// Start the writer task; it ends when every sink is dropped (the engine is gone).
pub(crate) fn start(engine: &Arc<Engine>, mut rx: Receiver<LoggedRows>) {
    let engine = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut pending: BTreeMap<(String, String), Pending> = BTreeMap::new();
        let mut last_flush = Instant::now();
        loop {
            let next = tokio::time::timeout(FLUSH_EVERY, rx.recv()).await;
            let closed = matches!(next, Ok(None));
            if let Ok(Some(rows)) = next {
                let key = (rows.logging.schema.clone(), rows.logging.table.clone());
                let p = pending.entry(key).or_insert_with(|| Pending {
                    logging: rows.logging.clone(),
                    batches: vec![],
                    rows: 0,
                });
                p.rows += rows.batch.num_rows();
                p.batches.push(rows.batch);
                p.logging = rows.logging;
            }
            let due = closed
                || last_flush.elapsed() >= FLUSH_EVERY
                || pending.values().any(|p| p.rows >= FLUSH_ROWS);
            if due && !pending.is_empty() {
                for ((schema, table), p) in std::mem::take(&mut pending) {
                    flush(&engine, &schema, &table, p).await;
                }
                last_flush = Instant::now();
            } else if due {
                last_flush = Instant::now();
            }
            if closed {
                break;
            }
        }
    });
}

/// Append `p`'s rows to the log table, then keep it within its `max_rows`.
async fn flush(engine: &Weak<Engine>, schema: &str, table: &str, p: Pending) {
    let Some(engine) = engine.upgrade() else {
        return;
    };
    let Some(target) = crate::transaction::commit::committed_managed(&engine, schema, table).await
    else {
        tracing::warn!(table = %format!("{schema}.{table}"), rows = p.rows,
            "prediction log table is gone: logged rows dropped");
        return;
    };
    let table_schema = target.schema();
    let batches: Vec<RecordBatch> = p
        .batches
        .iter()
        .filter_map(|b| match conform(b, &table_schema) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(table, error = %e, "logged rows do not fit the log table");
                None
            }
        })
        .collect();
    let stream = Box::pin(RecordBatchStreamAdapter::new(
        Arc::clone(&table_schema),
        futures::stream::iter(batches.into_iter().map(Ok)),
    ));
    if let Err(e) = target.append(stream).await {
        tracing::warn!(table, error = %e, "could not append to the prediction log");
        return;
    }
    rotate(&target, p.logging.max_rows).await;
}

/// `batch` with the log table's columns: each cast to the table's type (a value that does not
/// cast becomes NULL), a column the batch lacks all NULL (a version with other features).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> datafusion::error::Result<RecordBatch> {
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let n = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => cast_with_options(c, f.data_type(), &options),
            None => Ok(new_null_array(f.data_type(), n)),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Drop the oldest files beyond `max_rows` and delete them after [`DELETE_AFTER`].
async fn rotate(table: &ManagedTable, max_rows: u64) {
    match table.keep_newest(max_rows).await {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => {
            let store = table.table_store().clone();
            tracing::info!(
                table = table.name(),
                files = removed.len(),
                "prediction log rotated"
            );
            tokio::spawn(async move {
                tokio::time::sleep(DELETE_AFTER).await;
                for f in removed {
                    if let Err(e) = store.store().delete(&store.child(&f.path)).await {
                        tracing::warn!(file = %f.path, error = %e, "could not delete a rotated log file");
                    }
                }
            });
        }
        Err(e) => {
            tracing::warn!(table = table.name(), error = %e, "could not rotate the prediction log")
        }
    }
}
