#![allow(clippy::unwrap_used)]
//! The operator's HTTP endpoints over a real socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kcache_operator::{Metrics, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Metrics::new();
    metrics.set_managed_clusters(3);
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, metrics, ready.clone(), async {
        let _ = stopped.await;
    }));

    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
    ready.store(true, Ordering::Relaxed);
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    let text = get(addr, "/metrics").await;
    assert!(
        text.contains("kcache_operator_managed_clusters 3"),
        "{text}"
    );
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
