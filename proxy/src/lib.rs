//! The tee proxy: how both senders run on live traffic without delivering
//! twice, and how real delivery moves to the engine endpoint by endpoint.
//!
//! Layout:
//! - [`ingress`]: the ingress tee. Producers' API calls go to the API
//!   primary (answer returned unchanged) and are mirrored to the other
//!   sender through a bounded queue.
//! - [`egress`]: one HTTP/1.1 forward-proxy listener per sender. The
//!   primary's outbound webhook goes to the receiver and is recorded byte
//!   for byte; the shadow's is answered with the primary's exchange.
//! - [`ramp`]: the endpoint-sticky stage (10,000 buckets) and its audited
//!   changes.
//! - [`admin`]: `/admin/ramp`, `/healthz`, `/metrics`, and [`admin::Client`].
//! - [`capture`]: the capture store the comparator reads, and its JSONL
//!   export.
//! - [`config`]: `proxy.toml`, validated with messages naming the key.
//! - [`metrics`], [`testing`] (a proxy on port 0 for tests).
//!
//! [`run`] takes already-bound listeners and a shutdown future, so tests and
//! the scenario runner start the proxy in-process on port 0.

pub mod admin;
pub mod capture;
pub mod config;
pub mod egress;
pub mod ingress;
pub mod metrics;
pub mod ramp;
pub mod testing;

use capture::{CaptureError, CaptureStore, SenderName};
use config::ValidConfig;
use metrics::Metrics;
use ramp::Ramp;
use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the proxy could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The capture store could not be opened or read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Binding or serving a listener failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The ingress tee could not be set up (an unusable sender API URL,
    /// TLS).
    #[error(transparent)]
    Ingress(#[from] ingress::IngressError),
}

/// The four listeners, bound by the caller.
pub struct Listeners {
    pub ingress: TcpListener,
    pub egress_legacy: TcpListener,
    pub egress_engine: TcpListener,
    pub admin: TcpListener,
}

/// Where the listeners are bound.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub ingress: SocketAddr,
    pub egress_legacy: SocketAddr,
    pub egress_engine: SocketAddr,
    pub admin: SocketAddr,
}

impl Addrs {
    /// The egress listener of one sender.
    pub fn egress(&self, sender: SenderName) -> SocketAddr {
        match sender {
            SenderName::Legacy => self.egress_legacy,
            SenderName::Engine => self.egress_engine,
        }
    }
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(cfg: &ValidConfig) -> Result<Listeners, ProxyError> {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Io {
                    what: format!("binding listen.{what} ({addr})"),
                    source,
                })
        };
        Ok(Listeners {
            ingress: bind("ingress", cfg.listen_ingress).await?,
            egress_legacy: bind("egress_legacy", cfg.listen_egress_legacy).await?,
            egress_engine: bind("egress_engine", cfg.listen_egress_engine).await?,
            admin: bind("admin", cfg.listen_admin).await?,
        })
    }

    /// Binds all four on 127.0.0.1:0 (tests).
    pub async fn loopback() -> Result<Listeners, ProxyError> {
        let bind = || async {
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| ProxyError::Io {
                    what: "binding 127.0.0.1:0".into(),
                    source,
                })
        };
        Ok(Listeners {
            ingress: bind().await?,
            egress_legacy: bind().await?,
            egress_engine: bind().await?,
            admin: bind().await?,
        })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> Result<Addrs, ProxyError> {
        let a = |l: &TcpListener| {
            l.local_addr().map_err(|source| ProxyError::Io {
                what: "reading a bound address".into(),
                source,
            })
        };
        Ok(Addrs {
            ingress: a(&self.ingress)?,
            egress_legacy: a(&self.egress_legacy)?,
            egress_engine: a(&self.egress_engine)?,
            admin: a(&self.admin)?,
        })
    }
}

/// A proxy whose store is open and whose ramp stage is loaded, not yet
/// serving. Its handles let tests and tools look inside.
pub struct Proxy {
    pub config: Arc<ValidConfig>,
    pub store: CaptureStore,
    pub ramp: Arc<Ramp>,
    pub metrics: Arc<Metrics>,
    pub ingress: Arc<ingress::Ingress>,
    egress: Arc<egress::Egress>,
}

impl Proxy {
    /// Opens the capture store, loads the ramp stage, starts the mirror
    /// workers.
    pub async fn start(config: ValidConfig) -> Result<Proxy, ProxyError> {
        let store = CaptureStore::open(&config.raw.capture_store).await?;
        Self::with_store(config, store).await
    }

    /// Like [`Proxy::start`] over an already-open store.
    pub async fn with_store(config: ValidConfig, store: CaptureStore) -> Result<Proxy, ProxyError> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::default());
        let ramp = Ramp::load(store.clone()).await?;
        let ingress = ingress::Ingress::start(config.clone(), store.clone(), metrics.clone())?;
        let egress =
            egress::Egress::new(config.clone(), ramp.clone(), store.clone(), metrics.clone());
        Ok(Proxy {
            config,
            store,
            ramp,
            metrics,
            ingress,
            egress,
        })
    }

    /// Serves the four listeners until `shutdown` resolves.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let legacy = tokio::spawn(self.egress.clone().serve(
            listeners.egress_legacy,
            SenderName::Legacy,
            stop_rx.clone(),
        ));
        let engine = tokio::spawn(self.egress.clone().serve(
            listeners.egress_engine,
            SenderName::Engine,
            stop_rx.clone(),
        ));
        let ingress_for_depth = self.ingress.clone();
        let admin = admin::router(admin::AdminState {
            ramp: self.ramp.clone(),
            metrics: self.metrics.clone(),
            store: self.store.clone(),
            queue_depth: Arc::new(move || ingress_for_depth.queue_depth()),
        });
        let admin = tokio::spawn(
            axum::serve(
                listeners.admin,
                admin.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
        );
        // No Nagle delay on producers' connections: answers are small.
        let ingress_listener = axum::serve::ListenerExt::tap_io(listeners.ingress, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let ingress = axum::serve(ingress_listener, self.ingress.clone().router())
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .await;
        let _ = legacy.await;
        let _ = engine.await;
        let admin = admin.await;
        ingress.map_err(|source| ProxyError::Io {
            what: "serving the ingress".into(),
            source,
        })?;
        if let Ok(Err(source)) = admin {
            return Err(ProxyError::Io {
                what: "serving the admin listener".into(),
                source,
            });
        }
        Ok(())
    }
}

/// Starts the proxy on already-bound listeners and serves until `shutdown`.
pub async fn run(
    listeners: Listeners,
    config: ValidConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProxyError> {
    Proxy::start(config).await?.serve(listeners, shutdown).await
}
