//! Group commit for a managed table: writes that wait for the table's commit lock are committed
//! together, as one manifest version, by whichever of them takes the lock first.
//!
//! Each `INSERT` writes its data files (and fsyncs them) without holding any lock, then queues
//! a [`WriteRequest`] and waits for the commit lock. The writer that gets the lock takes every
//! queued request and commits them all in one manifest, in the order they were queued (an
//! overwrite drops the files of the requests before it, as if they had committed one after
//! the other); the others find their request already taken and wait for its outcome. A commit
//! costs one manifest write and its fsyncs however many statements it carries, so concurrent
//! writers to one table no longer queue up behind one fsync each — the same idea as
//! PostgreSQL's grouped WAL flushes.
//!
//! A statement cancelled (timeout, dropped connection) before its request was taken removes
//! it: a cancelled `INSERT` never commits later. Once taken, the commit runs to its end in its
//! own task, so one cancelled writer cannot leave the others of its group without an answer.

use std::sync::Mutex;

use prognos_storage::StorageError;
use prognos_storage::manifest::DataFile;
use tokio::sync::oneshot;

/// The files one statement wrote to a table and how they change its file list.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    /// New data files, already durable.
    pub(crate) files: Vec<DataFile>,
    /// Whether they replace the table's rows (`INSERT OVERWRITE`) instead of adding to them.
    pub(crate) overwrite: bool,
}

/// A request taken for a commit, with where its outcome goes.
#[derive(Debug)]
pub(crate) struct Queued {
    /// The request.
    pub(crate) request: WriteRequest,
    done: oneshot::Sender<Result<(), StorageError>>,
}

impl Queued {
    /// Tell the statement that queued this request how its commit ended.
    pub(crate) fn finish(self, outcome: &Result<(), StorageError>) {
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(copy_error(e)),
        };
        // The statement may have been cancelled meanwhile: nobody to tell.
        let _ = self.done.send(outcome);
    }
}

/// Requests queued on one table and not yet taken by a committing writer.
#[derive(Debug, Default)]
pub(crate) struct CommitQueue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    next_id: u64,
    queued: Vec<(u64, Queued)>,
}

impl CommitQueue {
    /// Queue `request`; the ticket waits for its outcome and withdraws it when dropped first.
    pub(crate) fn enqueue(&self, request: WriteRequest) -> Ticket<'_> {
        let (done, outcome) = oneshot::channel();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = state.next_id;
        state.next_id += 1;
        state.queued.push((id, Queued { request, done }));
        Ticket {
            queue: self,
            id,
            outcome,
        }
    }

    /// Every queued request, oldest first; the queue is left empty.
    pub(crate) fn take(&self) -> Vec<Queued> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut state.queued)
            .into_iter()
            .map(|(_, q)| q)
            .collect()
    }

    fn withdraw(&self, id: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.queued.retain(|(queued, _)| *queued != id);
    }
}

/// One queued request, waiting for its outcome.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    queue: &'a CommitQueue,
    id: u64,
    outcome: oneshot::Receiver<Result<(), StorageError>>,
}

impl Ticket<'_> {
    /// Wait until the request's group committed or failed.
    pub(crate) async fn outcome(mut self) -> Result<(), StorageError> {
        match (&mut self.outcome).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StorageError::Io(std::io::Error::other(
                "the commit carrying this write stopped before it reported an outcome",
            ))),
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // Still queued only when nobody took it: a cancelled statement must not commit later.
        self.queue.withdraw(self.id);
    }
}

/// The file list after `requests`, applied in order to `files`.
pub(crate) fn apply<'a>(
    mut files: Vec<DataFile>,
    requests: impl IntoIterator<Item = &'a WriteRequest>,
) -> Vec<DataFile> {
    for r in requests {
        if r.overwrite {
            files.clear();
        }
        files.extend(r.files.iter().cloned());
    }
    files
}

/// A copy of `e` for each statement of a failed group (errors are not `Clone`): the variants
/// that decide a SQLSTATE keep their kind, the rest keep their message.
fn copy_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::CommitConflict { path, version } => StorageError::CommitConflict {
            path: path.clone(),
            version: *version,
        },
        StorageError::CorruptMetadata { path, reason } => StorageError::CorruptMetadata {
            path: path.clone(),
            reason: reason.clone(),
        },
        StorageError::InvalidLocation { location, reason } => StorageError::InvalidLocation {
            location: location.clone(),
            reason: reason.clone(),
        },
        StorageError::Io(io) => StorageError::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => StorageError::Io(std::io::Error::other(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> DataFile {
        DataFile {
            path: format!("data/{name}.parquet"),
            rows: 1,
            bytes: 10,
        }
    }

    fn paths(files: &[DataFile]) -> Vec<&str> {
        files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn requests_apply_in_queue_order_and_an_overwrite_drops_what_came_before() {
        let appends = [
            WriteRequest {
                files: vec![file("b")],
                overwrite: false,
            },
            WriteRequest {
                files: vec![file("c")],
                overwrite: true,
            },
            WriteRequest {
                files: vec![file("d")],
                overwrite: false,
            },
        ];
        assert_eq!(
            paths(&apply(vec![file("a")], &appends[..1])),
            ["data/a.parquet", "data/b.parquet"]
        );
        assert_eq!(
            paths(&apply(vec![file("a")], &appends)),
            ["data/c.parquet", "data/d.parquet"]
        );
    }

    #[tokio::test]
    async fn every_request_of_a_group_hears_its_outcome_and_a_dropped_ticket_withdraws() {
        let queue = CommitQueue::default();
        let first = queue.enqueue(WriteRequest {
            files: vec![file("a")],
            overwrite: false,
        });
        let cancelled = queue.enqueue(WriteRequest {
            files: vec![file("b")],
            overwrite: false,
        });
        let second = queue.enqueue(WriteRequest {
            files: vec![file("c")],
            overwrite: false,
        });
        drop(cancelled);
        let group = queue.take();
        assert_eq!(group.len(), 2, "the cancelled request left the queue");
        assert!(queue.take().is_empty(), "taking empties the queue");
        let failure = Err(StorageError::CommitConflict {
            path: "t".into(),
            version: 7,
        });
        for q in group {
            q.finish(&failure);
        }
        for ticket in [first, second] {
            match ticket.outcome().await {
                Err(StorageError::CommitConflict { version: 7, .. }) => {}
                other => panic!("expected the group's conflict, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_request_whose_commit_vanished_gets_an_error_not_a_hang() {
        let queue = CommitQueue::default();
        let ticket = queue.enqueue(WriteRequest {
            files: vec![file("a")],
            overwrite: false,
        });
        drop(queue.take());
        assert!(ticket.outcome().await.is_err());
    }
}
