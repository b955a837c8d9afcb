//! Starting, killing and restarting the two senders as child processes.
//!
//! Each sender is a process that serves the platform API and prints one
//! line containing `listening on http://HOST:PORT` once bound (the legacy
//! fixture and `hookshift engine serve` both do). It is started on
//! 127.0.0.1:0; a restart after a fault reuses the port it got and its
//! database, as an operator's restart would. Children are killed when
//! their handle drops (`kill_on_drop`), so an error or Ctrl-C in the
//! runner never leaves a sender behind. Their stdout and stderr go to log
//! files in the run directory.

use crate::spec::{go_duration, SenderSpec, Senders, Side};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Why a sender could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("{0}")]
    Build(String),
    #[error("{side}: starting `{program}`: {source}")]
    Spawn {
        side: Side,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{side}: exited ({status}) before it was listening (see {log}){tail}")]
    Exited {
        side: Side,
        status: String,
        log: String,
        /// The log's last lines, indented, so that a CI failure shows why.
        tail: String,
    },
    #[error("{side}: printed no `listening on http://…` line within {secs}s (see {log})")]
    NoListenLine { side: Side, secs: u64, log: String },
    #[error("{side}: {message}")]
    Other { side: Side, message: String },
}

/// How to (re)start one sender.
#[derive(Debug, Clone)]
pub struct Launch {
    pub side: Side,
    pub program: PathBuf,
    /// Arguments; `{listen}` is replaced by the address to bind.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run through `sh -c` (a `command` sender).
    pub shell: bool,
    pub log: PathBuf,
}

/// A running (or killed) sender.
pub struct SenderProcess {
    pub launch: Launch,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    listen: String,
    child: Option<Child>,
    pub restarts: u32,
}

/// How long a sender may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl SenderProcess {
    /// Starts the sender on 127.0.0.1:0 and waits for its listening line.
    ///
    /// A sender that exits before listening is started once more, after a
    /// warning that carries its exit status and the end of its log: a
    /// rehearsal should not die of one failed start (CI saw engines exit at
    /// start from a race opening new SQLite files, since fixed in the
    /// stores), and a sender that cannot start fails the second time with
    /// the same evidence.
    pub async fn start(launch: Launch) -> Result<SenderProcess, SenderError> {
        let (child, base) = match spawn(&launch, "127.0.0.1:0").await {
            Err(e @ SenderError::Exited { .. }) => {
                eprintln!("  warning: {e}\n  starting it once more…");
                spawn(&launch, "127.0.0.1:0").await?
            }
            other => other?,
        };
        let listen = base.trim_start_matches("http://").to_string();
        Ok(SenderProcess {
            launch,
            base,
            listen,
            child: Some(child),
            restarts: 0,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// kill -9: no shutdown, no flushing, in-flight work lost.
    pub async fn kill9(&mut self) -> Result<(), SenderError> {
        if let Some(mut c) = self.child.take() {
            // tokio's kill sends SIGKILL on Unix.
            c.kill().await.map_err(|e| SenderError::Other {
                side: self.launch.side,
                message: format!("kill -9: {e}"),
            })?;
        }
        Ok(())
    }

    /// Starts the sender again on the same address and database.
    pub async fn restart(&mut self) -> Result<(), SenderError> {
        self.kill9().await?;
        let (child, base) = spawn(&self.launch, &self.listen).await?;
        if base != self.base {
            return Err(SenderError::Other {
                side: self.launch.side,
                message: format!("restarted on {base}, not {}", self.base),
            });
        }
        self.child = Some(child);
        self.restarts += 1;
        Ok(())
    }

    /// Stops the sender (SIGKILL: the run's evidence is already read).
    pub async fn stop(&mut self) {
        let _ = self.kill9().await;
    }
}

async fn spawn(launch: &Launch, listen: &str) -> Result<(Child, String), SenderError> {
    let args: Vec<String> = launch
        .args
        .iter()
        .map(|a| a.replace("{listen}", listen))
        .collect();
    let mut cmd = if launch.shell {
        let mut c = Command::new("sh");
        // exec: the sender replaces the shell, so a kill reaches it.
        c.arg("-c").arg(format!("exec {}", args.join(" ")));
        c
    } else {
        let mut c = Command::new(&launch.program);
        c.args(&args);
        c
    };
    // The engine reads HOOKSHIFT_* variables over its config file; the
    // runner's own environment must not change what the scenario says.
    for (k, _) in std::env::vars() {
        if k.starts_with("HOOKSHIFT_") {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(launch.env.iter().map(|(k, v)| (k, v)));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(|source| SenderError::Spawn {
            side: launch.side,
            program: launch.log.display().to_string(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| SenderError::Spawn {
        side: launch.side,
        program: launch.program.display().to_string(),
        source,
    })?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_err)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| SenderError::Spawn {
        side: launch.side,
        program: launch.program.display().to_string(),
        source,
    })?;
    let stdout = child.stdout.take().ok_or_else(|| SenderError::Other {
        side: launch.side,
        message: "no stdout".into(),
    })?;
    let mut lines = BufReader::new(stdout).lines();
    let log_name = launch.log.display().to_string();
    let found = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            use std::io::Write as _;
            let _ = writeln!(&log, "{line}");
            if let Some(i) = line.find("listening on http://") {
                let url = line[i + "listening on ".len()..].trim().to_string();
                return Some(url);
            }
        }
        None
    })
    .await;
    let base = match found {
        Ok(Some(url)) => url,
        Ok(None) => {
            // Stdout closed: the process is exiting; give it a moment to
            // be reaped so that the error can say how it ended.
            let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(Ok(s)) => s.to_string(),
                Ok(Err(e)) => format!("status unknown: {e}"),
                Err(_) => "closed its stdout, still running".to_string(),
            };
            return Err(SenderError::Exited {
                side: launch.side,
                status,
                log: log_name,
                tail: log_tail(&launch.log, 20),
            });
        }
        Err(_) => {
            return Err(SenderError::NoListenLine {
                side: launch.side,
                secs: START_TIMEOUT.as_secs(),
                log: log_name,
            })
        }
    };
    // Keep draining stdout into the log so the child never blocks on a
    // full pipe.
    tokio::spawn(async move {
        use std::io::Write as _;
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = writeln!(&log, "{line}");
        }
    });
    Ok((child, base))
}

/// The last `n` lines of a sender's log, each indented, after a newline;
/// empty when the log is empty or unreadable.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("\n    {l}"))
        .collect()
}

/// Where things are: the repository (for the Go fixture), the engine
/// executable, and the directory for databases and logs.
#[derive(Debug, Clone)]
pub struct Toolbox {
    pub repo_root: PathBuf,
    /// The `hookshift` executable that has `engine serve`.
    pub hookshift: PathBuf,
}

/// The launch for one side of a scenario.
pub fn launch_for(
    side: Side,
    senders: &Senders,
    tools: &Toolbox,
    work: &Path,
) -> Result<Option<Launch>, SenderError> {
    let spec = match side {
        Side::Legacy => &senders.legacy,
        Side::Engine => &senders.engine,
    };
    let log = work.join(format!("{side}.log"));
    let schedule: Vec<String> = senders
        .retry_schedule
        .iter()
        .map(|d| go_duration(*d))
        .collect();
    let schedule = schedule.join(",");
    Ok(Some(match spec {
        SenderSpec::Url { .. } => return Ok(None),
        SenderSpec::Legacy {
            early_success,
            args,
        } => {
            let bin = legacy_binary(&tools.repo_root)?;
            let mut a = vec![
                "serve".to_string(),
                "--listen".into(),
                "{listen}".into(),
                "--database-url".into(),
                sqlite_url(&work.join("legacy.db")),
                "--retry-schedule".into(),
                schedule,
                "--timeout".into(),
                go_duration(senders.timeout),
                format!("--early-success={early_success}"),
            ];
            a.extend(args.iter().cloned());
            Launch {
                side,
                program: bin,
                args: a,
                env: Vec::new(),
                shell: false,
                log,
            }
        }
        SenderSpec::Engine {
            profile,
            lease,
            args,
        } => {
            let config = work.join("engine.toml");
            // demo: the engine's circuit breaker (merged from the worker
            // branch) is off in scenario runs; see the comment written below.
            let text = format!(
                "# Written by `hookshift scenario run`.\n\
                 default_profile = {profile:?}\n\n\
                 [worker]\n\
                 retry_schedule = {schedule:?}\n\
                 deadline = {deadline:?}\n\
                 lease = {lease:?}\n\
                 allow_cidrs = [\"127.0.0.0/8\"]\n\n\
                 # The legacy has no circuit breaker: a rehearsal compares\n\
                 # like for like (`--breaker-failures N` in args turns it on).\n\
                 [worker.breaker]\n\
                 failures = 0\n",
                deadline = go_duration(senders.timeout),
                lease = go_duration(*lease),
            );
            std::fs::write(&config, text).map_err(|e| SenderError::Other {
                side,
                message: format!("writing {}: {e}", config.display()),
            })?;
            let mut a = vec![
                "engine".to_string(),
                "serve".into(),
                "--config".into(),
                config.display().to_string(),
                "--listen".into(),
                "{listen}".into(),
                "--database-url".into(),
                sqlite_url(&work.join("engine.db")),
            ];
            a.extend(args.iter().cloned());
            Launch {
                side,
                program: tools.hookshift.clone(),
                args: a,
                env: vec![("RUST_LOG".into(), "info,sqlx=warn".into())],
                shell: false,
                log,
            }
        }
        SenderSpec::Command { command } => Launch {
            side,
            program: PathBuf::from("sh"),
            args: vec![command.replace(
                "{database_url}",
                &sqlite_url(&work.join(format!("{side}.db"))),
            )],
            env: Vec::new(),
            shell: true,
            log,
        },
    }))
}

fn sqlite_url(path: &Path) -> String {
    // An absolute path gives sqlite:///abs/path, which both senders read.
    format!("sqlite://{}", path.display())
}

/// The legacy fixture's binary, `target/legacy-sender`, built with
/// `go build` when missing or older than any of its sources.
pub fn legacy_binary(repo_root: &Path) -> Result<PathBuf, SenderError> {
    let fixture = repo_root.join("fixtures/legacy-go");
    if !fixture.join("go.mod").exists() {
        return Err(SenderError::Build(format!(
            "the legacy fixture is not at {} (is the repository root right?)",
            fixture.display()
        )));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root.join("target"));
    let bin = target.join("legacy-sender");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let newest = newest_source(&fixture);
    if let (Some(b), Some(n)) = (built, newest) {
        if b >= n {
            return Ok(bin);
        }
    }
    std::fs::create_dir_all(&target)
        .map_err(|e| SenderError::Build(format!("creating {}: {e}", target.display())))?;
    // Build beside the destination, then rename: two runs building at once
    // never see a half-written binary.
    let tmp = target.join(format!("legacy-sender.tmp{}", std::process::id()));
    let out = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg("./cmd/legacy-sender")
        .current_dir(&fixture)
        .output()
        .map_err(|e| {
            SenderError::Build(format!(
                "cannot run `go build` for the legacy fixture ({e}); install Go, or give \
                 senders.legacy a `url` or `command`"
            ))
        })?;
    if !out.status.success() {
        return Err(SenderError::Build(format!(
            "go build of fixtures/legacy-go failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::rename(&tmp, &bin)
        .map_err(|e| SenderError::Build(format!("moving the legacy binary into place: {e}")))?;
    Ok(bin)
}

fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest: Option<SystemTime> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e == "go" || e == "mod" || e == "sum")
            {
                if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `command` sender running `script` (a shell script written to `dir`).
    fn shell(dir: &Path, script: String) -> Launch {
        let path = dir.join("sender.sh");
        std::fs::write(&path, script).unwrap();
        Launch {
            side: Side::Engine,
            program: PathBuf::from("sh"),
            args: vec![format!("sh {}", path.display())],
            env: Vec::new(),
            shell: true,
            log: dir.join("engine.log"),
        }
    }

    #[tokio::test]
    async fn a_sender_that_exits_before_listening_is_started_once_more() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("tried");
        // Fails the first time (leaving a marker), listens the second.
        let command = format!(
            "if [ -e {m} ]; then echo 'listening on http://127.0.0.1:9'; sleep 30; \
             else touch {m}; echo 'first start: database is locked' >&2; exit 3; fi",
            m = marker.display()
        );
        let mut p = SenderProcess::start(shell(dir.path(), command))
            .await
            .expect("the second start listens");
        assert_eq!(p.base, "http://127.0.0.1:9");
        p.stop().await;
        let log = std::fs::read_to_string(dir.path().join("engine.log")).unwrap();
        assert!(log.contains("first start: database is locked"), "{log}");
    }

    #[tokio::test]
    async fn a_sender_that_never_listens_fails_with_its_status_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let command = "echo 'error: opening database: disk I/O error' >&2; exit 3".to_string();
        let err = match SenderProcess::start(shell(dir.path(), command)).await {
            Ok(_) => panic!("a sender that always exits cannot start"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("exited (exit status: 3)"), "{err}");
        assert!(
            err.contains("\n    error: opening database: disk I/O error"),
            "{err}"
        );
    }
}
