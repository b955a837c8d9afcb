//! Byte-exact conformance of a profile against a live oracle: the legacy Go
//! sender's `legacy-sender oracle` subcommand, which prints, for one JSON line
//! `{"secret","id","timestamp","payload","delivery_id"?}`, the exact body and
//! headers the Go sender would put on the wire.
//!
//! [`run`] drives proptest's `TestRunner` with a seeded RNG over generated
//! cases whose payload is JSON *text* written token by token (duplicate and
//! unsorted keys, whitespace, every escape form, lone surrogates, astral
//! characters, numbers across the float64 range, deep nesting, top-level
//! scalars, and a few invalid documents). Each case is rendered by the engine
//! ([`Profile::render`]) and asked of the oracle; body bytes and the header
//! list must be identical, or both sides must refuse the payload. A failure is
//! shrunk to a minimal case and reported with a byte diff ([`Failure`]).
//!
//! One oracle subprocess serves a whole run ([`Oracle`]).

use std::cell::RefCell;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestError, TestRunner};

use crate::profile::{self, Message, Profile};

/// What [`run`] checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceOptions {
    /// Shell command that starts the oracle (`sh -c`), e.g. `./legacy-sender oracle`.
    pub oracle: String,
    /// The profile under test; only `legacy` has an oracle.
    pub profile: String,
    /// Passing cases required.
    pub cases: u32,
    /// RNG seed; `None` picks a random one (reported in the result either way).
    pub seed: Option<u64>,
    /// Upper limit on shrinking steps once a failure is found.
    pub max_shrink_iters: u32,
}

impl ConformanceOptions {
    /// Options for the `legacy` profile with a random seed.
    pub fn new(oracle: impl Into<String>, cases: u32) -> Self {
        ConformanceOptions {
            oracle: oracle.into(),
            profile: "legacy".into(),
            cases,
            seed: None,
            max_shrink_iters: 2048,
        }
    }
}

/// A run in which every case agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceReport {
    /// The profile checked.
    pub profile: String,
    /// Cases that agreed (all of them).
    pub cases: u32,
    /// Of those, cases where both sides refused the payload.
    pub refused_by_both: u32,
    /// The seed that reproduces this run.
    pub seed: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance ({}): {} cases agree byte for byte ({} refused by both sides), seed {}, {:.1}s",
            self.profile,
            self.cases,
            self.refused_by_both,
            self.seed,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why a conformance run did not pass.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The profile has no oracle to compare with.
    #[error("profile {0:?} has no conformance oracle (only \"legacy\" does)")]
    UnsupportedProfile(String),
    /// The profile name is unknown.
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    /// The oracle could not be started, died, hung or answered nonsense.
    #[error(transparent)]
    Oracle(#[from] OracleError),
    /// The engine and the oracle disagree; holds the shrunk case and the diff.
    #[error("{0}")]
    Mismatch(Box<Failure>),
    /// proptest gave up (for example too many rejected cases).
    #[error("conformance run aborted: {0}")]
    Aborted(String),
}

/// A problem with the oracle subprocess; names the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("oracle `{command}`: {message}")]
pub struct OracleError {
    /// The command as given.
    pub command: String,
    /// What went wrong.
    pub message: String,
}

/// One generated input, in the oracle's input format.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Case {
    /// The endpoint secret (the HMAC key bytes).
    pub secret: String,
    /// The event id (`X-Event-Id`).
    pub id: String,
    /// Unix seconds (`X-Timestamp`).
    pub timestamp: i64,
    /// The payload JSON text as stored.
    pub payload: String,
    /// The delivery id (`X-Delivery-Id`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
}

impl Case {
    /// The oracle input line (no newline).
    pub fn input_line(&self) -> String {
        serde_json::to_string(self).expect("a Case always serializes")
    }
}

/// What a sender does with one case: sends exact bytes, or refuses.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request would be sent with this body and these headers (in order).
    Sent {
        /// Exact body bytes.
        body: Vec<u8>,
        /// Header names and values in the order listed.
        headers: Vec<(String, String)>,
    },
    /// The payload cannot be sent; the message says why.
    Refused(String),
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Sent { body, headers } => f
                .debug_struct("Sent")
                .field("body", &String::from_utf8_lossy(body))
                .field("headers", headers)
                .finish(),
            Outcome::Refused(e) => f.debug_tuple("Refused").field(e).finish(),
        }
    }
}

/// The engine's outcome for `case` under `profile` (the event type is empty: the legacy sends none).
pub fn engine_outcome(profile: &Profile, case: &Case) -> Outcome {
    let msg = Message {
        event_id: &case.id,
        delivery_id: case.delivery_id.as_deref(),
        event_type: "",
        timestamp: case.timestamp,
        payload: case.payload.as_bytes(),
    };
    match profile.render(&[case.secret.as_str()], &msg) {
        Ok(r) => Outcome::Sent {
            body: r.body,
            headers: r.headers,
        },
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

/// Parses one oracle output line: `{"body": base64, "headers": [[n, v], ...]}` or `{"error": "..."}`.
pub fn parse_oracle_output(line: &str) -> Result<Outcome, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {}", clip(line)))?;
    if let Some(err) = v.get("error") {
        let err = err.as_str().ok_or("\"error\" is not a string")?;
        return Ok(Outcome::Refused(err.to_owned()));
    }
    // Go's omitempty drops an empty body.
    let body = match v.get("body") {
        None => Vec::new(),
        Some(b) => {
            let b = b.as_str().ok_or("\"body\" is not a string")?;
            BASE64
                .decode(b)
                .map_err(|e| format!("\"body\" is not base64: {e}"))?
        }
    };
    let headers = match v.get("headers") {
        None => Vec::new(),
        Some(h) => h
            .as_array()
            .ok_or("\"headers\" is not an array")?
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([serde_json::Value::String(n), serde_json::Value::String(v)]) => {
                    Ok((n.clone(), v.clone()))
                }
                _ => Err(format!("a header is not a [name, value] pair: {pair}")),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Outcome::Sent { body, headers })
}

/// How the engine and the oracle differ on one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The engine's outcome.
    pub engine: Outcome,
    /// The oracle's outcome.
    pub oracle: Outcome,
}

/// `Ok` when both sides send identical bytes and headers, or both refuse.
pub fn compare(engine: &Outcome, oracle: &Outcome) -> Result<(), Mismatch> {
    let same = match (engine, oracle) {
        (Outcome::Refused(_), Outcome::Refused(_)) => true,
        (a @ Outcome::Sent { .. }, b @ Outcome::Sent { .. }) => a == b,
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(Mismatch {
            engine: engine.clone(),
            oracle: oracle.clone(),
        })
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.engine, &self.oracle) {
            (Outcome::Refused(e), Outcome::Sent { body, .. }) => {
                writeln!(f, "the engine refused the payload but the oracle sends it")?;
                writeln!(f, "  engine error: {e}")?;
                writeln!(f, "  oracle body:  {}", escape(body))
            }
            (Outcome::Sent { body, .. }, Outcome::Refused(e)) => {
                writeln!(f, "the oracle refused the payload but the engine sends it")?;
                writeln!(f, "  oracle error: {e}")?;
                writeln!(f, "  engine body:  {}", escape(body))
            }
            (
                Outcome::Sent {
                    body: eb,
                    headers: eh,
                },
                Outcome::Sent {
                    body: ob,
                    headers: oh,
                },
            ) => {
                if eb == ob {
                    writeln!(f, "body: identical ({} bytes)", eb.len())?;
                } else {
                    write_body_diff(f, eb, ob)?;
                }
                if eh == oh {
                    writeln!(f, "headers: identical")
                } else {
                    write_header_diff(f, eh, oh)
                }
            }
            (Outcome::Refused(_), Outcome::Refused(_)) => writeln!(f, "both refused (agreement)"),
        }
    }
}

/// Bytes as escaped ASCII text.
fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn write_body_diff(f: &mut fmt::Formatter<'_>, engine: &[u8], oracle: &[u8]) -> fmt::Result {
    let at = engine
        .iter()
        .zip(oracle)
        .position(|(a, b)| a != b)
        .unwrap_or(engine.len().min(oracle.len()));
    writeln!(
        f,
        "body: first difference at byte {at} (engine {} bytes, oracle {} bytes)",
        engine.len(),
        oracle.len()
    )?;
    const TEXT: usize = 32;
    const HEX: usize = 12;
    for (side, bytes) in [("engine", engine), ("oracle", oracle)] {
        let start = at.saturating_sub(TEXT);
        let end = (at + TEXT).min(bytes.len());
        let before = escape(&bytes[start..at.min(bytes.len())]);
        let after = escape(&bytes[at.min(bytes.len())..end]);
        let lead = if start > 0 { "…" } else { "" };
        let trail = if end < bytes.len() { "…" } else { "" };
        writeln!(f, "  {side} text  {lead}{before}{after}{trail}")?;
        writeln!(
            f,
            "  {:6}       {}^ byte {at}",
            "",
            " ".repeat(lead.chars().count() + before.chars().count())
        )?;
        let hs = at.saturating_sub(HEX);
        let he = (at + HEX).min(bytes.len());
        let hex: Vec<String> = (hs..he)
            .map(|i| {
                if i == at {
                    format!("[{:02x}]", bytes[i])
                } else {
                    format!("{:02x}", bytes[i])
                }
            })
            .collect();
        let end_note = if at >= bytes.len() { " [end]" } else { "" };
        writeln!(f, "  {side} hex   @{hs}: {}{end_note}", hex.join(" "))?;
    }
    Ok(())
}

fn write_header_diff(
    f: &mut fmt::Formatter<'_>,
    engine: &[(String, String)],
    oracle: &[(String, String)],
) -> fmt::Result {
    writeln!(f, "headers differ:")?;
    let mut names: Vec<&str> = Vec::new();
    for (n, _) in engine.iter().chain(oracle) {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let values = |list: &[(String, String)], name: &str| -> Vec<String> {
        list.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| format!("{v:?}"))
            .collect()
    };
    let mut any = false;
    for name in names {
        let (e, o) = (values(engine, name), values(oracle, name));
        if e == o {
            continue;
        }
        any = true;
        match (e.is_empty(), o.is_empty()) {
            (true, false) => writeln!(f, "  {name}: only in oracle: {}", o.join(", "))?,
            (false, true) => writeln!(f, "  {name}: only in engine: {}", e.join(", "))?,
            _ => writeln!(
                f,
                "  {name}: engine {} / oracle {}",
                e.join(", "),
                o.join(", ")
            )?,
        }
    }
    if !any {
        writeln!(f, "  same fields, different order")?;
    }
    let order = |list: &[(String, String)]| {
        list.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(f, "  engine order: {}", order(engine))?;
    writeln!(f, "  oracle order: {}", order(oracle))
}

/// A failed run: the minimal case found and how the two sides differ on it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Profile under test.
    pub profile: String,
    /// The oracle command.
    pub oracle: String,
    /// The seed that reproduces the run.
    pub seed: u64,
    /// Cases requested.
    pub cases: u32,
    /// Cases that agreed before the first failure.
    pub passed_before: u32,
    /// Cases tried while shrinking.
    pub shrink_steps: u32,
    /// The shrunk case.
    pub case: Case,
    /// The differences on it.
    pub mismatch: Mismatch,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance failure ({}): the engine and the oracle disagree after {} passing cases (seed {}; shrunk in {} steps)",
            self.profile, self.passed_before, self.seed, self.shrink_steps
        )?;
        writeln!(
            f,
            "rerun: hookshift conformance --oracle {:?} --profile {} --cases {} --seed {}",
            self.oracle, self.profile, self.cases, self.seed
        )?;
        writeln!(f, "minimal case (oracle input line):")?;
        writeln!(f, "  {}", self.case.input_line())?;
        writeln!(f, "payload bytes: {}", escape(self.case.payload.as_bytes()))?;
        write!(f, "{}", self.mismatch)
    }
}

/// A running oracle subprocess (`sh -c command`), asked one JSON line at a time.
pub struct Oracle {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<std::io::Result<String>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// How long to wait for one answer.
    pub timeout: Duration,
}

impl Oracle {
    /// Starts `sh -c command` with piped stdin and stdout; stderr is kept for error messages.
    pub fn spawn(command: &str) -> Result<Oracle, OracleError> {
        let err = |message: String| OracleError {
            command: command.to_owned(),
            message,
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot start `sh -c`: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        if tx.send(Ok(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                kept.extend_from_slice(&buf[..n]);
                let excess = kept.len().saturating_sub(8192);
                kept.drain(..excess); // keep the tail
            }
        });
        Ok(Oracle {
            command: command.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            timeout: Duration::from_secs(60),
        })
    }

    /// The command this oracle runs.
    pub fn command(&self) -> &str {
        &self.command
    }

    fn error(&self, message: String) -> OracleError {
        OracleError {
            command: self.command.clone(),
            message,
        }
    }

    /// The error for an oracle that stopped answering: its exit status and stderr tail.
    fn dead(&mut self, what: &str) -> OracleError {
        let mut status = None;
        for _ in 0..50 {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = match status {
            Some(s) => format!("exited ({s})"),
            None => "still running".to_owned(),
        };
        std::thread::sleep(Duration::from_millis(20));
        let stderr = {
            let kept = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&kept).trim().to_owned()
        };
        let stderr = if stderr.is_empty() {
            String::new()
        } else {
            format!("; its stderr ends with:\n{stderr}")
        };
        self.error(format!("{what}: the oracle {status}{stderr}"))
    }

    /// Sends one line (a newline is added) and returns the answer line without its newline.
    pub fn ask_line(&mut self, line: &str) -> Result<String, OracleError> {
        debug_assert!(!line.contains('\n'));
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.error("stdin already closed".into()));
        };
        let written = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush());
        if let Err(e) = written {
            return Err(self.dead(&format!("cannot write a request ({e})")));
        }
        match self.lines.recv_timeout(self.timeout) {
            Ok(Ok(mut answer)) => {
                while answer.ends_with('\n') || answer.ends_with('\r') {
                    answer.pop();
                }
                Ok(answer)
            }
            Ok(Err(e)) => Err(self.dead(&format!("cannot read an answer ({e})"))),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(self.dead("no answer (end of output)"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(self.error(format!("no answer within {}s", self.timeout.as_secs())))
            }
        }
    }

    /// Asks the oracle about one case.
    pub fn ask(&mut self, case: &Case) -> Result<Outcome, OracleError> {
        let answer = self.ask_line(&case.input_line())?;
        parse_oracle_output(&answer).map_err(|e| self.error(format!("bad answer: {e}")))
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the oracle exits
        for _ in 0..25 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compares the engine and the oracle on one case.
pub fn check(
    profile: &Profile,
    oracle: &mut Oracle,
    case: &Case,
) -> Result<Result<bool, Mismatch>, OracleError> {
    let theirs = oracle.ask(case)?;
    let ours = engine_outcome(profile, case);
    Ok(compare(&ours, &theirs).map(|()| matches!(theirs, Outcome::Refused(_))))
}

/// Runs `opts.cases` generated cases against the oracle; `progress(done, total)` is called after each passing case.
pub fn run(
    opts: &ConformanceOptions,
    progress: impl FnMut(usize, usize),
) -> Result<ConformanceReport, ConformanceError> {
    if opts.profile != "legacy" {
        profile::by_name(&opts.profile)?;
        return Err(ConformanceError::UnsupportedProfile(opts.profile.clone()));
    }
    let profile = profile::by_name(&opts.profile)?;
    let seed = opts.seed.unwrap_or_else(rand::random);
    let started = Instant::now();
    let oracle = Oracle::spawn(&opts.oracle)?;

    struct State<P> {
        oracle: Oracle,
        fatal: Option<OracleError>,
        passed: u32,
        refused: u32,
        failing: bool,
        shrink_steps: u32,
        progress: P,
    }
    let state = RefCell::new(State {
        oracle,
        fatal: None,
        passed: 0,
        refused: 0,
        failing: false,
        shrink_steps: 0,
        progress,
    });
    let total = opts.cases as usize;
    let mut runner = TestRunner::new(Config {
        cases: opts.cases,
        failure_persistence: None,
        max_shrink_iters: opts.max_shrink_iters,
        max_shrink_time: 0,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        verbose: 0,
        ..Config::default()
    });
    let result = runner.run(&case_strategy(), |case| {
        let mut st = state.borrow_mut();
        if st.fatal.is_some() {
            return Err(TestCaseError::fail("oracle failed"));
        }
        if st.failing {
            st.shrink_steps += 1;
        }
        let st = &mut *st;
        match check(&profile, &mut st.oracle, &case) {
            Ok(Ok(refused)) => {
                if !st.failing {
                    st.passed += 1;
                    st.refused += u32::from(refused);
                    (st.progress)((st.passed as usize).min(total), total);
                }
                Ok(())
            }
            Ok(Err(_)) => {
                st.failing = true;
                Err(TestCaseError::fail("engine and oracle disagree"))
            }
            Err(e) => {
                st.fatal = Some(e);
                Err(TestCaseError::fail("oracle failed"))
            }
        }
    });
    let mut st = state.into_inner();
    if let Some(e) = st.fatal.take() {
        return Err(e.into());
    }
    match result {
        Ok(()) => Ok(ConformanceReport {
            profile: profile.name.clone(),
            cases: st.passed,
            refused_by_both: st.refused,
            seed,
            elapsed: started.elapsed(),
        }),
        Err(TestError::Abort(reason)) => Err(ConformanceError::Aborted(reason.to_string())),
        Err(TestError::Fail(_, case)) => {
            let mismatch = match check(&profile, &mut st.oracle, &case)? {
                Err(m) => m,
                Ok(_) => {
                    return Err(ConformanceError::Aborted(format!(
                        "a failing case passed when re-checked (flaky oracle?): {}",
                        case.input_line()
                    )))
                }
            };
            Err(ConformanceError::Mismatch(Box::new(Failure {
                profile: profile.name.clone(),
                oracle: opts.oracle.clone(),
                seed,
                cases: opts.cases,
                passed_before: st.passed,
                shrink_steps: st.shrink_steps,
                case,
                mismatch,
            })))
        }
    }
}

/// `n` cases from [`case_strategy`] with a fixed seed: the same list on every machine.
pub fn sample_cases(seed: u64, n: usize) -> Vec<Case> {
    use proptest::strategy::ValueTree;
    let mut runner = TestRunner::new(Config {
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = case_strategy();
    (0..n)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("the case strategy never rejects")
                .current()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Generators. Payloads are written as JSON text, token by token.

/// A JSON document as written: leaves are literal text, containers keep every
/// key (duplicates included) in the order generated, with chosen whitespace.
#[derive(Debug, Clone)]
enum Json {
    Leaf(String),
    Array(Vec<Json>, Ws),
    Object(Vec<(String, Json)>, Ws),
}

/// Whitespace choices of a container: inside the brackets, before and after `,`/`:`.
#[derive(Debug, Clone, Copy)]
struct Ws(u8, u8, u8);

const WS: &[&str] = &["", "", "", "", " ", "\n", "\t", "\r\n", "  ", " \n\t "];

fn ws_strategy() -> impl Strategy<Value = Ws> {
    let n = WS.len() as u8;
    (0..n, 0..n, 0..n).prop_map(|(a, b, c)| Ws(a, b, c))
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Leaf(text) => out.push_str(text),
            Json::Array(items, ws) => {
                out.push('[');
                out.push_str(WS[ws.0 as usize]);
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(WS[ws.1 as usize]);
                        out.push(',');
                        out.push_str(WS[ws.2 as usize]);
                    }
                    item.write(out);
                }
                if !items.is_empty() {
                    out.push_str(WS[ws.0 as usize]);
                }
                out.push(']');
            }
            Json::Object(members, ws) => {
                out.push('{');
                out.push_str(WS[ws.0 as usize]);
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(WS[ws.1 as usize]);
                        out.push(',');
                        out.push_str(WS[ws.2 as usize]);
                    }
                    out.push_str(key);
                    out.push_str(WS[ws.1 as usize]);
                    out.push(':');
                    out.push_str(WS[ws.2 as usize]);
                    value.write(out);
                }
                if !members.is_empty() {
                    out.push_str(WS[ws.0 as usize]);
                }
                out.push('}');
            }
        }
    }
}

fn hex4(unit: u32, upper: bool) -> String {
    if upper {
        format!("\\u{unit:04X}")
    } else {
        format!("\\u{unit:04x}")
    }
}

fn plain_text() -> impl Strategy<Value = String> {
    const CHARS: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.:;!?#$%()*+=@[]^`{|}~'";
    proptest::collection::vec(proptest::sample::select(CHARS), 1..10)
        .prop_map(|bytes| String::from_utf8(bytes).expect("ASCII"))
}

/// One piece of a string literal's content, as written between the quotes.
fn string_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => plain_text(),
        3 => proptest::sample::select(vec!["<", ">", "&", "</script>", "&amp;", "<&>"])
            .prop_map(str::to_owned),
        2 => proptest::sample::select(vec!["\u{2028}", "\u{2029}", "\\u2028", "\\u2029", "\\u2029x"])
            .prop_map(str::to_owned),
        // Astral characters, raw.
        2 => (0x10000u32..=0x10FFFF)
            .prop_map(|c| char::from_u32(c).expect("astral scalar").to_string()),
        // Astral characters as surrogate-pair escapes.
        2 => (0x10000u32..=0x10FFFF, any::<bool>()).prop_map(|(c, upper)| {
            let v = c - 0x10000;
            format!("{}{}", hex4(0xD800 + (v >> 10), upper), hex4(0xDC00 + (v & 0x3FF), upper))
        }),
        // Lone or mismatched surrogate escapes.
        2 => (0xD800u32..=0xDFFF, any::<bool>()).prop_map(|(u, upper)| hex4(u, upper)),
        // Control characters, escaped (raw ones are invalid JSON).
        2 => (0u32..0x20, any::<bool>()).prop_map(|(c, upper)| hex4(c, upper)),
        2 => proptest::sample::select(vec![
            "\\b", "\\f", "\\n", "\\r", "\\t", "\\\"", "\\\\", "\\/", "/", "\x7f", "\\u007f",
            "\\u007F", "\\u0000", "\u{fffd}", "\\ufffd", "\u{feff}", "\\u00e9", "é", "\u{0301}",
        ])
        .prop_map(str::to_owned),
        // Any character, raw (those that cannot appear raw are escaped).
        2 => any::<char>().prop_map(|c| match c {
            '"' => "\\\"".to_owned(),
            '\\' => "\\\\".to_owned(),
            c if (c as u32) < 0x20 => hex4(c as u32, false),
            c => c.to_string(),
        }),
        // Any BMP scalar as a \u escape.
        1 => (0x20u32..=0xFFFF, any::<bool>())
            .prop_map(|(u, upper)| hex4(if (0xD800..0xE000).contains(&u) { u - 0x800 } else { u }, upper)),
    ]
}

fn string_literal() -> impl Strategy<Value = String> {
    proptest::collection::vec(string_piece(), 0..6)
        .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

/// Object keys: mostly from a small pool (duplicates, keys equal after
/// unescaping, sort order by bytes), sometimes any string.
fn key_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "\"a\"", "\"b\"", "\"\\u0061\"", "\"A\"", "\"B\"", "\"\"", "\"é\"", "\"\\u00e9\"",
            "\"<\"", "\"\\u003c\"", "\"a b\"", "\"\\ud800\"", "\"\u{fffd}\"", "\"😀\"",
            "\"\\ud83d\\ude00\"", "\"z\"", "\"aa\"", "\"a\\u0000\"", "\"~\"", "\"\\/\"", "\"/\"",
        ])
        .prop_map(str::to_owned),
        1 => string_literal(),
    ]
}

/// Number literals that matter to Go's float64 round trip and formatting.
const SPECIAL_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "0.0",
    "0e10",
    "-0e-5",
    "1.0",
    "1E2",
    "1e+2",
    "1e2",
    "1E-2",
    "1e21",
    "1e20",
    "-1e21",
    "999999999999999999999",
    "100000000000000000000",
    "1e-7",
    "1e-6",
    "0.000001",
    "0.0000001",
    "0.0000009999",
    "123e-20",
    "5e-324",
    "4.9e-324",
    "2e-324",
    "1e-320",
    "2.2250738585072014e-308",
    "2.225073858507201e-308",
    "1.7976931348623157e308",
    "1.7976931348623158e308",
    "1e308",
    "-1e308",
    "9007199254740993",
    "9007199254740992",
    "-9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "0.1",
    "0.2",
    "0.30000000000000004",
    "-807706284521453.25",
    "196802432579465.625",
    "1413492867658439.25",
    "1413492867658439.75",
    "778788875523876.299544011",
    "1e-400",
    "-1e-400",
    "123456789.123",
    "1.5e-10",
    "-1.5e-7",
    "1e+21",
    "1e22",
    "1e23",
    "5e-7",
    "0.5",
    "2.5",
    "1e400",
    "-1e309",
];

fn digits(min: usize, max: usize) -> impl Strategy<Value = String> {
    (
        1u8..=9,
        proptest::collection::vec(0u8..=9, min.saturating_sub(1)..max),
    )
        .prop_map(|(first, rest)| {
            std::iter::once(first)
                .chain(rest)
                .map(|d| char::from(b'0' + d))
                .collect()
        })
}

fn number_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (-1000i64..1000).prop_map(|n| n.to_string()),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        // Around 2^53, where integers stop being exact.
        2 => (0u64..4096, any::<bool>(), any::<bool>()).prop_map(|(k, above, neg)| {
            let n = if above { (1u64 << 53) + k } else { (1u64 << 53) - k };
            format!("{}{n}", if neg { "-" } else { "" })
        }),
        // Integers longer than any integer type.
        1 => (digits(17, 40), any::<bool>())
            .prop_map(|(d, neg)| format!("{}{d}", if neg { "-" } else { "" })),
        // Any finite float64, written by Rust in several forms.
        3 => (any::<f64>(), 0u8..4).prop_map(|(x, form)| {
            let x = if x.is_finite() { x } else { 0.5 };
            match form {
                0 => format!("{x}"),
                1 => format!("{x:e}"),
                2 => format!("{x:E}"),
                _ => format!("{x:?}"),
            }
        }),
        // Mantissa and exponent across the whole range (and a little past it).
        4 => (
            any::<bool>(),
            digits(1, 18),
            proptest::option::of(proptest::collection::vec(0u8..=9, 1..12)),
            proptest::option::weighted(0.8, (-345i32..=315, 0u8..4)),
        )
            .prop_map(|(neg, int, frac, exp)| {
                let mut s = String::new();
                if neg {
                    s.push('-');
                }
                s.push_str(&int);
                if let Some(frac) = frac {
                    s.push('.');
                    s.extend(frac.into_iter().map(|d| char::from(b'0' + d)));
                }
                if let Some((e, form)) = exp {
                    s.push(if form % 2 == 0 { 'e' } else { 'E' });
                    if form >= 2 && e >= 0 {
                        s.push('+');
                    }
                    s.push_str(&e.to_string());
                }
                s
            }),
        // Values exactly halfway between two shortest representations.
        2 => (
            (1u64 << 47)..(1u64 << 53),
            proptest::sample::select(vec![".25", ".75", ".125", ".375", ".625", ".875", ".5", ".0625"]),
            any::<bool>(),
        )
            .prop_map(|(n, frac, neg)| format!("{}{n}{frac}", if neg { "-" } else { "" })),
        3 => proptest::sample::select(SPECIAL_NUMBERS).prop_map(str::to_owned),
    ]
}

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        1 => proptest::sample::select(vec!["null", "true", "false"]).prop_map(str::to_owned),
        3 => number_literal(),
        3 => string_literal(),
    ]
    .prop_map(Json::Leaf)
}

fn tree() -> impl Strategy<Value = Json> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            (
                proptest::collection::vec(inner.clone(), 0..6),
                ws_strategy()
            )
                .prop_map(|(items, ws)| Json::Array(items, ws)),
            (
                proptest::collection::vec((key_literal(), inner), 0..6),
                ws_strategy()
            )
                .prop_map(|(members, ws)| Json::Object(members, ws)),
        ]
    })
}

/// A chain of up to 20 nested single-member containers around a small tree.
fn deep() -> impl Strategy<Value = Json> {
    (
        proptest::collection::vec((any::<bool>(), key_literal(), ws_strategy()), 1..=20),
        tree(),
    )
        .prop_map(|(wrappers, inner)| {
            wrappers.into_iter().fold(inner, |acc, (array, key, ws)| {
                if array {
                    Json::Array(vec![acc], ws)
                } else {
                    Json::Object(vec![(key, acc)], ws)
                }
            })
        })
}

/// Payload JSON text. About 3% are deliberately broken documents (both sides must refuse them).
pub fn payload_strategy() -> impl Strategy<Value = String> {
    let doc = (
        prop_oneof![2 => leaf(), 8 => tree(), 2 => deep()],
        0..WS.len(),
        0..WS.len(),
    )
        .prop_map(|(json, lead, trail)| {
            let mut s = String::from(WS[lead]);
            json.write(&mut s);
            s.push_str(WS[trail]);
            s
        });
    prop_oneof![
        60 => doc.clone(),
        1 => (doc.clone(), 0usize..1000).prop_map(|(s, at)| {
            // Truncated somewhere (at a character boundary).
            let cut = s.char_indices().map(|(i, _)| i).nth(at % s.chars().count().max(1)).unwrap_or(0);
            s[..cut].to_owned()
        }),
        1 => (doc, proptest::sample::select(vec![" x", ",", "]", "}", " 1", "\u{0}", "\"", "\u{feff}"]))
            .prop_map(|(s, tail)| format!("{s}{tail}")),
    ]
}

fn ascii_string(chars: &'static [u8], min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(chars), min..=max)
        .prop_map(|bytes| String::from_utf8(bytes).expect("ASCII"))
}

const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";

/// Printable ASCII, space to tilde.
fn printable() -> &'static [u8] {
    static CHARS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CHARS.get_or_init(|| (0x20u8..0x7f).collect())
}

/// Whole cases: secret (printable ASCII, 8–64), event id and optional delivery id
/// (`[A-Za-z0-9_]{1,40}`), timestamp in 0..=4e9, payload text.
pub fn case_strategy() -> impl Strategy<Value = Case> {
    (
        ascii_string(printable(), 8, 64),
        ascii_string(ID_CHARS, 1, 40),
        proptest::option::of(ascii_string(ID_CHARS, 1, 40)),
        0i64..=4_000_000_000,
        payload_strategy(),
    )
        .prop_map(|(secret, id, delivery_id, timestamp, payload)| Case {
            secret,
            id,
            timestamp,
            payload,
            delivery_id,
        })
}

/// Hand-picked cases for the golden vectors: every quirk in the fixture's
/// README, inputs Go refuses, header-value edge cases.
pub fn edge_cases() -> Vec<Case> {
    let base = |payload: &str| Case {
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        id: "evt_1".into(),
        timestamp: 1_700_000_000,
        payload: payload.into(),
        delivery_id: Some("dlv_1".into()),
    };
    let payloads: &[&str] = &[
        r#"{"a":1}"#,
        r#"{"b":{"z":1,"y":[{"d":1,"c":2}]},"a":null,"B":true,"é":1,"z":2}"#,
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"\u0061":2}"#,
        r#"{"a":{"x":1},"a":[1]}"#,
        r#"{"h":"<a href=\"x\">&amp;</a>"}"#,
        "{\"s\":\"a\u{2028}b\u{2029}c\"}",
        r#"{"s":"\u2028\u2029"}"#,
        r#"{"c":"\u0000\u0001\b\f\n\r\t\u001f\u007f"}"#,
        "{\"c\":\"\x7f\"}",
        r#"{"c":"\u0008\u000C\u000a\u000D\u0009"}"#,
        r#"{"s":"\"\\\/"}"#,
        "{\"e\":\"😀 é ü ☃\"}",
        r#"{"e":"\ud83d\ude00"}"#,
        r#"{"e":"\uD83D\uDE00"}"#,
        r#"{"s":"\ud800"}"#,
        r#"{"s":"x\udc00y"}"#,
        r#"{"s":"\ud800\u0041"}"#,
        r#"{"s":"\ud800\ud800\udc00"}"#,
        r#"{"s":"\ude00\ud83d"}"#,
        r#"{"s":"\ud83d\n"}"#,
        "{\"k\u{fffd}\":\"\u{fffd}\"}",
        r#"{"\ud800":1,"\ufffd":2}"#,
        "[9007199254740993,9007199254740992,-9007199254740993]",
        "[1.0,1E2,1e+2,-1.5,0.1,0.30000000000000004]",
        "[1e21,1e20,999999999999999999999,1e-7,0.0000001,0.000001,0.0000009999]",
        "[1.5e-10,-1.5e-7,-0,-0.0,0,0e10,5e-324,1e-400,-1e-400]",
        "[1.7976931348623157e308,-1.2345e100,123e-20,123456789.123]",
        "[-807706284521453.25,778788875523876.299544011,196802432579465.625]",
        "[1413492867658439.25,1413492867658439.75]",
        "[1e-320,2.2250738585072014e-308,1e308,18446744073709551616]",
        "{}",
        "[]",
        " { \"a\" : [ 1 , 2 ] , \"b\" : { } } \r\n\t",
        "[[[[[]]]]]",
        "true",
        "false",
        "null",
        "\"\"",
        " 42 ",
        "\"<script>\"",
        "-0",
        "1e-7",
        // Refused by Go: out of range, syntax errors.
        "1e400",
        "-1e400",
        "[1,2e999]",
        "[1e400,]",
        "{} x",
        "1 2",
        "[1,]",
        "{\"a\":1,}",
        "{a:1}",
        "01",
        "-",
        "1.",
        ".5",
        "+1",
        "NaN",
        "Infinity",
        "",
        "   ",
        "\"abc",
        "\"a\u{1}b\"",
        "\"a\nb\"",
        "\"\\x\"",
        "\"\\u12\"",
        "'a'",
        "\u{feff}{}",
        "{\"a\":1}\n",
    ];
    let mut cases: Vec<Case> = payloads.iter().map(|p| base(p)).collect();
    // Nesting at and past Go's limit of 10000.
    cases.push(base(&format!(
        "{}{}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    )));
    cases.push(base(&format!(
        "{}{}",
        "[".repeat(10_001),
        "]".repeat(10_001)
    )));
    cases.push(base(&format!(
        "{}1{}",
        "{\"a\":".repeat(20),
        "}".repeat(20)
    )));
    // Header values and ids.
    let header_cases: &[(&str, &str, i64, Option<&str>)] = &[
        ("k", "e", 1, Some("d")),
        ("k", "evt_1", 0, None),
        ("k", "evt_1", 1_700_000_000, Some("")),
        ("", "evt_1", 1_700_000_000, None),
        ("sécret ☃", "evt_1", 1_700_000_000, None),
        ("whsec_abc", "evt_1", -1, Some("dlv_1")),
        ("whsec_abc", "evt_1", 9_999_999_999, Some("dlv_1")),
        ("whsec_abc", "evt_1", i64::MAX, Some("dlv_1")),
        ("whsec_abc", "evt_1", i64::MIN, Some("dlv_1")),
        ("k", "", 1_700_000_000, Some("dlv_1")),
        ("k", " evt 1 ", 1_700_000_000, Some("\tdlv\t")),
        ("k", "evt\r\n1", 1_700_000_000, Some("dlv\n1")),
        ("k", "évt_<1>&", 1_700_000_000, Some("dlv_é")),
        ("k", "evt:1: x", 1_700_000_000, Some("a: b")),
    ];
    for (secret, id, timestamp, delivery_id) in header_cases {
        cases.push(Case {
            secret: (*secret).into(),
            id: (*id).into(),
            timestamp: *timestamp,
            payload: r#"{"b":2,"a":"<"}"#.into(),
            delivery_id: delivery_id.map(str::to_owned),
        });
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_payloads_cover_the_quirks() {
        let cases = sample_cases(42, 3000);
        let mut valid = 0;
        let mut refused = 0;
        let mut max_depth = 0;
        let has = |needle: &str| cases.iter().filter(|c| c.payload.contains(needle)).count();
        for c in &cases {
            match crate::gojson::reencode(c.payload.as_bytes()) {
                Ok(_) => valid += 1,
                Err(_) => refused += 1,
            }
            let mut depth = 0i32;
            for b in c.payload.bytes() {
                match b {
                    b'[' | b'{' => {
                        depth += 1;
                        max_depth = max_depth.max(depth);
                    }
                    b']' | b'}' => depth -= 1,
                    _ => {}
                }
            }
            assert!((8..=64).contains(&c.secret.len()));
            assert!((1..=40).contains(&c.id.len()));
            assert!((0..=4_000_000_000).contains(&c.timestamp));
        }
        assert!(valid > 2700, "valid {valid}");
        assert!(refused > 20, "refused {refused}");
        assert!(max_depth >= 18, "max depth {max_depth}");
        for needle in [
            "<", "&", "\u{2028}", "\\u2028", "\\ud8", "\\ude", "\\u000", "\\/", "E+", "e-3", "-0",
            "\n", "\t",
        ] {
            assert!(
                has(needle) > 5,
                "{needle:?} appears in {} payloads",
                has(needle)
            );
        }
        assert!(cases
            .iter()
            .any(|c| c.payload.chars().any(|ch| ch as u32 >= 0x10000)));
        assert!(cases.iter().any(|c| c.delivery_id.is_none()));
        // Deterministic for a seed.
        assert_eq!(sample_cases(42, 20), cases[..20].to_vec());
    }

    #[test]
    fn oracle_output_parsing() {
        let out = parse_oracle_output(
            r#"{"body":"eyJhIjoxfQ==","headers":[["Content-Type","application/json"],["X-Event-Id","e"]]}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            Outcome::Sent {
                body: br#"{"a":1}"#.to_vec(),
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("X-Event-Id".into(), "e".into())
                ]
            }
        );
        assert_eq!(
            parse_oracle_output(r#"{"error":"decode payload: x"}"#).unwrap(),
            Outcome::Refused("decode payload: x".into())
        );
        assert!(parse_oracle_output("nope").is_err());
        assert!(parse_oracle_output(r#"{"body":"!!"}"#).is_err());
        assert!(parse_oracle_output(r#"{"body":"","headers":[["a"]]}"#).is_err());
    }

    #[test]
    fn diff_shows_offset_window_and_headers() {
        let engine = Outcome::Sent {
            body: br#"{"a":"<","b":1}"#.to_vec(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Signature".into(), "aa".into()),
            ],
        };
        let oracle = Outcome::Sent {
            body: br#"{"a":"\u003c","b":1}"#.to_vec(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Delivery-Id".into(), "d".into()),
                ("X-Signature".into(), "bb".into()),
            ],
        };
        let m = compare(&engine, &oracle).unwrap_err();
        let text = m.to_string();
        assert!(
            text.contains("first difference at byte 6 (engine 15 bytes, oracle 20 bytes)"),
            "{text}"
        );
        assert!(text.contains("[3c]") && text.contains("[5c]"), "{text}");
        assert!(
            text.contains("X-Delivery-Id: only in oracle: \"d\""),
            "{text}"
        );
        assert!(
            text.contains("X-Signature: engine \"aa\" / oracle \"bb\""),
            "{text}"
        );
        assert!(compare(&Outcome::Refused("a".into()), &Outcome::Refused("b".into())).is_ok());
        let text = compare(&Outcome::Refused("engine says no".into()), &oracle)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("the engine refused the payload but the oracle sends it"),
            "{text}"
        );
    }

    #[test]
    fn a_dead_or_missing_oracle_is_a_clear_error() {
        let mut o = Oracle::spawn("echo broken >&2; exit 3").unwrap();
        let err = o.ask(&edge_cases()[0]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("oracle `echo broken >&2; exit 3`: "),
            "{text}"
        );
        assert!(text.contains("exited") && text.contains("broken"), "{text}");

        let mut o = Oracle::spawn("echo not-json; cat >/dev/null").unwrap();
        let err = o.ask(&edge_cases()[0]).unwrap_err();
        assert!(err.to_string().contains("bad answer"), "{err}");

        let opts = ConformanceOptions {
            seed: Some(1),
            ..ConformanceOptions::new("/nonexistent/legacy-sender oracle", 10)
        };
        let err = run(&opts, |_, _| {}).unwrap_err();
        assert!(matches!(err, ConformanceError::Oracle(_)), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/legacy-sender"),
            "{err}"
        );
    }

    #[test]
    fn only_legacy_has_an_oracle() {
        let opts = ConformanceOptions {
            profile: "github".into(),
            ..ConformanceOptions::new("true", 1)
        };
        assert!(matches!(
            run(&opts, |_, _| {}),
            Err(ConformanceError::UnsupportedProfile(_))
        ));
        let opts = ConformanceOptions {
            profile: "nope".into(),
            ..ConformanceOptions::new("true", 1)
        };
        assert!(matches!(
            run(&opts, |_, _| {}),
            Err(ConformanceError::Profile(_))
        ));
    }

    /// A fake oracle (a shell loop) answers every line with the same body and
    /// too few headers: the run must fail, shrink the case and print a diff.
    #[test]
    fn a_mismatch_is_shrunk_and_diffed() {
        let opts = ConformanceOptions {
            seed: Some(7),
            ..ConformanceOptions::new(
                r#"while read -r line; do echo '{"body":"bnVsbA==","headers":[["Content-Type","application/json"]]}'; done"#,
                50,
            )
        };
        let err = run(&opts, |_, _| {}).unwrap_err();
        let ConformanceError::Mismatch(failure) = err else {
            panic!("expected a mismatch, got {err}");
        };
        let text = failure.to_string();
        assert!(text.contains("minimal case (oracle input line):"), "{text}");
        assert!(text.contains("--seed 7"), "{text}");
        assert!(text.contains("headers differ:"), "{text}");
        assert!(
            failure.case.payload.len() <= 4,
            "not shrunk: {:?}",
            failure.case.payload
        );
    }
}
