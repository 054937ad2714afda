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
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::SecretKey;

/// A client whose flushes are deferred unless an urgent message was queued.
pub(crate) struct Corked<'a, C> {
    inner: &'a mut C,
    urgent: bool,
}

impl<'a, C> Corked<'a, C> {
    pub(crate) fn new(inner: &'a mut C) -> Self {
        Self {
            inner,
            urgent: false,
        }
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
        Pin::new(&mut *self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        if self.urgent {
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
    fn set_transaction_status(&mut self, new_status: TransactionStatus) {
        self.inner.set_transaction_status(new_status)
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
}

impl<C: ClientPortalStore> ClientPortalStore for Corked<'_, C> {
    type PortalStore = C::PortalStore;

    fn portal_store(&self) -> &Self::PortalStore {
        self.inner.portal_store()
    }
}
