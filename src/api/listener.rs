//! The HTTP listener: accepts connections and serves each with hyper, under the timeouts and
//! limits a server reachable from the Internet needs. (warp's own server sets no timer, so a
//! client sending its request headers a byte at a time could hold a connection, and its memory,
//! indefinitely.)
//!
//! - A connection that sends nothing is closed after the request timeout: hyper's header timer
//!   starts only with the first byte, so without this a client could open sockets until the
//!   process runs out of file descriptors.
//! - At most [`ConnectionLimits::total`] connections are open at once; past it the listener
//!   stops accepting (new ones wait in the kernel's queue) until one closes.
//! - At most [`ConnectionLimits::per_address`] come from one address; more are closed at once.
//!
//! On shutdown it stops accepting, lets the requests in flight finish, and closes idle
//! connections.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulConnection, GracefulShutdown},
    },
};
use tokio::sync::Semaphore;

/// The address of the client on the other end, in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// How many connections the listener keeps open (`[limits] max_connections` and
/// `connections_per_address`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub total: usize,
    /// Open connections from one IP address.
    pub per_address: usize,
}

/// Serves `service` on every connection `listener` accepts until `shutdown` resolves. A client
/// has `timeout` to send a request's headers (`[limits] request_timeout_seconds`), and a
/// kept-alive connection is closed when it sits idle that long.
pub async fn run<S>(
    listener: tokio::net::TcpListener,
    timeout: Duration,
    limits: ConnectionLimits,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    S: tower_service::Service<
            http::Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    // Tells connections still waiting for their first byte to give up at shutdown.
    let (stopping, _) = tokio::sync::watch::channel(());
    let open = Arc::new(Semaphore::new(limits.total));
    let per_address = AddressCounts::new(limits.per_address);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &open) => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer, permit) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                wait_after_accept_error(&error).await;
                continue;
            }
        };
        let Some(slot) = per_address.claim(peer.ip()) else {
            tracing::debug!(peer = %peer.ip(), "too many connections from one address");
            continue;
        };
        let watcher = graceful.watcher();
        let mut stop = stopping.subscribe();
        let service = service.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            tokio::select! {
                sent = first_byte(&stream, timeout) => if !sent { return },
                _ = stop.changed() => return,
            }
            let connection = serve_connection(stream, peer, timeout, service);
            if let Err(error) = watcher.watch(connection).await {
                // A client that goes away mid-request, or sends no HTTP: its business.
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.send_replace(());
    graceful.shutdown().await;
}

/// Whether the client sends something (or closes) within `timeout`.
async fn first_byte(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    let mut byte = [0_u8; 1];
    matches!(tokio::time::timeout(timeout, stream.peek(&mut byte)).await, Ok(Ok(1..)))
}

/// Waits for a free connection slot, then for a connection.
async fn accept(
    listener: &tokio::net::TcpListener,
    open: &Arc<Semaphore>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let permit = open.clone().acquire_owned().await.expect("the semaphore is never closed");
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, permit))
}

/// Open connections per client address, each held by an [`AddressSlot`].
#[derive(Clone)]
struct AddressCounts {
    limit: usize,
    counts: Arc<Mutex<BTreeMap<IpAddr, usize>>>,
}

impl AddressCounts {
    fn new(limit: usize) -> Self {
        Self { limit, counts: Arc::default() }
    }

    /// A slot for one more connection from `address`, or `None` when it has its limit.
    fn claim(&self, address: IpAddr) -> Option<AddressSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(address).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { counts: self.clone(), address })
    }
}

/// One open connection from an address; dropping it frees the slot.
struct AddressSlot {
    counts: AddressCounts,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// One HTTP/1.1 connection, with the timer hyper's timeouts need.
fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    service: S,
) -> impl GracefulConnection<Error = Box<dyn std::error::Error + Send + Sync>> + Send
where
    S: tower_service::Service<
            http::Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let service = service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        service.clone().call(request)
    });
    // HTTP/1.1 only: Hearth speaks plain HTTP, where clients and TLS proxies use HTTP/1.1, and
    // hyper closes no idle HTTP/2 connection (it only pings), which would let a client hold
    // connections past every timeout here.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeout);
    builder.serve_connection(TokioIo::new(stream), service).into_owned()
}

/// After a failed accept: a connection reset is nothing; running out of file descriptors
/// waits a moment for some to close, rather than spinning.
async fn wait_after_accept_error(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(500)).await;
}
