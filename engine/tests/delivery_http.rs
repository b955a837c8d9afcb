//! The HTTP half of a delivery attempt against in-process receivers.
//!
//! Every receiver listens on loopback (127.0.0.1, or 127.0.0.2 for a second
//! address); nothing here connects anywhere else. Tests that deliver allow
//! `127.0.0.0/8` (or a narrower loopback range); the blocked-destination
//! tests use loopback receivers without that allowance and assert the
//! receiver saw no connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use axum::Router;
use bytes::Bytes;
use engine::delivery::http::{Exchange, OutboundRequest, Outcome, Sender, SenderConfig};
use engine::state::OutcomeClass;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A signature value that must never appear in any error text.
const SECRET: &str = "v1,c2VjcmV0LXNpZ25hdHVyZS1kby1ub3QtbGVhaw==";
const BODY: &[u8] = br#"{"type":"invoice.paid","id":"evt_1"}"#;

fn sender_with(allow: &[&str], body_cap: usize) -> Sender {
    Sender::new(SenderConfig {
        body_cap,
        allow_cidrs: allow.iter().map(|c| c.parse().unwrap()).collect(),
        pool_idle_per_host: 4,
        ..SenderConfig::default()
    })
    .unwrap()
}

fn loopback_sender() -> Sender {
    sender_with(&["127.0.0.0/8"], 64 * 1024)
}

fn request(url: impl Into<String>) -> OutboundRequest {
    OutboundRequest {
        url: url.into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-event-id".into(), "evt_1".into()),
            ("x-signature".into(), SECRET.into()),
        ],
        body: Bytes::from_static(BODY),
        deadline: Duration::from_secs(3),
        follow_redirects: false,
        title_case_headers: false,
    }
}

fn with_deadline(mut r: OutboundRequest, ms: u64) -> OutboundRequest {
    r.deadline = Duration::from_millis(ms);
    r
}

/// No error text may contain the request's signature header.
fn assert_no_secret(ex: &Exchange) {
    if let Some(e) = &ex.error {
        assert!(!e.contains(SECRET), "error leaks a request header: {e}");
        assert!(!e.contains("c2VjcmV0"), "error leaks a request header: {e}");
    }
}

// ---------------------------------------------------------------- receivers

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// A raw TCP receiver: runs `handle` for every accepted connection and counts
/// connections.
struct Raw {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

async fn raw_on<F, Fut>(bind: &str, handle: F) -> Raw
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let h = handle.clone();
            tokio::spawn(async move { h(stream).await });
        }
    });
    Raw { addr, conns }
}

async fn raw<F, Fut>(handle: F) -> Raw
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    raw_on("127.0.0.1:0", handle).await
}

impl Raw {
    /// Give a (wrongly) attempted connection time to be accepted, then
    /// report how many there were.
    async fn connections_after_settling(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.conns.load(Ordering::SeqCst)
    }
}

/// Read one request (head and Content-Length body) off a raw connection.
async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return buf;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A port on loopback that nothing listens on.
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn status_server() -> SocketAddr {
    async fn status(Path(code): Path<u16>) -> impl IntoResponse {
        (
            StatusCode::from_u16(code).unwrap(),
            format!("status {code}"),
        )
    }
    serve(Router::new().route("/status/{code}", post(status))).await
}

// -------------------------------------------------------------- the classes

#[tokio::test]
async fn ok_200_is_delivered_with_request_intact() {
    #[derive(Default)]
    struct Seen {
        method: Option<Method>,
        headers: Option<HeaderMap>,
        body: Option<Bytes>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    async fn hook(
        State(seen): State<Arc<Mutex<Seen>>>,
        method: Method,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl IntoResponse {
        let mut s = seen.lock().unwrap();
        s.method = Some(method);
        s.headers = Some(headers);
        s.body = Some(body);
        ([("x-receiver", "yes")], "ok")
    }
    let addr = serve(
        Router::new()
            .route("/hook", any(hook))
            .with_state(seen.clone()),
    )
    .await;

    let ex = loopback_sender()
        .send(request(format!("http://{addr}/hook")))
        .await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 });
    assert_eq!(ex.outcome.class(), OutcomeClass::Delivered);
    assert_eq!(ex.status, Some(200));
    assert_eq!(ex.response_body, b"ok");
    assert!(!ex.truncated);
    assert_eq!(ex.error, None);
    assert!(ex
        .response_headers
        .iter()
        .any(|(k, v)| k == "x-receiver" && v == "yes"));
    assert!(ex.duration < Duration::from_secs(3));

    let s = seen.lock().unwrap();
    assert_eq!(s.method, Some(Method::POST));
    assert_eq!(s.body.as_deref(), Some(BODY));
    let h = s.headers.as_ref().unwrap();
    assert_eq!(h["x-signature"], SECRET);
    assert_eq!(h["x-event-id"], "evt_1");
    assert_eq!(h["content-type"], "application/json");
    // The client adds no User-Agent of its own.
    assert!(h.get("user-agent").is_none());
}

#[tokio::test]
async fn ok_204_with_empty_body_is_delivered() {
    let addr = status_server().await;
    let ex = loopback_sender()
        .send(request(format!("http://{addr}/status/204")))
        .await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 204 });
    assert!(ex.response_body.is_empty());
}

#[tokio::test]
async fn server_errors_500_503_and_408() {
    let addr = status_server().await;
    let sender = loopback_sender();
    for code in [500u16, 503, 408] {
        let ex = sender
            .send(request(format!("http://{addr}/status/{code}")))
            .await;
        assert_eq!(ex.outcome, Outcome::ServerError { status: code });
        assert_eq!(ex.outcome.class(), OutcomeClass::ServerError);
        assert_eq!(ex.status, Some(code));
        assert_eq!(ex.response_body, format!("status {code}").as_bytes());
        assert!(ex.error.as_deref().unwrap().contains(&code.to_string()));
    }
}

#[tokio::test]
async fn client_errors_401_404_410() {
    let addr = status_server().await;
    let sender = loopback_sender();
    for code in [400u16, 401, 404, 410] {
        let ex = sender
            .send(request(format!("http://{addr}/status/{code}")))
            .await;
        assert_eq!(ex.outcome, Outcome::ClientError { status: code });
        assert_eq!(ex.outcome.class(), OutcomeClass::ClientError);
        assert_eq!(ex.status, Some(code));
    }
}

#[tokio::test]
async fn rate_limited_with_retry_after_seconds() {
    let addr = serve(Router::new().route(
        "/",
        post(|| async {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "2")],
                "slow down",
            )
        }),
    ))
    .await;
    let ex = loopback_sender()
        .send(request(format!("http://{addr}/")))
        .await;
    assert_eq!(
        ex.outcome,
        Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(ex.outcome.class(), OutcomeClass::RateLimited);
    assert_eq!(ex.status, Some(429));
}

#[tokio::test]
async fn rate_limited_without_retry_after() {
    let addr = status_server().await;
    let ex = loopback_sender()
        .send(request(format!("http://{addr}/status/429")))
        .await;
    assert_eq!(ex.outcome, Outcome::RateLimited { retry_after: None });
}

#[tokio::test]
async fn rate_limited_with_http_date_relative_to_date_header() {
    // The receiver's clock is far off ours: the delay is taken from its Date.
    let addr = serve(Router::new().route(
        "/",
        post(|| async {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
                    ("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT"),
                ],
            )
        }),
    ))
    .await;
    let ex = loopback_sender()
        .send(request(format!("http://{addr}/")))
        .await;
    assert_eq!(
        ex.outcome,
        Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(30))
        }
    );
}

#[tokio::test]
async fn rate_limited_with_http_date_and_no_date_header_uses_now() {
    // A raw receiver, so no Date header is added for us.
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        let resp = format!(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: {at}\r\ncontent-length: 0\r\n\r\n"
        );
        s.write_all(resp.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    let ex = loopback_sender()
        .send(request(format!("http://{}/", rx.addr)))
        .await;
    match ex.outcome {
        Outcome::RateLimited {
            retry_after: Some(d),
        } => {
            assert!(
                d >= Duration::from_secs(57) && d <= Duration::from_secs(60),
                "{d:?}"
            )
        }
        other => panic!("expected RateLimited with a delay, got {other:?}"),
    }
}

// ----------------------------------------------------------- body behaviour

#[tokio::test]
async fn stalled_body_is_body_read_not_delivered() {
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let ex = loopback_sender()
        .send(with_deadline(request(format!("http://{}/", rx.addr)), 300))
        .await;
    assert_eq!(ex.outcome, Outcome::BodyRead { status: 200 });
    assert_eq!(ex.outcome.class(), OutcomeClass::BodyRead);
    assert_eq!(ex.status, Some(200));
    assert_eq!(ex.response_body, b"0123456789");
    assert!(
        ex.duration >= Duration::from_millis(290),
        "{:?}",
        ex.duration
    );
    assert!(
        ex.duration < Duration::from_millis(1500),
        "{:?}",
        ex.duration
    );
    assert!(
        ex.error.as_deref().unwrap().contains("deadline"),
        "{:?}",
        ex.error
    );
    assert_no_secret(&ex);
}

#[tokio::test]
async fn body_broken_off_is_body_read() {
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        // close mid-body
    })
    .await;
    let ex = loopback_sender()
        .send(request(format!("http://{}/", rx.addr)))
        .await;
    assert_eq!(ex.outcome, Outcome::BodyRead { status: 200 });
    assert_eq!(ex.response_body, b"0123456789");
    assert!(ex.duration < Duration::from_secs(2));
    assert_no_secret(&ex);
}

#[tokio::test]
async fn chunked_body_broken_off_is_body_read() {
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await
            .unwrap();
    })
    .await;
    let ex = loopback_sender()
        .send(request(format!("http://{}/", rx.addr)))
        .await;
    assert_eq!(ex.outcome, Outcome::BodyRead { status: 200 });
}

#[tokio::test]
async fn body_over_the_cap_is_delivered_and_truncated() {
    let addr = serve(Router::new().route("/", post(|| async { vec![b'x'; 10_000] }))).await;
    let ex = sender_with(&["127.0.0.0/8"], 1024)
        .send(request(format!("http://{addr}/")))
        .await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 });
    assert!(ex.truncated);
    assert_eq!(ex.response_body.len(), 1024);
}

#[tokio::test]
async fn reading_stops_at_the_cap_even_if_the_rest_never_comes() {
    // Announces 10 MB, sends 2 KiB, stalls: the cap was reached, so delivered.
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10000000\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[b'y'; 2048]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let ex = sender_with(&["127.0.0.0/8"], 1024)
        .send(with_deadline(request(format!("http://{}/", rx.addr)), 2000))
        .await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 });
    assert!(ex.truncated);
    assert_eq!(ex.response_body.len(), 1024);
    assert!(
        ex.duration < Duration::from_millis(1000),
        "{:?}",
        ex.duration
    );
}

#[tokio::test]
async fn body_exactly_at_the_cap_is_not_truncated() {
    let addr = serve(Router::new().route("/", post(|| async { vec![b'x'; 1024] }))).await;
    let ex = sender_with(&["127.0.0.0/8"], 1024)
        .send(request(format!("http://{addr}/")))
        .await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 });
    assert!(!ex.truncated);
    assert_eq!(ex.response_body.len(), 1024);
}

// ------------------------------------------------------- connection failures

#[tokio::test]
async fn accept_then_close_is_reset() {
    let rx = raw(|s| async move { drop(s) }).await;
    let ex = loopback_sender()
        .send(request(format!("http://{}/", rx.addr)))
        .await;
    assert_eq!(ex.outcome, Outcome::Reset, "{:?}", ex.error);
    assert_eq!(ex.outcome.class(), OutcomeClass::Reset);
    assert_eq!(ex.status, None);
    assert_no_secret(&ex);
}

#[tokio::test]
async fn close_after_reading_the_request_is_reset() {
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
    })
    .await;
    let ex = loopback_sender()
        .send(request(format!("http://{}/", rx.addr)))
        .await;
    assert_eq!(ex.outcome, Outcome::Reset, "{:?}", ex.error);
    assert_no_secret(&ex);
}

#[tokio::test]
async fn tcp_reset_is_reset() {
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        // SO_LINGER 0: close sends RST (and does not block).
        #[allow(deprecated)]
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    })
    .await;
    let ex = loopback_sender()
        .send(request(format!("http://{}/", rx.addr)))
        .await;
    assert_eq!(ex.outcome, Outcome::Reset, "{:?}", ex.error);
    assert_no_secret(&ex);
}

#[tokio::test]
async fn garbage_response_is_reset() {
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.0\r\n\r\n").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    let ex = loopback_sender()
        .send(request(format!("http://{}/", rx.addr)))
        .await;
    assert_eq!(ex.outcome, Outcome::Reset, "{:?}", ex.error);
}

#[tokio::test]
async fn nothing_listening_is_connect_error() {
    let port = free_port().await;
    let ex = loopback_sender()
        .send(request(format!("http://127.0.0.1:{port}/")))
        .await;
    assert_eq!(ex.outcome, Outcome::ConnectError, "{:?}", ex.error);
    assert_eq!(ex.outcome.class(), OutcomeClass::ConnectError);
    assert!(ex.error.is_some());
    assert_no_secret(&ex);
}

#[tokio::test]
async fn never_answering_is_timeout() {
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let ex = loopback_sender()
        .send(with_deadline(request(format!("http://{}/", rx.addr)), 300))
        .await;
    assert_eq!(ex.outcome, Outcome::Timeout);
    assert_eq!(ex.outcome.class(), OutcomeClass::Timeout);
    assert_eq!(ex.status, None);
    assert!(
        ex.duration >= Duration::from_millis(290),
        "{:?}",
        ex.duration
    );
    assert!(
        ex.duration < Duration::from_millis(1500),
        "{:?}",
        ex.duration
    );
    assert_no_secret(&ex);
}

// ---------------------------------------------------------------- redirects

async fn redirect_server() -> (
    SocketAddr,
    Arc<Mutex<Vec<(Method, Bytes)>>>,
    Arc<AtomicUsize>,
) {
    #[derive(Clone)]
    struct St {
        landed: Arc<Mutex<Vec<(Method, Bytes)>>>,
        loops: Arc<AtomicUsize>,
    }
    let st = St {
        landed: Arc::default(),
        loops: Arc::default(),
    };
    async fn moved() -> impl IntoResponse {
        (StatusCode::TEMPORARY_REDIRECT, [("location", "/target")])
    }
    async fn target(State(st): State<St>, method: Method, body: Bytes) -> impl IntoResponse {
        st.landed.lock().unwrap().push((method, body));
        "landed"
    }
    async fn looping(State(st): State<St>, Path(n): Path<u32>) -> impl IntoResponse {
        st.loops.fetch_add(1, Ordering::SeqCst);
        let next = format!("/loop/{}", n + 1);
        (StatusCode::TEMPORARY_REDIRECT, [("location", next)])
    }
    let router = Router::new()
        .route("/moved", any(moved))
        .route("/target", any(target))
        .route("/loop/{n}", any(looping))
        .with_state(st.clone());
    (serve(router).await, st.landed, st.loops)
}

#[tokio::test]
async fn redirect_is_reported_when_not_following() {
    let (addr, landed, _) = redirect_server().await;
    let ex = loopback_sender()
        .send(request(format!("http://{addr}/moved")))
        .await;
    assert_eq!(
        ex.outcome,
        Outcome::Redirect {
            status: 307,
            location: Some("/target".into())
        }
    );
    assert_eq!(ex.outcome.class(), OutcomeClass::Redirect);
    assert!(landed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn redirect_307_followed_preserves_the_post_body() {
    let (addr, landed, _) = redirect_server().await;
    let mut r = request(format!("http://{addr}/moved"));
    r.follow_redirects = true;
    let ex = loopback_sender().send(r).await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 });
    assert_eq!(ex.response_body, b"landed");
    let landed = landed.lock().unwrap();
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0].0, Method::POST);
    assert_eq!(landed[0].1.as_ref(), BODY);
}

#[tokio::test]
async fn redirects_stop_after_ten_requests_as_go_does() {
    let (addr, _, loops) = redirect_server().await;
    let mut r = request(format!("http://{addr}/loop/0"));
    r.follow_redirects = true;
    let ex = loopback_sender().send(r).await;
    assert_eq!(
        ex.outcome,
        Outcome::Redirect {
            status: 307,
            location: Some("/loop/10".into())
        }
    );
    // The original request and nine followed hops: Go's `http.Client`
    // sends 10 requests to a receiver that always redirects, then stops
    // ("stopped after 10 redirects").
    assert_eq!(loops.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn redirect_to_a_blocked_loopback_literal_is_blocked() {
    // The second receiver is on 127.0.0.2, outside the allowed 127.0.0.1/32.
    let blocked = raw_on("127.0.0.2:0", |mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
    })
    .await;
    let location = format!("http://{}/hook", blocked.addr);
    let addr = serve(Router::new().route(
        "/",
        post(move || {
            let location = location.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", location)]) }
        }),
    ))
    .await;
    let sender = sender_with(&["127.0.0.1/32"], 1024);

    let mut r = request(format!("http://{addr}/"));
    r.follow_redirects = true;
    let ex = sender.send(r).await;
    assert_eq!(ex.outcome, Outcome::BlockedDestination, "{:?}", ex.error);
    assert!(
        ex.error.as_deref().unwrap().contains("127.0.0.2"),
        "{:?}",
        ex.error
    );
    assert_eq!(blocked.connections_after_settling().await, 0);

    // Not following: the 3xx itself is the outcome.
    let ex = sender.send(request(format!("http://{addr}/"))).await;
    assert!(matches!(ex.outcome, Outcome::Redirect { status: 307, .. }));
    assert_eq!(blocked.connections_after_settling().await, 0);
}

#[tokio::test]
async fn redirect_to_a_name_resolving_to_blocked_addresses_is_blocked() {
    // Only 127.0.0.2 is allowed; `localhost` resolves to 127.0.0.1 / ::1.
    let target = raw(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
    })
    .await;
    let location = format!("http://localhost:{}/hook", target.addr.port());
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/",
        post(move || {
            let location = location.clone();
            async move { (StatusCode::FOUND, [("location", location)]) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let mut r = request(format!("http://{addr}/"));
    r.follow_redirects = true;
    let ex = sender_with(&["127.0.0.2/32"], 1024).send(r).await;
    assert_eq!(ex.outcome, Outcome::BlockedDestination, "{:?}", ex.error);
    assert!(
        ex.error.as_deref().unwrap().contains("localhost"),
        "{:?}",
        ex.error
    );
    assert_eq!(target.connections_after_settling().await, 0);
}

// --------------------------------------------------------------- SSRF guard

#[tokio::test]
async fn loopback_literal_is_blocked_without_the_allow_list() {
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
    })
    .await;
    let sender = sender_with(&[], 1024);
    let port = rx.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
    ] {
        let ex = sender.send(request(url.clone())).await;
        assert_eq!(
            ex.outcome,
            Outcome::BlockedDestination,
            "{url}: {:?}",
            ex.error
        );
        assert_eq!(ex.outcome.class(), OutcomeClass::BlockedDestination);
        assert!(
            ex.duration < Duration::from_millis(100),
            "{url}: {:?}",
            ex.duration
        );
        assert_no_secret(&ex);
    }
    assert_eq!(rx.connections_after_settling().await, 0);
}

#[tokio::test]
async fn localhost_name_is_blocked_without_the_allow_list() {
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
    })
    .await;
    let ex = sender_with(&[], 1024)
        .send(request(format!("http://localhost:{}/", rx.addr.port())))
        .await;
    assert_eq!(ex.outcome, Outcome::BlockedDestination, "{:?}", ex.error);
    assert!(
        ex.error.as_deref().unwrap().contains("localhost"),
        "{:?}",
        ex.error
    );
    assert_eq!(rx.connections_after_settling().await, 0);
}

#[tokio::test]
async fn localhost_name_is_delivered_with_the_allow_list() {
    let addr = status_server().await;
    let ex = loopback_sender()
        .send(request(format!(
            "http://localhost:{}/status/200",
            addr.port()
        )))
        .await;
    assert_eq!(
        ex.outcome,
        Outcome::Delivered { status: 200 },
        "{:?}",
        ex.error
    );
}

// ------------------------------------------------------------- wire format

/// Capture the raw request head a receiver sees.
async fn capture(mut r: OutboundRequest, url_prefix: &str) -> String {
    let (tx, rx_head) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let rx = raw(move |mut s| {
        let tx = tx.clone();
        async move {
            let req = read_request(&mut s).await;
            let _ = tx.send(req);
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    })
    .await;
    r.url = format!("{url_prefix}{}/hook", rx.addr);
    let ex = loopback_sender().send(r).await;
    assert_eq!(
        ex.outcome,
        Outcome::Delivered { status: 200 },
        "{:?}",
        ex.error
    );
    let mut rx_head = rx_head;
    let req = rx_head.recv().await.unwrap();
    let end = find(&req, b"\r\n\r\n").unwrap();
    assert_eq!(&req[end + 4..], BODY);
    String::from_utf8(req[..end].to_vec()).unwrap()
}

fn header_names(head: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn header_names_are_lowercase_by_default_in_wire_order() {
    let head = capture(request(""), "http://").await;
    println!("{head}");
    assert!(head.starts_with("POST /hook HTTP/1.1\r\n"), "{head}");
    let names = header_names(&head);
    for n in &names {
        assert_eq!(n, &n.to_ascii_lowercase(), "{head}");
    }
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} missing: {head}"))
    };
    assert!(pos("content-type") < pos("x-event-id"));
    assert!(pos("x-event-id") < pos("x-signature"));
    // What the client adds: host first, content-length. No Accept, no UA.
    assert_eq!(names[0], "host", "{head}");
    assert_eq!(names[1], "content-length", "{head}");
    assert!(!head.to_ascii_lowercase().contains("\r\naccept:"), "{head}");
    assert!(head.contains("\r\nhost: 127.0.0.1:"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}", BODY.len())),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("user-agent"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("accept-encoding"),
        "{head}"
    );
}

#[tokio::test]
async fn header_names_are_title_case_when_asked() {
    let mut r = request("");
    r.title_case_headers = true;
    r.headers
        .push(("User-Agent".into(), "Go-http-client/1.1".into()));
    let head = capture(r, "http://").await;
    println!("{head}");
    for expected in [
        "\r\nContent-Type: application/json",
        "\r\nX-Event-Id: evt_1",
        "\r\nX-Signature: ",
        "\r\nUser-Agent: Go-http-client/1.1",
        "\r\nHost: 127.0.0.1:",
        "\r\nContent-Length: ",
    ] {
        assert!(head.contains(expected), "{expected:?} missing from\n{head}");
    }
    assert!(!head.contains("x-event-id"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("\r\naccept:"), "{head}");
    // Go's order: Host, User-Agent, Content-Length, then the rest.
    assert_eq!(
        &header_names(&head)[..3],
        ["Host", "User-Agent", "Content-Length"],
        "{head}"
    );
}

#[tokio::test]
async fn an_accept_header_in_the_request_is_sent_once_as_given() {
    let mut r = request("");
    r.headers.push(("accept".into(), "application/json".into()));
    let head = capture(r, "http://").await;
    assert_eq!(head.matches("accept:").count(), 1, "{head}");
    assert!(head.contains("\r\naccept: application/json"), "{head}");
}

#[tokio::test]
async fn userinfo_becomes_basic_auth_and_never_reaches_error_text() {
    let head = capture(request(""), "http://user:pa55word@").await;
    // base64("user:pa55word")
    assert!(
        head.contains("\r\nauthorization: Basic dXNlcjpwYTU1d29yZA=="),
        "{head}"
    );

    let port = free_port().await;
    let ex = loopback_sender()
        .send(request(format!("http://user:pa55word@127.0.0.1:{port}/")))
        .await;
    assert_eq!(ex.outcome, Outcome::ConnectError);
    assert!(
        !ex.error.as_deref().unwrap().contains("pa55word"),
        "{:?}",
        ex.error
    );
}

// ------------------------------------------------------------ our own side

#[tokio::test]
async fn invalid_urls_are_invalid_url() {
    let sender = loopback_sender();
    for url in [
        "",
        "not a url",
        "example.com/hook",
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "mailto:ops@example.com",
        "http://",
        "http://exa mple.com/",
        "http://[::1/",
        "https://{{hostname}}/hook",
    ] {
        let ex = sender.send(request(url)).await;
        assert_eq!(ex.outcome, Outcome::InvalidUrl, "{url:?}: {:?}", ex.error);
        assert_eq!(ex.outcome.class(), OutcomeClass::InvalidUrl);
        assert!(ex.error.is_some());
        assert_no_secret(&ex);
    }
}

#[tokio::test]
async fn an_invalid_request_header_is_internal_and_not_leaked() {
    let mut r = request("http://127.0.0.1:9/");
    r.headers
        .push(("x-signature-2".into(), format!("{SECRET}\r\nInjected: 1")));
    let ex = loopback_sender().send(r).await;
    assert_eq!(ex.outcome, Outcome::Internal);
    assert!(
        ex.error.as_deref().unwrap().contains("x-signature-2"),
        "{:?}",
        ex.error
    );
    assert_no_secret(&ex);
}

#[tokio::test]
async fn connections_are_reused_across_sends() {
    let rx = raw(|mut s| async move {
        // Serve keep-alive requests on one connection.
        loop {
            let req = read_request(&mut s).await;
            if req.is_empty() {
                return;
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await;
    let sender = loopback_sender();
    for _ in 0..3 {
        let ex = sender.send(request(format!("http://{}/", rx.addr))).await;
        assert_eq!(ex.outcome, Outcome::Delivered { status: 200 });
    }
    assert_eq!(rx.conns.load(Ordering::SeqCst), 1);
}

// ------------------------------------------------- our client: wire and pool

/// The legacy profile's request, rendered as the worker renders it.
fn legacy_request(url: String) -> OutboundRequest {
    let profile = engine::profile::by_name("legacy").unwrap();
    let msg = engine::profile::Message {
        event_id: "evt_1",
        delivery_id: Some("dlv_1"),
        event_type: "order.created",
        timestamp: 1_700_000_000,
        payload: br#"{"b":1,"a":"<x>"}"#,
    };
    let rendered = profile.render(&["legacy-secret"], &msg).unwrap();
    OutboundRequest {
        url,
        headers: profile.wire_headers(&rendered),
        body: rendered.body.into(),
        deadline: profile.timeout,
        follow_redirects: profile.follow_redirects,
        title_case_headers: profile.header_case != engine::profile::HeaderCase::Lower,
    }
}

#[tokio::test]
async fn legacy_profile_bytes_are_go_s_head_with_no_accept() {
    let (tx, mut heads) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let rx = raw(move |mut s| {
        let tx = tx.clone();
        async move {
            let req = read_request(&mut s).await;
            let _ = tx.send(req);
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    })
    .await;
    let r = legacy_request(format!("http://{}/hook?x=1", rx.addr));
    let body = r.body.clone();
    let ex = loopback_sender().send(r).await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 }, "{ex:?}");

    let req = heads.recv().await.unwrap();
    let end = find(&req, b"\r\n\r\n").unwrap();
    assert_eq!(&req[end + 4..], &body[..]);
    let head = String::from_utf8(req[..end].to_vec()).unwrap();
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "POST /hook?x=1 HTTP/1.1", "{head}");
    // Go's net/http: Host, User-Agent, Content-Length, the rest sorted by
    // name, Accept-Encoding last; canonical case; nothing else.
    assert_eq!(
        header_names(&head),
        [
            "Host",
            "User-Agent",
            "Content-Length",
            "Content-Type",
            "X-Delivery-Id",
            "X-Event-Id",
            "X-Signature",
            "X-Timestamp",
            "Accept-Encoding",
        ],
        "{head}"
    );
    assert_eq!(lines[1], format!("Host: {}", rx.addr));
    assert_eq!(lines[2], "User-Agent: Go-http-client/1.1");
    assert_eq!(lines[3], format!("Content-Length: {}", body.len()));
    assert_eq!(lines[9], "Accept-Encoding: gzip");
    assert!(!head.to_ascii_lowercase().contains("\r\naccept:"), "{head}");
}

/// A keep-alive receiver that serves requests on each connection until the
/// client closes it.
async fn keep_alive_receiver() -> Raw {
    raw(|mut s| async move {
        loop {
            let req = read_request(&mut s).await;
            if req.is_empty() {
                return;
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn two_deliveries_to_one_receiver_share_one_connection() {
    let rx = keep_alive_receiver().await;
    let sender = loopback_sender();
    let url = format!("http://{}/hook", rx.addr);
    for _ in 0..2 {
        let ex = sender.send(legacy_request(url.clone())).await;
        assert_eq!(ex.outcome, Outcome::Delivered { status: 200 }, "{ex:?}");
    }
    assert_eq!(rx.conns.load(Ordering::SeqCst), 1);
    assert_eq!(sender.idle_connections(&url, true), 1);
    // Header case is a property of the connection: a lowercase request
    // does not borrow the title-case one.
    let ex = sender.send(request(url.clone())).await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 }, "{ex:?}");
    assert_eq!(rx.conns.load(Ordering::SeqCst), 2);
    assert_eq!(sender.idle_connections(&url, false), 1);
}

#[tokio::test]
async fn without_idle_slots_nothing_is_pooled() {
    let rx = keep_alive_receiver().await;
    let sender = Sender::new(SenderConfig {
        allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        pool_idle_per_host: 0,
        ..SenderConfig::default()
    })
    .unwrap();
    let url = format!("http://{}/", rx.addr);
    for _ in 0..2 {
        let ex = sender.send(request(url.clone())).await;
        assert_eq!(ex.outcome, Outcome::Delivered { status: 200 }, "{ex:?}");
    }
    assert_eq!(rx.conns.load(Ordering::SeqCst), 2);
}

/// A receiver that answers one request per connection as if keeping it
/// alive, then closes it when the test releases a permit, and reports each
/// close.
struct OneShot {
    raw: Raw,
    close: Arc<tokio::sync::Semaphore>,
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

async fn one_shot_receiver() -> OneShot {
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let close = Arc::new(tokio::sync::Semaphore::new(0));
    let permits = close.clone();
    let raw = raw(move |mut s| {
        let closed_tx = closed_tx.clone();
        let permits = permits.clone();
        async move {
            read_request(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            permits.acquire().await.unwrap().forget();
            drop(s);
            let _ = closed_tx.send(());
        }
    })
    .await;
    OneShot { raw, close, closed }
}

impl OneShot {
    /// Let the receiver close the connection it holds, and wait until it has.
    async fn close_one(&mut self) {
        self.close.add_permits(1);
        self.closed.recv().await.unwrap();
    }
}

#[tokio::test]
async fn an_idle_connection_the_peer_closed_is_not_reused() {
    let mut rx = one_shot_receiver().await;
    let sender = loopback_sender();
    let url = format!("http://{}/", rx.raw.addr);
    let ex = sender.send(request(url.clone())).await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 }, "{ex:?}");
    assert_eq!(sender.idle_connections(&url, false), 1);
    rx.close_one().await;
    // Wait (without a clock) until the client has seen the close.
    while sender.idle_connections(&url, false) > 0 {
        tokio::task::yield_now().await;
    }
    let ex = sender.send(request(url.clone())).await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 }, "{ex:?}");
    assert_eq!(rx.raw.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_closed_just_before_reuse_is_replaced_not_failed() {
    // The close has happened on the receiver's side, but the client's
    // connection task may not have run since: whether the pool notices, or
    // hyper hands the request back unsent, it goes out on a fresh
    // connection instead of failing.
    let mut rx = one_shot_receiver().await;
    let sender = loopback_sender();
    let url = format!("http://{}/", rx.raw.addr);
    for i in 0..5 {
        let ex = sender.send(request(url.clone())).await;
        assert_eq!(
            ex.outcome,
            Outcome::Delivered { status: 200 },
            "send {i}: {ex:?}"
        );
        assert_eq!(sender.idle_connections(&url, false), 1, "send {i}");
        rx.close_one().await;
    }
    assert_eq!(rx.raw.conns.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn see_other_turns_the_post_into_a_get_without_body_headers() {
    let (tx, mut heads) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let rx = raw(move |mut s| {
        let tx = tx.clone();
        async move {
            loop {
                let req = read_request(&mut s).await;
                if req.is_empty() {
                    return;
                }
                let first = req.starts_with(b"POST /from ");
                let _ = tx.send(req);
                let resp: &[u8] = if first {
                    b"HTTP/1.1 303 See Other\r\nlocation: /to\r\ncontent-length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                };
                if s.write_all(resp).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let mut r = legacy_request(format!("http://{}/from", rx.addr));
    r.follow_redirects = true;
    let ex = loopback_sender().send(r).await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 }, "{ex:?}");
    let _first = heads.recv().await.unwrap();
    let second = String::from_utf8(heads.recv().await.unwrap()).unwrap();
    let head = second.trim_end_matches("\r\n\r\n");
    assert!(head.starts_with("GET /to HTTP/1.1\r\n"), "{head}");
    assert_eq!(
        header_names(head),
        [
            "Host",
            "User-Agent",
            "X-Delivery-Id",
            "X-Event-Id",
            "X-Signature",
            "X-Timestamp",
            "Accept-Encoding",
        ],
        "{head}"
    );
    // The 303 had no body left to read: the hop reused the connection.
    assert_eq!(rx.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn https_to_a_plain_http_receiver_is_a_connect_error() {
    let rx = raw(|mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
    })
    .await;
    let ex = loopback_sender()
        .send(request(format!("https://{}/hook", rx.addr)))
        .await;
    assert_eq!(ex.outcome, Outcome::ConnectError, "{ex:?}");
    assert!(
        ex.error.as_deref().unwrap().contains("TLS"),
        "{:?}",
        ex.error
    );
    assert_no_secret(&ex);
}

#[tokio::test]
async fn https_through_the_egress_proxy_opens_a_connect_tunnel() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let (tx, seen) = tokio::sync::oneshot::channel::<(String, u8)>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while find(&buf, b"\r\n\r\n").is_none() {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        // What comes through the tunnel first: a TLS handshake record.
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        let _ = tx.send((String::from_utf8_lossy(&buf).into_owned(), chunk[0]));
        // No TLS server here: the handshake fails.
    });
    let sender = Sender::new(SenderConfig {
        allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        egress_proxy: Some(format!("http://{proxy}")),
        ..SenderConfig::default()
    })
    .unwrap();
    let ex = sender.send(request("https://127.0.0.1:9/hook")).await;
    assert_eq!(ex.outcome, Outcome::ConnectError, "{ex:?}");
    let (head, first_byte) = seen.await.unwrap();
    assert_eq!(
        head,
        "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"
    );
    assert_eq!(first_byte, 0x16, "a TLS handshake record");
}

#[tokio::test]
async fn a_proxy_refusing_the_tunnel_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut chunk = [0u8; 4096];
        let _ = s.read(&mut chunk).await;
        let _ = s
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            .await;
    });
    let sender = Sender::new(SenderConfig {
        allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        egress_proxy: Some(format!("http://{proxy}")),
        ..SenderConfig::default()
    })
    .unwrap();
    let ex = sender.send(request("https://127.0.0.1:9/hook")).await;
    assert_eq!(ex.outcome, Outcome::ConnectError, "{ex:?}");
    assert!(
        ex.error.as_deref().unwrap().contains("403"),
        "{:?}",
        ex.error
    );
}

// ------------------------------------------------------------ egress proxy

/// A one-shot forward proxy: answers the first request with 200 and keeps
/// its request head, so a test can see the absolute-form target.
async fn recording_proxy() -> (SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
    });
    (addr, rx)
}

#[tokio::test]
async fn deliveries_go_through_the_egress_proxy() {
    let (proxy, head) = recording_proxy().await;
    let sender = Sender::new(SenderConfig {
        allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        egress_proxy: Some(format!("http://{proxy}")),
        ..SenderConfig::default()
    })
    .unwrap();
    // Nothing listens on this port: only the proxy can have answered.
    let ex = sender.send(request("http://127.0.0.1:9/hook")).await;
    assert_eq!(ex.outcome, Outcome::Delivered { status: 200 }, "{ex:?}");
    let head = head.await.unwrap();
    assert!(
        head.starts_with("POST http://127.0.0.1:9/hook HTTP/1.1\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn the_guard_still_applies_behind_a_proxy() {
    let (proxy, mut head) = recording_proxy().await;
    let sender = Sender::new(SenderConfig {
        egress_proxy: Some(format!("http://{proxy}")),
        ..SenderConfig::default()
    })
    .unwrap();
    // A name that resolves to loopback, and a private literal: both refused
    // before anything is sent to the proxy.
    for url in ["http://localhost:9/hook", "http://10.1.2.3/hook"] {
        let ex = sender.send(request(url)).await;
        assert_eq!(ex.outcome, Outcome::BlockedDestination, "{url}: {ex:?}");
    }
    // A request sent to the proxy would have been answered only after the
    // proxy recorded it, so an empty channel now means none was sent.
    assert!(
        matches!(
            head.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ),
        "the proxy saw a request"
    );
}

#[tokio::test]
async fn a_connection_the_receiver_asked_to_close_is_not_reused() {
    // `Connection: close`, but the receiver keeps its end open: the client
    // must not wait on that connection for the next request.
    let rx = raw(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
            .await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let sender = loopback_sender();
    let url = format!("http://{}/", rx.addr);
    for i in 0..3 {
        let ex = sender.send(request(url.clone())).await;
        assert_eq!(
            ex.outcome,
            Outcome::Delivered { status: 200 },
            "send {i}: {ex:?}"
        );
    }
    assert_eq!(rx.conns.load(Ordering::SeqCst), 3);
}
