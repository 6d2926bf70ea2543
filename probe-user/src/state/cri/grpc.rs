//! Unary gRPC calls over HTTP/2 on a unix socket: the message framing
//! (a compressed flag, a big-endian length, the protobuf bytes) and the
//! status in the trailers. Just what CRI needs; no TLS, no compression.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

/// Replies larger than this are refused (a node with thousands of pods
/// lists well under it).
pub const MAX_REPLY: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("{method}: gRPC status {code}: {message}")]
    Status {
        method: String,
        code: u32,
        message: String,
    },
    #[error("{0}")]
    Protocol(String),
}

/// One HTTP/2 connection to a gRPC server; calls may run on clones at once.
#[derive(Clone)]
pub struct Channel {
    send: h2::client::SendRequest<Bytes>,
}

impl Channel {
    /// Connects and does the HTTP/2 handshake; the connection is driven by
    /// a task that ends when the last clone is dropped.
    pub async fn connect(socket: &Path) -> Result<Channel, Error> {
        let io = tokio::net::UnixStream::connect(socket).await?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 20)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("CRI connection ended: {e}");
            }
        });
        Ok(Channel { send })
    }

    /// Calls `method` (`/package.Service/Method`) with `request`.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<Resp, Error> {
        let reply = self.call_raw(method, frame(request)).await?;
        unframe(&reply).map_err(|e| Error::Protocol(format!("{method}: {e}")))
    }

    /// The same with a framed request; returns the reply's bytes as they
    /// came (framed), after checking the gRPC status.
    pub async fn call_raw(&self, method: &str, request: Bytes) -> Result<Bytes, Error> {
        let http = http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let mut send = self.send.clone().ready().await?;
        let (response, mut body_tx) = send.send_request(http, false)?;
        body_tx.send_data(request, true)?;
        let response = response.await?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Error::Protocol(format!(
                "{method}: HTTP status {}",
                parts.status
            )));
        }
        // A trailers-only reply carries the status in the headers.
        status(method, &parts.headers)?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if buf.len() + chunk.len() > MAX_REPLY + 5 {
                return Err(Error::Protocol(format!(
                    "{method}: reply larger than {MAX_REPLY} bytes"
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        if let Some(trailers) = body.trailers().await? {
            status(method, &trailers)?;
        }
        Ok(buf.freeze())
    }
}

/// A message as gRPC puts it on the wire: uncompressed flag, length, bytes.
pub fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message
        .encode(&mut buf)
        .expect("a BytesMut with the capacity reserved takes the message");
    buf.freeze()
}

/// The one message of a unary reply.
pub fn unframe<M: Message + Default>(buf: &[u8]) -> Result<M, String> {
    let Some((head, rest)) = buf.split_first_chunk::<5>() else {
        return Err(format!("reply of {} bytes has no message", buf.len()));
    };
    if head[0] != 0 {
        return Err("compressed reply (not asked for)".into());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if rest.len() != len {
        return Err(format!(
            "message says {len} bytes, reply holds {}",
            rest.len()
        ));
    }
    M::decode(rest).map_err(|e| format!("decoding the reply: {e}"))
}

fn status(method: &str, headers: &http::HeaderMap) -> Result<(), Error> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(());
    };
    let code: u32 = code
        .to_str()
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("{method}: unreadable grpc-status")))?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("")
        .to_string();
    Err(Error::Status {
        method: method.to_string(),
        code,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::cri::proto::{PodSandboxStatusRequest, RunPodSandboxResponse};

    #[test]
    fn frames_round_trip_and_bad_frames_are_refused() {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: "abc".into(),
            verbose: true,
        };
        let bytes = frame(&req);
        // flag, length 7, field 1 "abc", field 2 true
        assert_eq!(&bytes[..], b"\0\0\0\0\x07\x0a\x03abc\x10\x01");
        let back: PodSandboxStatusRequest = unframe(&bytes).unwrap();
        assert_eq!(back, req);
        assert!(unframe::<RunPodSandboxResponse>(&bytes[..4]).is_err());
        assert!(unframe::<RunPodSandboxResponse>(&bytes[..8]).is_err());
        let mut compressed = bytes.to_vec();
        compressed[0] = 1;
        assert!(unframe::<PodSandboxStatusRequest>(&compressed).is_err());
    }
}
