//! A fixed-rate (open-loop) HTTP/1.1 load generator for
//! `scripts/bench-proxy.sh`: it sends `POST` requests at a constant rate
//! over keep-alive connections and reports latency percentiles measured
//! from each request's intended send time, as wrk2 does, so a server that
//! falls behind is charged for the queue it builds (no coordinated
//! omission). wrk alone measures the latency at whatever rate it reaches,
//! which says nothing about the latency at a given rate.
//!
//! Request `i` is due at `start + i / rate` and goes to connection
//! `i % connections`. A connection that is idle when a request is due waits
//! for it and measures from the moment it sends (the timer's granularity is
//! the client's, not the server's); one that is still busy with its previous
//! request sends at once and measures from the due time.
//!
//! ```text
//! cargo run --release -p proxy --example fixed_rate -- \
//!     --url http://127.0.0.1:9090/v1/events --rate 5000 --duration 10 \
//!     --connections 64 --body '{"type":"a"}'
//! ```
//!
//! The run stops 5 s after its last request was due. A request still
//! unanswered then, or never sent because its connection was stuck, counts
//! as `late` with the time from its due moment to the stop as its latency
//! (a lower bound), so a server that stalls shows a high p99 rather than a
//! run that never ends.
//!
//! Prints one line: `rate=… sent=… ok=… non2xx=… errors=… late=… p50_ms=…
//! p90_ms=… p99_ms=… p999_ms=… max_ms=…`.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

struct Args {
    url: hyper::Uri,
    rate: f64,
    duration: Duration,
    connections: usize,
    body: Bytes,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut rate = 5000.0;
    let mut duration = Duration::from_secs(10);
    let mut connections = 64;
    let mut body = Bytes::from_static(b"{}");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value()?.parse().map_err(|e| format!("--url: {e}"))?),
            "--rate" => rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--duration" => {
                let v = value()?;
                let secs: f64 = v
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|e| format!("--duration: {e}"))?;
                duration = Duration::from_secs_f64(secs);
            }
            "--connections" => {
                connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--body" => body = Bytes::from(value()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let url: hyper::Uri = url.ok_or("--url is required")?;
    if rate <= 0.0 || connections == 0 {
        return Err("--rate and --connections must be positive".into());
    }
    Ok(Args {
        url,
        rate,
        duration,
        connections,
        body,
    })
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    non2xx: u64,
    errors: u64,
    late: u64,
}

async fn connection(
    args: std::sync::Arc<Args>,
    index: usize,
    start: tokio::time::Instant,
    total: u64,
    stop: tokio::time::Instant,
) -> Tally {
    let mut tally = Tally::default();
    let authority = args
        .url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let path = args
        .url
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut i = index as u64;
    while i < total {
        let due = start + interval * i as u32;
        let now = tokio::time::Instant::now();
        if now >= stop {
            // Never sent: late by at least the time to the stop.
            while i < total {
                let due = start + interval * i as u32;
                tally.late += 1;
                tally.latencies_us.push((stop - due).as_micros() as u64);
                i += args.connections as u64;
            }
            break;
        }
        let from = if now < due {
            tokio::time::sleep_until(due).await;
            Instant::now()
        } else {
            // Behind schedule: the wait so far is the server's doing.
            Instant::now() - (now - due)
        };
        i += args.connections as u64;
        if sender.is_none() {
            match TcpStream::connect(&authority).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    match http1::handshake(TokioIo::new(tcp)).await {
                        Ok((s, conn)) => {
                            tokio::spawn(conn);
                            sender = Some(s);
                        }
                        Err(_) => {
                            tally.errors += 1;
                            continue;
                        }
                    }
                }
                Err(_) => {
                    tally.errors += 1;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let req = hyper::Request::post(path.as_str())
            .header("host", authority.as_str())
            .header("content-type", "application/json")
            .body(Full::new(args.body.clone()))
            .expect("a valid request");
        let result = tokio::time::timeout_at(stop, async {
            s.ready().await?;
            let resp = s.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        })
        .await;
        match result {
            Err(_) => {
                tally.late += 1;
                tally.latencies_us.push(from.elapsed().as_micros() as u64);
                sender = None;
            }
            Ok(Ok(status)) => {
                tally.latencies_us.push(from.elapsed().as_micros() as u64);
                if status.is_success() {
                    tally.ok += 1;
                } else {
                    tally.non2xx += 1;
                }
            }
            Ok(Err(_)) => {
                tally.errors += 1;
                sender = None;
            }
        }
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fixed_rate: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let args = std::sync::Arc::new(args);
    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let (tally, elapsed) = rt.block_on(async {
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let stop = start + args.duration + Duration::from_secs(5);
        let tasks: Vec<_> = (0..args.connections)
            .map(|k| tokio::spawn(connection(args.clone(), k, start, total, stop)))
            .collect();
        let mut all = Tally::default();
        for t in tasks {
            let t = t.await.expect("a connection task");
            all.latencies_us.extend(t.latencies_us);
            all.ok += t.ok;
            all.non2xx += t.non2xx;
            all.errors += t.errors;
            all.late += t.late;
        }
        (all, start.elapsed())
    });
    let mut lat = tally.latencies_us;
    lat.sort_unstable();
    println!(
        "rate={:.0} sent={} ok={} non2xx={} errors={} late={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        (tally.ok + tally.non2xx) as f64 / elapsed.as_secs_f64(),
        total,
        tally.ok,
        tally.non2xx,
        tally.errors,
        tally.late,
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        lat.last().map(|m| *m as f64 / 1000.0).unwrap_or(f64::NAN),
    );
}
