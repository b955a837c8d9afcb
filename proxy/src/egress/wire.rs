//! HTTP/1.1 on a raw stream, just enough for a recording forward proxy:
//! request and response heads parsed with `httparse` (header names kept in
//! the case and order they arrived), bodies framed by Content-Length,
//! chunked transfer coding, or the end of the connection.
//!
//! A body is kept twice: `raw` (the bytes as framed on the wire, forwarded
//! and replayed unchanged) and `decoded` (the payload, recorded for the
//! comparator).

use bytes::Bytes;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest request or response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted (requests and responses).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Most header lines in one head.
const MAX_HEADERS: usize = 128;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection before the message was complete.
    #[error("connection closed before the message was complete")]
    Eof,
    /// Reading failed (a reset shows up here).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not HTTP/1.x, or a malformed head or chunk.
    #[error("malformed HTTP: {0}")]
    Malformed(String),
    /// A head or body past the limits.
    #[error("message too large: {0}")]
    TooLarge(&'static str),
}

/// A request head as received.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Names in the case and order received; values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A response head as received.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub version: u8,
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The head's exact bytes, status line to the blank line.
    pub raw: Bytes,
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    ToClose,
}

/// A body in both forms.
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub raw: Bytes,
    pub decoded: Bytes,
}

/// The first value of a header, case-insensitively.
pub fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Whether any `name` header lists `token` (comma-separated, any case).
pub fn has_token(headers: &[(String, Vec<u8>)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .any(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
}

fn length_or_chunked(headers: &[(String, Vec<u8>)]) -> Result<Option<Framing>, WireError> {
    if has_token(headers, "transfer-encoding", "chunked") {
        return Ok(Some(Framing::Chunked));
    }
    match header(headers, "content-length") {
        Some(v) => {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| WireError::Malformed("invalid Content-Length".into()))?;
            Ok(Some(Framing::Length(n)))
        }
        None => Ok(None),
    }
}

/// A request's body framing (no length: no body).
pub fn request_framing(head: &RequestHead) -> Result<Framing, WireError> {
    Ok(length_or_chunked(&head.headers)?.unwrap_or(Framing::None))
}

/// A response's body framing, given the request method.
pub fn response_framing(method: &str, head: &ResponseHead) -> Result<Framing, WireError> {
    if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304
    {
        return Ok(Framing::None);
    }
    Ok(length_or_chunked(&head.headers)?.unwrap_or(Framing::ToClose))
}

/// A buffered reader over one direction of a connection.
pub struct Reader<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(io: R) -> Reader<R> {
        Reader {
            io,
            buf: Vec::with_capacity(8 * 1024),
        }
    }

    /// The underlying stream and any bytes read but not consumed.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.io, self.buf)
    }

    /// demo: bytes read and not yet consumed (after a response head: the
    /// part of its body that has arrived so far).
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// demo: reads more from the peer into the buffer; 0 at end of stream.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        self.fill().await
    }

    /// Reads more into the buffer; 0 at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.io.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn ensure(&mut self, n: usize) -> Result<(), WireError> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(WireError::Eof);
            }
        }
        Ok(())
    }

    /// Resolves when the peer closes its side (or the read fails). Bytes it
    /// sends meanwhile (a pipelined request) stay buffered.
    pub async fn closed(&mut self) {
        loop {
            if self.buf.len() > MAX_HEAD + MAX_BODY {
                // A peer that floods us while we wait: treat it as gone.
                return;
            }
            match self.fill().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// The next request head; `None` when the connection closed cleanly
    /// before a new request started.
    pub async fn request_head(&mut self) -> Result<Option<RequestHead>, WireError> {
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let head = RequestHead {
                            method: req.method.unwrap_or_default().to_string(),
                            target: req.path.unwrap_or_default().to_string(),
                            version: req.version.unwrap_or(1),
                            headers: req
                                .headers
                                .iter()
                                .map(|h| (h.name.to_string(), h.value.to_vec()))
                                .collect(),
                        };
                        self.buf.drain(..len);
                        return Ok(Some(head));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return Err(WireError::Malformed(e.to_string())),
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(WireError::TooLarge("request head"));
                }
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Eof)
                };
            }
        }
    }

    /// The next response head.
    pub async fn response_head(&mut self) -> Result<ResponseHead, WireError> {
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let head = ResponseHead {
                            version: resp.version.unwrap_or(1),
                            status: resp.code.unwrap_or(0),
                            headers: resp
                                .headers
                                .iter()
                                .map(|h| (h.name.to_string(), h.value.to_vec()))
                                .collect(),
                            raw: Bytes::copy_from_slice(&self.buf[..len]),
                        };
                        self.buf.drain(..len);
                        return Ok(head);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return Err(WireError::Malformed(e.to_string())),
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(WireError::TooLarge("response head"));
                }
            }
            if self.fill().await? == 0 {
                return Err(WireError::Eof);
            }
        }
    }

    /// A body with the given framing.
    pub async fn body(&mut self, framing: Framing) -> Result<Body, WireError> {
        match framing {
            Framing::None => Ok(Body::default()),
            Framing::Length(n) => {
                if n > MAX_BODY as u64 {
                    return Err(WireError::TooLarge("body"));
                }
                let n = n as usize;
                self.ensure(n).await?;
                let b = Bytes::from(self.buf.drain(..n).collect::<Vec<u8>>());
                Ok(Body {
                    raw: b.clone(),
                    decoded: b,
                })
            }
            Framing::ToClose => {
                while self.fill().await? > 0 {
                    if self.buf.len() > MAX_BODY {
                        return Err(WireError::TooLarge("body"));
                    }
                }
                let b = Bytes::from(std::mem::take(&mut self.buf));
                Ok(Body {
                    raw: b.clone(),
                    decoded: b,
                })
            }
            Framing::Chunked => self.chunked().await,
        }
    }

    async fn chunked(&mut self) -> Result<Body, WireError> {
        let mut pos = 0usize;
        let mut decoded = Vec::new();
        loop {
            // The size line.
            let (consumed, size) = loop {
                match httparse::parse_chunk_size(&self.buf[pos..]) {
                    Ok(httparse::Status::Complete(r)) => break r,
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() - pos > 4096 {
                            return Err(WireError::Malformed("chunk size line too long".into()));
                        }
                        if self.fill().await? == 0 {
                            return Err(WireError::Eof);
                        }
                    }
                    Err(_) => return Err(WireError::Malformed("invalid chunk size".into())),
                }
            };
            pos += consumed;
            if size == 0 {
                // Trailer lines up to the blank line.
                loop {
                    let line_end = loop {
                        if let Some(i) = find_crlf(&self.buf[pos..]) {
                            break i;
                        }
                        if self.buf.len() - pos > MAX_HEAD {
                            return Err(WireError::TooLarge("chunk trailers"));
                        }
                        if self.fill().await? == 0 {
                            return Err(WireError::Eof);
                        }
                    };
                    pos += line_end + 2;
                    if line_end == 0 {
                        let raw = Bytes::from(self.buf.drain(..pos).collect::<Vec<u8>>());
                        return Ok(Body {
                            raw,
                            decoded: Bytes::from(decoded),
                        });
                    }
                }
            }
            if decoded.len() as u64 + size > MAX_BODY as u64 {
                return Err(WireError::TooLarge("body"));
            }
            let size = size as usize;
            self.ensure(pos + size + 2).await?;
            decoded.extend_from_slice(&self.buf[pos..pos + size]);
            if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                return Err(WireError::Malformed("chunk not followed by CRLF".into()));
            }
            pos += size + 2;
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Header lines as `[name, value]` strings (values lossily decoded), for
/// the capture store.
pub fn header_pairs(headers: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse_request(wire: &[u8]) -> (RequestHead, Body) {
        let mut r = Reader::new(wire);
        let head = r.request_head().await.unwrap().unwrap();
        let framing = request_framing(&head).unwrap();
        let body = r.body(framing).await.unwrap();
        (head, body)
    }

    #[tokio::test]
    async fn heads_keep_case_and_order_and_bodies_both_forms() {
        let wire = b"POST http://127.0.0.1:9/hook HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-Event-Id: evt_1\r\ncontent-TYPE: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n";
        let (head, body) = parse_request(wire).await;
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "http://127.0.0.1:9/hook");
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["Host", "X-Event-Id", "content-TYPE", "Transfer-Encoding"]
        );
        assert_eq!(&body.decoded[..], b"{\"a\":1}");
        assert_eq!(
            &body.raw[..],
            b"4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn keep_alive_requests_follow_each_other() {
        let wire: &[u8] = b"POST http://h/a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET http://h/b HTTP/1.1\r\n\r\n";
        let mut r = Reader::new(wire);
        let a = r.request_head().await.unwrap().unwrap();
        assert_eq!(
            &r.body(request_framing(&a).unwrap()).await.unwrap().decoded[..],
            b"hi"
        );
        let b = r.request_head().await.unwrap().unwrap();
        assert_eq!(b.target, "http://h/b");
        assert_eq!(request_framing(&b).unwrap(), Framing::None);
        assert!(r.request_head().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_messages_are_eof_and_garbage_is_malformed() {
        let mut r = Reader::new(&b"POST http://h/a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"[..]);
        let h = r.request_head().await.unwrap().unwrap();
        assert!(matches!(
            r.body(request_framing(&h).unwrap()).await,
            Err(WireError::Eof)
        ));
        let mut r = Reader::new(&b"\x16\x03\x01 not http\r\n\r\n"[..]);
        assert!(matches!(
            r.request_head().await,
            Err(WireError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn responses_frame_by_length_chunks_or_close() {
        let mut r =
            Reader::new(&b"HTTP/1.1 500 Internal Server Error\r\nX-A: 1\r\n\r\nread to close"[..]);
        let h = r.response_head().await.unwrap();
        assert_eq!(h.status, 500);
        assert_eq!(
            &h.raw[..],
            b"HTTP/1.1 500 Internal Server Error\r\nX-A: 1\r\n\r\n"
        );
        let f = response_framing("POST", &h).unwrap();
        assert_eq!(f, Framing::ToClose);
        assert_eq!(&r.body(f).await.unwrap().decoded[..], b"read to close");
        let mut r = Reader::new(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]);
        let h = r.response_head().await.unwrap();
        assert_eq!(response_framing("POST", &h).unwrap(), Framing::None);
    }
}
