//! The HTTP/2 connection preface, read before hyper sees the connection so that a
//! client that never sends it (a slowloris) is closed after the handshake timeout,
//! and one that speaks HTTP/1 to a gRPC port is told so in a sentence.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a connection did not start HTTP/2.
#[derive(Debug)]
pub(crate) enum PrefaceError {
    /// The client closed after `n` bytes.
    Closed(usize),
    /// The first bytes were not the preface; `http1` when they look like an
    /// HTTP/1 request line (the client was answered 505).
    NotHttp2 { http1: bool },
    /// Reading failed.
    Io(io::Error),
}

impl std::fmt::Display for PrefaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrefaceError::Closed(n) => write!(f, "closed after {n} byte(s) of the HTTP/2 preface"),
            PrefaceError::NotHttp2 { http1: true } => {
                f.write_str("an HTTP/1 request on an HTTP/2-only port (answered 505)")
            }
            PrefaceError::NotHttp2 { http1: false } => {
                f.write_str("the first bytes are not the HTTP/2 connection preface")
            }
            PrefaceError::Io(err) => write!(f, "reading the HTTP/2 preface: {err}"),
        }
    }
}

/// Whether `start` (bytes that differ from the preface) begins like an HTTP/1
/// request line: a method in capitals and a space.
fn looks_like_http1(start: &[u8]) -> bool {
    let method = start.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method > 0 && start.get(method) == Some(&b' ')
}

const HTTP1_ANSWER: &[u8] = b"HTTP/1.1 505 HTTP Version Not Supported\r\n\
content-type: text/plain\r\nconnection: close\r\ncontent-length: 84\r\n\r\n\
this is a gRPC server: it speaks HTTP/2 only (h2c, or TLS with ALPN h2), not HTTP/1\n";

/// Reads the preface from `io`. On success the connection is handed on wrapped in
/// [`Prefaced`], which gives hyper the preface back.
pub(crate) async fn read_preface<IO>(mut io: IO) -> Result<Prefaced<IO>, PrefaceError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut got = [0u8; PREFACE.len()];
    let mut n = 0;
    while n < got.len() {
        let read = io.read(&mut got[n..]).await.map_err(PrefaceError::Io)?;
        if read == 0 {
            return Err(PrefaceError::Closed(n));
        }
        n += read;
        if got[..n] != PREFACE[..n] {
            let http1 = looks_like_http1(&got[..n]);
            if http1 {
                // Best effort: the client may be gone already.
                let _ = io.write_all(HTTP1_ANSWER).await;
                let _ = io.shutdown().await;
            }
            return Err(PrefaceError::NotHttp2 { http1 });
        }
    }
    Ok(Prefaced {
        inner: io,
        prefix: *PREFACE,
        len: PREFACE.len(),
        replayed: 0,
    })
}

/// Reads the start of a connection that may speak HTTP/1 or HTTP/2 (an HTTP
/// server such as the API gateway): up to the 24 bytes of the HTTP/2 preface,
/// stopping at the first byte that differs. Returns the connection with those
/// bytes given back (so the HTTP server reads it whole) and whether it began
/// with the HTTP/2 preface. Bound it with a timeout: a client that sends
/// nothing, or a few bytes and then nothing, is how a slowloris holds a
/// connection.
pub async fn sniff_http<IO>(mut io: IO) -> io::Result<(Prefaced<IO>, bool)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut got = [0u8; PREFACE.len()];
    let mut n = 0;
    while n < got.len() {
        let read = io.read(&mut got[n..]).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed before its first request",
            ));
        }
        n += read;
        if got[..n] != PREFACE[..n] {
            break;
        }
    }
    let http2 = got[..n] == PREFACE[..];
    Ok((
        Prefaced {
            inner: io,
            prefix: got,
            len: n,
            replayed: 0,
        },
        http2,
    ))
}

/// A connection whose first bytes were read: reads give those bytes first, then
/// the connection's; writes go straight through.
#[derive(Debug)]
pub struct Prefaced<IO> {
    inner: IO,
    prefix: [u8; PREFACE.len()],
    len: usize,
    replayed: usize,
}

impl<IO> Prefaced<IO> {
    /// The connection underneath.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefaced<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.replayed < self.len {
            let rest = &self.prefix[self.replayed..self.len];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefaced<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_the_preface_back_then_the_rest() {
        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"\x00\x00\x00\x04").await.unwrap();
        let mut prefaced = read_preface(server).await.unwrap();
        let mut all = [0u8; 28];
        // Small reads must work too: hyper may ask for fewer bytes than the preface.
        let mut n = 0;
        while n < all.len() {
            let end = (n + 5).min(all.len());
            n += prefaced.read(&mut all[n..end]).await.unwrap();
        }
        assert_eq!(&all[..24], PREFACE);
        assert_eq!(&all[24..], b"\x00\x00\x00\x04");
    }

    #[tokio::test]
    async fn sniffing_tells_http1_from_http2_and_gives_every_byte_back() {
        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(client);
        let (mut io, http2) = sniff_http(server).await.unwrap();
        assert!(!http2);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\n");

        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"rest").await.unwrap();
        drop(client);
        let (mut io, http2) = sniff_http(server).await.unwrap();
        assert!(http2);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(&all[..24], PREFACE);
        assert_eq!(&all[24..], b"rest");
    }

    #[tokio::test]
    async fn answers_http1_with_a_sentence_and_refuses_garbage() {
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let err = read_preface(server).await.unwrap_err();
        assert!(
            matches!(err, PrefaceError::NotHttp2 { http1: true }),
            "{err}"
        );
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 505 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body.len(), 84, "content-length matches the body");

        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"\x16\x03\x01\x02\x00").await.unwrap();
        let err = read_preface(server).await.unwrap_err();
        assert!(
            matches!(err, PrefaceError::NotHttp2 { http1: false }),
            "{err}"
        );

        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HTTP").await.unwrap();
        drop(client);
        assert!(matches!(
            read_preface(server).await.unwrap_err(),
            PrefaceError::Closed(10)
        ));
    }
}
