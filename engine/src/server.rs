//! Starting and stopping an engine: connect the store, start the ingest
//! writers, serve the API until the shutdown future resolves.

use crate::api::{self, AppState};
use crate::clock::{SharedClock, SystemClock};
use crate::config::ValidConfig;
use crate::delivery::http::{Sender, SenderConfig};
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::store::{BackendKind, Store};
use crate::worker::Worker;
use anyhow::Context as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A connected engine, ready to serve.
pub struct Engine {
    state: Arc<AppState>,
    worker: Option<Worker>,
}

impl Engine {
    /// Connects to the database (applying migrations) and starts ingest.
    pub async fn start(config: ValidConfig) -> anyhow::Result<Engine> {
        let store = Store::connect(&config.raw.database_url)
            .await
            .with_context(|| {
                format!("opening database {}", redact_url(&config.raw.database_url))
            })?;
        Self::with_store(config, store, Arc::new(SystemClock))
    }

    /// An engine over an already-connected store and a given clock.
    pub fn with_store(
        config: ValidConfig,
        store: Store,
        clock: SharedClock,
    ) -> anyhow::Result<Engine> {
        let metrics = Arc::new(Metrics::default());
        let writers = match (config.raw.ingest.writers, store.kind()) {
            (0, BackendKind::Sqlite) => 1,
            (0, BackendKind::Postgres) => 4,
            (n, _) => n,
        };
        let wake = Arc::new(tokio::sync::Notify::new());
        let worker = if config.run_worker {
            let sender = Sender::new(SenderConfig {
                body_cap: config.raw.response_body_cap_bytes,
                allow_cidrs: config.allow_cidrs.clone(),
                egress_proxy: config.raw.worker.egress_proxy.clone(),
                ..SenderConfig::default()
            })
            .context("building the HTTP client")?;
            Some(
                Worker::new(
                    store.clone(),
                    sender,
                    clock.clone(),
                    metrics.clone(),
                    config.worker.clone(),
                    wake.clone(),
                )
                .context("starting the delivery worker")?,
            )
        } else {
            None
        };
        let ingestor = Ingestor::start(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            writers,
            config.raw.ingest.max_batch,
            wake,
            worker.as_ref().map(Worker::handoff),
        );
        Ok(Engine {
            state: Arc::new(AppState {
                store,
                ingestor,
                clock,
                metrics,
                config,
            }),
            worker,
        })
    }

    /// The engine's store.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Serves the API on `listener` until `shutdown` resolves, then finishes
    /// in-flight requests and closes the database.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        // One signal stops both the API and the worker.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let worker = self
            .worker
            .map(|w| tokio::spawn(w.run(stopped(stop_rx.clone()))));
        let app = api::router(self.state);
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop_rx))
            .await
            .context("serving the API")?;
        if let Some(w) = worker {
            let _ = w.await;
        }
        store.close().await;
        Ok(())
    }
}

/// Binds the configured address and serves until `shutdown`, printing the
/// bound address (tools and tests parse the line).
pub async fn run(
    config: ValidConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen: SocketAddr = config.listen;
    let engine = Engine::start(config).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    println!("engine listening on http://{addr}");
    tracing::info!(%addr, "engine listening");
    engine.serve(listener, shutdown).await
}

/// A database URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
