//! Reads a node's HTTP endpoint: Prometheus metrics and the `/health` status.

use meridian_runtime::client_proto::NodeStatus;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a scrape may take to connect, and then to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of `GET path` from a node's metrics endpoint.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: meridian\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("GET {path} from {addr}: no HTTP response"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path} from {addr}: {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_string())
}

/// The Prometheus text of a node.
pub fn metrics(addr: SocketAddr) -> anyhow::Result<String> {
    http_get(addr, "/metrics")
}

/// A node's status, as `/health` reports it.
pub fn health(addr: SocketAddr) -> anyhow::Result<NodeStatus> {
    Ok(serde_json::from_str(&http_get(addr, "/health")?)?)
}

/// The samples of metric `name` (every label set) in Prometheus text.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        Some((series, value.parse().ok()?))
    })
}

/// The sum of metric `name` over its label sets (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    samples(text, name).map(|(_, v)| v).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_match_the_whole_name_and_sum_over_labels() {
        let text = "# TYPE a_total counter\na_total{peer=\"x\"} 2\na_total{peer=\"y\"} 3\na_total_more 7\nb 1.5\n";
        assert_eq!(metric(text, "a_total"), 5.0);
        assert_eq!(metric(text, "b"), 1.5);
        assert_eq!(metric(text, "c"), 0.0);
        assert_eq!(samples(text, "a_total").count(), 2);
    }
}
