//! Change feeds over the client protocol: a `Watch` stream on one node (`WatchStream`), and
//! one that follows a cluster, moving to the next region from its last position when its
//! region fails (`RoutedWatch`).

use super::client::{Client, ClientFailure};
use super::client_proto::{
    decode, encode_at, Answer, ClientRequest, ClientResponse, ErrorCode, CLIENT_FRAME_BYTES_MAX,
    WATCH_HEARTBEAT_MS,
};
use super::framing::{read_frame, write_frame};
use super::routed::{RoutedClient, RoutedError};
use meridian_core::model::CausalToken;
use meridian_core::read::FeedEvent;
use std::borrow::Borrow;
use std::time::Duration;

/// Longest a watch waits for a frame before it counts its region as gone: three heartbeats.
pub const WATCH_SILENCE: Duration = Duration::from_millis(3 * WATCH_HEARTBEAT_MS);

/// A watch on one node: `Changes` frames as they come. Dropping it closes the stream.
pub struct WatchStream {
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
    position: CausalToken,
}

impl WatchStream {
    /// Opens a watch of the keys under `prefix` after `from` (after what the node applied
    /// when `None`), on the node's named feed `name` if given.
    pub(crate) async fn open(
        client: &Client,
        prefix: &[u8],
        from: Option<CausalToken>,
        name: Option<String>,
    ) -> Result<WatchStream, ClientFailure> {
        let request = ClientRequest::Watch {
            prefix: prefix.to_vec(),
            from: from.clone(),
            name,
        };
        client.check_carries(&request)?;
        let frame = encode_at(client.version(), &request);
        if frame.len() > CLIENT_FRAME_BYTES_MAX {
            let (len, max) = (frame.len(), CLIENT_FRAME_BYTES_MAX);
            return Err(ClientFailure::TooLarge { len, max });
        }
        let (mut send, recv) = client
            .connection()
            .open_bi()
            .await
            .map_err(|e| ClientFailure::Connect(e.to_string()))?;
        write_frame(&mut send, frame)
            .await
            .map_err(|e| ClientFailure::Connect(e.to_string()))?;
        Ok(WatchStream {
            _send: send,
            recv,
            position: from.unwrap_or_default(),
        })
    }

    /// The next frame's events (empty for a heartbeat); a node silent for `WATCH_SILENCE`,
    /// or a stream that ends, is a `Stream` failure (resume elsewhere from `position`).
    pub async fn next(&mut self) -> Result<Vec<FeedEvent>, ClientFailure> {
        let read = read_frame(&mut self.recv, CLIENT_FRAME_BYTES_MAX);
        let bytes = match tokio::time::timeout(WATCH_SILENCE, read).await {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => return Err(ClientFailure::Stream("the watch ended".into())),
            Ok(Err(e)) => return Err(ClientFailure::Stream(e.to_string())),
            Err(_) => {
                return Err(ClientFailure::Stream(format!(
                    "no word from the node in {WATCH_SILENCE:?}"
                )))
            }
        };
        let answer = decode::<Answer>(&bytes).map_err(ClientFailure::Protocol)?;
        match answer.response {
            ClientResponse::Changes { events, position } => {
                self.position.merge(&position);
                Ok(events)
            }
            ClientResponse::Error(e) => Err(ClientFailure::Server(e)),
            other => Err(ClientFailure::Protocol(format!(
                "unexpected answer to a watch: {other:?}"
            ))),
        }
    }

    /// The position after every event received: where to resume once they are handled.
    pub fn position(&self) -> &CausalToken {
        &self.position
    }
}

/// A watch that follows a cluster: events from the nearest region that serves it and, when
/// that region fails or goes silent, from the next, resumed from the last position received
/// (delivery is at least once: events after that position may come again).
///
/// `C` is how the watch holds its client: `&RoutedClient` from `RoutedClient::watch`, or any
/// owner of one (an `Arc`, a handle) through `RoutedWatch::new`.
pub struct RoutedWatch<C: Borrow<RoutedClient>> {
    client: C,
    prefix: Vec<u8>,
    name: Option<String>,
    position: Option<CausalToken>,
    stream: Option<(usize, WatchStream)>,
}

impl<C: Borrow<RoutedClient>> RoutedWatch<C> {
    /// A watch of the keys under `prefix` after `from` through `client` (see
    /// `RoutedClient::watch`); nothing is sent before the first `next`.
    pub fn new(
        client: C,
        prefix: &[u8],
        from: Option<CausalToken>,
        name: Option<String>,
    ) -> RoutedWatch<C> {
        RoutedWatch {
            client,
            prefix: prefix.to_vec(),
            name,
            position: from,
            stream: None,
        }
    }

    /// The next frame's events (empty for a heartbeat). Fails when the request itself is
    /// refused (a bad prefix, a role: `Refused`), or when every region was tried in this call
    /// and none served it: `Refused` with the last region's own refusal when there was one
    /// (`Uncoverable`: no region will ever hold the position's writes, so rebuild and watch
    /// from now on; `NotYetVisible`: none holds them yet), else `NoRegion`. Call again to
    /// retry.
    pub async fn next(&mut self) -> Result<Vec<FeedEvent>, RoutedError> {
        let mut why = Vec::new();
        // Regions tried in this call, and the last refusal a region gave for its own reasons.
        let mut tried = std::collections::BTreeSet::new();
        let mut refusal: Option<(String, ClientFailure)> = None;
        loop {
            if let Some((i, stream)) = &mut self.stream {
                let i = *i;
                let name = self.client.borrow().region_name(i);
                match stream.next().await {
                    Ok(events) => {
                        let position = stream.position().clone();
                        self.position = Some(position.clone());
                        self.client.borrow().merge_token(&position);
                        return Ok(events);
                    }
                    Err(ClientFailure::Server(e)) if refused_everywhere(e.code) => {
                        let failure = ClientFailure::Server(e);
                        return Err(RoutedError::Refused {
                            region: name,
                            failure,
                        });
                    }
                    Err(ClientFailure::Server(e)) => {
                        why.push(format!("{name}: {e:?}"));
                        // A region behind is healthy: its breaker stays as it is.
                        if e.code != ErrorCode::NotYetVisible {
                            self.client.borrow().region_failed(i);
                        }
                        refusal = Some((name, ClientFailure::Server(e)));
                    }
                    Err(e) => {
                        why.push(format!("{name}: {e}"));
                        self.client.borrow().region_failed(i);
                    }
                }
                tried.insert(i);
                self.stream = None;
            }
            let mut opened = None;
            let untried: Vec<usize> = self
                .client
                .borrow()
                .regions_to_try()
                .into_iter()
                .filter(|i| !tried.contains(i))
                .collect();
            for i in untried {
                tried.insert(i);
                let name = self.client.borrow().region_name(i);
                let conn = match self.client.borrow().region_conn(i).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        why.push(format!("{name}: {e}"));
                        self.client.borrow().region_failed(i);
                        continue;
                    }
                };
                let open = WatchStream::open(
                    &conn,
                    &self.prefix,
                    self.position.clone(),
                    self.name.clone(),
                );
                match open.await {
                    Ok(stream) => {
                        opened = Some((i, stream));
                        break;
                    }
                    // A region of an older release: the next may serve it.
                    Err(ClientFailure::Server(e)) if e.code == ErrorCode::Unsupported => {
                        why.push(format!("{name}: {}", e.message));
                    }
                    Err(e @ ClientFailure::Server(_)) => {
                        return Err(RoutedError::Refused {
                            region: name,
                            failure: e,
                        });
                    }
                    Err(e) => {
                        why.push(format!("{name}: {e}"));
                        self.client.borrow().region_failed(i);
                    }
                }
            }
            match opened {
                Some(s) => self.stream = Some(s),
                None => {
                    return Err(match refusal {
                        Some((region, failure)) => RoutedError::Refused { region, failure },
                        None => RoutedError::NoRegion(why.join("; ")),
                    })
                }
            }
        }
    }

    /// The position after every event received: where the watch resumes.
    pub fn position(&self) -> Option<&CausalToken> {
        self.position.as_ref()
    }

    /// The region serving the watch now, if one is.
    pub fn region(&self) -> Option<String> {
        self.stream
            .as_ref()
            .map(|(i, _)| self.client.borrow().region_name(*i))
    }
}

/// Whether every region would refuse a watch as this one did (the request itself is wrong);
/// other refusals (not yet applied, unavailable, rate-limited, a storage fault) are the
/// region's, and the watch moves on to the next.
pub(crate) fn refused_everywhere(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadRequest
            | ErrorCode::InvalidKey
            | ErrorCode::InvalidOperation
            | ErrorCode::Forbidden
            | ErrorCode::ValueTooLarge
    )
}
