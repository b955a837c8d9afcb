//! Test support shared by the end-to-end tests: a scripted HTTP receiver on
//! 127.0.0.1:0 that records what it is sent and can misbehave on cue.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the receiver does with the n-th request (the last entry repeats).
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// 200 with Content-Length 100, 10 bytes, then silence.
    StallBody,
    /// Close the connection without answering.
    Reset,
}

#[derive(Clone, Debug)]
pub struct Hit {
    pub head: String,
    pub body: Vec<u8>,
}

pub struct Receiver {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    /// The value of header `name` (case-insensitive) in the n-th request.
    pub fn header(&self, n: usize, name: &str) -> Option<String> {
        let hits = self.hits();
        let head = &hits.get(n)?.head;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

pub async fn receiver(script: Vec<Reply>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            let script = script.clone();
            tokio::spawn(async move {
                let _ = serve_one(sock, &h, &script).await;
            });
        }
    });
    Receiver { url, hits }
}

async fn serve_one(
    mut sock: TcpStream,
    hits: &Mutex<Vec<Hit>>,
    script: &[Reply],
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..].to_vec();
    let n = {
        let mut hits = hits.lock().unwrap();
        hits.push(Hit { head, body });
        hits.len()
    };
    let reply = script[(n - 1).min(script.len() - 1)].clone();
    let respond = |status: u16, extra: &[(&str, String)]| {
        let mut r = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n");
        for (k, v) in extra {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\nok");
        r
    };
    match reply {
        Reply::Status(s) => sock.write_all(respond(s, &[]).as_bytes()).await?,
        Reply::WithHeaders(s, h) => sock.write_all(respond(s, &h).as_bytes()).await?,
        Reply::StallBody => {
            sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await?;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Reply::Reset => {
            sock.set_zero_linger()?;
            drop(sock);
        }
    }
    Ok(())
}
