//! Test support: a scripted receiver on 127.0.0.1:0 that records what it is
//! sent, and a raw HTTP/1.1 client that talks to an egress listener the way
//! a sender configured with a forward proxy does.
#![allow(dead_code)]

use proxy::egress::wire::{self, Body, Reader, RequestHead, ResponseHead, WireError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// What the receiver does with the n-th request (the last entry repeats).
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status with this body (Content-Length framed).
    Status(u16, &'static str),
    /// Close the connection with RST, no answer.
    Reset,
    /// Never answer; keep the connection open.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub head: RequestHead,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<String> {
        wire::header(&self.head.headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

pub struct Receiver {
    pub base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

pub async fn receiver(script: Vec<Reply>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            let script = script.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = sock.into_split();
                let mut r = Reader::new(rd);
                loop {
                    let Ok(Some(head)) = r.request_head().await else {
                        return;
                    };
                    let Ok(body) = r.body(wire::request_framing(&head).unwrap()).await else {
                        return;
                    };
                    let n = {
                        let mut hits = h.lock().unwrap();
                        hits.push(Hit {
                            head,
                            body: body.decoded.to_vec(),
                        });
                        hits.len() - 1
                    };
                    match script[n.min(script.len() - 1)].clone() {
                        Reply::Status(code, text) => {
                            let resp = format!(
                                "HTTP/1.1 {code} Whatever\r\nX-Receiver: yes\r\ncontent-length: {}\r\n\r\n{text}",
                                text.len()
                            );
                            if wr.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Reply::Reset => {
                            let s = wr.as_ref();
                            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                            return;
                        }
                        Reply::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Receiver { base, hits }
}

/// An outbound webhook as a proxied sender writes it.
pub fn webhook(url: &str, id_header: &str, event_id: &str, body: &str) -> Vec<u8> {
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    format!(
        "POST {url} HTTP/1.1\r\nHost: {host}\r\n{id_header}: {event_id}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a client got back.
#[derive(Debug)]
pub enum Got {
    Response(ResponseHead, Body),
    /// The connection ended (FIN or RST) without a response.
    Closed(String),
    /// Nothing within the client's own deadline (it then gives up).
    TimedOut,
}

impl Got {
    pub fn status(&self) -> Option<u16> {
        match self {
            Got::Response(h, _) => Some(h.status),
            _ => None,
        }
    }
    pub fn body(&self) -> Vec<u8> {
        match self {
            Got::Response(_, b) => b.decoded.to_vec(),
            _ => Vec::new(),
        }
    }
}

/// Sends `request` through `proxy` on a fresh connection and reads the
/// answer, giving up (closing) after `deadline`.
pub async fn send(proxy: std::net::SocketAddr, request: &[u8], deadline: Duration) -> Got {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request).await.unwrap();
    let (rd, _wr) = s.into_split();
    let mut r = Reader::new(rd);
    let read = async {
        let head = r.response_head().await?;
        let body = r.body(wire::response_framing("POST", &head)?).await?;
        Ok::<_, WireError>((head, body))
    };
    match tokio::time::timeout(deadline, read).await {
        Err(_) => Got::TimedOut,
        Ok(Ok((h, b))) => Got::Response(h, b),
        Ok(Err(e)) => Got::Closed(e.to_string()),
    }
}
