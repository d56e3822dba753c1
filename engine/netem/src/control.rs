//! The emulator's control interface: HTTP/1.1 with JSON, one request per connection, on the
//! address the configuration names.
//!
//! - `GET /links`: every directed link with its shape and counters.
//! - `GET /routes`: where each node reaches each other node (the relays' addresses).
//! - `POST /links?from=A&to=B[&both=true]` with a [`ShapeChange`] as the body: changes the
//!   links from A to B (`*` for every node), and B to A with `both`; answers the links changed.
//! - `POST /heal`: every link up again (latencies and other settings kept).

use crate::emulator::Netem;
use crate::shape::ShapeChange;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for a request, and for its answer to be written.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request (head and body) read.
const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Most bytes read and dropped after a refused request.
const DRAIN_BYTES_MAX: usize = 1 << 20;

/// Serves `netem`'s control interface on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, netem: Arc<Netem>) {
    loop {
        let mut sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                tracing::warn!(error = %e, "netem control: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let netem = netem.clone();
        tokio::spawn(async move {
            let (code, body) = match tokio::time::timeout(IO_TIMEOUT, read_request(&mut sock)).await
            {
                Ok(Ok(Ok(request))) => answer(&netem, &request),
                Ok(Ok(Err((code, why)))) => (code, error_body(&why)),
                // Nothing in time, or the client went away.
                Ok(Err(_)) | Err(_) => return,
            };
            let head = format!(
                "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let write = async {
                sock.write_all(head.as_bytes()).await?;
                sock.write_all(body.as_bytes()).await?;
                sock.shutdown().await?;
                // Whatever the client still sends (a request refused as too large) is read
                // and dropped: closing with unread bytes would reset the connection before
                // the client reads the answer.
                let mut rest = [0u8; 4096];
                let mut drained = 0;
                while drained < DRAIN_BYTES_MAX {
                    match sock.read(&mut rest).await? {
                        0 => break,
                        n => drained += n,
                    }
                }
                std::io::Result::Ok(())
            };
            let _ = tokio::time::timeout(IO_TIMEOUT, write).await;
        });
    }
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    query: String,
    body: Vec<u8>,
}

/// A request refused before it is understood: the status line and why.
type Refusal = (&'static str, String);

/// Reads one request (head, then as much body as `content-length` says), or the refusal to
/// answer with.
async fn read_request(
    sock: &mut tokio::net::TcpStream,
) -> std::io::Result<Result<Request, Refusal>> {
    let too_large = || {
        Ok(Err((
            "413 Payload Too Large",
            format!("requests are limited to {REQUEST_BYTES_MAX} bytes"),
        )))
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err((
                "400 Bad Request",
                "the request's head never ended (CRLF CRLF)".into(),
            )));
        }
        if buf.len() + n > REQUEST_BYTES_MAX {
            return too_large();
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    if header("transfer-encoding").is_some() {
        return Ok(Err((
            "411 Length Required",
            "send the body with a content-length, not a transfer-encoding".into(),
        )));
    }
    let length = match header("content-length").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Ok(Err(("400 Bad Request", "bad content-length".into()))),
    };
    if length > REQUEST_BYTES_MAX {
        return too_large();
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err(("400 Bad Request", "the body ended early".into())));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Ok(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        body,
    }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status line and JSON body answering `request`.
fn answer(netem: &Netem, request: &Request) -> (&'static str, String) {
    let json = |v: serde_json::Result<String>| v.unwrap_or_else(|_| "null".into());
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/links") => ("200 OK", json(serde_json::to_string(&netem.report_all()))),
        ("GET", "/routes") => {
            let routes: Vec<_> = netem
                .routes()
                .into_iter()
                .map(|(from, to, listen)| serde_json::json!({"from": from, "to": to, "listen": listen}))
                .collect();
            ("200 OK", json(serde_json::to_string(&routes)))
        }
        ("POST", "/heal") => {
            netem.heal_all();
            ("200 OK", json(serde_json::to_string(&netem.report_all())))
        }
        ("POST", "/links") => match change(netem, request) {
            Ok(body) => ("200 OK", body),
            Err(why) => ("400 Bad Request", error_body(&why)),
        },
        _ => (
            "404 Not Found",
            r#"{"error":"use GET /links, GET /routes, POST /links?from=A&to=B[&both=true], POST /heal"}"#.into(),
        ),
    }
}

/// `{"error": why}`.
fn error_body(why: &str) -> String {
    serde_json::json!({ "error": why }).to_string()
}

/// `POST /links`.
fn change(netem: &Netem, request: &Request) -> Result<String, String> {
    let (mut from, mut to, mut both) = (None, None, false);
    for pair in request.query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("from", v)) => from = Some(unescape(v)),
            Some(("to", v)) => to = Some(unescape(v)),
            Some(("both", v)) => both = v == "true" || v == "1",
            _ => return Err(format!("unknown query parameter {pair:?}")),
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err("give from and to (a node's name, or *)".into());
    };
    let change: ShapeChange = if request.body.is_empty() {
        ShapeChange::default()
    } else {
        serde_json::from_slice(&request.body).map_err(|e| format!("bad shape: {e}"))?
    };
    let changed = netem
        .change(&from, &to, both, &change)
        .map_err(|e| e.to_string())?;
    serde_json::to_string(&changed).map_err(|e| e.to_string())
}

/// `%2A` (and any `%XX`) in a query value.
fn unescape(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends one request to a control interface and returns the body of a 200 answer; the body
/// of any other answer becomes the error. Blocking (for the command line).
pub fn call(
    control: std::net::SocketAddr,
    method: &str,
    target: &str,
    body: &str,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect_timeout(&control, IO_TIMEOUT)
        .map_err(|e| format!("cannot reach the emulator at {control}: {e}"))?;
    let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: {control}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(request.as_bytes())
        .map_err(|e| format!("{control}: {e}"))?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer)
        .map_err(|e| format!("{control}: {e}"))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if head.starts_with("HTTP/1.1 200") {
        return Ok(body.to_string());
    }
    let reason = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
    Err(reason.unwrap_or_else(|| body.to_string()))
}
