//! Store tests, run against SQLite always and PostgreSQL when configured
//! (see `engine::testing`).

use engine::state::DeliveryState;
use engine::store::{DeliveryFilter, EndpointSpec, IngestOutcome, NewEvent, ReplayResult, Store};
use engine::testing::TestDb;
use std::collections::{HashMap, HashSet};

fn spec(url: &str, types: &[&str]) -> EndpointSpec {
    EndpointSpec {
        url: url.into(),
        event_types: types.iter().map(|s| s.to_string()).collect(),
        ..EndpointSpec::default()
    }
}

fn event(id: &str, ty: &str) -> NewEvent {
    NewEvent {
        id: id.into(),
        event_type: ty.into(),
        tenant: None,
        payload_raw: br#"{"n": 1}"#.to_vec(),
        payload_parsed: r#"{"n":1}"#.into(),
        request_hash: format!("hash-{id}"),
        idempotency_key: None,
    }
}

/// The record of worker w1's attempt at claim `c`: a 200 if `outcome` is
/// delivered, a 500 otherwise; retried at 9,000 when `to` says so.
fn attempt_record(
    c: &engine::store::Claimed,
    outcome: engine::state::OutcomeClass,
    to: DeliveryState,
) -> engine::store::AttemptRecord {
    engine::store::AttemptRecord {
        delivery_id: c.id.clone(),
        endpoint_id: c.endpoint_id.clone(),
        owner: "w1".into(),
        attempt: c.attempt,
        to,
        next_attempt_at: (to == DeliveryState::RetryScheduled).then_some(9_000),
        outcome,
        request_headers: "[]".into(),
        body_sha256: String::new(),
        response_status: Some(if outcome == engine::state::OutcomeClass::Delivered {
            200
        } else {
            500
        }),
        response_headers: None,
        response_body: None,
        response_truncated: false,
        duration_ms: 3,
        error: None,
        started_at: 1_000,
        finished_at: 1_003,
        disable_endpoint: None,
    }
}

async fn endpoints(store: &Store, n: usize) {
    for i in 0..n {
        store
            .upsert_endpoint(
                &format!("ep{i}"),
                &spec("https://example.com/h", &[]),
                Some("whsec_x"),
                1,
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn transition_table_matches_database() {
    for db in TestDb::all().await {
        endpoints(&db.store, 1).await;
        let out = db.store.ingest(&[event("e1", "t")], 10).await.unwrap();
        let IngestOutcome::Inserted(d) = &out[0] else {
            panic!("not inserted")
        };
        let delivery = &d[0].id;
        let froms: Vec<Option<DeliveryState>> = std::iter::once(None)
            .chain(DeliveryState::ALL.map(Some))
            .collect();
        for from in &froms {
            for to in DeliveryState::ALL {
                let allowed = DeliveryState::can_transition(*from, to);
                let res = db
                    .store
                    .raw_insert_transition(delivery, from.map(|s| s.as_str()), to.as_str(), None)
                    .await;
                assert_eq!(
                    res.is_ok(),
                    allowed,
                    "[{}] {:?} -> {to}: rust says {allowed}, database says {:?}",
                    db.label,
                    from,
                    res.err()
                );
            }
        }
        // Unknown states are refused too.
        assert!(db
            .store
            .raw_insert_transition(delivery, Some("pending"), "running", None)
            .await
            .is_err());
    }
}

#[tokio::test]
async fn ingest_fans_out_to_matching_endpoints_only() {
    for db in TestDb::all().await {
        let s = &db.store;
        s.upsert_endpoint("all", &spec("https://a.example/h", &[]), Some("whsec_a"), 1)
            .await
            .unwrap();
        s.upsert_endpoint(
            "orders",
            &spec("https://b.example/h", &["order.created"]),
            Some("whsec_b"),
            1,
        )
        .await
        .unwrap();
        s.upsert_endpoint(
            "off",
            &EndpointSpec {
                disabled: true,
                ..spec("https://c.example/h", &[])
            },
            Some("whsec_c"),
            1,
        )
        .await
        .unwrap();
        let out = s
            .ingest(
                &[event("e1", "order.created"), event("e2", "user.deleted")],
                5,
            )
            .await
            .unwrap();
        let eps = |o: &IngestOutcome| match o {
            IngestOutcome::Inserted(d) => {
                d.iter().map(|d| d.endpoint_id.clone()).collect::<Vec<_>>()
            }
            IngestOutcome::Exists => panic!("[{}] not inserted", db.label),
        };
        assert_eq!(eps(&out[0]), vec!["all", "orders"], "[{}]", db.label);
        assert_eq!(eps(&out[1]), vec!["all"], "[{}]", db.label);
        let counts = s.count_by_state().await.unwrap();
        assert_eq!(
            counts.get(&DeliveryState::Pending),
            Some(&3),
            "[{}]",
            db.label
        );
    }
}

#[tokio::test]
async fn duplicate_ids_are_not_stored_twice() {
    for db in TestDb::all().await {
        let s = &db.store;
        endpoints(s, 2).await;
        let mut with_key = event("k1", "t");
        with_key.idempotency_key = Some("key-1".into());
        let mut same_key = event("k2", "t");
        same_key.idempotency_key = Some("key-1".into());
        // Duplicates within one batch and against what is stored.
        let out = s
            .ingest(&[event("e1", "t"), event("e1", "t"), with_key, same_key], 1)
            .await
            .unwrap();
        assert!(
            matches!(out[0], IngestOutcome::Inserted(ref d) if d.len() == 2),
            "[{}]",
            db.label
        );
        assert_eq!(out[1], IngestOutcome::Exists, "[{}]", db.label);
        assert!(
            matches!(out[2], IngestOutcome::Inserted(_)),
            "[{}]",
            db.label
        );
        assert_eq!(out[3], IngestOutcome::Exists, "[{}]", db.label);
        let again = s.ingest(&[event("e1", "t")], 2).await.unwrap();
        assert_eq!(again[0], IngestOutcome::Exists, "[{}]", db.label);
        let total: i64 = s.count_by_state().await.unwrap().values().sum();
        assert_eq!(total, 4, "[{}] two events x two endpoints", db.label);
    }
}

#[tokio::test]
async fn claims_lease_due_deliveries_and_rescue_expired_ones() {
    for db in TestDb::all().await {
        let s = &db.store;
        endpoints(s, 1).await;
        s.ingest(&[event("e1", "t"), event("e2", "t")], 1_000)
            .await
            .unwrap();
        // Not yet due.
        assert!(
            s.claim("w1", 999, 31_000, 10, &[])
                .await
                .unwrap()
                .is_empty(),
            "[{}]",
            db.label
        );
        let claimed = s.claim("w1", 1_000, 31_000, 10, &[]).await.unwrap();
        assert_eq!(claimed.len(), 2, "[{}]", db.label);
        assert!(claimed
            .iter()
            .all(|c| c.attempt == 1 && c.from == DeliveryState::Pending));
        // Leased: nobody else gets them, and the rescuer leaves them alone.
        assert!(
            s.claim("w2", 2_000, 32_000, 10, &[])
                .await
                .unwrap()
                .is_empty(),
            "[{}]",
            db.label
        );
        assert_eq!(s.rescue_expired(30_999).await.unwrap(), 0, "[{}]", db.label);
        // The lease ran out: rescued, then claimable again as attempt 2.
        assert_eq!(s.rescue_expired(31_001).await.unwrap(), 2, "[{}]", db.label);
        let again = s.claim("w2", 31_001, 61_000, 10, &[]).await.unwrap();
        assert_eq!(again.len(), 2, "[{}]", db.label);
        assert!(again
            .iter()
            .all(|c| c.attempt == 2 && c.from == DeliveryState::RetryScheduled));
        let ids: Vec<String> = again.iter().map(|c| c.id.clone()).collect();
        let hist: Vec<(Option<String>, String, String)> = s
            .transitions_for(&ids[..1])
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.from_state, t.to_state, t.reason))
            .collect();
        let expect =
            |f: Option<&str>, t: &str, r: &str| (f.map(String::from), t.to_string(), r.to_string());
        assert_eq!(
            hist,
            vec![
                expect(None, "pending", "created"),
                expect(Some("pending"), "in_flight", "claimed"),
                expect(Some("in_flight"), "retry_scheduled", "lease_expired"),
                expect(Some("retry_scheduled"), "in_flight", "claimed"),
            ],
            "[{}]",
            db.label
        );
    }
}

/// Many claimers, each with its own pool as separate engine processes would
/// have, race for the same deliveries: each delivery is leased exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_lease() {
    for db in TestDb::all().await {
        endpoints(&db.store, 4).await;
        let events: Vec<NewEvent> = (0..150).map(|i| event(&format!("e{i}"), "t")).collect();
        db.store.ingest(&events, 1).await.unwrap();
        let total = 600;
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = db.second_store().await;
            tasks.push(tokio::spawn(async move {
                let owner = format!("worker-{w}");
                let mut got = Vec::new();
                loop {
                    let batch = store.claim(&owner, 10, 1_000_000, 7, &[]).await.unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    got.extend(batch.into_iter().map(|c| c.id));
                }
                store.close().await;
                got
            }));
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in tasks {
            for id in t.await.unwrap() {
                *seen.entry(id).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), total, "[{}] every delivery claimed", db.label);
        let doubles: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            doubles.is_empty(),
            "[{}] claimed twice: {doubles:?}",
            db.label
        );
        let counts = db.store.count_by_state().await.unwrap();
        assert_eq!(
            counts.get(&DeliveryState::InFlight),
            Some(&(total as i64)),
            "[{}]",
            db.label
        );
    }
}

#[tokio::test]
async fn deleting_an_endpoint_cancels_waiting_deliveries_and_replay_revives_them() {
    for db in TestDb::all().await {
        let s = &db.store;
        endpoints(s, 1).await;
        s.ingest(&[event("e1", "t")], 1).await.unwrap();
        let d = s.event_deliveries("e1").await.unwrap().remove(0);
        assert_eq!(
            s.replay(&d.id, 2).await.unwrap(),
            ReplayResult::NotTerminal(DeliveryState::Pending)
        );
        assert!(s.delete_endpoint("ep0", 3).await.unwrap());
        assert!(
            !s.delete_endpoint("ep0", 3).await.unwrap(),
            "[{}] second delete",
            db.label
        );
        assert!(s.get_endpoint("ep0").await.unwrap().is_none());
        assert_eq!(
            s.get_delivery(&d.id).await.unwrap().unwrap().state,
            "cancelled"
        );
        // No new deliveries for a deleted endpoint.
        let out = s.ingest(&[event("e2", "t")], 4).await.unwrap();
        assert_eq!(out[0], IngestOutcome::Inserted(vec![]), "[{}]", db.label);
        assert_eq!(s.replay(&d.id, 5).await.unwrap(), ReplayResult::Replayed);
        let row = s.get_delivery(&d.id).await.unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.next_attempt_at),
            ("pending", Some(5)),
            "[{}]",
            db.label
        );
        assert_eq!(
            s.replay("dlv_nope", 6).await.unwrap(),
            ReplayResult::NotFound
        );
        let reasons: Vec<String> = s
            .transitions_for(std::slice::from_ref(&d.id))
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.reason)
            .collect();
        assert_eq!(
            reasons,
            ["created", "endpoint_gone", "replay"],
            "[{}]",
            db.label
        );
    }
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_for_the_grace_period() {
    for db in TestDb::all().await {
        let s = &db.store;
        s.upsert_endpoint(
            "ep",
            &spec("https://x.example/h", &[]),
            Some("whsec_old"),
            0,
        )
        .await
        .unwrap();
        assert!(s
            .rotate_secret("ep", "whsec_new", 1_000, 500)
            .await
            .unwrap());
        assert_eq!(
            s.signing_secrets("ep", 1_200).await.unwrap(),
            ["whsec_new", "whsec_old"]
        );
        assert_eq!(
            s.signing_secrets("ep", 1_500).await.unwrap(),
            ["whsec_new"],
            "[{}]",
            db.label
        );
        assert!(!s.rotate_secret("missing", "whsec_z", 1, 1).await.unwrap());
    }
}

#[tokio::test]
async fn listing_pages_with_a_cursor() {
    for db in TestDb::all().await {
        let s = &db.store;
        endpoints(s, 3).await;
        let events: Vec<NewEvent> = (0..5).map(|i| event(&format!("e{i}"), "t")).collect();
        s.ingest(&events, 1).await.unwrap();
        let mut cursor = None;
        let mut all = Vec::new();
        loop {
            let page = s
                .list_deliveries(&DeliveryFilter {
                    state: None,
                    endpoint_id: Some("ep1".into()),
                    cursor: cursor.clone(),
                    limit: 2,
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            cursor = page.last().map(|d| d.id.clone());
            all.extend(page);
        }
        assert_eq!(all.len(), 5, "[{}]", db.label);
        assert!(all.iter().all(|d| d.endpoint_id == "ep1"));
        let unique: HashSet<_> = all.iter().map(|d| &d.id).collect();
        assert_eq!(unique.len(), 5);
        assert!(
            all.windows(2).all(|w| w[0].id < w[1].id),
            "[{}] ordered by id",
            db.label
        );
    }
}

#[tokio::test]
async fn sqlite_data_survives_reopening() {
    let db = TestDb::sqlite().await;
    endpoints(&db.store, 1).await;
    db.store.ingest(&[event("e1", "t")], 1).await.unwrap();
    db.store.close().await;
    let reopened = Store::connect(&db.url).await.unwrap();
    assert!(reopened.get_event("e1").await.unwrap().is_some());
    assert_eq!(reopened.event_deliveries("e1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn released_and_cancelled_claims_are_recorded() {
    for db in TestDb::all().await {
        let s = &db.store;
        endpoints(s, 1).await;
        s.ingest(&[event("e1", "t"), event("e2", "t")], 1)
            .await
            .unwrap();
        let claimed = s.claim("w1", 1, 10_000, 10, &[]).await.unwrap();
        assert_eq!(claimed.len(), 2, "[{}]", db.label);
        // Another owner cannot undo w1's claims.
        assert!(
            !s.release(&claimed[0], "w2", 2).await.unwrap(),
            "[{}]",
            db.label
        );
        assert!(s.release(&claimed[0], "w1", 2).await.unwrap());
        assert!(s.cancel_claimed(&claimed[1], "w1", 3).await.unwrap());
        let released = s.get_delivery(&claimed[0].id).await.unwrap().unwrap();
        assert_eq!(
            (
                released.state.as_str(),
                released.attempt_count,
                released.next_attempt_at
            ),
            ("pending", 0, Some(2)),
            "[{}] back where it was, attempt uncounted",
            db.label
        );
        let cancelled = s.get_delivery(&claimed[1].id).await.unwrap().unwrap();
        assert_eq!(
            (cancelled.state.as_str(), cancelled.attempt_count),
            ("cancelled", 0),
            "[{}]",
            db.label
        );
        let reasons: Vec<(Option<String>, String, String)> = s
            .transitions_for(std::slice::from_ref(&claimed[1].id))
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.from_state, t.to_state, t.reason))
            .collect();
        let t = |f: &str, to: &str, r: &str| (Some(f.to_string()), to.to_string(), r.to_string());
        assert_eq!(
            reasons[1..],
            [
                t("pending", "in_flight", "claimed"),
                t("in_flight", "pending", "released"),
                t("pending", "cancelled", "endpoint_gone"),
            ],
            "[{}]",
            db.label
        );
        // The released one is claimable again as attempt 1.
        let again = s.claim("w1", 5, 10_000, 10, &[]).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].attempt, again[0].from),
            (1, DeliveryState::Pending),
            "[{}]",
            db.label
        );
    }
}

/// One record batch (the worker's group commit) with attempts of several
/// kinds: each outcome moves its delivery only under the lease and attempt
/// number it was claimed with, every exchange that happened is stored, and
/// the breaker counts the failures in order.
#[tokio::test]
async fn one_batch_records_each_attempt_under_its_own_lease() {
    use engine::breaker::{BreakerPolicy, Change};
    use engine::state::OutcomeClass;
    use engine::store::AttemptRecord;
    for db in TestDb::all().await {
        let s = &db.store;
        endpoints(s, 2).await;
        s.ingest(
            &[event("e1", "t"), event("e2", "t"), event("e3", "t")],
            1_000,
        )
        .await
        .unwrap();
        let claimed = s.claim("w1", 1_000, 31_000, 10, &[]).await.unwrap();
        assert_eq!(claimed.len(), 6, "[{}]", db.label);
        let find = |event: &str, endpoint: &str| {
            claimed
                .iter()
                .find(|c| c.event_id == event && c.endpoint_id == endpoint)
                .unwrap()
        };
        let record = |event: &str, endpoint: &str, outcome: OutcomeClass, to: DeliveryState| {
            attempt_record(find(event, endpoint), outcome, to)
        };
        use DeliveryState::{RetryScheduled, Succeeded};
        use OutcomeClass::{Delivered, ServerError};
        let ok = record("e1", "ep0", Delivered, Succeeded);
        let retry = record("e2", "ep0", ServerError, RetryScheduled);
        // Another worker's lease by now: stored, but the delivery stays.
        let mut lost = record("e3", "ep0", ServerError, RetryScheduled);
        lost.owner = "w2".into();
        // Not the attempt the delivery is at.
        let mut stale = record("e1", "ep1", Delivered, Succeeded);
        stale.attempt += 1;
        let ok2 = record("e2", "ep1", Delivered, Succeeded);
        let batch = [ok, retry, lost, stale, ok2];
        let policy = BreakerPolicy {
            failures: 2,
            ..BreakerPolicy::default()
        };
        let out = s.record_attempts(&batch, &policy).await.unwrap();
        let moved: Vec<bool> = out.iter().map(|r| r.moved).collect();
        assert_eq!(moved, [true, true, false, false, true], "[{}]", db.label);
        // ep0 failed twice in a row (the lost lease's exchange counts): open.
        let changes: Vec<Change> = out.iter().map(|r| r.breaker).collect();
        assert_eq!(
            changes,
            [
                Change::None,
                Change::None,
                Change::Opened,
                Change::None,
                Change::None
            ],
            "[{}]",
            db.label
        );
        let state = |r: &AttemptRecord| {
            let id = r.delivery_id.clone();
            async move {
                s.get_delivery(&id)
                    .await
                    .unwrap()
                    .unwrap()
                    .state
                    .parse::<DeliveryState>()
                    .unwrap()
            }
        };
        assert_eq!(state(&batch[0]).await, Succeeded, "[{}]", db.label);
        assert_eq!(state(&batch[1]).await, RetryScheduled, "[{}]", db.label);
        assert_eq!(
            state(&batch[2]).await,
            DeliveryState::InFlight,
            "[{}]",
            db.label
        );
        assert_eq!(
            state(&batch[3]).await,
            DeliveryState::InFlight,
            "[{}]",
            db.label
        );
        assert_eq!(state(&batch[4]).await, Succeeded, "[{}]", db.label);
        let ids: Vec<String> = batch.iter().map(|r| r.delivery_id.clone()).collect();
        let attempts = s.attempts_for(&ids).await.unwrap();
        assert_eq!(attempts.len(), 5, "every exchange is stored [{}]", db.label);
        let attempted: Vec<String> = s
            .transitions_for(&ids)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.reason == "attempted")
            .map(|t| t.delivery_id)
            .collect();
        let mut expect = vec![ids[0].clone(), ids[1].clone(), ids[4].clone()];
        expect.sort();
        let mut got = attempted;
        got.sort();
        assert_eq!(got, expect, "[{}]", db.label);
        let ep0 = s.get_endpoint("ep0").await.unwrap().unwrap();
        assert_eq!(ep0.breaker_state, "open", "[{}]", db.label);
        let ep1 = s.get_endpoint("ep1").await.unwrap().unwrap();
        assert_eq!(
            (ep1.breaker_state.as_str(), ep1.consecutive_failures),
            ("closed", 0),
            "[{}]",
            db.label
        );
    }
}

/// Ingest claims for a worker in the same process what that worker admits,
/// in the ingest transaction: in flight under the worker's lease, with the
/// `created` and `claimed` transitions; the rest stay pending for the claim
/// loop. Endpoints with a rate limit are never offered.
#[tokio::test]
async fn ingest_claims_what_the_worker_admits_in_the_same_transaction() {
    use engine::store::ClaimAtIngest;
    for db in TestDb::all().await {
        let s = &db.store;
        endpoints(s, 3).await;
        let mut limited = spec("https://example.com/h", &[]);
        limited.rate_limit_per_s = Some(5);
        s.upsert_endpoint("ep1", &limited, None, 1).await.unwrap();
        let mut asked: Vec<String> = Vec::new();
        let mut admit = |endpoint: &str| {
            asked.push(endpoint.to_string());
            // ep0 always; ep2 once.
            endpoint == "ep0" || asked.iter().filter(|a| *a == "ep2").count() == 1
        };
        let (outcomes, claimed) = s
            .ingest_claiming(
                &[event("e1", "t"), event("e2", "t")],
                1_000,
                Some(ClaimAtIngest {
                    owner: "w1",
                    lease_until: 61_000,
                    admit: &mut admit,
                }),
            )
            .await
            .unwrap();
        assert_eq!(
            asked,
            ["ep0", "ep2", "ep0", "ep2"],
            "[{}] ep1 is rate limited",
            db.label
        );
        assert_eq!(outcomes.len(), 2);
        let got: Vec<(&str, &str, i64, DeliveryState)> = claimed
            .iter()
            .map(|c| {
                (
                    c.event_id.as_str(),
                    c.endpoint_id.as_str(),
                    c.attempt,
                    c.from,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("e1", "ep0", 1, DeliveryState::Pending),
                ("e1", "ep2", 1, DeliveryState::Pending),
                ("e2", "ep0", 1, DeliveryState::Pending),
            ],
            "[{}]",
            db.label
        );
        let d = s.get_delivery(&claimed[1].id).await.unwrap().unwrap();
        assert_eq!(
            (
                d.state.as_str(),
                d.attempt_count,
                d.next_attempt_at,
                d.lease_expires_at
            ),
            ("in_flight", 1, None, Some(61_000)),
            "[{}]",
            db.label
        );
        let steps: Vec<(Option<String>, String, i64, String)> = s
            .transitions_for(std::slice::from_ref(&claimed[1].id))
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.from_state, t.to_state, t.attempt, t.reason))
            .collect();
        assert_eq!(
            steps,
            [
                (None, "pending".to_string(), 0, "created".to_string()),
                (
                    Some("pending".to_string()),
                    "in_flight".to_string(),
                    1,
                    "claimed".to_string()
                ),
            ],
            "[{}]",
            db.label
        );
        // The claim loop finds only the three left pending.
        let rest = s.claim("w2", 1_000, 61_000, 10, &[]).await.unwrap();
        let mut rest: Vec<(&str, &str)> = rest
            .iter()
            .map(|c| (c.event_id.as_str(), c.endpoint_id.as_str()))
            .collect();
        rest.sort();
        assert_eq!(
            rest,
            [("e1", "ep1"), ("e2", "ep1"), ("e2", "ep2")],
            "[{}]",
            db.label
        );
        // The leases taken at ingest hold until they expire.
        assert_eq!(s.rescue_expired(60_999).await.unwrap(), 0, "[{}]", db.label);
        assert_eq!(s.rescue_expired(61_001).await.unwrap(), 6, "[{}]", db.label);
    }
}

/// PostgreSQL only (SQLite has one writer and no row locks). Recording
/// failures locks the endpoints whose breakers may change, and under load
/// those locks deadlocked twice over: with ingest, whose foreign-key checks
/// take `FOR KEY SHARE` on the same endpoint rows, and with another
/// recorder that met the same failing endpoints in another order. So the
/// recorder must take `FOR NO KEY UPDATE` (which key-share locks do not
/// block), and all of them at once in id order, before any other.
#[tokio::test]
async fn recording_failures_locks_endpoints_in_id_order_and_lets_ingest_through() {
    use engine::breaker::BreakerPolicy;
    use engine::state::OutcomeClass;
    use engine::store::AttemptRecord;
    use std::time::Duration;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let s = &db.store;
    endpoints(s, 2).await;
    s.ingest(&[event("e1", "t"), event("e2", "t")], 1_000)
        .await
        .unwrap();
    let claimed = s.claim("w1", 1_000, 31_000, 10, &[]).await.unwrap();
    assert_eq!(claimed.len(), 4);
    // A server error for each delivery of `event`, ep1's first.
    let failures = |event: &str| -> Vec<AttemptRecord> {
        let mut mine: Vec<_> = claimed.iter().filter(|c| c.event_id == event).collect();
        mine.sort_by(|a, b| b.endpoint_id.cmp(&a.endpoint_id));
        mine.into_iter()
            .map(|c| attempt_record(c, OutcomeClass::ServerError, DeliveryState::RetryScheduled))
            .collect()
    };
    let policy = BreakerPolicy {
        failures: 10,
        ..BreakerPolicy::default()
    };
    let pool = schema_pool(&db).await;

    // 1. An ingest in progress holds key-share locks on both endpoints, as
    //    its foreign-key checks do: recording is not held up by them.
    let mut ingest = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM endpoints WHERE id IN ('ep0', 'ep1') FOR KEY SHARE")
        .execute(&mut *ingest)
        .await
        .unwrap();
    let recorded = tokio::time::timeout(
        Duration::from_secs(30),
        s.record_attempts(&failures("e1"), &policy),
    )
    .await
    .expect("recording waited for an ingest's foreign-key locks");
    assert!(recorded.unwrap().iter().all(|r| r.moved));
    ingest.commit().await.unwrap();

    // 2. Another recorder holds ep0. This batch names ep1 first, yet must
    //    wait for ep0 before it locks ep1.
    let store = s.clone();
    let batch = failures("e2");
    let recorded = locks_ep0_before_ep1(&pool, "the recorder", "endpoints", async move {
        store.record_attempts(&batch, &policy).await
    })
    .await
    .unwrap();
    assert!(recorded.iter().all(|r| r.moved));
    // Both failures of both endpoints were counted.
    let failures: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, consecutive_failures FROM endpoints ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(failures, [("ep0".into(), 2), ("ep1".into(), 2)]);
}

/// PostgreSQL only. A claim that takes probes for open breakers locks those
/// endpoints as the recorders do, in id order (see the test above), not in
/// the order the table is scanned.
#[tokio::test]
async fn a_claim_locks_the_endpoints_it_probes_in_id_order() {
    use engine::store::ClaimSpec;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let s = &db.store;
    // Created ep1 first, so a scan of the table meets it first.
    for id in ["ep1", "ep0"] {
        s.upsert_endpoint(id, &spec("https://example.com/h", &[]), Some("whsec_x"), 1)
            .await
            .unwrap();
    }
    s.ingest(&[event("e1", "t")], 1_000).await.unwrap();
    let pool = schema_pool(&db).await;
    sqlx::query(
        "UPDATE endpoints SET breaker_state = 'open', breaker_opened_at = 0, breaker_probe_at = 0",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = s.clone();
    let claimed = locks_ep0_before_ep1(&pool, "the claim", "UPDATE endpoints", async move {
        store
            .claim_with(&ClaimSpec {
                owner: "w1",
                now: 1_000,
                lease_until: 31_000,
                limit: 10,
                skip_endpoints: &[],
                quotas: &[],
                rate_limits_by_quota: false,
                probe_interval_ms: Some(5_000),
            })
            .await
    })
    .await
    .unwrap();
    // Each open endpoint's one delivery went out as its probe.
    let mut endpoints: Vec<&str> = claimed.iter().map(|c| c.endpoint_id.as_str()).collect();
    endpoints.sort_unstable();
    assert_eq!(endpoints, ["ep0", "ep1"]);
}

/// A pool on a PostgreSQL test database's schema, for a test's own
/// transactions beside the store's.
async fn schema_pool(db: &TestDb) -> sqlx::PgPool {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;
    let opts = PgConnectOptions::from_str(&db.url)
        .unwrap()
        .options([("search_path", db.pg_schema.as_deref().unwrap())]);
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap()
}

/// With ep0 held by another transaction, runs `op`, which locks ep0 and
/// ep1, and checks that it waits for ep0 before it locks ep1: once `op`
/// waits on a lock in a statement containing `sql`, ep1 must still be free
/// (`NOWAIT`). Then releases ep0 and returns what `op` returned.
async fn locks_ep0_before_ep1<T: Send + 'static>(
    pool: &sqlx::PgPool,
    who: &str,
    sql: &str,
    op: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM endpoints WHERE id = 'ep0' FOR NO KEY UPDATE")
        .execute(&mut *other)
        .await
        .unwrap();
    let task = tokio::spawn(op);
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query LIKE '%' || $1 || '%'";
    let mut tries = 0;
    while sqlx::query_scalar::<_, i64>(waiting)
        .bind(sql)
        .fetch_one(pool)
        .await
        .unwrap()
        == 0
    {
        tries += 1;
        assert!(tries < 3_000, "{who} never waited on a lock");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut probe = pool.begin().await.unwrap();
    let ep1_free =
        sqlx::query("SELECT id FROM endpoints WHERE id = 'ep1' FOR NO KEY UPDATE NOWAIT")
            .execute(&mut *probe)
            .await;
    assert!(
        ep1_free.is_ok(),
        "{who} locked ep1 before ep0: {ep1_free:?}"
    );
    probe.rollback().await.unwrap();
    other.commit().await.unwrap();
    task.await.unwrap()
}
