//! The accept loop: every connection is bounded in time and number, and a stop signal drains
//! the server within a deadline.
//!
//! Without these bounds a client that declares a large body and then stalls holds a socket (and
//! a file descriptor) forever; a thousand of them and `/healthz` stops answering. And a process
//! manager's SIGTERM must neither cut an in-flight token rotation in half (the client would lose
//! its session) nor wait forever for a connection that never finishes.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// Serves `app` on `listener` until `stop` completes, then lets in-flight requests finish for at
/// most `shutdown_grace_seconds` before returning (the remaining connections are dropped).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &ServerConfig,
    stop: impl Future<Output = ()>,
) {
    // HTTP/1.1 only: every bound below applies to it, and neither Envoy nor MCP clients speak
    // cleartext HTTP/2 to this server (an h2c connection would need its own idle and stream
    // bounds).
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, so it also closes a
        // keep-alive connection that sits idle between requests.
        .header_read_timeout(Duration::from_secs(settings.header_read_timeout_seconds));
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        // Past the limit the server stops accepting (new clients wait in the kernel's backlog)
        // rather than running out of file descriptors.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            () = &mut stop => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                app.oneshot(request)
                    .await
                    .map_err(|never: Infallible| never)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let grace = Duration::from_secs(settings.shutdown_grace_seconds);
    tracing::info!(
        connections = graceful.count(),
        grace_seconds = grace.as_secs(),
        "stopping: no new connections, letting in-flight requests finish"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("every connection closed"),
        Err(_) => tracing::warn!(
            grace_seconds = grace.as_secs(),
            "connections still open at the shutdown deadline are dropped"
        ),
    }
}

/// Completes on SIGTERM (a process manager stopping the server) or SIGINT (Ctrl-C).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn started(
        settings: ServerConfig,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(listener, app, &settings, async move {
                let _ = stopped.await;
            })
            .await;
        });
        (addr, stop, server)
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn handlers_see_the_peer_and_a_stalled_header_is_cut_off() {
        let settings = ServerConfig {
            header_read_timeout_seconds: 1,
            ..ServerConfig::default()
        };
        let (addr, stop, server) = started(settings).await;
        let answer = exchange(
            addr,
            b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("127.0.0.1"),
            "{answer}"
        );
        // Never finishes its headers: the server closes it (read_to_end returns).
        exchange(addr, b"GET /peer HTTP/1.1\r\nHost: x\r\n").await;
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_stop_waits_for_in_flight_connections_no_longer_than_the_grace() {
        let settings = ServerConfig {
            header_read_timeout_seconds: 3600,
            shutdown_grace_seconds: 1,
            ..ServerConfig::default()
        };
        let (addr, stop, server) = started(settings).await;
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // A full exchange on another connection: the stalled one has been accepted by now.
        exchange(
            addr,
            b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("serve returns once the grace is over")
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    }
}
