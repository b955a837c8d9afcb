//! `proxy.toml`: one typed struct, loaded from TOML and validated once at
//! start-up with messages that name the key.
//!
//! ```toml
//! api_primary = "legacy"                 # who answers producers: legacy | engine
//! capture_store = "sqlite://captures.db" # or postgres://…
//!
//! [listen]
//! ingress = "127.0.0.1:9090"
//! egress_legacy = "127.0.0.1:9091"
//! egress_engine = "127.0.0.1:9092"
//! admin = "127.0.0.1:9093"
//!
//! [senders.legacy]
//! api = "http://127.0.0.1:8081"
//! event_id_headers = ["X-Event-Id"]
//!
//! [senders.engine]
//! api = "http://127.0.0.1:8080"
//! event_id_headers = ["webhook-id", "X-Event-Id"]
//!
//! [ingress]
//! mirror = true            # false: forward only (a baseline for benchmarks)
//! queue_bound = 1024       # mirror jobs waiting; full → dropped and counted
//! mirror_workers = 64      # mirror requests in flight at once
//! primary_timeout = "30s"
//! shadow_timeout = "10s"
//! max_body_bytes = 1048576
//!
//! [egress]
//! mode = "replay"          # replay | passthrough
//! upstream_timeout = "30s" # the proxy's own limit on a receiver
//! pairing_wait = "30s"     # how long a shadow attempt waits for the primary's
//! hang_limit = "10m"       # longest a replayed timeout holds a connection
//! shadow_only_status = 503
//! shadow_only_body = "hookshift: no primary exchange for this attempt"
//! sender_header = ""       # passthrough only: add NAME: legacy|engine to forwarded requests
//! ```

use crate::capture::SenderName;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Everything `hookshift proxy serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// `legacy` or `engine`: whose API answers producers.
    pub api_primary: String,
    /// `sqlite://PATH` or `postgres://…`.
    pub capture_store: String,
    pub listen: ListenSection,
    pub senders: SendersSection,
    pub ingress: IngressSection,
    pub egress: EgressSection,
}

/// The four listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    pub ingress: String,
    pub egress_legacy: String,
    pub egress_engine: String,
    pub admin: String,
}

/// Both senders.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SendersSection {
    pub legacy: SenderSection,
    pub engine: SenderSection,
}

/// One sender.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SenderSection {
    /// The sender's platform API base URL.
    pub api: String,
    /// Headers that carry the event id on its outbound webhooks, tried in
    /// order (names case-insensitive).
    pub event_id_headers: Vec<String>,
}

/// The ingress tee.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSection {
    /// Mirror to the other sender at all (false: a plain forwarding proxy,
    /// the baseline for benchmarks).
    pub mirror: bool,
    pub queue_bound: usize,
    pub mirror_workers: usize,
    pub primary_timeout: String,
    pub shadow_timeout: String,
    pub max_body_bytes: usize,
}

/// The egress recorder/replayer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSection {
    pub mode: String,
    pub upstream_timeout: String,
    pub pairing_wait: String,
    pub hang_limit: String,
    pub shadow_only_status: u16,
    pub shadow_only_body: String,
    /// demo: in passthrough mode, a header naming the sender (`legacy` or
    /// `engine`) added to each forwarded request, so a receiver simulator
    /// that both senders reach at the same URL can tell them apart; empty:
    /// none. The captured request is the sender's, without it.
    pub sender_header: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            api_primary: "legacy".into(),
            capture_store: "sqlite://captures.db".into(),
            listen: ListenSection::default(),
            senders: SendersSection::default(),
            ingress: IngressSection::default(),
            egress: EgressSection::default(),
        }
    }
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            ingress: "127.0.0.1:9090".into(),
            egress_legacy: "127.0.0.1:9091".into(),
            egress_engine: "127.0.0.1:9092".into(),
            admin: "127.0.0.1:9093".into(),
        }
    }
}

impl Default for IngressSection {
    fn default() -> Self {
        IngressSection {
            mirror: true,
            queue_bound: 1024,
            mirror_workers: 64,
            primary_timeout: "30s".into(),
            shadow_timeout: "10s".into(),
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl Default for EgressSection {
    fn default() -> Self {
        EgressSection {
            mode: "replay".into(),
            upstream_timeout: "30s".into(),
            pairing_wait: "30s".into(),
            hang_limit: "10m".into(),
            shadow_only_status: 503,
            shadow_only_body: "hookshift: no primary exchange for this attempt".into(),
            sender_header: String::new(),
        }
    }
}

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Whether the egress replays the primary's exchanges to the shadow, or
/// forwards both senders (scenario runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressMode {
    Replay,
    Passthrough,
}

/// One sender, validated.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// Base URL without a trailing slash.
    pub api: String,
    pub event_id_headers: Vec<String>,
}

/// A configuration that passed [`ProxyConfig::validate`].
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub raw: ProxyConfig,
    pub api_primary: SenderName,
    pub listen_ingress: SocketAddr,
    pub listen_egress_legacy: SocketAddr,
    pub listen_egress_engine: SocketAddr,
    pub listen_admin: SocketAddr,
    pub legacy: SenderSettings,
    pub engine: SenderSettings,
    pub mirror: bool,
    pub queue_bound: usize,
    pub mirror_workers: usize,
    pub primary_timeout: Duration,
    pub shadow_timeout: Duration,
    pub max_body_bytes: usize,
    pub egress_mode: EgressMode,
    pub upstream_timeout: Duration,
    pub pairing_wait: Duration,
    pub hang_limit: Duration,
    pub shadow_only_status: u16,
    pub shadow_only_body: String,
    /// demo: see [`EgressSection::sender_header`].
    pub sender_header: Option<String>,
}

impl ValidConfig {
    /// One sender's settings.
    pub fn sender(&self, s: SenderName) -> &SenderSettings {
        match s {
            SenderName::Legacy => &self.legacy,
            SenderName::Engine => &self.engine,
        }
    }
}

impl ProxyConfig {
    /// Reads and parses a TOML file (unknown keys are errors).
    pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ProxyConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Checks every key, returning the first problem found.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
            v.parse()
                .map_err(|_| invalid(key, format!("`{v}` is not an address like 127.0.0.1:9090")))
        };
        let dur = |key: &str, v: &str| parse_duration(v).map_err(|m| invalid(key, m));
        let api_primary = SenderName::parse(&self.api_primary).ok_or_else(|| {
            invalid(
                "api_primary",
                format!("`{}` is neither legacy nor engine", self.api_primary),
            )
        })?;
        let cs = &self.capture_store;
        if !(cs.starts_with("sqlite:")
            || cs.starts_with("postgres://")
            || cs.starts_with("postgresql://"))
        {
            return Err(invalid(
                "capture_store",
                "expected sqlite://PATH or postgres://…".into(),
            ));
        }
        let sender = |key: &str,
                      s: &SenderSection,
                      default_headers: &[&str]|
         -> Result<SenderSettings, ConfigError> {
            let api = s.api.trim_end_matches('/').to_string();
            let ok = reqwest::Url::parse(&api)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(invalid(
                    &format!("senders.{key}.api"),
                    format!("`{}` is not a base URL like http://127.0.0.1:8080", s.api),
                ));
            }
            let headers: Vec<String> = if s.event_id_headers.is_empty() {
                default_headers.iter().map(|h| h.to_string()).collect()
            } else {
                s.event_id_headers.clone()
            };
            if let Some(h) = headers
                .iter()
                .find(|h| h.is_empty() || !h.bytes().all(is_token_byte))
            {
                return Err(invalid(
                    &format!("senders.{key}.event_id_headers"),
                    format!("`{h}` is not a header name"),
                ));
            }
            Ok(SenderSettings {
                api,
                event_id_headers: headers,
            })
        };
        let legacy = sender("legacy", &self.senders.legacy, &["X-Event-Id"])?;
        let engine = sender(
            "engine",
            &self.senders.engine,
            &["webhook-id", "X-Event-Id"],
        )?;
        let i = &self.ingress;
        if i.queue_bound == 0 {
            return Err(invalid("ingress.queue_bound", "must be at least 1".into()));
        }
        if i.mirror_workers == 0 {
            return Err(invalid(
                "ingress.mirror_workers",
                "must be at least 1".into(),
            ));
        }
        if i.max_body_bytes == 0 {
            return Err(invalid(
                "ingress.max_body_bytes",
                "must be at least 1".into(),
            ));
        }
        let e = &self.egress;
        let egress_mode = match e.mode.as_str() {
            "replay" => EgressMode::Replay,
            "passthrough" => EgressMode::Passthrough,
            other => {
                return Err(invalid(
                    "egress.mode",
                    format!("`{other}` is neither replay nor passthrough"),
                ))
            }
        };
        if !(100..=599).contains(&e.shadow_only_status) {
            return Err(invalid(
                "egress.shadow_only_status",
                format!("{} is not an HTTP status", e.shadow_only_status),
            ));
        }
        Ok(ValidConfig {
            raw: self.clone(),
            api_primary,
            listen_ingress: addr("listen.ingress", &self.listen.ingress)?,
            listen_egress_legacy: addr("listen.egress_legacy", &self.listen.egress_legacy)?,
            listen_egress_engine: addr("listen.egress_engine", &self.listen.egress_engine)?,
            listen_admin: addr("listen.admin", &self.listen.admin)?,
            legacy,
            engine,
            mirror: i.mirror,
            queue_bound: i.queue_bound,
            mirror_workers: i.mirror_workers,
            primary_timeout: dur("ingress.primary_timeout", &i.primary_timeout)?,
            shadow_timeout: dur("ingress.shadow_timeout", &i.shadow_timeout)?,
            max_body_bytes: i.max_body_bytes,
            egress_mode,
            upstream_timeout: dur("egress.upstream_timeout", &e.upstream_timeout)?,
            pairing_wait: dur("egress.pairing_wait", &e.pairing_wait)?,
            hang_limit: dur("egress.hang_limit", &e.hang_limit)?,
            shadow_only_status: e.shadow_only_status,
            shadow_only_body: e.shadow_only_body.clone(),
            sender_header: match e.sender_header.as_str() {
                "" => None,
                h if h.bytes().all(is_token_byte) => Some(h.to_string()),
                h => {
                    return Err(invalid(
                        "egress.sender_header",
                        format!("`{h}` is not a header name"),
                    ))
                }
            },
        })
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses durations like `500ms`, `15s`, `5m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m or h)"))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 15s, 5m or 2h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}` (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=86400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range (at most 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str, expected_key: &str) {
        let cfg = ProxyConfig::parse(toml, "proxy.toml").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains(expected_key),
            "{err} should name {expected_key}"
        );
    }

    const SENDERS: &str = "[senders.legacy]\napi = \"http://127.0.0.1:1\"\n[senders.engine]\napi = \"http://127.0.0.1:2\"\n";

    #[test]
    fn a_minimal_config_is_valid_with_the_documented_defaults() {
        let cfg = ProxyConfig::parse(SENDERS, "proxy.toml")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(cfg.api_primary, SenderName::Legacy);
        assert_eq!(cfg.legacy.event_id_headers, ["X-Event-Id"]);
        assert_eq!(cfg.engine.event_id_headers, ["webhook-id", "X-Event-Id"]);
        assert_eq!(cfg.egress_mode, EgressMode::Replay);
        assert_eq!(cfg.listen_admin.port(), 9093);
    }

    #[test]
    fn bad_values_name_their_key() {
        check("", "senders.legacy.api");
        check(&format!("api_primary = \"both\"\n{SENDERS}"), "api_primary");
        check(
            &format!("capture_store = \"mysql://x\"\n{SENDERS}"),
            "capture_store",
        );
        check(
            &format!("{SENDERS}[ingress]\nqueue_bound = 0\n"),
            "ingress.queue_bound",
        );
        check(
            &format!("{SENDERS}[ingress]\nshadow_timeout = \"soon\"\n"),
            "ingress.shadow_timeout",
        );
        check(
            &format!("{SENDERS}[egress]\nmode = \"mirror\"\n"),
            "egress.mode",
        );
        check(
            &format!("{SENDERS}[egress]\nshadow_only_status = 42\n"),
            "egress.shadow_only_status",
        );
        check(
            &format!("{SENDERS}[listen]\nadmin = \"localhost\"\n"),
            "listen.admin",
        );
        let err = ProxyConfig::parse("[ingress]\nqueue = 1\n", "proxy.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy.toml") && err.contains("queue"), "{err}");
    }
}
