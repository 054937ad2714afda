//! Stream helpers shared by the frontends.

use std::pin::Pin;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::{FutureExt, Stream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Message of the error a cancelled stream ends with (the frontends map it to 57014).
pub const CANCELLED_MESSAGE: &str = "canceling statement due to user request";

/// A record batch stream that ends with a cancellation error as soon as `token` fires.
pub fn cancellable(
    inner: SendableRecordBatchStream,
    token: CancellationToken,
) -> SendableRecordBatchStream {
    Box::pin(Cancellable {
        schema: inner.schema(),
        inner,
        cancelled: Box::pin(token.cancelled_owned()),
        done: false,
    })
}

struct Cancellable {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
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
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(Cancelled)))));
        }
        self.inner.as_mut().poll_next(cx)
    }
}

impl RecordBatchStream for Cancellable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The error a cancelled statement ends with.
#[derive(Debug, thiserror::Error)]
#[error("{CANCELLED_MESSAGE}")]
pub struct Cancelled;
