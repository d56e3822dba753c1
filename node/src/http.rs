//! The node's HTTP endpoint: `/metrics` (Prometheus text), `/health` (the status as JSON) and
//! `/route?lat=..&lon=..` (the region that should serve a client there, with the fallbacks in
//! order, as JSON: for a load balancer or a geo-DNS front end).
//! One request per connection; a client that sends nothing in time is dropped, an accept error
//! (out of file descriptors, say) is logged and the endpoint goes on.

use meridian_core::routing::Location;
use meridian_runtime::{RouteHandle, StatusHandle};
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
    routes: RouteHandle,
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
        let routes = routes.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; REQUEST_BYTES_MAX];
            let n = match tokio::time::timeout(IO_TIMEOUT, sock.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return, // nothing in time, or the client went away
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let (code, kind, body) = match path {
                "/route" => match near(query) {
                    Ok(place) => (
                        "200 OK",
                        "application/json",
                        serde_json::to_string(&routes.route(place.as_ref()))
                            .unwrap_or_else(|_| "{}".into()),
                    ),
                    Err(why) => ("400 Bad Request", "text/plain", format!("{why}\n")),
                },
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

/// The place in a `/route` query: `lat` and `lon` in degrees, both or neither.
fn near(query: &str) -> Result<Option<Location>, String> {
    let mut lat = None;
    let mut lon = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("lat", v)) => lat = Some(v),
            Some(("lon", v)) => lon = Some(v),
            _ => return Err(format!("unknown query parameter {pair:?}: use lat and lon")),
        }
    }
    match (lat, lon) {
        (None, None) => Ok(None),
        (Some(lat), Some(lon)) => format!("{lat},{lon}").parse().map(Some),
        _ => Err("give both lat and lon".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::near;

    #[test]
    fn route_queries_name_a_place_or_are_refused() {
        let place = near("lat=48.85&lon=2.35").expect("a place").expect("some");
        assert_eq!((place.latitude, place.longitude), (48.85, 2.35));
        assert_eq!(near("").expect("no place"), None);
        assert!(near("lat=48.85").is_err());
        assert!(near("lat=100&lon=0").is_err());
        assert!(near("lat=1&lon=2&x=3").is_err());
    }
}
