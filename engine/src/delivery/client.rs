//! The engine's own HTTP/1.1 client: connections, the keep-alive pool, TLS
//! and the egress proxy. [`super::http`] decides what goes on the wire and
//! what an answer means; this module only moves requests.
//!
//! Built on hyper's connection-level API (`hyper::client::conn::http1`), which
//! writes exactly the headers it is given, in the order given. Nothing is
//! added here except what the route needs: `Proxy-Authorization` when the
//! egress proxy URL carries credentials. (reqwest, which this replaces,
//! always added `accept: */*`; Go's net/http never does.)
//!
//! Layers, outermost first:
//! - [`Client::send`]: check out a pooled connection for the route or open
//!   one, send; a request hyper hands back unsent (the idle connection closed
//!   under it) is sent again on a fresh connection, as Go's transport does.
//! - [`Pool`]: idle connections keyed by scheme, host, port and header case
//!   (hyper's title case is a per-connection setting), at most
//!   `pool_idle_per_host` per key, dropped when the peer closed them or after
//!   [`IDLE_TIMEOUT`].
//! - [`Client::connect`]: TCP to the destination (names through the guarded
//!   resolver, so only checked addresses are dialled) or to the egress proxy;
//!   TLS (rustls, webpki roots, ALPN `http/1.1`) for https, through a CONNECT
//!   tunnel when proxied.
//!
//! No error text produced here contains request headers, and URLs are never
//! quoted (they may carry credentials).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, PROXY_AUTHORIZATION};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;
use url::Url;

use super::ssrf::{BlockedDestination, Guard, GuardedResolver};

/// How long a connection may sit idle in the pool before it is dropped
/// rather than reused (reqwest's default, which this replaces).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The largest CONNECT response head read from the egress proxy.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

type Tx = http1::SendRequest<Full<Bytes>>;

/// The egress proxy URL is not usable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProxyError(String);

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// The guard refused every address of the destination (or of a named
    /// proxy); nothing was dialled.
    Blocked(BlockedDestination),
    /// No connection: DNS, refused, unreachable, TLS handshake, the proxy
    /// refusing the tunnel. Nothing was sent.
    Connect(String),
    /// The connection was up and the exchange failed before a response head
    /// (reset, closed, not HTTP), or hyper refused the request itself.
    Http(hyper::Error),
    /// The URL's path and query do not make a request target hyper accepts.
    Target,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Blocked(b) => b.fmt(f),
            SendError::Connect(why) => f.write_str(why),
            SendError::Target => f.write_str("the URL is not a valid HTTP request target"),
            SendError::Http(e) => {
                // hyper's error and its cause (the io error), without repeats.
                write!(f, "{e}")?;
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    let text = s.to_string();
                    if !text.is_empty() && !e.to_string().contains(&text) {
                        write!(f, ": {text}")?;
                    }
                    src = s.source();
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scheme {
    Http,
    Https,
}

/// Where a connection goes and how it writes header names: the pool key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Route {
    scheme: Scheme,
    /// As in the URL: lowercase name or IP literal, IPv6 in brackets.
    host: String,
    port: u16,
    title_case: bool,
}

/// The egress proxy (plain HTTP).
#[derive(Debug)]
struct Proxy {
    host: String,
    port: u16,
    /// `Basic …` from the proxy URL's userinfo.
    authorization: Option<HeaderValue>,
}

/// A connection checked out of the pool (or freshly opened). Give it back
/// with [`Lease::release`] once its response body was read to the end;
/// dropping it instead closes the connection.
pub struct Lease<'c> {
    pool: &'c Pool,
    route: Route,
    tx: Tx,
}

impl Lease<'_> {
    /// The response was read to its end: the connection can carry the next
    /// request for this route.
    pub fn release(self) {
        self.pool.put(self.route, self.tx);
    }
}

/// Connections, pooled per route.
pub struct Client {
    pool: Pool,
    guard: Arc<Guard>,
    tls: TlsConnector,
    proxy: Option<Proxy>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("max_idle_per_route", &self.pool.max_idle)
            .field("proxied", &self.proxy.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client whose destinations are checked by `guard`, keeping at most
    /// `max_idle` idle connections per route, optionally sending everything
    /// through the plain-HTTP forward proxy at `egress_proxy`.
    pub fn new(
        guard: Arc<Guard>,
        max_idle: usize,
        egress_proxy: Option<&str>,
    ) -> Result<Client, ProxyError> {
        let proxy = egress_proxy.map(parse_proxy).transpose()?;
        Ok(Client {
            pool: Pool::new(max_idle),
            guard,
            tls: TlsConnector::from(tls_config()),
            proxy,
        })
    }

    /// Whether requests go through the egress proxy (which resolves
    /// destination names itself).
    pub fn proxied(&self) -> bool {
        self.proxy.is_some()
    }

    /// Send `req` to `url`'s origin (already validated: http(s) with a
    /// host). `req` carries its headers in wire order, Host included; its
    /// URI is set here (origin-form, or absolute-form through the proxy).
    /// On success the response head has arrived; the body is still on the
    /// connection that the returned [`Lease`] holds.
    pub async fn send(
        &self,
        url: &Url,
        title_case: bool,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease<'_>), SendError> {
        let scheme = match url.scheme() {
            "https" => Scheme::Https,
            _ => Scheme::Http,
        };
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let target = match (&self.proxy, scheme) {
            // A forward proxy takes the absolute URL (without userinfo
            // and fragment) and connects itself.
            (Some(p), Scheme::Http) => {
                if let Some(auth) = &p.authorization {
                    req.headers_mut().append(PROXY_AUTHORIZATION, auth.clone());
                }
                let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
                format!("http://{}{path}", host_port(host, port, scheme))
            }
            _ => url[url::Position::BeforePath..url::Position::AfterQuery].to_string(),
        };
        *req.uri_mut() = target.parse().map_err(|_| SendError::Target)?;
        // Plain HTTP through the proxy: every destination shares the
        // connections to the proxy.
        let route = match (&self.proxy, scheme) {
            (Some(p), Scheme::Http) => Route {
                scheme,
                host: p.host.clone(),
                port: p.port,
                title_case,
            },
            _ => Route {
                scheme,
                host: host.to_string(),
                port,
                title_case,
            },
        };

        loop {
            let (mut tx, reused) = match self.pool.take(&route).await {
                Some(tx) => (tx, true),
                None => (self.connect(&route).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    return Ok((
                        resp,
                        Lease {
                            pool: &self.pool,
                            route,
                            tx,
                        },
                    ))
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the idle connection went away between
                    // the checkout and the send. Safe to send again.
                    Some(unsent) if reused => {
                        tracing::debug!(error = %e.error(), "pooled connection closed before the request was written; reconnecting");
                        req = unsent;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// Open a connection for `route`.
    async fn connect(&self, route: &Route) -> Result<Tx, SendError> {
        let tcp = match &self.proxy {
            // The operator's own proxy: a literal address is used as is; a
            // name still goes through the guard.
            Some(p) => dial(&self.guard, &p.host, p.port, false).await?,
            None => dial(&self.guard, &route.host, route.port, true).await?,
        };
        // Head and body go out in one write anyway; without Nagle a small
        // request is not held back waiting for an ACK.
        let _ = tcp.set_nodelay(true);
        let mut builder = http1::Builder::new();
        builder.title_case_headers(route.title_case);
        match route.scheme {
            Scheme::Http => handshake(&builder, tcp).await,
            Scheme::Https => {
                let mut tcp = tcp;
                if let Some(p) = &self.proxy {
                    tunnel(&mut tcp, p, &route.host, route.port).await?;
                }
                let name = rustls::pki_types::ServerName::try_from(unbracket(&route.host))
                    .map_err(|_| {
                        SendError::Connect("the host is not a valid TLS server name".into())
                    })?
                    .to_owned();
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| SendError::Connect(format!("TLS handshake failed: {e}")))?;
                handshake(&builder, tls).await
            }
        }
    }

    /// Idle connections pooled for `url`'s origin with the given header case
    /// (tests).
    #[doc(hidden)]
    pub fn idle_for(&self, url: &Url, title_case: bool) -> usize {
        let route = Route {
            scheme: if url.scheme() == "https" {
                Scheme::Https
            } else {
                Scheme::Http
            },
            host: url.host_str().unwrap_or_default().to_string(),
            port: url.port_or_known_default().unwrap_or(80),
            title_case,
        };
        self.pool.count(&route)
    }
}

/// hyper's HTTP/1.1 handshake over `io`; the connection task runs until the
/// peer closes, an error, or every handle to it is dropped.
async fn handshake<T>(builder: &http1::Builder, io: T) -> Result<Tx, SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (tx, conn) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(SendError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "delivery connection ended with an error");
        }
    });
    Ok(tx)
}

/// A TCP connection to `host:port`. Names are resolved once through the
/// guard and only permitted addresses are dialled, in order; literals are
/// checked when `check_literal`.
async fn dial(
    guard: &Guard,
    host: &str,
    port: u16,
    check_literal: bool,
) -> Result<TcpStream, SendError> {
    let bare = unbracket(host);
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => {
            if check_literal {
                guard.check(bare, ip).map_err(SendError::Blocked)?;
            }
            vec![SocketAddr::new(ip, port)]
        }
        Err(_) => match GuardedResolver::resolve_host(guard, bare).await {
            Ok(addrs) => addrs
                .into_iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect(),
            Err(e) => {
                return Err(match e.downcast::<BlockedDestination>() {
                    Ok(blocked) => SendError::Blocked(*blocked),
                    Err(e) => SendError::Connect(format!("could not resolve the host: {e}")),
                })
            }
        },
    };
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(SendError::Connect(match last {
        Some(e) => format!("could not connect: {e}"),
        None => "could not connect: no address".into(),
    }))
}

/// Ask the proxy for a tunnel to `host:port` and read its answer head.
async fn tunnel(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), SendError> {
    let authority = format!("{host}:{port}");
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(auth) = &proxy.authorization {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(auth.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let io = |e: std::io::Error| SendError::Connect(format!("egress proxy: {e}"));
    tcp.write_all(&head).await.map_err(io)?;

    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_CONNECT_HEAD {
            return Err(SendError::Connect(
                "egress proxy: CONNECT response head too large".into(),
            ));
        }
        let n = tcp.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(SendError::Connect(
                "egress proxy closed the connection during CONNECT".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status_line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || status.len() != 3 || !status.starts_with('2') {
        return Err(SendError::Connect(format!(
            "egress proxy refused the tunnel: {}",
            status_line.escape_debug()
        )));
    }
    Ok(())
}

/// `host` (IPv6 in brackets) with `:port` unless it is the scheme's default.
fn host_port(host: &str, port: u16, scheme: Scheme) -> String {
    let default = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    if port == default {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn parse_proxy(raw: &str) -> Result<Proxy, ProxyError> {
    let url = Url::parse(raw.trim()).map_err(|e| ProxyError(e.to_string()))?;
    if url.scheme() != "http" {
        return Err(ProxyError(format!(
            "scheme `{}` is not supported (only http:// proxies)",
            url.scheme()
        )));
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err(ProxyError("no host".into())),
    };
    let authorization = basic_auth(&url)
        .map(|v| HeaderValue::from_str(&v).map_err(|_| ProxyError("invalid credentials".into())))
        .transpose()?;
    Ok(Proxy {
        host,
        port: url.port_or_known_default().unwrap_or(80),
        authorization,
    })
}

/// `Basic base64(user:password)` from `url`'s userinfo (percent-decoded), as
/// Go's net/http sends it; `None` without userinfo.
pub fn basic_auth(url: &Url) -> Option<String> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
    let mut creds = decode(url.username());
    creds.push(b':');
    creds.extend(decode(url.password().unwrap_or_default()));
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(creds)
    ))
}

/// One rustls configuration for every connection: webpki roots, ring,
/// HTTP/1.1 only.
fn tls_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Idle keep-alive connections per route.
struct Pool {
    idle: Mutex<HashMap<Route, Vec<Idle>>>,
    max_idle: usize,
}

struct Idle {
    tx: Tx,
    since: tokio::time::Instant,
}

impl Pool {
    fn new(max_idle: usize) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            max_idle,
        }
    }

    /// The most recently used live connection for `route`, ready for a
    /// request. Connections the peer closed, or idle too long, are dropped.
    async fn take(&self, route: &Route) -> Option<Tx> {
        loop {
            let mut tx = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let list = idle.get_mut(route)?;
                let now = tokio::time::Instant::now();
                loop {
                    let entry = list.pop()?;
                    if !entry.tx.is_closed() && now.duration_since(entry.since) < IDLE_TIMEOUT {
                        break entry.tx;
                    }
                }
            };
            // A connection goes back into the pool as soon as its response
            // body ended; hyper may not have turned it round yet. `ready`
            // waits for that, or fails if the connection closed meanwhile.
            if tx.ready().await.is_ok() {
                return Some(tx);
            }
        }
    }

    fn put(&self, route: Route, tx: Tx) {
        if self.max_idle == 0 || tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(route).or_default();
        list.retain(|i| !i.tx.is_closed());
        if list.len() < self.max_idle {
            list.push(Idle {
                tx,
                since: tokio::time::Instant::now(),
            });
        }
    }

    fn count(&self, route: &Route) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get(route)
            .map(|l| l.iter().filter(|i| !i.tx.is_closed()).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = parse_proxy("http://127.0.0.1:9091").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 9091));
        assert!(p.authorization.is_none());
        let p = parse_proxy("http://u:p%40ss@[::1]").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("[::1]", 80));
        // base64("u:p@ss")
        assert_eq!(p.authorization.unwrap(), "Basic dTpwQHNz");
        assert!(parse_proxy("https://127.0.0.1:1").is_err());
        assert!(parse_proxy("socks5://127.0.0.1:1").is_err());
        assert!(parse_proxy("not a url").is_err());
    }

    #[test]
    fn host_and_port_forms() {
        assert_eq!(host_port("example.com", 80, Scheme::Http), "example.com");
        assert_eq!(host_port("example.com", 443, Scheme::Https), "example.com");
        assert_eq!(
            host_port("example.com", 8080, Scheme::Http),
            "example.com:8080"
        );
        assert_eq!(host_port("[::1]", 9, Scheme::Http), "[::1]:9");
        assert_eq!(unbracket("[::1]"), "::1");
        assert_eq!(unbracket("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn basic_auth_from_userinfo() {
        let u = Url::parse("http://user:pa55word@h/").unwrap();
        assert_eq!(basic_auth(&u).unwrap(), "Basic dXNlcjpwYTU1d29yZA==");
        let u = Url::parse("http://user@h/").unwrap();
        assert_eq!(basic_auth(&u).unwrap(), "Basic dXNlcjo=");
        assert_eq!(basic_auth(&Url::parse("http://h/").unwrap()), None);
    }
}
