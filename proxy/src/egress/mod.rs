//! The egress recorder/replayer: one HTTP/1.1 forward-proxy listener per
//! sender, so the proxy knows who is speaking.
//!
//! Per request (`handle_request`): read the head and body off the TCP
//! stream ourselves (`wire`, so header names keep their case and order) →
//! key it (event id from the sender's configured header, endpoint URL = the
//! absolute target, attempt number counted per sender in `pairing`) → read
//! the ramp once to pick the role → primary: forward to the receiver, keep
//! the exact response or the fault, publish it for the shadow; shadow: wait
//! (bounded) for the primary's exchange and answer with the same bytes after
//! the same latency, or the same fault; passthrough: forward, no replay →
//! commit the row to the capture store → answer the sender → count it.
//!
//! Architecture invariant: in replay mode the shadow's request never reaches
//! the receiver: `shadow` has no code path that opens a connection.
//! Architecture invariant: a row is committed before its sender sees the
//! answer, so metrics and tests never count an exchange that is not stored.

pub mod pairing;
pub mod wire;

use crate::capture::{now_ms, CaptureStore, EgressRecord, SenderName};
use crate::config::{EgressMode, ValidConfig};
use crate::metrics::Metrics;
use crate::ramp::{self, Ramp};
use bytes::Bytes;
use pairing::{Attempts, Key, Pairing, Replay};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use wire::{Framing, Reader, RequestHead, WireError};

/// Request headers that concern the hop to the proxy, not the receiver.
const HOP_BY_HOP: &[&str] = &[
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

/// State shared by both egress listeners.
pub struct Egress {
    cfg: Arc<ValidConfig>,
    ramp: Arc<Ramp>,
    store: CaptureStore,
    metrics: Arc<Metrics>,
    pairing: Pairing,
    attempts: Attempts,
}

/// What one forwarded exchange produced.
struct Forwarded {
    replay: Replay,
    note: Option<String>,
    /// demo: the response head (and the body as it came) was already
    /// written to the sender, because the body did not follow the head
    /// within [`STALL_GRACE`]; nothing more is to be written.
    relayed: bool,
}

/// demo: how long the body of a `Content-Length` response may take after
/// its head before the head is relayed to the primary and the body streamed
/// as it arrives. A receiver that sends a head and then stalls is a
/// behaviour senders differ on (success recorded before the body was read),
/// so the primary must see the head as the receiver sent it, not a timeout.
const STALL_GRACE: Duration = Duration::from_millis(100);

/// demo: a response whose head arrived but whose body had not completed
/// within [`STALL_GRACE`].
struct StalledBody {
    head: wire::ResponseHead,
    reader: Reader<OwnedReadHalf>,
    declared: usize,
    /// Kept open: dropping it would half-close the receiver connection.
    _wr: OwnedWriteHalf,
}

/// demo: what the receiver connection produced before the proxy answers.
enum Upstream {
    Complete(Replay),
    Stalled(StalledBody),
}

/// The role of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Shadow,
    Passthrough,
}

impl Egress {
    pub fn new(
        cfg: Arc<ValidConfig>,
        ramp: Arc<Ramp>,
        store: CaptureStore,
        metrics: Arc<Metrics>,
    ) -> Arc<Egress> {
        Arc::new(Egress {
            cfg,
            ramp,
            store,
            metrics,
            pairing: Pairing::default(),
            attempts: Attempts::default(),
        })
    }

    /// Accepts connections from `sender` until `shutdown` flips to true.
    /// Connections already accepted finish on their own.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        sender: SenderName,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(self.clone().connection(stream, sender));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "egress accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, sender: SenderName) {
        let (rd, mut wr) = stream.into_split();
        let mut client = Reader::new(rd);
        loop {
            let head = match client.request_head().await {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    if matches!(e, WireError::Malformed(_) | WireError::TooLarge(_)) {
                        let _ = wr
                            .write_all(&plain_response(400, &e.to_string(), true))
                            .await;
                    }
                    return;
                }
            };
            let arrived = Instant::now();
            let started_at = now_ms();
            if head.method.eq_ignore_ascii_case("CONNECT") {
                self.tunnel(client, wr, head, sender, arrived, started_at)
                    .await;
                return;
            }
            // A client waiting for permission to send its body gets it at
            // once: the proxy needs the body before choosing what to do.
            if wire::has_token(&head.headers, "expect", "100-continue")
                && wr
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
            {
                return;
            }
            let body = match wire::request_framing(&head) {
                Ok(f) => client.body(f).await,
                Err(e) => Err(e),
            };
            let body = match body {
                Ok(b) => b,
                Err(e) => {
                    if matches!(e, WireError::Malformed(_) | WireError::TooLarge(_)) {
                        let _ = wr
                            .write_all(&plain_response(400, &e.to_string(), true))
                            .await;
                    }
                    return;
                }
            };
            let keep = self
                .handle_request(
                    &mut client,
                    &mut wr,
                    sender,
                    head,
                    body,
                    arrived,
                    started_at,
                )
                .await;
            if !keep {
                return;
            }
        }
    }

    /// One request; returns whether the client connection stays open.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(skip_all, fields(sender = sender.as_str(), target = %head.target))]
    async fn handle_request(
        &self,
        client: &mut Reader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
        sender: SenderName,
        head: RequestHead,
        body: wire::Body,
        arrived: Instant,
        started_at: i64,
    ) -> bool {
        let Some(target) = AbsoluteTarget::parse(&head.target) else {
            let msg = format!(
                "hookshift egress: `{}` is not an absolute http:// request-target; configure this address as an HTTP proxy",
                head.target
            );
            let _ = wr.write_all(&plain_response(400, &msg, true)).await;
            return false;
        };
        let settings = self.cfg.sender(sender);
        let event_id = settings.event_id_headers.iter().find_map(|name| {
            wire::header(&head.headers, name).map(|v| String::from_utf8_lossy(v).trim().to_string())
        });
        let endpoint_url = head.target.clone();
        let attempt = self.attempts.next(sender, &event_id, &endpoint_url);
        // The one read of the ramp for this attempt.
        let bp = self.ramp.bp();
        let role = match self.cfg.egress_mode {
            EgressMode::Passthrough => Role::Passthrough,
            EgressMode::Replay => {
                let proposed = if ramp::engine_primary(&endpoint_url, bp) {
                    SenderName::Engine
                } else {
                    SenderName::Legacy
                };
                // demo: sticky per attempt key (see `Pairing::primary_for`).
                let primary = self
                    .pairing
                    .primary_for(&(event_id.clone(), endpoint_url.clone(), attempt), proposed);
                if primary == sender {
                    Role::Primary
                } else {
                    Role::Shadow
                }
            }
        };
        let client_close =
            head.version == 0 || wire::has_token(&head.headers, "connection", "close");
        let mut rec = EgressRecord {
            sender: sender.as_str(),
            role: "primary",
            source: "receiver",
            event_id: event_id.clone(),
            endpoint_url: endpoint_url.clone(),
            attempt: attempt as i64,
            ramp_bp: bp as i64,
            method: head.method.clone(),
            target: head.target.clone(),
            http_version: format!("HTTP/1.{}", head.version),
            request_headers: wire::header_pairs(&head.headers),
            request_body: body.decoded.to_vec(),
            started_at,
            ..EgressRecord::default()
        };
        let key: Key = (event_id, endpoint_url, attempt);
        let mut relayed = false;

        let (answer, gave_up) = match role {
            Role::Primary | Role::Passthrough => {
                // demo: passthrough may name the sender to the receiver.
                let tag = match (role, &self.cfg.sender_header) {
                    (Role::Passthrough, Some(h)) => Some((h.as_str(), sender.as_str())),
                    _ => None,
                };
                let fwd = self.forward(client, wr, &head, &body, &target, tag).await;
                relayed = fwd.relayed;
                if role == Role::Primary {
                    self.pairing.publish(key, fwd.replay.clone());
                } else {
                    rec.role = "passthrough";
                }
                rec.note = fwd.note;
                let gave_up = rec.note.as_deref().is_some_and(|n| n.starts_with(GAVE_UP));
                (Answer::Replay(fwd.replay), gave_up)
            }
            Role::Shadow => {
                let (found, waited) = tokio::select! {
                    r = self.pairing.wait(key, self.cfg.pairing_wait) => r,
                    _ = client.closed() => {
                        (None, true)
                    }
                };
                if waited {
                    Metrics::inc(&self.metrics.pairing_waits);
                }
                match found {
                    Some(replay) => {
                        rec.role = "shadow";
                        rec.source = "replayed";
                        (Answer::Replay((*replay).clone()), false)
                    }
                    None if arrived.elapsed() < self.cfg.pairing_wait => {
                        // The sender closed while we waited for the primary.
                        rec.role = "shadow_only";
                        rec.source = "default";
                        rec.fault = Some("timeout");
                        rec.note = Some(format!(
                            "{GAVE_UP} after {} ms, while waiting for the primary's exchange",
                            arrived.elapsed().as_millis()
                        ));
                        (Answer::Nothing, true)
                    }
                    None => {
                        Metrics::inc(&self.metrics.pairing_timeouts);
                        rec.role = "shadow_only";
                        rec.source = "default";
                        rec.note = Some(format!(
                            "no primary exchange within the pairing wait of {} ms",
                            self.cfg.pairing_wait.as_millis()
                        ));
                        (Answer::Default, false)
                    }
                }
            }
        };

        // For a replayed answer, hold it until the primary's latency has
        // passed for this request too.
        if let (Role::Shadow, Answer::Replay(r)) = (role, &answer) {
            if r.fault != Some("timeout") {
                let due = arrived + r.latency;
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = client.closed() => {
                        rec.fault = Some("timeout");
                        rec.note = Some(format!("{GAVE_UP} after {} ms, before the replayed answer was due", arrived.elapsed().as_millis()));
                        self.commit(rec, arrived).await;
                        return false;
                    }
                }
            }
        }

        match &answer {
            Answer::Replay(r) => {
                rec.response_status = r.status.map(i64::from);
                rec.fault = rec.fault.or(r.fault);
                // demo: a head followed by a stalled body keeps its head
                // and the partial body next to the fault.
                if r.fault.is_none() || r.status.is_some() {
                    rec.response_headers = Some(r.headers.clone());
                    rec.response_body = Some(r.body.to_vec());
                }
            }
            Answer::Default => {
                rec.response_status = Some(self.cfg.shadow_only_status as i64);
                rec.response_headers = Some(default_headers(&self.cfg.shadow_only_body));
                rec.response_body = Some(self.cfg.shadow_only_body.as_bytes().to_vec());
            }
            Answer::Nothing => {}
        }

        // demo: a shadow answered from a primary exchange whose head came
        // and whose body stalled gets the same head and partial body first.
        if let (Role::Shadow, Answer::Replay(r)) = (role, &answer) {
            if r.fault.is_some() && r.status.is_some() && !gave_up {
                let mut out = Vec::with_capacity(r.raw_head.len() + r.raw_body.len());
                out.extend_from_slice(&r.raw_head);
                out.extend_from_slice(&r.raw_body);
                let _ = wr.write_all(&out).await;
            }
        }
        // A timeout is answered by hanging until the sender gives up; the
        // row's latency is then when it gave up, so the hang comes first.
        if let Answer::Replay(r) = &answer {
            if r.fault == Some("timeout") && !gave_up && !relayed {
                let limit = self.cfg.hang_limit;
                let _ =
                    tokio::time::timeout(limit.saturating_sub(arrived.elapsed()), client.closed())
                        .await;
                if rec.note.is_none() {
                    rec.note = Some(format!(
                        "{GAVE_UP} after {} ms",
                        arrived.elapsed().as_millis()
                    ));
                }
                self.commit(rec, arrived).await;
                return false;
            }
        }
        if !self.commit(rec, arrived).await {
            return false;
        }
        if relayed {
            // demo: the head and body were written as they arrived.
            return false;
        }
        match answer {
            Answer::Nothing => false,
            Answer::Default => {
                let bytes = plain_response(
                    self.cfg.shadow_only_status,
                    &self.cfg.shadow_only_body,
                    client_close,
                );
                wr.write_all(&bytes).await.is_ok() && !client_close
            }
            Answer::Replay(r) => match r.fault {
                None => {
                    let mut out = Vec::with_capacity(r.raw_head.len() + r.raw_body.len());
                    out.extend_from_slice(&r.raw_head);
                    out.extend_from_slice(&r.raw_body);
                    wr.write_all(&out).await.is_ok() && !r.close_after && !client_close
                }
                Some("reset") => {
                    // SO_LINGER 0: close() sends RST, as the receiver did.
                    let _ = socket2::SockRef::from(wr.as_ref()).set_linger(Some(Duration::ZERO));
                    false
                }
                // Refused, error, or a sender that already gave up: close
                // without an answer.
                Some(_) => false,
            },
        }
    }

    /// Commits the row, then counts it. Returns false if it could not be
    /// stored (the sender then gets no answer: nothing unrecorded is seen).
    async fn commit(&self, mut rec: EgressRecord, arrived: Instant) -> bool {
        rec.latency_us = arrived.elapsed().as_micros() as i64;
        let (sender, role, fault) = (rec.sender, rec.role, rec.fault);
        match self.store.insert_egress(rec).await {
            Ok(()) => {
                self.metrics.egress_exchange(sender, role, fault);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "egress exchange not recorded");
                false
            }
        }
    }

    /// Sends the request to the receiver and reads its answer, unless the
    /// sender gives up first or the upstream timeout passes.
    async fn forward(
        &self,
        client: &mut Reader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
        head: &RequestHead,
        body: &wire::Body,
        target: &AbsoluteTarget,
        tag: Option<(&str, &str)>,
    ) -> Forwarded {
        let started = Instant::now();
        let exchange = exchange(head, body, target, tag);
        let result = tokio::select! {
            r = tokio::time::timeout(self.cfg.upstream_timeout, exchange) => match r {
                Ok(r) => r,
                Err(_) => Err((
                    "timeout",
                    format!("no complete response within the upstream timeout of {} ms", self.cfg.upstream_timeout.as_millis()),
                )),
            },
            _ = client.closed() => Err(("timeout", format!("{GAVE_UP} after {} ms, before the receiver answered", started.elapsed().as_millis()))),
        };
        let latency = started.elapsed();
        match result {
            Ok(Upstream::Complete(resp)) => Forwarded {
                replay: Replay { latency, ..resp },
                note: None,
                relayed: false,
            },
            Ok(Upstream::Stalled(s)) => self.relay(client, wr, s, started).await,
            Err((fault, note)) => Forwarded {
                replay: Replay {
                    status: None,
                    raw_head: Bytes::new(),
                    raw_body: Bytes::new(),
                    headers: Vec::new(),
                    body: Bytes::new(),
                    fault: Some(fault),
                    latency,
                    close_after: true,
                },
                note: Some(note),
                relayed: false,
            },
        }
    }

    /// demo: relays a stalled response's head and the body bytes as they
    /// arrive, until the body completes, the receiver fails, the upstream
    /// timeout passes or the sender gives up; records what was relayed.
    async fn relay(
        &self,
        client: &mut Reader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
        mut s: StalledBody,
        started: Instant,
    ) -> Forwarded {
        let declared = s.declared;
        let mut sent = 0usize;
        let mut client_ok = wr.write_all(&s.head.raw).await.is_ok();
        let fault: Option<(&'static str, String)> = loop {
            if !client_ok {
                break Some((
                    "timeout",
                    format!(
                        "{GAVE_UP} after {} ms, while the head was relayed",
                        started.elapsed().as_millis()
                    ),
                ));
            }
            let have = s.reader.buffered().len().min(declared);
            if have > sent {
                client_ok = wr.write_all(&s.reader.buffered()[sent..have]).await.is_ok();
                sent = have;
                continue;
            }
            if sent >= declared {
                break None;
            }
            let left = self.cfg.upstream_timeout.saturating_sub(started.elapsed());
            tokio::select! {
                r = tokio::time::timeout(left, s.reader.read_more()) => match r {
                    Ok(Ok(0)) => break Some(("reset", "the receiver closed the connection during the body".to_string())),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break Some(("reset", format!("reading the body: {e}"))),
                    Err(_) => break Some(("timeout", format!("no complete body within the upstream timeout of {} ms", self.cfg.upstream_timeout.as_millis()))),
                },
                _ = client.closed() => break Some(("timeout", format!("{GAVE_UP} after {} ms, during the body", started.elapsed().as_millis()))),
            }
        };
        let body = Bytes::copy_from_slice(&s.reader.buffered()[..sent]);
        let detail = format!(
            "partial body: {sent} of {declared} bytes; the head was relayed before the body \
             completed"
        );
        let note = match &fault {
            Some((_, why)) => format!("{why}; {detail}"),
            None => format!(
                "body completed {} ms after the head; the head was relayed first",
                started.elapsed().as_millis()
            ),
        };
        Forwarded {
            replay: Replay {
                status: Some(s.head.status),
                raw_head: s.head.raw.clone(),
                raw_body: body.clone(),
                headers: wire::header_pairs(&s.head.headers),
                body,
                fault: fault.map(|f| f.0),
                latency: started.elapsed(),
                close_after: true,
            },
            note: Some(note),
            relayed: true,
        }
    }

    /// CONNECT: the primary's (or a passthrough) tunnel is opened and its
    /// bytes copied both ways, unread; a shadow's is refused with the
    /// default answer, since opaque bytes cannot be replayed. One row each.
    async fn tunnel(
        &self,
        client: Reader<OwnedReadHalf>,
        mut wr: OwnedWriteHalf,
        head: RequestHead,
        sender: SenderName,
        arrived: Instant,
        started_at: i64,
    ) {
        let authority = head.target.clone();
        let endpoint_url = format!("https://{authority}");
        let attempt = self.attempts.next(sender, &None, &endpoint_url);
        let bp = self.ramp.bp();
        let shadow = self.cfg.egress_mode == EgressMode::Replay
            && (ramp::engine_primary(&endpoint_url, bp) != (sender == SenderName::Engine));
        let mut rec = EgressRecord {
            sender: sender.as_str(),
            role: match (self.cfg.egress_mode, shadow) {
                (EgressMode::Passthrough, _) => "passthrough",
                (_, true) => "shadow_only",
                _ => "primary",
            },
            source: if shadow { "default" } else { "receiver" },
            event_id: None,
            endpoint_url,
            attempt: attempt as i64,
            ramp_bp: bp as i64,
            method: head.method.clone(),
            target: head.target.clone(),
            http_version: format!("HTTP/1.{}", head.version),
            request_headers: wire::header_pairs(&head.headers),
            request_body: Vec::new(),
            fault: Some("tunnel"),
            started_at,
            ..EgressRecord::default()
        };
        if shadow {
            rec.response_status = Some(self.cfg.shadow_only_status as i64);
            rec.note = Some("CONNECT tunnel from the shadow: its content would be opaque (TLS), so it cannot be replayed; refused with the default answer".into());
            if self.commit(rec, arrived).await {
                let _ = wr
                    .write_all(&plain_response(
                        self.cfg.shadow_only_status,
                        &self.cfg.shadow_only_body,
                        true,
                    ))
                    .await;
            }
            return;
        }
        let upstream =
            match tokio::time::timeout(self.cfg.upstream_timeout, TcpStream::connect(&authority))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    rec.response_status = Some(502);
                    rec.note = Some(format!("CONNECT tunnel to {authority} not opened: {e}"));
                    if self.commit(rec, arrived).await {
                        let _ = wr
                            .write_all(&plain_response(
                                502,
                                "hookshift egress: could not connect",
                                true,
                            ))
                            .await;
                    }
                    return;
                }
                Err(_) => {
                    rec.response_status = Some(504);
                    rec.note = Some(format!(
                        "CONNECT tunnel to {authority} not opened: connect timed out"
                    ));
                    if self.commit(rec, arrived).await {
                        let _ = wr
                            .write_all(&plain_response(
                                504,
                                "hookshift egress: connect timed out",
                                true,
                            ))
                            .await;
                    }
                    return;
                }
            };
        if wr
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let (rd, leftover) = client.into_parts();
        let mut client_stream = match rd.reunite(wr) {
            Ok(s) => s,
            Err(_) => return,
        };
        let mut upstream = upstream;
        if !leftover.is_empty() && upstream.write_all(&leftover).await.is_err() {
            return;
        }
        let copied = tokio::io::copy_bidirectional(&mut client_stream, &mut upstream).await;
        let (up, down) = copied.unwrap_or((0, 0));
        rec.response_status = Some(200);
        rec.note = Some(format!(
            "CONNECT tunnel: the content is opaque (TLS or other bytes) and was not recorded; {} bytes up, {} bytes down",
            up + leftover.len() as u64,
            down
        ));
        self.commit(rec, arrived).await;
    }
}

/// How a note starts when the sender closed its connection first.
const GAVE_UP: &str = "the sender closed the connection";

enum Answer {
    Replay(Replay),
    Default,
    Nothing,
}

/// `http://host[:port]/path?query` split into where to connect and the
/// origin-form target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteTarget {
    pub authority: String,
    pub host: String,
    pub port: u16,
    pub origin_form: String,
}

impl AbsoluteTarget {
    pub fn parse(target: &str) -> Option<AbsoluteTarget> {
        let lower = target.get(..7)?.to_ascii_lowercase();
        if lower != "http://" {
            return None;
        }
        let rest = &target[7..];
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..split];
        let path = &rest[split..];
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let end = stripped.find(']')?;
            let host = &stripped[..end];
            let port = match &stripped[end + 1..] {
                "" => 80,
                p => p.strip_prefix(':')?.parse().ok()?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), 80),
            }
        };
        let origin_form = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Some(AbsoluteTarget {
            authority: authority.to_string(),
            host,
            port,
            origin_form,
        })
    }
}

/// The forwarded head: origin-form target, the sender's header lines in
/// their case and order minus the proxy's hop-by-hop ones.
fn forwarded_head(
    head: &RequestHead,
    target: &AbsoluteTarget,
    tag: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.origin_form.as_bytes());
    out.extend_from_slice(if head.version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in &head.headers {
        if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((name, value)) = tag {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One exchange with the receiver on a fresh connection (so a refusal or a
/// reset is the receiver's, never a stale pooled connection's).
async fn exchange(
    head: &RequestHead,
    body: &wire::Body,
    target: &AbsoluteTarget,
    tag: Option<(&str, &str)>,
) -> Result<Upstream, (&'static str, String)> {
    let mut stream = match TcpStream::connect((target.host.as_str(), target.port)).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(("refused", format!("connect to {}: {e}", target.authority)))
        }
        Err(e) => return Err(("error", format!("connect to {}: {e}", target.authority))),
    };
    let _ = stream.set_nodelay(true);
    let mut out = forwarded_head(head, target, tag);
    out.extend_from_slice(&body.raw);
    if let Err(e) = stream.write_all(&out).await {
        return Err(("reset", format!("writing the request: {e}")));
    }
    let (rd, wr) = stream.into_split();
    let mut upstream = Reader::new(rd);
    let read_fault = |e: WireError| match e {
        WireError::Eof => (
            "reset",
            "the receiver closed the connection before a complete response".to_string(),
        ),
        WireError::Io(e) => ("reset", format!("reading the response: {e}")),
        other => ("error", format!("reading the response: {other}")),
    };
    // Interim 1xx answers (other than 101) are skipped: the body was sent.
    let resp = loop {
        let h = upstream.response_head().await.map_err(read_fault)?;
        if (100..200).contains(&h.status) && h.status != 101 {
            continue;
        }
        break h;
    };
    let framing = wire::response_framing(&head.method, &resp).map_err(read_fault)?;
    // demo: a Content-Length body that does not follow its head promptly
    // is relayed as it comes (see `STALL_GRACE`). Cancelling the read keeps
    // what arrived in the reader's buffer.
    let rbody = match framing {
        Framing::Length(n) if n as usize <= wire::MAX_BODY => {
            match tokio::time::timeout(STALL_GRACE, upstream.body(framing)).await {
                Ok(r) => r.map_err(read_fault)?,
                Err(_) => {
                    return Ok(Upstream::Stalled(StalledBody {
                        head: resp,
                        reader: upstream,
                        declared: n as usize,
                        _wr: wr,
                    }))
                }
            }
        }
        _ => upstream.body(framing).await.map_err(read_fault)?,
    };
    drop(wr);
    let close_after = framing == Framing::ToClose
        || resp.version == 0
        || wire::has_token(&resp.headers, "connection", "close");
    Ok(Upstream::Complete(Replay {
        status: Some(resp.status),
        raw_head: resp.raw.clone(),
        raw_body: rbody.raw,
        headers: wire::header_pairs(&resp.headers),
        body: rbody.decoded,
        fault: None,
        latency: Duration::ZERO,
        close_after,
    }))
}

fn default_headers(body: &str) -> Vec<(String, String)> {
    vec![
        ("Content-Type".into(), "text/plain; charset=utf-8".into()),
        ("Content-Length".into(), body.len().to_string()),
    ]
}

/// A small response of the proxy's own.
fn plain_response(status: u16, body: &str, close: bool) -> Vec<u8> {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut s = format!("HTTP/1.1 {status} {reason}\r\n");
    for (n, v) in default_headers(body) {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    if close {
        s.push_str("Connection: close\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_targets_split_into_authority_and_origin_form() {
        let t = AbsoluteTarget::parse("http://127.0.0.1:8080/hook?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.origin_form.as_str()),
            ("127.0.0.1", 8080, "/hook?x=1")
        );
        let t = AbsoluteTarget::parse("HTTP://example.com").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.origin_form.as_str()),
            ("example.com", 80, "/")
        );
        let t = AbsoluteTarget::parse("http://[::1]:9/a").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert_eq!(AbsoluteTarget::parse("/hook"), None);
        assert_eq!(AbsoluteTarget::parse("https://example.com/"), None);
        assert_eq!(AbsoluteTarget::parse("http://user:pw@example.com/"), None);
    }

    #[test]
    fn the_forwarded_head_keeps_lines_and_drops_proxy_headers() {
        let head = RequestHead {
            method: "POST".into(),
            target: "http://h:1/x".into(),
            version: 1,
            headers: vec![
                ("Host".into(), b"h:1".to_vec()),
                ("Proxy-Connection".into(), b"keep-alive".to_vec()),
                ("X-Event-Id".into(), b"evt".to_vec()),
                ("content-length".into(), b"2".to_vec()),
            ],
        };
        let t = AbsoluteTarget::parse(&head.target).unwrap();
        assert_eq!(
            String::from_utf8(forwarded_head(&head, &t, None)).unwrap(),
            "POST /x HTTP/1.1\r\nHost: h:1\r\nX-Event-Id: evt\r\ncontent-length: 2\r\n\r\n"
        );
    }
}
