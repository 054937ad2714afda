//! What Flight SQL keeps between a client's calls: a session per client, and the statements
//! that statement tickets and prepared-statement handles name.
//!
//! * A client is known by its `arrow_flight_session_id` cookie when it sends one (Flight SQL's
//!   session cookie), else by its connection's peer address: ADBC and pyarrow keep one HTTP/2
//!   connection per client connection, so `SET` in one call holds for its later calls, as a
//!   pgwire connection's settings do.
//! * A ticket or prepared-statement handle is a random 16-byte id naming a [`CachedStatement`]:
//!   the parsed statement, its session and the plan made while describing it. `DoGet` runs that
//!   plan (re-planned only under the engine's one invalidation rule, see
//!   `prognos_engine::Described`) instead of parsing and planning SQL text again.
//!
//! Both maps are bounded and drop their least recently used entries; a dropped handle is a
//! `NOT_FOUND` that says to run the statement again.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::common::ScalarValue;
use lru::LruCache;
use prognos_engine::{Described, Engine, LoginRole, Session, Statement};
use tonic::{Request, Status};

/// Client sessions kept at most.
const MAX_SESSIONS: usize = 1024;
/// Statement tickets and prepared statements kept at most.
const MAX_STATEMENTS: usize = 4096;
/// The Flight SQL session cookie.
const SESSION_COOKIE: &str = "arrow_flight_session_id";

/// A statement a ticket or prepared-statement handle names.
#[derive(Debug)]
pub(crate) struct CachedStatement {
    /// The session it was prepared in (and runs in).
    pub(crate) session: Arc<Session>,
    /// The parsed statement.
    pub(crate) stmt: Statement,
    /// Its parameter and result shape, with the plan made while describing it.
    pub(crate) described: Described,
    /// Rows of bound parameter values (a prepared statement bound with `DoPut`); empty when
    /// none were bound.
    params: Mutex<Vec<Vec<ScalarValue>>>,
}

impl CachedStatement {
    /// A statement with no parameters bound.
    pub(crate) fn new(session: Arc<Session>, stmt: Statement, described: Described) -> Self {
        Self {
            session,
            stmt,
            described,
            params: Mutex::new(vec![]),
        }
    }

    /// The bound parameter rows.
    pub(crate) fn params(&self) -> Vec<Vec<ScalarValue>> {
        lock(&self.params).clone()
    }

    /// Bind parameter rows (replacing earlier ones).
    pub(crate) fn bind(&self, rows: Vec<Vec<ScalarValue>>) {
        *lock(&self.params) = rows;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sessions and statement handles (see the module docs).
pub(crate) struct FlightState {
    sessions: Mutex<LruCache<String, Arc<Session>>>,
    statements: Mutex<LruCache<[u8; 16], Arc<CachedStatement>>>,
}

impl std::fmt::Debug for FlightState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightState")
            .field("sessions", &lock(&self.sessions).len())
            .field("statements", &lock(&self.statements).len())
            .finish()
    }
}

fn capacity(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// The key of the client a request comes from.
pub(crate) fn client_key<T>(request: &Request<T>) -> String {
    let cookie = request
        .metadata()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string());
    match (cookie, request.remote_addr()) {
        (Some(id), _) => format!("cookie:{id}"),
        (None, Some(addr)) => format!("peer:{addr}"),
        (None, None) => "peer:unknown".to_string(),
    }
}

impl FlightState {
    pub(crate) fn new() -> Self {
        Self {
            sessions: Mutex::new(LruCache::new(capacity(MAX_SESSIONS))),
            statements: Mutex::new(LruCache::new(capacity(MAX_STATEMENTS))),
        }
    }

    /// The session of client `key` running as `role` (a new one on its first call): one
    /// client's calls as two roles get two sessions.
    pub(crate) fn session(&self, engine: &Engine, key: String, role: &LoginRole) -> Arc<Session> {
        let key = format!("{}\u{0}{key}", role.name);
        let mut sessions = lock(&self.sessions);
        if let Some(s) = sessions.get(&key) {
            return Arc::clone(s);
        }
        let s = Arc::new(engine.new_session());
        s.set_user(&role.name, role.superuser);
        sessions.put(key, Arc::clone(&s));
        s
    }

    /// Keep a statement; returns the handle that names it.
    pub(crate) fn insert(&self, statement: CachedStatement) -> bytes::Bytes {
        let id = *uuid::Uuid::new_v4().as_bytes();
        lock(&self.statements).put(id, Arc::new(statement));
        bytes::Bytes::copy_from_slice(&id)
    }

    /// The statement a handle names.
    pub(crate) fn get(&self, handle: &[u8]) -> Result<Arc<CachedStatement>, Status> {
        let id: [u8; 16] = handle
            .try_into()
            .map_err(|_| Status::invalid_argument("invalid statement handle"))?;
        lock(&self.statements).get(&id).cloned().ok_or_else(|| {
            Status::not_found(
                "statement handle expired or unknown (the server keeps the most recent \
                     statements): prepare or run the statement again",
            )
        })
    }

    /// Forget a prepared statement.
    pub(crate) fn remove(&self, handle: &[u8]) {
        if let Ok(id) = <[u8; 16]>::try_from(handle) {
            lock(&self.statements).pop(&id);
        }
    }
}
