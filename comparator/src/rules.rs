//! Comparison rules (`--rules rules.toml`): what is noise, what each side
//! declared (profile, retry schedule), tolerances, and the learned-noise
//! thresholds. Every key is optional; [`Rules::default`] is what runs without
//! a file. Errors name the file and the key (toml reports line and column).
//!
//! ```toml
//! [headers]
//! ignore = ["Traceparent"]          # never compared, any case
//!
//! [[noise]]                          # values that legitimately differ
//! name = "delivery-id"
//! header = "X-Delivery-Id"
//! check = "differs"                  # differs | unix_seconds | signature | ignore
//!
//! [[noise]]
//! name = "timestamp"
//! header = "X-Timestamp"
//! check = "unix_seconds"
//! max_skew_s = 30                    # against the egress's arrival time
//!
//! [outcomes]
//! equivalent = [["timeout", "body"]]  # outcome classes treated as the same
//!
//! [retry]
//! tolerance_ms = 1500                # slack on each side's declared delay bounds
//! tolerance_ratio = 0.1
//!
//! [legacy]
//! profile = "legacy"
//! [legacy.retry]
//! schedule = ["1s", "2s", "4s"]      # max_attempts defaults to len + 1
//! jitter = 0.2                       # "none", "full" or a proportion
//! honor_retry_after = false
//!
//! [engine]
//! profile = "legacy"                 # else the endpoint's, else detected from headers
//!
//! [learned]                          # Diffy-style noise from a second legacy run
//! min_ratio = 2.0
//! min_abs = 0.01
//!
//! [api]
//! ignore = ["/deliveries/*/id", "/created_at"]
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use engine::profile::{self, Jitter, Profile, RetryPolicy, Schedule};
use serde::Deserialize;

use crate::model::Outcome;

/// A rules file that cannot be used; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or an unknown or mistyped key (toml names line, column and key).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message.
        message: String,
    },
    /// A value is out of range or unknown.
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// How a noise rule checks a header whose values differ.
#[derive(Debug, Clone, PartialEq)]
pub enum NoiseCheck {
    /// Both present and non-empty; the values are not compared.
    Differs,
    /// Decimal unix seconds within `max_skew_s` of the egress's arrival time.
    UnixSeconds {
        /// Largest accepted clock skew.
        max_skew_s: i64,
    },
    /// Compared under the signature category instead.
    Signature,
    /// Not compared at all (presence still is).
    Ignore,
}

/// One named noise rule on a header.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseRule {
    /// Shown in reports as the rule that explains a suppression.
    pub name: String,
    /// Lower-cased header name.
    pub header: String,
    /// The check applied instead of equality.
    pub check: NoiseCheck,
}

/// What a side declared: its profile and retry policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidePolicy {
    /// The profile, when fixed by the rules.
    pub profile: Option<Profile>,
    /// The retry policy, when it differs from the profile's.
    pub retry: Option<RetryPolicy>,
}

/// Resolved rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Lower-cased header names never compared.
    pub header_ignore: HashSet<String>,
    /// Header noise rules.
    pub noise: Vec<NoiseRule>,
    /// Groups of outcome classes treated as equal.
    pub equivalent: Vec<Vec<Outcome>>,
    /// Absolute slack on delay bounds.
    pub tolerance_ms: i64,
    /// Relative slack on delay bounds (of the upper bound).
    pub tolerance_ratio: f64,
    /// The legacy's declarations.
    pub legacy: SidePolicy,
    /// The engine's declarations.
    pub engine: SidePolicy,
    /// Learned noise: the candidate's rate must exceed the noise rate by this factor...
    pub learned_min_ratio: f64,
    /// ...and by this much in absolute rate, or the field is noise.
    pub learned_min_abs: f64,
    /// JSON pointers (with `*` for any array index or key) ignored in API responses.
    pub api_ignore: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        let rule = |name: &str, header: &str, check| NoiseRule {
            name: name.into(),
            header: header.to_ascii_lowercase(),
            check,
        };
        let skew = NoiseCheck::UnixSeconds { max_skew_s: 300 };
        Rules {
            header_ignore: [
                "connection",
                "proxy-connection",
                "keep-alive",
                "proxy-authorization",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            noise: vec![
                rule("delivery-id", "X-Delivery-Id", NoiseCheck::Differs),
                rule("delivery-id", "X-GitHub-Delivery", NoiseCheck::Differs),
                rule("timestamp", "X-Timestamp", skew.clone()),
                rule("timestamp", "webhook-timestamp", skew.clone()),
                rule("timestamp", "X-Slack-Request-Timestamp", skew),
                rule("signature", "X-Signature", NoiseCheck::Signature),
                rule("signature", "webhook-signature", NoiseCheck::Signature),
                rule("signature", "X-Hub-Signature-256", NoiseCheck::Signature),
                rule("signature", "Stripe-Signature", NoiseCheck::Signature),
                rule("signature", "X-Slack-Signature", NoiseCheck::Signature),
            ],
            equivalent: vec![vec![Outcome::Timeout, Outcome::Body]],
            tolerance_ms: 1500,
            tolerance_ratio: 0.1,
            legacy: SidePolicy::default(),
            engine: SidePolicy::default(),
            learned_min_ratio: 2.0,
            learned_min_abs: 0.01,
            api_ignore: vec![
                "/deliveries/*/id".into(),
                "/created_at".into(),
                "/updated_at".into(),
            ],
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    headers: HeadersFile,
    #[serde(default)]
    default_noise: Option<bool>,
    #[serde(default)]
    noise: Vec<NoiseFile>,
    #[serde(default)]
    outcomes: Option<OutcomesFile>,
    #[serde(default)]
    retry: Option<RetryTolerance>,
    #[serde(default)]
    legacy: Option<SideFile>,
    #[serde(default)]
    engine: Option<SideFile>,
    #[serde(default)]
    learned: Option<LearnedFile>,
    #[serde(default)]
    api: Option<ApiFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HeadersFile {
    #[serde(default)]
    ignore: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoiseFile {
    name: String,
    header: String,
    check: String,
    max_skew_s: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomesFile {
    equivalent: Vec<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryTolerance {
    tolerance_ms: Option<i64>,
    tolerance_ratio: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SideFile {
    profile: Option<String>,
    retry: Option<RetryFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryFile {
    schedule: Option<Vec<String>>,
    jitter: Option<toml::Value>,
    max_attempts: Option<u32>,
    honor_retry_after: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnedFile {
    min_ratio: Option<f64>,
    min_abs: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFile {
    ignore: Vec<String>,
}

impl Rules {
    /// Reads and validates a rules file.
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Rules::parse(&text, &path.display().to_string())
    }

    /// Parses rules from TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Rules, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |key: String, message: String| RulesError::Invalid {
            path: origin.to_owned(),
            key,
            message,
        };
        let mut rules = Rules::default();
        for h in file.headers.ignore {
            rules.header_ignore.insert(h.to_ascii_lowercase());
        }
        if file.default_noise == Some(false) {
            rules.noise.clear();
        }
        for (i, n) in file.noise.into_iter().enumerate() {
            let check = match n.check.as_str() {
                "differs" => NoiseCheck::Differs,
                "unix_seconds" => NoiseCheck::UnixSeconds {
                    max_skew_s: n.max_skew_s.unwrap_or(300),
                },
                "signature" => NoiseCheck::Signature,
                "ignore" => NoiseCheck::Ignore,
                other => {
                    return Err(invalid(
                        format!("noise[{i}].check"),
                        format!(
                            "unknown check {other:?} (differs, unix_seconds, signature, ignore)"
                        ),
                    ))
                }
            };
            let header = n.header.to_ascii_lowercase();
            // A file rule replaces a default rule on the same header.
            rules.noise.retain(|r| r.header != header);
            rules.noise.push(NoiseRule {
                name: n.name,
                header,
                check,
            });
        }
        if let Some(o) = file.outcomes {
            rules.equivalent.clear();
            for (i, group) in o.equivalent.iter().enumerate() {
                let mut classes = Vec::new();
                for name in group {
                    classes.push(Outcome::parse(name).ok_or_else(|| {
                        invalid(
                            format!("outcomes.equivalent[{i}]"),
                            format!("unknown outcome class {name:?} (delivered, http_retryable, http_permanent, timeout, network, body, invalid, internal)"),
                        )
                    })?);
                }
                rules.equivalent.push(classes);
            }
        }
        if let Some(r) = file.retry {
            if let Some(ms) = r.tolerance_ms {
                if ms < 0 {
                    return Err(invalid("retry.tolerance_ms".into(), "must be >= 0".into()));
                }
                rules.tolerance_ms = ms;
            }
            if let Some(x) = r.tolerance_ratio {
                if !(0.0..=10.0).contains(&x) {
                    return Err(invalid(
                        "retry.tolerance_ratio".into(),
                        "must be between 0 and 10".into(),
                    ));
                }
                rules.tolerance_ratio = x;
            }
        }
        for (label, side, target) in [
            ("legacy", file.legacy, &mut rules.legacy),
            ("engine", file.engine, &mut rules.engine),
        ] {
            let Some(side) = side else { continue };
            if let Some(name) = side.profile {
                target.profile = Some(
                    profile::by_name(&name)
                        .map_err(|e| invalid(format!("{label}.profile"), e.to_string()))?,
                );
            }
            if let Some(r) = side.retry {
                let base = target
                    .profile
                    .clone()
                    .unwrap_or_else(|| {
                        profile::by_name(if label == "legacy" {
                            "legacy"
                        } else {
                            "standard-webhooks"
                        })
                        .unwrap_or_default()
                    })
                    .retry;
                target.retry = Some(
                    retry_policy(base, r)
                        .map_err(|(k, m)| invalid(format!("{label}.retry.{k}"), m))?,
                );
            }
        }
        if let Some(l) = file.learned {
            if let Some(x) = l.min_ratio {
                if x < 1.0 {
                    return Err(invalid("learned.min_ratio".into(), "must be >= 1".into()));
                }
                rules.learned_min_ratio = x;
            }
            if let Some(x) = l.min_abs {
                if !(0.0..=1.0).contains(&x) {
                    return Err(invalid(
                        "learned.min_abs".into(),
                        "must be a rate between 0 and 1".into(),
                    ));
                }
                rules.learned_min_abs = x;
            }
        }
        if let Some(a) = file.api {
            rules.api_ignore = a.ignore;
        }
        Ok(rules)
    }

    /// Whether two outcome classes count as the same, and the rule that says so when they differ.
    pub fn outcomes_equivalent(&self, a: Outcome, b: Outcome) -> bool {
        a == b
            || self
                .equivalent
                .iter()
                .any(|g| g.contains(&a) && g.contains(&b))
    }

    /// The noise rule for a lower-cased header name.
    pub fn noise_for(&self, lower: &str) -> Option<&NoiseRule> {
        self.noise.iter().find(|r| r.header == lower)
    }
}

fn retry_policy(base: RetryPolicy, r: RetryFile) -> Result<RetryPolicy, (String, String)> {
    let mut p = base;
    if let Some(items) = r.schedule {
        p = p
            .with_override(&items.join(","))
            .map_err(|e| ("schedule".to_owned(), e.to_string()))?;
    }
    if let Some(j) = r.jitter {
        p.jitter = match &j {
            toml::Value::String(s) if s == "none" => Jitter::None,
            toml::Value::String(s) if s == "full" => Jitter::Full,
            toml::Value::Float(x) if (0.0..=1.0).contains(x) => Jitter::Proportional(*x),
            toml::Value::Integer(0) => Jitter::None,
            other => {
                return Err((
                    "jitter".into(),
                    format!("{other} is not \"none\", \"full\" or a proportion between 0 and 1"),
                ))
            }
        };
    }
    if let Some(n) = r.max_attempts {
        if n == 0 {
            return Err(("max_attempts".into(), "must be at least 1".into()));
        }
        p.max_attempts = n;
    }
    if let Some(h) = r.honor_retry_after {
        p.honor_retry_after = h;
    }
    Ok(p)
}

/// A schedule written in rules-file form, for messages: `10s, 1m, 5m`.
pub fn describe_schedule(p: &RetryPolicy) -> String {
    let d = |d: &Duration| format!("{}s", d.as_secs_f64());
    let sched = match &p.schedule {
        Schedule::Explicit(v) => v.iter().map(d).collect::<Vec<_>>().join(","),
        Schedule::Exponential { base, cap } => format!("{}*2^n up to {}", d(base), d(cap)),
    };
    let jitter = match p.jitter {
        Jitter::None => "no jitter".to_owned(),
        Jitter::Full => "full jitter".to_owned(),
        Jitter::Proportional(x) => format!("±{}% jitter", x * 100.0),
    };
    format!(
        "{sched}, {jitter}, {} attempts, Retry-After {}",
        p.max_attempts,
        if p.honor_retry_after {
            "honoured"
        } else {
            "ignored"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let e = Rules::parse("[retry]\ntolerance_ms = -1\n", "r.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "r.toml: key `retry.tolerance_ms`: must be >= 0"
        );
        let e = Rules::parse("[retry]\nslack = 1\n", "r.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field `slack`"), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Rules::parse("[engine.retry]\nschedule = [\"1x\"]\n", "r.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.toml: key `engine.retry.schedule`"),
            "{e}"
        );
        let e = Rules::parse("[outcomes]\nequivalent = [[\"slow\"]]\n", "r.toml").unwrap_err();
        assert!(e.to_string().contains("outcomes.equivalent[0]"), "{e}");
    }

    #[test]
    fn file_rules_replace_defaults_on_the_same_header() {
        let r = Rules::parse(
            "[[noise]]\nname = \"ts\"\nheader = \"x-timestamp\"\ncheck = \"unix_seconds\"\nmax_skew_s = 5\n[legacy.retry]\nschedule = [\"1s\", \"2s\"]\njitter = \"none\"\n",
            "r.toml",
        )
        .unwrap();
        let n = r.noise_for("x-timestamp").unwrap();
        assert_eq!(n.check, NoiseCheck::UnixSeconds { max_skew_s: 5 });
        assert_eq!(n.name, "ts");
        let retry = r.legacy.retry.unwrap();
        assert_eq!(retry.max_attempts, 3);
        assert_eq!(retry.jitter, Jitter::None);
        assert!(!retry.honor_retry_after);
    }
}
