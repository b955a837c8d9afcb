//! The least a hyper-based reverse proxy does, for `scripts/bench-proxy.sh`:
//! a reference point, not a product. Each request is read whole, sent to
//! one upstream over a pooled keep-alive connection (hyper-util's client,
//! as the ingress uses), and the upstream's answer returned. With
//! `--mirror URL` the same request is also sent there from a spawned task,
//! never awaited, at most 1,024 at a time (more are dropped). No routing
//! framework, no id injection, no capture, no metrics.
//!
//! The bench runs it next to the hookshift ingress so that the figures say
//! what share of the ingress's cost is its own work (axum, capture, the
//! mirror queue) and what share any proxy on the same stack pays (hyper,
//! tokio, the loopback TCP stack) on this machine.
//!
//! ```text
//! cargo run --release -p proxy --example bare_proxy -- \
//!     --listen 127.0.0.1:0 --upstream http://127.0.0.1:8080 [--mirror http://127.0.0.1:8081]
//! ```
//!
//! Prints `listening on ADDR` once it accepts connections.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Proxy {
    client: HttpClient,
    upstream: Uri,
    mirror: Option<Uri>,
    mirror_slots: Arc<Semaphore>,
}

fn target(base: &Uri, path_and_query: &str) -> Uri {
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().expect("a request target from hyper"));
    Uri::from_parts(parts).expect("the base's scheme and authority with a path")
}

async fn forward(
    client: &HttpClient,
    uri: Uri,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, String> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers.clone();
    req.headers_mut().remove(hyper::header::HOST);
    req.headers_mut().remove(hyper::header::CONNECTION);
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let (mut parts, body) = resp.into_parts();
    // Hop-by-hop: an upstream's `Connection: close` (nginx's on the last
    // request of a keep-alive connection) is not the client's.
    parts.headers.remove(hyper::header::CONNECTION);
    parts.headers.remove("keep-alive");
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if let Some(mirror) = &proxy.mirror {
        if let Ok(slot) = proxy.mirror_slots.clone().try_acquire_owned() {
            let (p, uri, body, parts) = (
                proxy.clone(),
                target(mirror, path),
                body.clone(),
                parts.clone(),
            );
            tokio::spawn(async move {
                let _ = forward(&p.client, uri, &parts, body).await;
                drop(slot);
            });
        }
    }
    let uri = target(&proxy.upstream, path);
    Ok(forward(&proxy.client, uri, &parts, body)
        .await
        .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY)))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}

fn parse_args() -> Result<(String, Uri, Option<Uri>), String> {
    let (mut listen, mut upstream, mut mirror) = ("127.0.0.1:0".to_string(), None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let uri = |v: &str| v.parse::<Uri>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--listen" => listen = value,
            "--upstream" => upstream = Some(uri(&value)?),
            "--mirror" => mirror = Some(uri(&value)?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok((listen, upstream.ok_or("--upstream is required")?, mirror))
}

#[tokio::main]
async fn main() {
    let (listen, upstream, mirror) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare_proxy: {e}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&listen).await.unwrap_or_else(|e| {
        eprintln!("bare_proxy: cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    println!(
        "listening on {}",
        listener.local_addr().expect("a bound socket")
    );
    let proxy = Arc::new(Proxy {
        client: {
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            Client::builder(TokioExecutor::new()).build(http)
        },
        upstream,
        mirror,
        mirror_slots: Arc::new(Semaphore::new(1024)),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(proxy.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
