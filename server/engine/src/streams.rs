//! Stream helpers shared by the frontends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::{FutureExt, Stream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Why a statement was stopped before it finished (both are `57014`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The client's cancel request.
    UserRequest,
    /// `statement_timeout` ran out.
    StatementTimeout,
}

impl CancelReason {
    /// PostgreSQL's message for it.
    pub fn message(self) -> &'static str {
        match self {
            CancelReason::UserRequest => "canceling statement due to user request",
            CancelReason::StatementTimeout => "canceling statement due to statement timeout",
        }
    }
}

/// The cancellation handle of one running statement: what fires it also says why.
#[derive(Debug, Clone, Default)]
pub struct StatementCancel {
    token: CancellationToken,
    /// 0: not cancelled; otherwise `1 + reason` of the first cancel.
    reason: Arc<AtomicU8>,
}

impl StatementCancel {
    /// Stop the statement for `reason` (the first reason given is the one reported).
    pub fn cancel(&self, reason: CancelReason) {
        let code = match reason {
            CancelReason::UserRequest => 1,
            CancelReason::StatementTimeout => 2,
        };
        let _ = self
            .reason
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.token.cancel();
    }

    /// Resolves when the statement is cancelled.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// Why it was cancelled (a user request when not cancelled at all).
    pub fn reason(&self) -> CancelReason {
        match self.reason.load(Ordering::SeqCst) {
            2 => CancelReason::StatementTimeout,
            _ => CancelReason::UserRequest,
        }
    }

    /// The error the statement ends with.
    pub fn error(&self) -> crate::error::EngineError {
        crate::error::EngineError::Cancelled(self.reason())
    }
}

/// A record batch stream that ends with a cancellation error as soon as `cancel` fires.
pub fn cancellable(
    inner: SendableRecordBatchStream,
    cancel: StatementCancel,
) -> SendableRecordBatchStream {
    Box::pin(Cancellable {
        schema: inner.schema(),
        inner,
        cancelled: Box::pin(cancel.token.clone().cancelled_owned()),
        cancel,
        done: false,
    })
}

struct Cancellable {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    cancel: StatementCancel,
    done: bool,
}

impl Stream for Cancellable {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cancelled.poll_unpin(cx).is_ready() {
            self.done = true;
            let reason = self.cancel.reason();
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(Cancelled(
                reason,
            ))))));
        }
        self.inner.as_mut().poll_next(cx)
    }
}

impl RecordBatchStream for Cancellable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The error a cancelled statement's rows end with.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.message())]
pub struct Cancelled(pub CancelReason);

/// A result larger than `engine.max_result_mb`.
#[derive(Debug, thiserror::Error)]
#[error(
    "the result is larger than {limit} bytes (engine.max_result_mb): select fewer rows or columns, or raise the limit"
)]
pub struct ResultTooLarge {
    /// The limit, in bytes.
    pub limit: u64,
}

/// The bytes a batch's values take (a slice counts its own rows, not the buffers it shares).
fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size()) as u64
        })
        .sum()
}

/// `stream`, failing with [`ResultTooLarge`] once the batches it has passed on exceed
/// `limit` bytes; the client gets the rows before that, then the error.
pub(crate) fn bounded(stream: SendableRecordBatchStream, limit: u64) -> SendableRecordBatchStream {
    use futures::StreamExt;
    let schema = stream.schema();
    let mut sent: u64 = 0;
    let rows = stream.map(move |batch| {
        let batch = batch?;
        sent = sent.saturating_add(batch_bytes(&batch));
        if sent > limit {
            return Err(DataFusionError::External(Box::new(ResultTooLarge {
                limit,
            })));
        }
        Ok(batch)
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rows))
}
