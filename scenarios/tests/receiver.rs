//! The receiver fleet simulator: its decisions are a function of (seed,
//! endpoint, event id, attempt) only, both senders meet the same behaviour
//! at their n-th attempt, and each behaviour does on the wire what it says.

use scenarios::receiver::{Action, Fleet, Receiver};
use scenarios::spec::{Behaviour, Endpoints, Latency, MixEntry};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn entry(behaviour: Behaviour) -> MixEntry {
    MixEntry {
        weight: 1,
        behaviour,
        latency: Latency::ZERO,
        recover_after: None,
    }
}

fn endpoints(count: u32, mix: Vec<MixEntry>) -> Endpoints {
    Endpoints { count, mix }
}

/// A fleet where endpoint n has `mix[n]` (one endpoint per entry, no
/// shuffling surprises: we look the behaviour up instead).
fn one_each(mix: Vec<MixEntry>) -> Fleet {
    Fleet::new(1, &endpoints(mix.len() as u32, mix))
}

/// The endpoint index whose behaviour is named `name`.
fn find(f: &Fleet, name: &str) -> u32 {
    (0..f.endpoint_count())
        .find(|n| f.entry(*n).unwrap().behaviour.name() == name)
        .unwrap_or_else(|| panic!("no {name} endpoint"))
}

#[derive(Debug)]
struct Got {
    head: String,
    body: Vec<u8>,
    /// How reading ended: "closed", "timeout" or the io error kind.
    end: String,
}

impl Got {
    fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends one POST over a fresh connection and reads until the server
/// closes, errors, or `wait` passes without a byte.
async fn post(base: &str, path: &str, headers: &[(&str, &str)], body: &str, wait: Duration) -> Got {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let end = loop {
        match tokio::time::timeout(wait, s.read(&mut chunk)).await {
            Err(_) => break "timeout".to_string(),
            Ok(Ok(0)) => break "closed".to_string(),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => break format!("{:?}", e.kind()),
        }
    };
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(buf.len());
    Got {
        head: String::from_utf8_lossy(&buf[..split]).into_owned(),
        body: buf[split..].to_vec(),
        end,
    }
}

const QUICK: Duration = Duration::from_millis(300);

#[test]
fn decisions_depend_only_on_seed_endpoint_event_and_attempt() {
    let mix = vec![
        entry(Behaviour::Ok),
        entry(Behaviour::Flaky {
            probability: 0.5,
            status: 503,
        }),
    ];
    let a = Fleet::new(42, &endpoints(10, mix.clone()));
    let b = Fleet::new(42, &endpoints(10, mix.clone()));
    let c = Fleet::new(43, &endpoints(10, mix.clone()));
    let mut differs = false;
    for n in 0..10 {
        assert_eq!(a.entry(n), b.entry(n));
        for e in 0..50 {
            let id = format!("evt_{e}");
            for attempt in 1..4 {
                assert_eq!(a.decide(n, &id, attempt), b.decide(n, &id, attempt));
                differs |= a.decide(n, &id, attempt) != c.decide(n, &id, attempt);
            }
        }
    }
    assert!(differs, "another seed gives another fleet");
    assert_eq!(a.decide(10, "evt_0", 1), None, "out of range");
}

#[test]
fn weights_give_exact_proportions_and_probabilities_hold() {
    let mut flaky = entry(Behaviour::Flaky {
        probability: 0.3,
        status: 500,
    });
    flaky.weight = 1;
    let mut ok = entry(Behaviour::Ok);
    ok.weight = 3;
    let f = Fleet::new(7, &endpoints(20, vec![ok, flaky]));
    let flaky_eps: Vec<u32> = (0..20)
        .filter(|n| f.entry(*n).unwrap().behaviour.name() == "flaky")
        .collect();
    assert_eq!(flaky_eps.len(), 5, "20 endpoints at 3:1");
    let n = flaky_eps[0];
    let failures = (0..4000)
        .filter(|e| {
            matches!(
                f.decide(n, &format!("evt_{e}"), 1).unwrap().action,
                Action::Status { status: 500, .. }
            )
        })
        .count();
    assert!(
        (1000..1400).contains(&failures),
        "about 30% of 4000 fail, got {failures}"
    );
}

#[test]
fn recover_after_and_latency_are_applied() {
    let mut e = entry(Behaviour::Hang);
    e.recover_after = Some(3);
    e.latency = Latency {
        min: Duration::from_millis(10),
        max: Duration::from_millis(20),
        slow_fraction: 0.0,
        slow: Duration::ZERO,
    };
    let f = one_each(vec![e]);
    assert_eq!(f.decide(0, "e", 1).unwrap().action, Action::Hang);
    assert_eq!(f.decide(0, "e", 2).unwrap().action, Action::Hang);
    assert_eq!(f.decide(0, "e", 3).unwrap().action, Action::Ok);
    for i in 0..100 {
        let l = f.decide(0, &format!("e{i}"), 1).unwrap().latency;
        assert!(
            l >= Duration::from_millis(10) && l <= Duration::from_millis(20),
            "{l:?}"
        );
    }
}

#[tokio::test]
async fn both_senders_meet_the_same_behaviour_at_each_attempt() {
    let f = Fleet::new(
        9,
        &endpoints(
            1,
            vec![entry(Behaviour::Flaky {
                probability: 0.5,
                status: 503,
            })],
        ),
    );
    let rx = Receiver::start(f, &["legacy", "engine"]).await.unwrap();
    let (l, e) = (
        rx.base_url("legacy").unwrap(),
        rx.base_url("engine").unwrap(),
    );
    let mut seen_fail = false;
    for ev in 0..15 {
        let id = format!("evt_{ev}");
        let h = [("X-Event-Id", id.as_str())];
        // The engine goes first for odd events: arrival order across
        // senders must not matter, only each sender's own attempt count.
        let mut legacy = Vec::new();
        let mut engine = Vec::new();
        for _ in 0..3 {
            if ev % 2 == 1 {
                engine.push(post(&e, "/ep/0", &h, "{}", QUICK).await.status());
                legacy.push(post(&l, "/ep/0", &h, "{}", QUICK).await.status());
            } else {
                legacy.push(post(&l, "/ep/0", &h, "{}", QUICK).await.status());
                engine.push(post(&e, "/ep/0", &h, "{}", QUICK).await.status());
            }
        }
        assert_eq!(legacy, engine, "{id}");
        seen_fail |= legacy.contains(&503);
        assert_eq!(rx.attempts("legacy", &id, 0), 3);
        assert_eq!(rx.attempts("engine", &id, 0), 3);
    }
    assert!(seen_fail, "p=0.5 over 45 attempts must fail sometimes");
    let records = rx.records();
    assert_eq!(records.len(), 90);
    assert!(records.iter().all(|r| r.attempt >= 1 && r.attempt <= 3));
}

#[tokio::test]
async fn senders_are_told_apart_by_listener_or_header_and_ids_by_either_header() {
    let rx = Receiver::start(one_each(vec![entry(Behaviour::Ok)]), &["legacy", "engine"])
        .await
        .unwrap();
    let l = rx.base_url("legacy").unwrap();
    post(&l, "/ep/0", &[("WEBHOOK-ID", "msg_1")], "{}", QUICK).await;
    post(
        &l,
        "/ep/0",
        &[("x-event-id", "evt_2"), ("X-Hookshift-Sender", "engine")],
        "{}",
        QUICK,
    )
    .await;
    let r = rx.records();
    assert_eq!(
        (r[0].sender.as_str(), r[0].event_id.as_deref()),
        ("legacy", Some("msg_1"))
    );
    assert_eq!(
        (r[1].sender.as_str(), r[1].event_id.as_deref()),
        ("engine", Some("evt_2"))
    );
    assert_eq!(rx.attempts("engine", "evt_2", 0), 1);
    // Headers are kept with their case, in order, and the body exactly.
    assert_eq!(r[0].headers[0].0, "Host");
    assert_eq!(r[0].headers[2].0, "WEBHOOK-ID");
    assert_eq!(r[0].body, b"{}");
    let c = rx.counters();
    assert_eq!(c.requests, 2);
    assert_eq!(c.by_sender_action["legacy"]["ok"], 1);
}

#[tokio::test]
async fn each_behaviour_does_what_it_says_on_the_wire() {
    let mut hang_then_ok = entry(Behaviour::Hang);
    hang_then_ok.recover_after = Some(2);
    let f = one_each(vec![
        entry(Behaviour::Ok),
        entry(Behaviour::ClientError { status: 410 }),
        entry(Behaviour::RateLimited { retry_after_s: 3 }),
        entry(Behaviour::Redirect { status: 307 }),
        entry(Behaviour::Reset),
        hang_then_ok,
        entry(Behaviour::ProcessThenTimeout),
        entry(Behaviour::StalledBody {
            declared_bytes: 100,
            sent_bytes: 5,
        }),
        entry(Behaviour::HugeBody { bytes: 1 << 20 }),
        entry(Behaviour::Flaky {
            probability: 1.0,
            status: 502,
        }),
    ]);
    let ep = |name: &str| format!("/ep/{}", find(&f, name));
    let paths: Vec<(&str, String)> = [
        "ok",
        "client_error",
        "rate_limited",
        "redirect",
        "reset",
        "hang",
        "process_then_timeout",
        "stalled_body",
        "huge_body",
        "flaky",
    ]
    .iter()
    .map(|n| (*n, ep(n)))
    .collect();
    let path = |name: &str| paths.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let rx = Receiver::start(f.clone(), &["legacy"]).await.unwrap();
    let base = rx.base_url("legacy").unwrap();
    let h = [("X-Event-Id", "evt_1")];
    let body = "{\"k\":\"<&>\"}";

    let g = post(&base, &path("ok"), &h, body, QUICK).await;
    assert_eq!(
        (g.status(), g.body.as_slice(), g.end.as_str()),
        (200, &b"{\"ok\":true}"[..], "closed")
    );

    let g = post(&base, &path("client_error"), &h, body, QUICK).await;
    assert_eq!(g.status(), 410);

    let g = post(&base, &path("rate_limited"), &h, body, QUICK).await;
    assert_eq!(g.status(), 429);
    assert_eq!(g.header("retry-after").as_deref(), Some("3"));

    let g = post(&base, &path("flaky"), &h, body, QUICK).await;
    assert_eq!(g.status(), 502);

    let g = post(&base, &path("redirect"), &h, body, QUICK).await;
    assert_eq!(g.status(), 307);
    let location = g.header("location").unwrap();
    assert_eq!(location, format!("{}/moved", path("redirect")));
    let g = post(&base, &location, &h, body, QUICK).await;
    assert_eq!(g.status(), 200, "the moved location answers");

    let g = post(&base, &path("reset"), &h, body, QUICK).await;
    assert_eq!((g.head.as_str(), g.end.as_str()), ("", "ConnectionReset"));

    let g = post(&base, &path("hang"), &h, body, QUICK).await;
    assert_eq!((g.head.as_str(), g.end.as_str()), ("", "timeout"));
    let g = post(&base, &path("hang"), &h, body, QUICK).await;
    assert_eq!(g.status(), 200, "recovered at attempt 2");

    let g = post(&base, &path("process_then_timeout"), &h, body, QUICK).await;
    assert_eq!((g.head.as_str(), g.end.as_str()), ("", "timeout"));

    let g = post(&base, &path("stalled_body"), &h, body, QUICK).await;
    assert_eq!(g.status(), 200);
    assert_eq!(g.header("content-length").as_deref(), Some("100"));
    assert_eq!(
        (g.body.len(), g.end.as_str()),
        (5, "timeout"),
        "5 of 100 bytes, then silence"
    );

    let g = post(&base, &path("huge_body"), &h, body, Duration::from_secs(5)).await;
    assert_eq!(g.status(), 200);
    assert_eq!((g.body.len(), g.end.as_str()), (1 << 20, "closed"));

    // What the receiver recorded.
    let records = rx.records();
    let by = |action: &str| {
        records
            .iter()
            .filter(|r| r.action == action)
            .collect::<Vec<_>>()
    };
    assert_eq!(by("hang")[0].body_len, 0, "a hang does not read the body");
    assert_eq!(
        by("process_then_timeout")[0].body,
        body.as_bytes(),
        "process-then-timeout read the whole request first"
    );
    assert_eq!(by("status_429")[0].retry_after_s, Some(3));
    let hop = records.iter().find(|r| r.hop).unwrap();
    assert_eq!((hop.attempt, hop.action.as_str()), (0, "ok"));
    assert!(records.iter().all(|r| r.sender == "legacy"));
    let redirect_attempts = rx.attempts("legacy", "evt_1", find(&f, "redirect"));
    assert_eq!(redirect_attempts, 1, "the redirect hop is not an attempt");
}

#[tokio::test]
async fn unknown_paths_get_404_and_are_recorded() {
    let rx = Receiver::start(one_each(vec![entry(Behaviour::Ok)]), &["legacy"])
        .await
        .unwrap();
    let base = rx.base_url("legacy").unwrap();
    assert_eq!(post(&base, "/nope", &[], "", QUICK).await.status(), 404);
    assert_eq!(post(&base, "/ep/5", &[], "", QUICK).await.status(), 404);
    let r = rx.records();
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| r.endpoint.is_none()));
}
