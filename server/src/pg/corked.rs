//! Replies of the extended query protocol held back until the client needs them.
//!
//! pgwire's default handlers flush the socket after ParseComplete, BindComplete, each
//! Describe answer and CommandComplete, so one prepared-statement round trip (Bind, Describe,
//! Execute, Sync) leaves in four TCP segments, and the client wakes up for each of them. Like
//! PostgreSQL, the handlers here buffer those replies; they reach the client with the
//! ReadyForQuery that answers Sync (or on the client's Flush), in one write. Messages the
//! client may be waiting for before it sends anything else — notices (training progress) and
//! the start of COPY FROM STDIN — are still sent at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::Sink;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, SessionExtensions};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::ProtocolVersion;
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::SecretKey;
use prognos_engine::{BlockState, Session};

/// A client whose flushes are deferred unless an urgent message was queued, and whose
/// transaction status is the engine session's.
///
/// pgwire derives the status of ReadyForQuery from the responses of one message: it can move
/// a block into the failed state but never out of it, while PostgreSQL's `ROLLBACK TO
/// SAVEPOINT` brings a failed block back to `T`. Every status set or sent through this
/// wrapper is therefore replaced by what the session says.
pub(crate) struct Corked<'a, C> {
    inner: &'a mut C,
    urgent: bool,
    /// Defer flushes (the extended protocol) or flush as pgwire does (simple queries).
    cork: bool,
    session: &'a Session,
}

impl<'a, C> Corked<'a, C> {
    /// Replies held back until ReadyForQuery (the extended protocol).
    pub(crate) fn new(inner: &'a mut C, session: &'a Session) -> Self {
        Self {
            inner,
            urgent: false,
            cork: true,
            session,
        }
    }

    /// Flushes as pgwire makes them; only the transaction status is the session's.
    pub(crate) fn uncorked(inner: &'a mut C, session: &'a Session) -> Self {
        Self {
            cork: false,
            ..Self::new(inner, session)
        }
    }
}

/// The ReadyForQuery status of `session`'s transaction block.
pub(crate) fn status_of(session: &Session) -> TransactionStatus {
    match session.block_state() {
        BlockState::Idle => TransactionStatus::Idle,
        BlockState::InBlock => TransactionStatus::Transaction,
        BlockState::Failed => TransactionStatus::Error,
    }
}

/// Whether the client may be blocked waiting for this message.
fn must_reach_client_now(m: &PgWireBackendMessage) -> bool {
    matches!(
        m,
        PgWireBackendMessage::NoticeResponse(_)
            | PgWireBackendMessage::NotificationResponse(_)
            | PgWireBackendMessage::CopyInResponse(_)
            | PgWireBackendMessage::CopyBothResponse(_)
            | PgWireBackendMessage::ReadyForQuery(_)
    )
}

impl<C> Sink<PgWireBackendMessage> for Corked<'_, C>
where
    C: Sink<PgWireBackendMessage> + Unpin,
{
    type Error = C::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        Pin::new(&mut *self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: PgWireBackendMessage) -> Result<(), C::Error> {
        self.urgent |= must_reach_client_now(&item);
        let item = match item {
            PgWireBackendMessage::ReadyForQuery(_) => {
                PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status_of(self.session)))
            }
            other => other,
        };
        Pin::new(&mut *self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        if self.urgent || !self.cork {
            ready!(Pin::new(&mut *self.inner).poll_flush(cx))?;
            self.urgent = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        Pin::new(&mut *self.inner).poll_close(cx)
    }
}

impl<C: ClientInfo> ClientInfo for Corked<'_, C> {
    fn socket_addr(&self) -> SocketAddr {
        self.inner.socket_addr()
    }
    fn is_secure(&self) -> bool {
        self.inner.is_secure()
    }
    fn protocol_version(&self) -> ProtocolVersion {
        self.inner.protocol_version()
    }
    fn set_protocol_version(&mut self, version: ProtocolVersion) {
        self.inner.set_protocol_version(version)
    }
    fn pid_and_secret_key(&self) -> (i32, SecretKey) {
        self.inner.pid_and_secret_key()
    }
    fn set_pid_and_secret_key(&mut self, pid: i32, secret_key: SecretKey) {
        self.inner.set_pid_and_secret_key(pid, secret_key)
    }
    fn state(&self) -> PgWireConnectionState {
        self.inner.state()
    }
    fn set_state(&mut self, new_state: PgWireConnectionState) {
        self.inner.set_state(new_state)
    }
    fn transaction_status(&self) -> TransactionStatus {
        self.inner.transaction_status()
    }
    fn set_transaction_status(&mut self, _new_status: TransactionStatus) {
        self.inner.set_transaction_status(status_of(self.session))
    }
    fn metadata(&self) -> &HashMap<String, String> {
        self.inner.metadata()
    }
    fn metadata_mut(&mut self) -> &mut HashMap<String, String> {
        self.inner.metadata_mut()
    }
    fn session_extensions(&self) -> &SessionExtensions {
        self.inner.session_extensions()
    }
    fn sni_server_name(&self) -> Option<&str> {
        self.inner.sni_server_name()
    }
    fn client_certificates<'a>(
        &self,
    ) -> Option<&[pgwire::tokio::tokio_rustls::rustls::pki_types::CertificateDer<'a>]> {
        self.inner.client_certificates()
    }
}

impl<C: ClientPortalStore> ClientPortalStore for Corked<'_, C> {
    type PortalStore = C::PortalStore;

    fn portal_store(&self) -> &Self::PortalStore {
        self.inner.portal_store()
    }
}
