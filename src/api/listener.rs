//! The HTTP listener: accepts connections and serves each with hyper, under the timeouts a
//! server reachable from the Internet needs. (warp's own server sets no timer, so a client
//! sending its request headers a byte at a time could hold a connection, and its memory,
//! indefinitely.) On shutdown it stops accepting, lets the requests in flight finish, and closes
//! idle connections.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulConnection, GracefulShutdown},
    },
};

/// The address of the client on the other end, in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `service` on every connection `listener` accepts until `shutdown` resolves. A client
/// has `timeout` to send a request's headers (`[limits] request_timeout_seconds`), and a
/// kept-alive connection is closed when it sits idle that long.
pub async fn run<S>(
    listener: tokio::net::TcpListener,
    timeout: Duration,
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
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    wait_after_accept_error(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = serve_connection(stream, peer, timeout, service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // A client that goes away mid-request, or sends no HTTP: its business.
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One connection, HTTP/1.1 or HTTP/2, with the timer hyper's timeouts need.
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(timeout);
    builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned()
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
