//! Frames on QUIC streams: a 4-byte big-endian length, then the bytes. The length is checked
//! against the bound before anything is allocated.

use bytes::{Bytes, BytesMut};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// The declared length exceeds the bound.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Bound.
        max: usize,
    },
    /// The stream failed or ended inside a frame.
    #[error("stream: {0}")]
    Stream(String),
}

/// Writes one frame, handing its bytes to QUIC without a copy.
pub async fn write_frame(send: &mut quinn::SendStream, bytes: Vec<u8>) -> Result<(), FramingError> {
    let len = u32::try_from(bytes.len()).map_err(|_| FramingError::TooLarge {
        len: bytes.len(),
        max: u32::MAX as usize,
    })?;
    let header = Bytes::copy_from_slice(&len.to_be_bytes());
    send.write_all_chunks(&mut [header, Bytes::from(bytes)])
        .await
        .map_err(|e| FramingError::Stream(e.to_string()))
}

/// Reads one frame; `None` when the stream ended cleanly between frames. QUIC's chunks are
/// copied into a buffer of exactly the frame's length (not zeroed first): a chunk would keep
/// its whole receive buffer alive, and queued frames must hold only what their length says.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Bytes>, FramingError> {
    match read_frame_len(recv, max).await? {
        Some(len) => read_frame_body(recv, len).await.map(Some),
        None => Ok(None),
    }
}

/// Reads a frame's length (checked against `max`); `None` when the stream ended cleanly
/// between frames. The caller may reserve the bytes before `read_frame_body` allocates them.
pub async fn read_frame_len(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<usize>, FramingError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(FramingError::Stream(e.to_string())),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FramingError::TooLarge { len, max });
    }
    Ok(Some(len))
}

/// Reads a frame's `len` bytes, after `read_frame_len`.
pub async fn read_frame_body(
    recv: &mut quinn::RecvStream,
    len: usize,
) -> Result<Bytes, FramingError> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let chunk = recv
            .read_chunk(len - buf.len(), true)
            .await
            .map_err(|e| FramingError::Stream(e.to_string()))?
            .ok_or_else(|| FramingError::Stream("the stream ended inside a frame".into()))?;
        buf.extend_from_slice(&chunk.bytes);
    }
    Ok(buf.freeze())
}
