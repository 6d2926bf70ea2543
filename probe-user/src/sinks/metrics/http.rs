//! A minimal HTTP/1.1 responder for `GET /metrics`: one request per
//! connection, bounded in size, time and concurrency. Enough for Prometheus
//! and curl; no framework needed for one read-only page.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use log::debug;
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::Metrics;

/// Largest request head read; Prometheus sends about 300 bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;

/// Binds the listener, so that a bad address or a port in use fails
/// before anything is attached.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))
}

/// Serves until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: try again shortly.
            Err(e) => {
                debug!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, &metrics)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("metrics: {peer}: {e}"),
                Err(_) => debug!("metrics: {peer}: timed out"),
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = route(&head, metrics);
    respond(&mut stream, status, &body).await
}

/// Status line and body for a request head.
fn route(head: &[u8], metrics: &Metrics) -> (&'static str, String) {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split(|b| *b == b'?').next().unwrap_or_default());
    match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", metrics.encode()),
        (Some(b"GET"), Some(b"/")) => ("200 OK", "netprobe: metrics at /metrics\n".into()),
        (Some(b"GET"), _) => ("404 Not Found", "not found: try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "only GET\n".into()),
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::new();
        let (status, body) = route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &m);
        assert_eq!(status, "200 OK");
        assert!(body.contains("netprobe_tcp_retransmits_total 0"), "{body}");
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", &m).0, "200 OK");
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n", &m).0, "404 Not Found");
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n", &m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"\r\n\r\n", &m).0, "405 Method Not Allowed");
    }

    /// The whole path over a real socket on loopback: bind, serve, one GET.
    #[test]
    fn serves_over_tcp() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let metrics = Metrics::new();
            metrics.retransmits.inc();
            let server = tokio::spawn(serve(listener, metrics));
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let mut reply = String::new();
            tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut reply))
                .await
                .unwrap()
                .unwrap();
            server.abort();
            assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
            assert!(reply.contains("\r\nContent-Type: text/plain; version=0.0.4"));
            assert!(
                reply.contains("\nnetprobe_tcp_retransmits_total 1\n"),
                "{reply}"
            );
        });
    }

    #[test]
    fn port_in_use_is_named() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = first.local_addr().unwrap();
            let err = bind(addr).await.unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--metrics-listen {addr}: ")),
                "{err}"
            );
            assert!(err.contains("in use"), "{err}");
        });
    }
}
