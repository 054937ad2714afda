//! The message loop of one pgwire connection.
//!
//! pgwire's own `process_socket` ends a connection whose bytes it cannot decode without a
//! word, and 0.42's decoders panic on some malformed bodies (Parse, Bind, Execute read past
//! their end). PostgreSQL answers such input with a FATAL `08P01` (protocol violation) before
//! it hangs up, and clients show that message. This loop is pgwire's (TLS negotiation, the
//! start-up timeout, Terminate, cancel requests and errors as pgwire 0.42 handles them, built
//! from the same public pieces) with that answer added: a decode error or a decoder panic
//! sends `FATAL 08P01` and closes this connection alone, and so does a message whose length
//! field is too small ([`super::frame_check`]). Kept here rather than patched into a
//! vendored pgwire; it can go when pgwire answers protocol violations itself.

use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use super::frame_check::{FrameChecked, INVALID_LENGTH};

/// How long a client may take from connecting to finishing authentication (pgwire's value).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What ended a connection's loop.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The client hung up, sent Terminate, or a FATAL error closed the session.
    Normally,
    /// The client broke the protocol and was answered `08P01`.
    ProtocolViolation(String),
}

/// Serve one client connection until it ends.
pub(crate) async fn serve_connection<H>(
    tcp: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: H,
) -> std::io::Result<Ended>
where
    H: PgWireServerHandlers,
{
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(Ended::Normally),
        s = negotiate_tls(tcp, tls) => s?,
    };
    // A direct TLS handshake without TLS configured: nothing to answer in.
    let Some(socket) = negotiated else {
        return Ok(Ended::Normally);
    };
    // Every later byte goes through the length check (see `frame_check`).
    let old = socket.into_parts();
    let io = FrameChecked::new(old.io, &old.read_buf);
    let mut parts = FramedParts::new(io, old.codec);
    parts.read_buf = old.read_buf;
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();

    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = AssertUnwindSafe(Decoding(socket.next())).catch_unwind();
        let next = if starting {
            tokio::select! {
                _ = &mut startup_timeout => return Ok(Ended::Normally),
                n = next => n,
            }
        } else {
            next.await
        };
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(None) => return Ok(Ended::Normally),
            Ok(Some(Err(e))) => {
                let reason = violation(&e);
                refuse(&mut socket, &reason).await;
                return Ok(Ended::ProtocolViolation(reason));
            }
            Err(_) => {
                let reason = "invalid message format".to_string();
                refuse(&mut socket, &reason).await;
                return Ok(Ended::ProtocolViolation(reason));
            }
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(Ended::Normally);
        }
        let wait_for_sync = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        if let Err(mut e) = process_message(
            message,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await
        {
            errors.on_error(&socket, &mut e);
            let fatal = e.is_fatal();
            process_error(&mut socket, e, wait_for_sync).await?;
            if fatal {
                return Ok(Ended::Normally);
            }
        }
        if is_cancel {
            return Ok(Ended::Normally);
        }
    }
}

thread_local! {
    /// Set while this thread polls pgwire's decoder (see [`quiet_decoder_panics`]).
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// A future polled with [`DECODING`] set: the decoding of the next message.
struct Decoding<F>(F);

impl<F: Future + Unpin> Future for Decoding<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Clears the mark, on unwinding too.
        struct Clear;
        impl Drop for Clear {
            fn drop(&mut self) {
                DECODING.set(false);
            }
        }
        DECODING.set(true);
        let _clear = Clear;
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Installs (once) a panic hook that keeps the decoder panics this loop catches out of the
/// standard error: the loop answers them `08P01`, and the default hook would print each with
/// a backtrace under `RUST_BACKTRACE` — hostile input filling the log, and the first
/// backtrace loading the binary's debug information for good (the wire fuzzer's resident
/// size went from 114 MB to 252 MB that way). They are logged at debug level instead; every
/// other panic goes to the hook that was there before.
pub(crate) fn quiet_decoder_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DECODING.get() {
                tracing::debug!(panic = %info, "pgwire decoder panicked (answered 08P01)");
            } else {
                previous(info);
            }
        }));
    });
}

/// PostgreSQL's words for what a decode error says.
fn violation(e: &PgWireError) -> String {
    match e {
        PgWireError::InvalidMessageType(t) => format!("invalid frontend message type {t}"),
        PgWireError::MessageTooLarge(..) => INVALID_LENGTH.to_string(),
        PgWireError::IoError(e) if e.kind() == std::io::ErrorKind::InvalidData => e.to_string(),
        PgWireError::InvalidStartupMessage => "invalid startup packet layout".to_string(),
        PgWireError::UnsupportedProtocolVersion(major, minor) => {
            format!("unsupported frontend protocol {major}.{minor}")
        }
        other => other.to_string(),
    }
}

/// Answer a protocol violation as PostgreSQL does, best effort: the connection closes anyway.
async fn refuse<S>(socket: &mut S, reason: &str)
where
    S: futures::Sink<PgWireBackendMessage> + Unpin,
{
    let info = ErrorInfo::new(
        "FATAL".to_string(),
        "08P01".to_string(),
        format!("protocol violation: {reason}"),
    );
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await;
}
