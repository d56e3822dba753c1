//! The node's HTTP endpoint: `/metrics` (Prometheus text) and `/health` (the status as JSON).
//! One request per connection; a client that sends nothing in time is dropped, an accept error
//! (out of file descriptors, say) is logged and the endpoint goes on.

use meridian_runtime::StatusHandle;
use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Longest wait for a request's first bytes, and for the answer to be written.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const REQUEST_BYTES_MAX: usize = 4096;
/// Pause after a failed accept before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    status: StatusHandle,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let mut sock = match accepted {
            Ok((sock, _)) => sock,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; REQUEST_BYTES_MAX];
            let n = match tokio::time::timeout(IO_TIMEOUT, sock.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return, // nothing in time, or the client went away
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (code, kind, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/health" => (
                    "200 OK",
                    "application/json",
                    serde_json::to_string(&status.get()).unwrap_or_else(|_| "{}".into()),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".into()),
            };
            let head = format!("HTTP/1.1 {code}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let write = async {
                sock.write_all(head.as_bytes()).await?;
                sock.write_all(body.as_bytes()).await
            };
            let _ = tokio::time::timeout(IO_TIMEOUT, write).await;
        });
    }
}
