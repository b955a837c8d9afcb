//! The receiver fleet simulator: one HTTP/1.1 server standing in for many
//! customer endpoints (`/ep/{n}`), each with a behaviour from the
//! scenario's weighted mix.
//!
//! Layout: [`Fleet`] is the pure part: which mix entry each endpoint gets,
//! and [`Fleet::decide`], the behaviour of one request as a function of
//! (seed, endpoint, event id, attempt number) only. [`Receiver`] is the
//! server: one listener per sender (so it knows who is speaking without
//! trusting the request; an `X-Hookshift-Sender` header overrides it for
//! traffic that arrives through a proxy), attempt numbers counted per
//! (sender, event id, endpoint) in arrival order, and a record of every
//! request. Both senders therefore meet the same behaviour at their n-th
//! attempt, whatever their timing.
//!
//! Responses are written by hand over the `TcpStream` because several
//! behaviours are not expressible with an HTTP library: a reset, a body
//! that stalls after its head, a hang until the client gives up. Every
//! response carries `Connection: close`, so one connection is one request.

use crate::rng::Rng;
use crate::spec::{Behaviour, Endpoints, Latency, MixEntry};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Request headers that carry the event id, checked in this order
/// (case-insensitively).
pub const EVENT_ID_HEADERS: &[&str] = &["webhook-id", "x-event-id"];
/// A header that names the sender, overriding the listener it arrived on.
pub const SENDER_HEADER: &str = "x-hookshift-sender";

/// Which behaviour each endpoint has, and what it does per request.
#[derive(Debug, Clone)]
pub struct Fleet {
    seed: u64,
    mix: Vec<MixEntry>,
    /// Endpoint index → mix index.
    assignment: Vec<usize>,
}

/// What the receiver does with one request, decided before it answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// 200 with a small JSON body.
    Ok,
    /// A status with a small body, and a `Retry-After` when given.
    Status {
        status: u16,
        retry_after_s: Option<u32>,
    },
    Hang,
    ProcessThenTimeout,
    Reset,
    Redirect {
        status: u16,
    },
    StalledBody {
        declared_bytes: u64,
        sent_bytes: u64,
    },
    HugeBody {
        bytes: u64,
    },
}

impl Action {
    /// A short label for records and counters.
    pub fn label(&self) -> String {
        match self {
            Action::Ok => "ok".into(),
            Action::Status { status, .. } => format!("status_{status}"),
            Action::Hang => "hang".into(),
            Action::ProcessThenTimeout => "process_then_timeout".into(),
            Action::Reset => "reset".into(),
            Action::Redirect { status } => format!("redirect_{status}"),
            Action::StalledBody { .. } => "stalled_body".into(),
            Action::HugeBody { .. } => "huge_body".into(),
        }
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub action: Action,
    #[serde(serialize_with = "ser_ms")]
    pub latency: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Fleet {
    /// Assigns mix entries to endpoints: counts proportional to the weights
    /// (largest remainder, so they add up exactly), then shuffled by the
    /// seed so behaviours are not bunched by endpoint number.
    pub fn new(seed: u64, endpoints: &Endpoints) -> Fleet {
        let n = endpoints.count as usize;
        let total: u64 = endpoints.mix.iter().map(|m| u64::from(m.weight)).sum();
        let mut counts: Vec<(usize, usize, u64)> = endpoints
            .mix
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let exact = u64::from(m.weight) * n as u64;
                (i, (exact / total) as usize, exact % total)
            })
            .collect();
        let given: usize = counts.iter().map(|c| c.1).sum();
        // Hand out the rest by largest remainder, ties to the earlier entry.
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by(|&a, &b| counts[b].2.cmp(&counts[a].2).then(a.cmp(&b)));
        for &i in order.iter().cycle().take(n.saturating_sub(given)) {
            counts[i].1 += 1;
        }
        let mut assignment: Vec<usize> = counts
            .iter()
            .flat_map(|&(i, c, _)| std::iter::repeat_n(i, c))
            .collect();
        // Fisher-Yates with the seed.
        let mut r = Rng::keyed(&[b"fleet", &seed.to_le_bytes()]);
        for i in (1..assignment.len()).rev() {
            let j = r.below(i as u64 + 1) as usize;
            assignment.swap(i, j);
        }
        Fleet {
            seed,
            mix: endpoints.mix.clone(),
            assignment,
        }
    }

    pub fn endpoint_count(&self) -> u32 {
        self.assignment.len() as u32
    }

    /// The mix entry of endpoint `n` (0-based); None when out of range.
    pub fn entry(&self, endpoint: u32) -> Option<&MixEntry> {
        self.assignment
            .get(endpoint as usize)
            .map(|&i| &self.mix[i])
    }

    /// The behaviour of attempt `attempt` (1-based) of `event_id` at
    /// `endpoint`: a function of the seed and these three only.
    pub fn decide(&self, endpoint: u32, event_id: &str, attempt: u32) -> Option<Decision> {
        let entry = self.entry(endpoint)?;
        let mut r = Rng::keyed(&[
            b"request",
            &self.seed.to_le_bytes(),
            &endpoint.to_le_bytes(),
            event_id.as_bytes(),
            &attempt.to_le_bytes(),
        ]);
        let latency = draw_latency(&entry.latency, &mut r);
        let recovered = entry.recover_after.is_some_and(|n| attempt >= n);
        let action = if recovered {
            Action::Ok
        } else {
            match &entry.behaviour {
                Behaviour::Ok => Action::Ok,
                Behaviour::Flaky {
                    probability,
                    status,
                } => {
                    if r.unit() < *probability {
                        Action::Status {
                            status: *status,
                            retry_after_s: None,
                        }
                    } else {
                        Action::Ok
                    }
                }
                Behaviour::RateLimited { retry_after_s } => Action::Status {
                    status: 429,
                    retry_after_s: Some(*retry_after_s),
                },
                Behaviour::ClientError { status } => Action::Status {
                    status: *status,
                    retry_after_s: None,
                },
                Behaviour::Hang => Action::Hang,
                Behaviour::ProcessThenTimeout => Action::ProcessThenTimeout,
                Behaviour::Reset => Action::Reset,
                Behaviour::Redirect { status } => Action::Redirect { status: *status },
                Behaviour::StalledBody {
                    declared_bytes,
                    sent_bytes,
                } => Action::StalledBody {
                    declared_bytes: *declared_bytes,
                    sent_bytes: *sent_bytes,
                },
                Behaviour::HugeBody { bytes } => Action::HugeBody { bytes: *bytes },
            }
        };
        Some(Decision { action, latency })
    }
}

fn draw_latency(l: &Latency, r: &mut Rng) -> Duration {
    let slow = r.unit() < l.slow_fraction;
    let u = r.unit();
    if slow {
        return l.slow;
    }
    let span = l.max.saturating_sub(l.min);
    l.min + span.mul_f64(u)
}

/// One request as the receiver saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Arrival order across the whole receiver.
    pub seq: u64,
    pub sender: String,
    /// Endpoint index from the path; None for a path outside `/ep/{n}`.
    pub endpoint: Option<u32>,
    /// The second leg of a redirect (`/ep/{n}/moved`), not an attempt.
    pub hop: bool,
    pub event_id: Option<String>,
    /// Attempt number for (sender, event id, endpoint); 0 for hops and
    /// requests without an event id.
    pub attempt: u32,
    pub method: String,
    pub target: String,
    /// Header names as received (case kept), in order.
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub body_len: usize,
    /// Milliseconds since the receiver started.
    pub at_ms: u64,
    /// What the receiver did.
    pub action: String,
    /// The `Retry-After` it answered with, in seconds.
    pub retry_after_s: Option<u32>,
}

/// Counts per sender and action.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub requests: u64,
    pub by_sender_action: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Default)]
struct State {
    records: Vec<Record>,
    attempts: HashMap<(String, String, u32), u32>,
    counters: Counters,
}

struct Shared {
    fleet: Fleet,
    started: Instant,
    state: Mutex<State>,
    /// The longest a hanging or stalled connection is held open.
    hold_cap: Duration,
}

/// A running receiver simulator.
pub struct Receiver {
    listeners: BTreeMap<String, SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// The largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The largest request body kept in a record.
const MAX_KEPT_BODY: usize = 1 << 20;

impl Receiver {
    /// Binds one listener per sender label on 127.0.0.1:0 and serves until
    /// [`Receiver::shutdown`] (or drop).
    pub async fn start(fleet: Fleet, senders: &[&str]) -> std::io::Result<Receiver> {
        Self::start_with(fleet, senders, Duration::from_secs(300)).await
    }

    /// Like `start`, with the longest time a hanging connection is held.
    pub async fn start_with(
        fleet: Fleet,
        senders: &[&str],
        hold_cap: Duration,
    ) -> std::io::Result<Receiver> {
        let shared = Arc::new(Shared {
            fleet,
            started: Instant::now(),
            state: Mutex::new(State::default()),
            hold_cap,
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut listeners = BTreeMap::new();
        for label in senders {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            listeners.insert(label.to_string(), listener.local_addr()?);
            let shared = shared.clone();
            let label = label.to_string();
            let mut stop_rx = stop_rx.clone();
            let stop_held = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((sock, _)) = accepted else { continue };
                            let shared = shared.clone();
                            let label = label.clone();
                            let held = stop_held.clone();
                            tokio::spawn(async move {
                                let _ = serve(sock, &label, &shared, held).await;
                            });
                        }
                        _ = stop_rx.wait_for(|s| *s) => return,
                    }
                }
            });
        }
        Ok(Receiver {
            listeners,
            shared,
            stop,
        })
    }

    /// `http://127.0.0.1:PORT` of the listener for `sender`.
    pub fn base_url(&self, sender: &str) -> Option<String> {
        self.listeners.get(sender).map(|a| format!("http://{a}"))
    }

    /// The URL of endpoint `n` as `sender` should be told it.
    pub fn endpoint_url(&self, sender: &str, n: u32) -> Option<String> {
        self.base_url(sender).map(|b| format!("{b}/ep/{n}"))
    }

    pub fn fleet(&self) -> &Fleet {
        &self.shared.fleet
    }

    /// Every request so far, in arrival order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Attempts `sender` made for (event, endpoint).
    pub fn attempts(&self, sender: &str, event_id: &str, endpoint: u32) -> u32 {
        self.lock()
            .attempts
            .get(&(sender.to_string(), event_id.to_string(), endpoint))
            .copied()
            .unwrap_or(0)
    }

    /// Stops accepting and releases held connections.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    content_length: usize,
    /// Bytes after the head already read.
    rest: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_head(sock: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect();
    let content_length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    Ok(Some(Request {
        method,
        target,
        headers,
        content_length,
        rest: buf[end..].to_vec(),
    }))
}

async fn read_body(sock: &mut TcpStream, req: &mut Request) -> std::io::Result<Vec<u8>> {
    let mut body = std::mem::take(&mut req.rest);
    let mut chunk = [0u8; 16384];
    while body.len() < req.content_length {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(body)
}

/// `/ep/{n}` → (n, false); `/ep/{n}/moved` → (n, true). A proxy may send
/// the absolute form, so a scheme and authority are skipped.
fn parse_target(target: &str) -> Option<(u32, bool)> {
    let path = match target.find("://") {
        Some(i) => {
            let after = &target[i + 3..];
            &after[after.find('/').unwrap_or(after.len())..]
        }
        None => target,
    };
    let path = path.split('?').next().unwrap_or_default();
    let rest = path.strip_prefix("/ep/")?;
    let (n, hop) = match rest.split_once('/') {
        Some((n, "moved")) => (n, true),
        Some(_) => return None,
        None => (rest, false),
    };
    Some((n.parse().ok()?, hop))
}

async fn serve(
    mut sock: TcpStream,
    listener_label: &str,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Some(mut req) = read_head(&mut sock).await? else {
        return Ok(());
    };
    let sender = req
        .header(SENDER_HEADER)
        .map(str::to_string)
        .unwrap_or_else(|| listener_label.to_string());
    let event_id = EVENT_ID_HEADERS
        .iter()
        .find_map(|h| req.header(h))
        .map(str::to_string);
    let target = parse_target(&req.target);
    // The attempt number is taken at arrival, under the lock, so it is the
    // arrival order of this sender's requests for the pair.
    let (decision, attempt, endpoint, hop) = {
        let mut st = shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match target {
            Some((n, false)) if n < shared.fleet.endpoint_count() => {
                let attempt = match &event_id {
                    Some(id) => {
                        let a = st
                            .attempts
                            .entry((sender.clone(), id.clone(), n))
                            .or_insert(0);
                        *a += 1;
                        *a
                    }
                    None => 0,
                };
                let decision =
                    shared
                        .fleet
                        .decide(n, event_id.as_deref().unwrap_or(""), attempt.max(1));
                (decision, attempt, Some(n), false)
            }
            Some((n, true)) if n < shared.fleet.endpoint_count() => (
                Some(Decision {
                    action: Action::Ok,
                    latency: Duration::ZERO,
                }),
                0,
                Some(n),
                true,
            ),
            _ => (None, 0, None, false),
        }
    };
    let decision = decision.unwrap_or(Decision {
        action: Action::Status {
            status: 404,
            retry_after_s: None,
        },
        latency: Duration::ZERO,
    });
    // Hang answers before reading the body: the work never starts.
    let body = if decision.action == Action::Hang {
        Vec::new()
    } else {
        read_body(&mut sock, &mut req).await?
    };
    {
        let mut st = shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = st.records.len() as u64;
        let label = decision.action.label();
        let retry_after_s = match decision.action {
            Action::Status { retry_after_s, .. } => retry_after_s,
            _ => None,
        };
        st.counters.requests += 1;
        *st.counters
            .by_sender_action
            .entry(sender.clone())
            .or_default()
            .entry(label.clone())
            .or_default() += 1;
        st.records.push(Record {
            seq,
            sender,
            endpoint,
            hop,
            event_id,
            attempt,
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.clone(),
            body_len: body.len(),
            body: if body.len() <= MAX_KEPT_BODY {
                body
            } else {
                body[..MAX_KEPT_BODY].to_vec()
            },
            at_ms: shared.started.elapsed().as_millis() as u64,
            action: label,
            retry_after_s,
        });
    }
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    match decision.action {
        Action::Ok => respond(&mut sock, 200, &[], b"{\"ok\":true}").await,
        Action::Status {
            status,
            retry_after_s,
        } => {
            let extra: Vec<(&str, String)> = retry_after_s
                .map(|s| vec![("Retry-After", s.to_string())])
                .unwrap_or_default();
            let body = format!("{{\"status\":{status}}}");
            respond(&mut sock, status, &extra, body.as_bytes()).await
        }
        Action::Redirect { status } => {
            let location = format!("/ep/{}/moved", endpoint.unwrap_or(0));
            respond(&mut sock, status, &[("Location", location)], b"").await
        }
        Action::Hang | Action::ProcessThenTimeout => {
            hold(&mut sock, shared.hold_cap, &mut stop).await;
            Ok(())
        }
        Action::Reset => {
            sock.set_zero_linger()?;
            drop(sock);
            Ok(())
        }
        Action::StalledBody {
            declared_bytes,
            sent_bytes,
        } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {declared_bytes}\r\nConnection: close\r\n\r\n"
            );
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(&vec![b' '; sent_bytes as usize]).await?;
            sock.flush().await?;
            hold(&mut sock, shared.hold_cap, &mut stop).await;
            Ok(())
        }
        Action::HugeBody { bytes } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
            );
            sock.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                // A client that stops reading at its cap closes the
                // connection; the write error ends the loop.
                sock.write_all(&chunk[..n]).await?;
                left -= n as u64;
            }
            sock.shutdown().await
        }
    }
}

async fn respond(
    sock: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    sock.write_all(&out).await?;
    sock.shutdown().await
}

/// Keeps the connection open until the client closes it (its timeout),
/// the receiver stops, or `cap` passes.
async fn hold(sock: &mut TcpStream, cap: Duration, stop: &mut watch::Receiver<bool>) {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::sleep(cap);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = sock.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = &mut deadline => return,
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("/ep/3"), Some((3, false)));
        assert_eq!(parse_target("/ep/3/moved"), Some((3, true)));
        assert_eq!(
            parse_target("http://127.0.0.1:9/ep/12?x=1"),
            Some((12, false))
        );
        assert_eq!(parse_target("/ep/x"), None);
        assert_eq!(parse_target("/other"), None);
    }
}
