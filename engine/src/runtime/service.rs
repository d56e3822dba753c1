//! The client service: one request per bidirectional stream, rate-limited per client
//! connection with a token bucket; engine calls run on the blocking pool.

use super::client_proto::{
    decode, encode, ClientError, ClientRequest, ClientResponse, ErrorCode, NodeStatus,
    CLIENT_FRAME_BYTES_MAX,
};
use super::framing::{read_frame, write_frame};
use crate::{Batch, Engine, Error};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest a read waits for a causal token.
const TOKEN_WAIT_MS_MAX: u32 = 10_000;
/// Requests served at once on one connection.
const STREAMS_PER_CONNECTION: usize = 64;

/// Serves client connections for one engine.
pub(crate) struct Service {
    engine: Engine,
    limiter: DefaultKeyedRateLimiter<SocketAddr>,
    status: Arc<Mutex<NodeStatus>>,
}

impl Service {
    pub(crate) fn new(
        engine: Engine,
        per_second: u32,
        burst: u32,
        status: Arc<Mutex<NodeStatus>>,
    ) -> Service {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst));
        Service {
            engine,
            limiter,
            status,
        }
    }

    /// Serves one client connection until it closes.
    pub(crate) async fn serve(self: Arc<Self>, conn: quinn::Connection) {
        let client = conn.remote_address();
        let slots = Arc::new(tokio::sync::Semaphore::new(STREAMS_PER_CONNECTION));
        loop {
            let (mut send, mut recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => return,
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let response = match read_frame(&mut recv, CLIENT_FRAME_BYTES_MAX).await {
                    Ok(Some(bytes)) => this.respond(client, &bytes).await,
                    Ok(None) => return,
                    Err(e) => error(ErrorCode::BadRequest, e.to_string()),
                };
                if write_frame(&mut send, encode(&response)).await.is_ok() {
                    let _ = send.finish();
                }
            });
        }
    }

    async fn respond(&self, client: SocketAddr, bytes: &[u8]) -> ClientResponse {
        if let Err(not_until) = self.limiter.check_key(&client) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("meridian_client_rate_limited_total").increment(1);
            return ClientResponse::Error(ClientError {
                code: ErrorCode::RateLimited,
                message: "too many requests".into(),
                retry_after_ms: Some(wait.as_millis().max(1) as u64),
            });
        }
        let request: ClientRequest = match decode(bytes) {
            Ok(r) => r,
            Err(e) => return error(ErrorCode::BadRequest, e),
        };
        if matches!(request, ClientRequest::Status) {
            return ClientResponse::Status(
                self.status.lock().map(|s| s.clone()).unwrap_or_default(),
            );
        }
        let engine = self.engine.clone();
        let outcome = tokio::task::spawn_blocking(move || execute(&engine, request)).await;
        let response = outcome.unwrap_or_else(|e| error(ErrorCode::Unavailable, e.to_string()));
        let result = if matches!(response, ClientResponse::Error(_)) {
            "error"
        } else {
            "ok"
        };
        metrics::counter!("meridian_client_requests_total", "result" => result).increment(1);
        response
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ClientResponse {
    ClientResponse::Error(ClientError {
        code,
        message: message.into(),
        retry_after_ms: None,
    })
}

fn from_engine(e: Error) -> ClientResponse {
    let code = match &e {
        Error::InvalidKey(_) => ErrorCode::InvalidKey,
        Error::ValueTooLarge { .. }
        | Error::RecordTooLarge { .. }
        | Error::BatchTooLarge { .. } => ErrorCode::ValueTooLarge,
        Error::WrongType { .. } => ErrorCode::WrongType,
        Error::InvalidOperation(_) | Error::CounterOverflow { .. } | Error::InvalidToken(_) => {
            ErrorCode::InvalidOperation
        }
        Error::Corrupt { .. } | Error::FutureVersion { .. } => ErrorCode::Corrupt,
        _ => ErrorCode::Unavailable,
    };
    error(code, e.to_string())
}

fn execute(engine: &Engine, request: ClientRequest) -> ClientResponse {
    match request {
        ClientRequest::Apply { key, op, .. } => match engine.apply(&key, op) {
            Ok(token) => ClientResponse::Written { token },
            Err(e) => from_engine(e),
        },
        ClientRequest::Write { ops, .. } => {
            let batch = ops.into_iter().fold(Batch::new(), |b, (k, op)| b.op(k, op));
            match engine.write(batch) {
                Ok(token) => ClientResponse::Written { token },
                Err(e) => from_engine(e),
            }
        }
        ClientRequest::Read {
            key,
            token,
            wait_ms,
        } => {
            if let Some(token) = token {
                // Woken by the apply that makes the token visible, not by polling.
                let wait = Duration::from_millis(u64::from(wait_ms.min(TOKEN_WAIT_MS_MAX)));
                if !engine.wait_covers(&token, wait) {
                    return error(
                        ErrorCode::NotYetVisible,
                        "this region has not yet applied the token's writes",
                    );
                }
            }
            match engine.read(&key) {
                Ok(read) => ClientResponse::Value { read },
                Err(e) => from_engine(e),
            }
        }
        ClientRequest::Scan { prefix, limit } => {
            match engine.scan_prefix(&prefix, limit.min(10_000) as usize) {
                Ok(rows) => ClientResponse::Rows { rows },
                Err(e) => from_engine(e),
            }
        }
        ClientRequest::Status => error(ErrorCode::BadRequest, "status is answered by the service"),
    }
}
