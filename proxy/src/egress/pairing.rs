//! Where a shadow attempt finds the primary's exchange with the same key,
//! and where attempt numbers are counted.
//!
//! Both tables are in memory and bounded by age: entries idle longer than
//! [`RETENTION`] are swept once a table grows past [`SWEEP_ABOVE`] entries.
//! A shadow attempt arriving after its primary's entry was swept is
//! answered as shadow-only, which the capture store records.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::capture::SenderName;

/// How long an entry is kept after it was last touched.
pub const RETENTION: Duration = Duration::from_secs(6 * 3600);
/// Table size above which old entries are swept.
const SWEEP_ABOVE: usize = 100_000;

/// The pairing key: (event id, endpoint URL, attempt number).
pub type Key = (Option<String>, String, u64);

/// What the primary's attempt got, in the form a shadow is answered with.
#[derive(Debug, Clone)]
pub struct Replay {
    pub status: Option<u16>,
    /// The response head as received (replayed byte for byte).
    pub raw_head: Bytes,
    /// The response body as framed on the wire.
    pub raw_body: Bytes,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// `refused`, `reset`, `timeout`, `error`, or none.
    pub fault: Option<&'static str>,
    /// Request arrival to response complete (or fault).
    pub latency: Duration,
    /// Whether the primary's connection ended after this response (the
    /// response was framed by closing, or said `Connection: close`).
    pub close_after: bool,
}

struct Slot {
    tx: watch::Sender<Option<std::sync::Arc<Replay>>>,
    touched: Instant,
    /// demo: the sender that is primary for this key, fixed by the first
    /// of the two to arrive.
    primary: Option<SenderName>,
}

/// Primary exchanges by key, and the shadows waiting for them.
#[derive(Default)]
pub struct Pairing {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl Pairing {
    fn slot(&self, key: Key) -> watch::Receiver<Option<std::sync::Arc<Replay>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() > SWEEP_ABOVE {
            slots.retain(|_, s| s.touched.elapsed() < RETENTION);
        }
        let slot = slots.entry(key).or_insert_with(|| Slot {
            tx: watch::channel(None).0,
            touched: Instant::now(),
            primary: None,
        });
        slot.touched = Instant::now();
        slot.tx.subscribe()
    }

    /// demo: the sender that is primary for `key`. The first of the two
    /// senders to arrive fixes it (`proposed`, from the ramp it read), so a
    /// ramp change between their attempts never makes both primary and the
    /// receiver never gets the same attempt twice.
    pub fn primary_for(&self, key: &Key, proposed: SenderName) -> SenderName {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
            tx: watch::channel(None).0,
            touched: Instant::now(),
            primary: None,
        });
        slot.touched = Instant::now();
        *slot.primary.get_or_insert(proposed)
    }

    /// Publishes the primary's exchange; wakes shadows already waiting.
    pub fn publish(&self, key: Key, replay: Replay) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.entry(key).or_insert_with(|| Slot {
            tx: watch::channel(None).0,
            touched: Instant::now(),
            primary: None,
        });
        slot.touched = Instant::now();
        slot.tx.send_replace(Some(std::sync::Arc::new(replay)));
    }

    /// The primary's exchange for `key`, waiting at most `wait` for it.
    /// The flag says whether it had to wait at all.
    pub async fn wait(&self, key: Key, wait: Duration) -> (Option<std::sync::Arc<Replay>>, bool) {
        let mut rx = self.slot(key);
        if let Some(r) = rx.borrow().clone() {
            return (Some(r), false);
        }
        let got = tokio::time::timeout(wait, rx.wait_for(|r| r.is_some())).await;
        match got {
            Ok(Ok(r)) => (r.clone(), true),
            _ => (None, true),
        }
    }
}

/// (sender, event id, endpoint URL): what attempts are counted by.
type AttemptKey = (SenderName, Option<String>, String);

/// Attempt numbers per (sender, event id, endpoint URL), in arrival order.
#[derive(Default)]
pub struct Attempts {
    counts: Mutex<HashMap<AttemptKey, (u64, Instant)>>,
}

impl Attempts {
    /// The number of this attempt, from 1.
    pub fn next(&self, sender: SenderName, event_id: &Option<String>, url: &str) -> u64 {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() > SWEEP_ABOVE {
            counts.retain(|_, (_, t)| t.elapsed() < RETENTION);
        }
        let e = counts
            .entry((sender, event_id.clone(), url.to_string()))
            .or_insert((0, Instant::now()));
        e.0 += 1;
        e.1 = Instant::now();
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(status: u16) -> Replay {
        Replay {
            status: Some(status),
            raw_head: Bytes::new(),
            raw_body: Bytes::new(),
            headers: vec![],
            body: Bytes::new(),
            fault: None,
            latency: Duration::ZERO,
            close_after: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shadow_waits_for_its_primary_or_times_out() {
        let p = std::sync::Arc::new(Pairing::default());
        let key: Key = (Some("evt".into()), "http://h/x".into(), 1);
        let waiter = {
            let p = p.clone();
            let key = key.clone();
            tokio::spawn(async move { p.wait(key, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        p.publish(key.clone(), replay(500));
        let (got, waited) = waiter.await.unwrap();
        assert_eq!(got.unwrap().status, Some(500));
        assert!(waited);
        // Published before: no wait.
        let (got, waited) = p.wait(key, Duration::from_secs(30)).await;
        assert_eq!(got.unwrap().status, Some(500));
        assert!(!waited);
        // Never published: times out.
        let (got, _) = p
            .wait((None, "http://h/x".into(), 2), Duration::from_secs(30))
            .await;
        assert!(got.is_none());
    }

    #[test]
    fn attempts_count_per_sender_event_and_url() {
        let a = Attempts::default();
        let e = Some("evt".to_string());
        assert_eq!(a.next(SenderName::Legacy, &e, "u"), 1);
        assert_eq!(a.next(SenderName::Legacy, &e, "u"), 2);
        assert_eq!(a.next(SenderName::Engine, &e, "u"), 1);
        assert_eq!(a.next(SenderName::Legacy, &e, "v"), 1);
        assert_eq!(a.next(SenderName::Legacy, &None, "u"), 1);
    }
}
