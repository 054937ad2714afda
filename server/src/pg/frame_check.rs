//! A check of every frontend message's length field, below pgwire's decoder.
//!
//! A message's length counts itself, so it is at least 4 (a start-up packet, which also holds
//! the protocol version, at least 8). pgwire 0.42's decoder does not check that: a `Sync` or
//! `Query` whose length says 0 decodes as if it were well formed and runs, where PostgreSQL
//! answers `FATAL 08P01 invalid message length` and hangs up. [`FrameChecked`] wraps the
//! connection's byte stream, follows the frames as they arrive (the first one untyped, the
//! start-up packet; every later one a type byte and a length) and fails the read that would
//! hand over a frame whose length is too small. The bytes before that frame are still
//! delivered first, so the messages in front of it run as they would in PostgreSQL; the next
//! read then fails with [`std::io::ErrorKind::InvalidData`], which the message loop answers
//! with `08P01`. Kept here rather than patched into a vendored pgwire; it can go when pgwire
//! checks the length itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the error of a too-short frame says (PostgreSQL's words).
pub(crate) const INVALID_LENGTH: &str = "invalid message length";
/// What the error of a too-short start-up packet says (PostgreSQL's words).
pub(crate) const INVALID_STARTUP_LENGTH: &str = "invalid length of startup packet";

/// Where the byte stream stands in its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// In a header: `seen` of its bytes so far (5 for a typed frame, 4 for the start-up one).
    Header { seen: usize, length: [u8; 4] },
    /// In a body, with this many bytes of it still to come.
    Body { left: u64 },
}

/// Follows the frames of a frontend byte stream and finds the first too-short one.
#[derive(Debug, Clone)]
struct Frames {
    position: Position,
    /// Whether the frame being read is the untyped start-up packet.
    startup: bool,
}

impl Frames {
    fn new() -> Self {
        Self {
            position: Position::Header {
                seen: 0,
                length: [0; 4],
            },
            startup: true,
        }
    }

    /// Follows `bytes`; `Err((start, reason))` when a frame is too short, `start` being where
    /// its header begins in `bytes` (0 when it began in an earlier call).
    fn follow(&mut self, bytes: &[u8]) -> Result<(), (usize, &'static str)> {
        let mut i = 0;
        let mut header_start = 0;
        while i < bytes.len() {
            match &mut self.position {
                Position::Body { left } => {
                    let take = (*left).min((bytes.len() - i) as u64);
                    *left -= take;
                    i += take as usize;
                    if *left == 0 {
                        self.position = Position::Header {
                            seen: 0,
                            length: [0; 4],
                        };
                    }
                }
                Position::Header { seen, length } => {
                    let header = if self.startup { 4 } else { 5 };
                    let type_bytes = header - 4;
                    if *seen == 0 {
                        header_start = i;
                    }
                    if *seen >= type_bytes {
                        length[*seen - type_bytes] = bytes[i];
                    }
                    *seen += 1;
                    i += 1;
                    if *seen == header {
                        let declared = i32::from_be_bytes(*length);
                        let (least, reason) = if self.startup {
                            (8, INVALID_STARTUP_LENGTH)
                        } else {
                            (4, INVALID_LENGTH)
                        };
                        if declared < least {
                            return Err((header_start, reason));
                        }
                        self.startup = false;
                        self.position = Position::Body {
                            left: u64::from(declared.unsigned_abs() - 4),
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

/// A byte stream whose reads stop before a frame with a too-short length (see the module
/// documentation).
pub(crate) struct FrameChecked<S> {
    inner: S,
    frames: Frames,
    /// Set once a too-short frame is found: every later read fails with it.
    failed: Option<&'static str>,
}

impl<S> FrameChecked<S> {
    /// Wraps `inner`, whose bytes `already` (read before the wrapping) are followed first; a
    /// too-short frame among them fails the first read.
    pub(crate) fn new(inner: S, already: &[u8]) -> Self {
        let mut frames = Frames::new();
        let failed = frames.follow(already).err().map(|(_, reason)| reason);
        Self {
            inner,
            frames,
            failed,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameChecked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(reason) = self.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        if let Err((start, reason)) = this.frames.follow(&buf.filled()[before..]) {
            // Hand over what precedes the bad frame's header (header bytes from earlier reads
            // are with the decoder, which cannot decode a frame from an unfinished header).
            buf.set_filled(before + start);
            this.failed = Some(reason);
            if start == 0 {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameChecked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\0u\0\0";
        let mut v = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn typed(kind: u8, length: i32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&length.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Reads `stream` through the check in chunks of `chunk` bytes: what came through, and the
    /// error that ended it.
    async fn read_all(stream: Vec<u8>, chunk: usize) -> (Vec<u8>, Option<String>) {
        let (mut client, server) = tokio::io::duplex(chunk);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for part in stream.chunks(chunk) {
                if client.write_all(part).await.is_err() {
                    break;
                }
            }
        });
        let mut checked = FrameChecked::new(server, &[]);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let error = loop {
            match checked.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e.to_string()),
            }
        };
        writer.abort();
        (got, error)
    }

    #[tokio::test]
    async fn well_formed_frames_pass_whole_in_any_chunking() {
        let mut stream = startup();
        stream.extend(typed(b'Q', 13, b"SELECT 1\0"));
        stream.extend(typed(b'S', 4, b""));
        stream.extend(typed(b'X', 4, b""));
        for chunk in [1, 2, 3, 5, 7, 64] {
            let (got, error) = read_all(stream.clone(), chunk).await;
            assert_eq!(error, None, "chunk {chunk}");
            assert_eq!(got, stream, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn a_short_length_stops_the_stream_before_its_frame() {
        let good = typed(b'Q', 13, b"SELECT 1\0");
        for length in [0, 3, -1, i32::MIN] {
            let mut stream = startup();
            stream.extend(&good);
            let before = stream.len();
            stream.extend(typed(b'Q', length, b"SELECT 2\0"));
            for chunk in [1, 4, 6, 64] {
                let (got, error) = read_all(stream.clone(), chunk).await;
                assert_eq!(
                    error.as_deref(),
                    Some(INVALID_LENGTH),
                    "length {length} chunk {chunk}"
                );
                // Everything before the bad frame came through, and no whole header of it.
                assert!(
                    got.len() >= before && got.len() < before + 5,
                    "{length} {chunk}"
                );
                assert_eq!(got[..before], stream[..before]);
            }
        }
    }

    #[tokio::test]
    async fn a_short_startup_packet_is_refused() {
        let (got, error) = read_all(vec![0, 0, 0, 4, 1, 2, 3], 64).await;
        assert!(got.is_empty());
        assert_eq!(error.as_deref(), Some(INVALID_STARTUP_LENGTH));
        // Bytes read before the wrapping are followed too.
        let mut checked = FrameChecked::new(tokio::io::empty(), &[0, 0, 0, 2]);
        let mut buf = [0u8; 8];
        let e = checked.read(&mut buf).await.expect_err("refused");
        assert_eq!(e.to_string(), INVALID_STARTUP_LENGTH);
    }
}
