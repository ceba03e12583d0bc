//! Cutting one Socket.IO client's WebSocket, for the drain spread.
//!
//! socketioxide closes a client's Engine.IO connection only together with
//! every other one (`SocketIo::close`), and a namespace DISCONNECT tells a
//! socket.io client not to reconnect. To close clients a few at a time
//! while a node drains, WebSocket connections reach socketioxide through
//! [`Severable`], a pass-through stream with a switch ([`Sever`], kept in
//! the request's extensions, where the session finds it through
//! `SocketRef::req_parts`): once cut, socketioxide reads the end of the
//! stream and drops the connection, and the client, seeing its transport
//! close, reconnects (to another node, behind a load balancer).
//!
//! Polling clients, and clients that upgraded from polling (their request
//! is the polling one), have no switch: they are closed with all the
//! others when the node stops.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The switch of one connection's stream; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Sever(Arc<SeverState>);

#[derive(Debug, Default)]
struct SeverState {
    cut: AtomicBool,
    /// The reader waiting on the stream, woken by the cut.
    reader: AtomicWaker,
}

impl Sever {
    /// Cuts the stream: socketioxide's next read ends it.
    pub fn cut(&self) {
        self.0.cut.store(true, Ordering::Release);
        self.0.reader.wake();
    }

    fn is_cut(&self) -> bool {
        self.0.cut.load(Ordering::Acquire)
    }
}

/// A stream that passes everything through until its [`Sever`] is cut.
#[derive(Debug)]
pub struct Severable<S> {
    inner: S,
    sever: Sever,
}

impl<S> Severable<S> {
    /// Wraps `inner`; `sever` cuts it.
    pub fn new(inner: S, sever: Sever) -> Self {
        Severable { inner, sever }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Severable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Registered before the check, so a cut in between wakes us.
        self.sever.0.reader.register(cx.waker());
        if self.sever.is_cut() {
            // The end of the stream: nothing more is filled in.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Severable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_cut_ends_a_waiting_read_and_passes_nothing_more() {
        let (client, server) = tokio::io::duplex(64);
        let sever = Sever::default();
        let mut stream = Severable::new(server, sever.clone());
        let mut client = client;
        client.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(stream.read(&mut buf).await.expect("read"), 2);
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = stream.read(&mut buf).await.expect("read");
            (n, stream)
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        sever.cut();
        let (n, mut stream) = tokio::time::timeout(std::time::Duration::from_secs(1), reading)
            .await
            .expect("the cut wakes the reader")
            .expect("task");
        assert_eq!(n, 0, "the end of the stream");
        client.write_all(b"late").await.expect("write");
        assert_eq!(stream.read(&mut buf).await.expect("read"), 0);
    }
}
