//! A session's share of the memory pool (`engine.query_memory_mb`).
//!
//! The server's pool (`engine.memory_limit_mb`) bounds all statements together; this bounds
//! one session's — and as a session runs one statement at a time, one statement's — part of
//! it, so one large sort or aggregation fails alone (`53200`) instead of taking the memory
//! the other sessions' statements need. Every reservation goes on to the shared pool as
//! well, which keeps its own rules (fair shares among spilling operators).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// One session's share of a shared pool (see the module docs).
#[derive(Debug)]
pub(crate) struct SessionPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl SessionPool {
    /// A share of at most `limit` bytes of `shared`.
    pub(crate) fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        Self {
            shared,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for SessionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session share of {} bytes of {}",
            self.limit, self.shared
        )
    }
}

impl MemoryPool for SessionPool {
    fn name(&self) -> &str {
        "session_share"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::SeqCst);
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(shrink))
            });
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        let limit = self.limit;
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(additional).filter(|n| *n <= limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "{} needs {additional} more bytes; the session holds {used} of its share of \
                     {limit} bytes (engine.query_memory_mb)",
                    reservation.consumer().name()
                ))
            })?;
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::UnboundedMemoryPool;

    #[test]
    fn a_share_refuses_beyond_its_limit_and_gives_back_on_shrink() {
        let shared: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
        let pool: Arc<dyn MemoryPool> = Arc::new(SessionPool::new(Arc::clone(&shared), 1000));
        let r = MemoryConsumer::new("sort").register(&pool);
        r.try_grow(600).expect("fits");
        let e = r.try_grow(500).expect_err("over the share");
        assert!(matches!(e, DataFusionError::ResourcesExhausted(_)), "{e}");
        assert_eq!(pool.reserved(), 600);
        assert_eq!(shared.reserved(), 600);
        r.shrink(300);
        r.try_grow(500).expect("fits again");
        drop(r);
        assert_eq!(pool.reserved(), 0);
        assert_eq!(shared.reserved(), 0);
    }
}
