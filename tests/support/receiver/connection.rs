//! The receiver's connections: each accepted TCP stream is wrapped so the receiver can cut it
//! at will, both to drop one connection without answering and to cut them all on `stop` (axum
//! serves each connection in a task of its own, which stopping the server does not end).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections as [`KillableStream`]s and keeps a handle on each.
pub(super) struct TrackingListener {
    inner: TcpListener,
    connections: Arc<Connections>,
}

impl TrackingListener {
    pub(super) fn new(inner: TcpListener, connections: Arc<Connections>) -> Self {
        TrackingListener { inner, connections }
    }
}

impl Listener for TrackingListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (KillableStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let switch = self.connections.track();
                    return (KillableStream { stream, switch }, addr);
                }
                // e.g. out of file descriptors: let other tasks run, then try again.
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The handler's handle on its own connection.
#[derive(Clone)]
pub(super) struct Connection(Arc<KillSwitch>);

impl Connection {
    /// Closes the connection without another byte: whatever hyper tries next on it fails.
    pub(super) fn kill(&self) {
        self.0.kill();
    }
}

impl Connected<IncomingStream<'_, TrackingListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, TrackingListener>) -> Self {
        Connection(stream.io().switch.clone())
    }
}

/// Every connection accepted and maybe still open.
#[derive(Default)]
pub(super) struct Connections(Mutex<Vec<Weak<KillSwitch>>>);

impl Connections {
    fn track(&self) -> Arc<KillSwitch> {
        let switch = Arc::new(KillSwitch::default());
        let mut connections = self.0.lock().unwrap();
        connections.retain(|c| c.strong_count() > 0);
        connections.push(Arc::downgrade(&switch));
        switch
    }

    /// Kills every connection tracked so far.
    pub(super) fn cut_all(&self) {
        let connections = std::mem::take(&mut *self.0.lock().unwrap());
        for connection in connections.iter().filter_map(Weak::upgrade) {
            connection.kill();
        }
    }
}

/// Once killed, every read and write on the connection fails, so hyper drops it; a read or
/// write already waiting is woken to find out.
#[derive(Default)]
struct KillSwitch {
    killed: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl KillSwitch {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap());
        for waker in wakers {
            waker.wake();
        }
    }

    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        // Register before looking, so a kill in between still wakes this task.
        {
            let mut wakers = self.wakers.lock().unwrap();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
        }
        if self.killed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the test receiver dropped this connection",
            ))
        } else {
            Ok(())
        }
    }
}

pub(super) struct KillableStream {
    stream: TcpStream,
    switch: Arc<KillSwitch>,
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.switch.check(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.switch.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.switch.check(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
