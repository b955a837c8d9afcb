//! The engine's configuration: one typed struct, loaded from a TOML file,
//! overridden by `HOOKSHIFT_*` environment variables, then by command-line
//! flags, and validated once at start-up with messages that name the key.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Everything `hookshift engine serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Address the API listens on.
    pub listen: String,
    /// `sqlite://PATH` (created if missing), `sqlite::memory:` or `postgres://…`.
    pub database_url: String,
    /// Bearer tokens accepted by the API. Empty: no auth, loopback only.
    pub api_tokens: Vec<String>,
    /// Largest accepted event payload, in bytes (413 above it).
    pub payload_limit_bytes: usize,
    /// How much of a receiver's response body is kept, in bytes.
    pub response_body_cap_bytes: usize,
    /// How long a rotated-out secret keeps signing, e.g. "24h".
    pub secret_rotation_grace: String,
    /// Signing profile for endpoints that name none.
    pub default_profile: String,
    /// What this process runs: `api`, `worker` or `all`.
    pub role: String,
    /// Ingest batching (group commit).
    pub ingest: IngestConfig,
    /// The delivery worker.
    pub worker: WorkerSection,
}

/// The delivery worker's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Attempts in flight at once.
    pub max_in_flight: usize,
    /// Attempts in flight at once for one endpoint.
    pub per_endpoint: usize,
    /// Claim lease, e.g. "60s"; must exceed every deadline.
    pub lease: String,
    /// Overrides every profile's retry schedule, e.g. "1s,2s,4s".
    pub retry_schedule: Option<String>,
    /// Overrides every profile's per-attempt deadline, e.g. "15s".
    pub deadline: Option<String>,
    /// Destination ranges allowed despite the SSRF guard, e.g. "127.0.0.0/8".
    pub allow_cidrs: Vec<String>,
    /// How long a graceful shutdown waits for attempts in flight.
    pub drain_timeout: String,
    /// The endpoint circuit breaker (`[worker.breaker]`).
    pub breaker: BreakerSection,
    /// HTTP forward proxy for every delivery, e.g. the tee proxy's egress
    /// listener `http://127.0.0.1:9091`.
    pub egress_proxy: Option<String>,
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            max_in_flight: 256,
            per_endpoint: 16,
            lease: "60s".into(),
            retry_schedule: None,
            deadline: None,
            allow_cidrs: Vec::new(),
            drain_timeout: "20s".into(),
            breaker: BreakerSection::default(),
            egress_proxy: None,
        }
    }
}

/// The endpoint circuit breaker's keys, `[worker.breaker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Consecutive failed attempts that open an endpoint's breaker; 0 turns
    /// the breaker off.
    pub failures: u32,
    /// How often an open breaker lets one probe attempt through, e.g. "30s".
    pub probe_interval: String,
    /// Continuous failure after which the endpoint is disabled, e.g. "1h";
    /// "0s" never disables.
    pub disable_after: String,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            failures: 5,
            probe_interval: "30s".into(),
            disable_after: "1h".into(),
        }
    }
}

impl BreakerSection {
    /// The parsed policy; errors name the key.
    pub fn policy(&self) -> Result<crate::breaker::BreakerPolicy, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("worker.breaker.{key}"),
            message,
        };
        let probe_interval =
            parse_duration(&self.probe_interval).map_err(|m| invalid("probe_interval", m))?;
        if probe_interval.is_zero() {
            return Err(invalid(
                "probe_interval",
                "must be longer than 0s".to_string(),
            ));
        }
        let disable_after =
            parse_duration(&self.disable_after).map_err(|m| invalid("disable_after", m))?;
        Ok(crate::breaker::BreakerPolicy {
            failures: self.failures,
            probe_interval,
            disable_after: (!disable_after.is_zero()).then_some(disable_after),
        })
    }
}

/// How ingest groups requests into transactions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// Concurrent writer tasks. 0 picks 1 for SQLite (one writer at a time
    /// anyway) and 4 for PostgreSQL.
    pub writers: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://hookshift.db".into(),
            api_tokens: Vec::new(),
            payload_limit_bytes: 256 * 1024,
            response_body_cap_bytes: 64 * 1024,
            secret_rotation_grace: "24h".into(),
            default_profile: "standard-webhooks".into(),
            role: "all".into(),
            ingest: IngestConfig::default(),
            worker: WorkerSection::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_batch: 512,
            writers: 0,
        }
    }
}

/// Signing profiles the engine knows by name.
pub const PROFILES: &[&str] = &["standard-webhooks", "legacy", "github", "stripe"];

/// A configuration problem, naming where it came from and which key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct (the message names the key).
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    /// An environment override could not be parsed.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A value is out of range or inconsistent.
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl EngineConfig {
    /// Loads the file if given (else defaults), then applies environment
    /// overrides from `env` (pass `std::env::vars()`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string().trim_end().to_string(),
                })?
            }
            None => EngineConfig::default(),
        };
        cfg.apply_env(env)?;
        Ok(cfg)
    }

    fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        fn num(var: &str, v: &str) -> Result<usize, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                var: var.to_string(),
                message: format!("expected a whole number, got `{v}`"),
            })
        }
        for (var, value) in env {
            match var.as_str() {
                "HOOKSHIFT_LISTEN" => self.listen = value,
                "HOOKSHIFT_DATABASE_URL" => self.database_url = value,
                "HOOKSHIFT_API_TOKENS" => {
                    self.api_tokens = value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect()
                }
                "HOOKSHIFT_PAYLOAD_LIMIT_BYTES" => self.payload_limit_bytes = num(&var, &value)?,
                "HOOKSHIFT_RESPONSE_BODY_CAP_BYTES" => {
                    self.response_body_cap_bytes = num(&var, &value)?
                }
                "HOOKSHIFT_SECRET_ROTATION_GRACE" => self.secret_rotation_grace = value,
                "HOOKSHIFT_DEFAULT_PROFILE" => self.default_profile = value,
                "HOOKSHIFT_INGEST_MAX_BATCH" => self.ingest.max_batch = num(&var, &value)?,
                "HOOKSHIFT_INGEST_WRITERS" => self.ingest.writers = num(&var, &value)?,
                "HOOKSHIFT_ROLE" => self.role = value,
                "HOOKSHIFT_RETRY_SCHEDULE" => self.worker.retry_schedule = Some(value),
                "HOOKSHIFT_ALLOW_CIDRS" => {
                    self.worker.allow_cidrs = value
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(String::from)
                        .collect()
                }
                "HOOKSHIFT_WORKER_MAX_IN_FLIGHT" => self.worker.max_in_flight = num(&var, &value)?,
                "HOOKSHIFT_WORKER_PER_ENDPOINT" => self.worker.per_endpoint = num(&var, &value)?,
                "HOOKSHIFT_WORKER_EGRESS_PROXY" => self.worker.egress_proxy = Some(value),
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks every key, returning the first problem found.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:8080", self.listen),
            )
        })?;
        if self.api_tokens.is_empty() && !listen.ip().is_loopback() {
            return Err(invalid(
                "api_tokens",
                format!(
                    "refusing to listen on {listen} without API tokens; set api_tokens \
                     (HOOKSHIFT_API_TOKENS) or listen on a loopback address"
                ),
            ));
        }
        if let Some(i) = self.api_tokens.iter().position(|t| t.len() < 16) {
            return Err(invalid(
                "api_tokens",
                format!("token #{} is shorter than 16 characters", i + 1),
            ));
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "expected sqlite://PATH, sqlite::memory: or postgres://…".to_string(),
            ));
        }
        if self.payload_limit_bytes == 0 || self.payload_limit_bytes > 64 * 1024 * 1024 {
            return Err(invalid(
                "payload_limit_bytes",
                "must be between 1 and 67108864".to_string(),
            ));
        }
        if self.response_body_cap_bytes == 0 {
            return Err(invalid(
                "response_body_cap_bytes",
                "must be at least 1".to_string(),
            ));
        }
        let grace = parse_duration(&self.secret_rotation_grace)
            .map_err(|m| invalid("secret_rotation_grace", m))?;
        if !PROFILES.contains(&self.default_profile.as_str()) {
            return Err(invalid(
                "default_profile",
                format!(
                    "unknown profile `{}` (expected one of {})",
                    self.default_profile,
                    PROFILES.join(", ")
                ),
            ));
        }
        if self.ingest.max_batch == 0 || self.ingest.max_batch > 10_000 {
            return Err(invalid(
                "ingest.max_batch",
                "must be between 1 and 10000".to_string(),
            ));
        }
        let (run_api, run_worker) = match self.role.as_str() {
            "api" => (true, false),
            "worker" => (false, true),
            "all" => (true, true),
            other => {
                return Err(invalid(
                    "role",
                    format!("unknown role `{other}` (expected api, worker or all)"),
                ))
            }
        };
        let w = &self.worker;
        let lease = parse_duration(&w.lease).map_err(|m| invalid("worker.lease", m))?;
        let drain_timeout =
            parse_duration(&w.drain_timeout).map_err(|m| invalid("worker.drain_timeout", m))?;
        let deadline = w
            .deadline
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|m| invalid("worker.deadline", m))?;
        if let Some(s) = &w.retry_schedule {
            crate::profile::by_name(&self.default_profile)
                .and_then(|p| p.retry.with_override(s))
                .map_err(|e| invalid("worker.retry_schedule", e.to_string()))?;
        }
        let allow_cidrs = w
            .allow_cidrs
            .iter()
            .map(|c| {
                c.parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "worker.allow_cidrs",
                            format!("`{c}` is not a CIDR like 127.0.0.0/8"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(p) = &w.egress_proxy {
            let ok = url::Url::parse(p)
                .map(|u| u.scheme() == "http" && u.host_str().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(invalid(
                    "worker.egress_proxy",
                    format!("`{p}` is not an http:// proxy URL like http://127.0.0.1:9091"),
                ));
            }
        }
        if w.max_in_flight == 0 || w.per_endpoint == 0 {
            return Err(invalid(
                "worker.max_in_flight",
                "max_in_flight and per_endpoint must be at least 1".to_string(),
            ));
        }
        Ok(ValidConfig {
            raw: self.clone(),
            listen,
            secret_rotation_grace: grace,
            run_api,
            run_worker,
            worker: crate::worker::WorkerConfig {
                max_in_flight: w.max_in_flight,
                per_endpoint: w.per_endpoint,
                lease,
                poll_interval: Duration::from_millis(200),
                default_profile: self.default_profile.clone(),
                retry_schedule: w.retry_schedule.clone(),
                deadline,
                drain_timeout,
                breaker: w.breaker.policy()?,
            },
            allow_cidrs,
        })
    }
}

/// A configuration that passed [`EngineConfig::validate`], with parsed values.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The configuration as given.
    pub raw: EngineConfig,
    /// The parsed listen address.
    pub listen: SocketAddr,
    /// The parsed rotation grace period.
    pub secret_rotation_grace: Duration,
    /// Serve the API.
    pub run_api: bool,
    /// Run the delivery worker.
    pub run_worker: bool,
    /// The worker's parsed settings.
    pub worker: crate::worker::WorkerConfig,
    /// Destinations the SSRF guard lets through.
    pub allow_cidrs: Vec<ipnet::IpNet>,
}

/// Parses durations like `500ms`, `15s`, `5m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m, h or d)"))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 15s, 5m or 2h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}` (use ms, s, m, h or d)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=10.0 * 365.0 * 86400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let cfg = EngineConfig::load(None, env(&[]))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(cfg.listen.port(), 8080);
        assert_eq!(cfg.secret_rotation_grace, Duration::from_secs(86400));
    }

    #[test]
    fn unknown_file_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.toml");
        std::fs::write(&path, "listn = \"127.0.0.1:1\"\n").unwrap();
        let err = EngineConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("engine.toml"), "{err}");
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_bad_env_is_named() {
        let cfg = EngineConfig::load(None, env(&[("HOOKSHIFT_LISTEN", "127.0.0.1:9")])).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9");
        let err = EngineConfig::load(None, env(&[("HOOKSHIFT_INGEST_MAX_BATCH", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HOOKSHIFT_INGEST_MAX_BATCH"), "{err}");
    }

    #[test]
    fn egress_proxy_comes_from_the_environment_and_is_checked() {
        let cfg = EngineConfig::load(
            None,
            env(&[("HOOKSHIFT_WORKER_EGRESS_PROXY", "http://127.0.0.1:9092")]),
        )
        .unwrap();
        assert_eq!(
            cfg.worker.egress_proxy.as_deref(),
            Some("http://127.0.0.1:9092")
        );
        cfg.validate().unwrap();
        let err = EngineConfig::load(
            None,
            env(&[("HOOKSHIFT_WORKER_EGRESS_PROXY", "127.0.0.1:9092")]),
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("worker.egress_proxy"), "{err}");
    }

    #[test]
    fn public_listen_without_tokens_is_refused() {
        let cfg = EngineConfig {
            listen: "0.0.0.0:8080".into(),
            ..EngineConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("api_tokens") && err.contains("loopback"),
            "{err}"
        );
        let cfg = EngineConfig {
            listen: "0.0.0.0:8080".into(),
            api_tokens: vec!["0123456789abcdef".into()],
            ..EngineConfig::default()
        };
        cfg.validate().unwrap();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5y").unwrap_err().contains("unknown unit"));
    }
}
