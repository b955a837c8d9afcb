//! The ramp: which sender makes the real deliveries, endpoint by endpoint.
//!
//! An endpoint URL hashes into one of 10,000 buckets (the first 8 bytes of
//! its SHA-256 as a big-endian integer, modulo 10,000), so the split is
//! sticky: an endpoint stays with its sender until the stage moves past its
//! bucket. The stage is in basis points (100 = 1%); at stage `bp`, buckets
//! below `bp` are engine-primary.
//!
//! The current stage lives in one atomic that every egress attempt reads
//! once, so a change applies to the next attempt. Every change is first
//! appended to the capture store's `ramp_changes` (the audit log and, by
//! its latest row, the stage after a restart), then published.

use crate::capture::{now_ms, CaptureError, CaptureStore, RampChange};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Buckets the endpoint space is divided into.
pub const BUCKETS: u64 = 10_000;

/// Ramp changes `GET /admin/ramp` shows.
pub const HISTORY: i64 = 20;

/// The bucket of an endpoint URL, in `0..10_000`.
pub fn bucket(endpoint_url: &str) -> u64 {
    let digest = Sha256::digest(endpoint_url.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

/// Whether the engine is primary for `endpoint_url` at stage `bp`.
pub fn engine_primary(endpoint_url: &str, bp: u32) -> bool {
    bucket(endpoint_url) < bp as u64
}

/// Percent (0..=100, any precision) to basis points, rounded.
pub fn percent_to_bp(percent: f64) -> Option<u32> {
    if percent.is_finite() && (0.0..=100.0).contains(&percent) {
        Some((percent * 100.0).round() as u32)
    } else {
        None
    }
}

/// What `GET /admin/ramp` answers.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RampView {
    pub percent: f64,
    pub bp: u32,
    /// Unix ms of the last change (0 if the stage was never set).
    pub changed_at: i64,
    pub reason: String,
    /// The last changes, newest first.
    pub history: Vec<RampHistoryEntry>,
}

/// One audited change as the admin API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RampHistoryEntry {
    pub at: i64,
    pub from_bp: u32,
    pub to_bp: u32,
    pub reason: String,
    pub actor: String,
}

impl From<RampChange> for RampHistoryEntry {
    fn from(c: RampChange) -> Self {
        RampHistoryEntry {
            at: c.at,
            from_bp: c.from_bp,
            to_bp: c.to_bp,
            reason: c.reason,
            actor: c.actor,
        }
    }
}

/// The live stage, shared by the egress listeners and the admin API.
#[derive(Debug)]
pub struct Ramp {
    bp: AtomicU32,
    store: CaptureStore,
    /// Serialises changes so `from_bp` in the audit log is always the stage
    /// that was really replaced.
    change: Mutex<()>,
}

impl Ramp {
    /// Loads the stage from the store's latest change (0 when never set).
    pub async fn load(store: CaptureStore) -> Result<Arc<Ramp>, CaptureError> {
        let bp = store.latest_ramp().await?.map(|c| c.to_bp).unwrap_or(0);
        Ok(Arc::new(Ramp {
            bp: AtomicU32::new(bp.min(BUCKETS as u32)),
            store,
            change: Mutex::new(()),
        }))
    }

    /// The current stage in basis points: one atomic read, done once per
    /// egress attempt.
    pub fn bp(&self) -> u32 {
        self.bp.load(Ordering::Acquire)
    }

    /// Moves the stage to `to_bp`, recording the change before it applies.
    pub async fn set(
        &self,
        to_bp: u32,
        reason: &str,
        actor: &str,
    ) -> Result<RampChange, CaptureError> {
        let _guard = self.change.lock().await;
        let from_bp = self.bp();
        let to_bp = to_bp.min(BUCKETS as u32);
        let change = self
            .store
            .insert_ramp_change(now_ms(), from_bp, to_bp, reason, actor)
            .await?;
        self.bp.store(to_bp, Ordering::Release);
        tracing::info!(from_bp, to_bp, reason, actor, "ramp stage changed");
        Ok(change)
    }

    /// The stage with its recent history.
    pub async fn view(&self) -> Result<RampView, CaptureError> {
        let history = self.store.ramp_history(HISTORY).await?;
        let bp = self.bp();
        let (changed_at, reason) = history
            .first()
            .map(|c| (c.at, c.reason.clone()))
            .unwrap_or((0, String::new()));
        Ok(RampView {
            percent: bp as f64 / 100.0,
            bp,
            changed_at,
            reason,
            history: history.into_iter().map(Into::into).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_in_range() {
        // Pinned: the comparator and the gate compute the same function.
        let b = bucket("https://example.com/webhooks");
        assert_eq!(b, bucket("https://example.com/webhooks"));
        assert!(b < BUCKETS);
        let digest = Sha256::digest(b"https://example.com/webhooks");
        let expect = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000;
        assert_eq!(b, expect);
        assert!(!engine_primary("https://example.com/webhooks", 0));
        assert!(engine_primary("https://example.com/webhooks", 10_000));
    }

    #[test]
    fn percent_converts_to_basis_points() {
        assert_eq!(percent_to_bp(25.0), Some(2500));
        assert_eq!(percent_to_bp(0.01), Some(1));
        assert_eq!(percent_to_bp(100.0), Some(10_000));
        assert_eq!(percent_to_bp(100.5), None);
        assert_eq!(percent_to_bp(-1.0), None);
        assert_eq!(percent_to_bp(f64::NAN), None);
    }

    #[tokio::test]
    async fn a_quarter_of_endpoints_at_25_percent_and_the_same_set_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let urls: Vec<String> = (0..400)
            .map(|i| format!("https://customer-{i}.example.com/hooks/{i}"))
            .collect();

        let store = CaptureStore::open(&url).await.unwrap();
        let ramp = Ramp::load(store.clone()).await.unwrap();
        assert_eq!(ramp.bp(), 0);
        ramp.set(2500, "first stage", "test").await.unwrap();
        let engine_set: Vec<&String> = urls
            .iter()
            .filter(|u| engine_primary(u, ramp.bp()))
            .collect();
        // 400 draws at p = 0.25: mean 100, sd ≈ 8.7; ±35 is four sd.
        assert!(
            (65..=135).contains(&engine_set.len()),
            "{} of 400 engine-primary at 25%",
            engine_set.len()
        );
        store.close().await;
        drop(ramp);

        // A restart: a new store over the same file.
        let store = CaptureStore::open(&url).await.unwrap();
        let ramp = Ramp::load(store.clone()).await.unwrap();
        assert_eq!(ramp.bp(), 2500);
        let again: Vec<&String> = urls
            .iter()
            .filter(|u| engine_primary(u, ramp.bp()))
            .collect();
        assert_eq!(engine_set, again);

        // Rollback: the next read sees 0, and the audit log has both changes.
        ramp.set(0, "rollback", "test").await.unwrap();
        assert_eq!(ramp.bp(), 0);
        let view = ramp.view().await.unwrap();
        assert_eq!(view.bp, 0);
        assert_eq!(view.reason, "rollback");
        assert_eq!(
            view.history
                .iter()
                .map(|h| (h.from_bp, h.to_bp))
                .collect::<Vec<_>>(),
            [(2500, 0), (0, 2500)]
        );
    }
}
