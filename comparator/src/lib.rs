//! The comparator: pairs the two senders' outbound attempts by (event id,
//! endpoint URL, attempt number) and whole (event, endpoint) histories,
//! finds every difference a customer could notice, explains away what the
//! noise rules allow, renders the reports and evaluates the ramp gate.
//!
//! Architecture invariant: the comparator does no network I/O. It reads
//! stores (sqlx) and files only; the gate's `--apply` HTTP call lives in the
//! binary.
//!
//! Layout:
//! - [`model`]: the normalised model (exchanges, recorded attempts,
//!   histories per side) the diff works on, whatever the source.
//! - [`load`]: sqlx readers for the capture store, the engine's and the
//!   legacy's databases, and the secrets file.
//! - [`jcs`]: a token-preserving JSON parser and RFC 8785 canonicalisation,
//!   one aspect at a time (key order, escaping, numbers).
//! - [`rules`]: `rules.toml`: noise rules, declared schedules, tolerances.
//! - [`diff`]: the diff engine, pure: attempt pairs and histories in,
//!   divergences and counted suppressions out; learned noise.
//! - [`report`]: the `Report` (report.json) and its Markdown and HTML forms.
//! - [`gate`]: the ramp policy and its pure evaluation.
//!
//! [`compare`] runs the diff over a [`Dataset`](model::Dataset); [`run`]
//! loads one from stores first. [`write_reports`] writes the three files.

pub mod diff;
pub mod gate;
pub mod jcs;
pub mod load;
pub mod model;
pub mod report;
pub mod rules;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use diff::{Category, Divergence, Severity};
pub use report::{write_reports, Report, ReportPaths, Verdict};
pub use rules::Rules;

use diff::SideView;
use model::{Dataset, Sender, SideData};

/// Compares a loaded dataset; pure.
pub fn compare(
    data: &Dataset,
    rules: &Rules,
    name: &str,
    inputs: BTreeMap<String, String>,
    generated_at_ms: Option<i64>,
) -> Report {
    let (legacy, engine) = views(data, rules);
    let mut result = diff::diff_sides(&legacy, &engine, rules);
    if let Some(second) = &data.secondary {
        // The second legacy run plays the candidate, with the legacy's declarations.
        let other = SideView {
            data: second,
            sender: Sender::Engine,
            policy: &rules.legacy,
        };
        let noise = diff::diff_sides(&legacy, &other, rules);
        diff::apply_learned_noise(&mut result, &noise, rules);
    }
    finish(data, result, rules, name, inputs, generated_at_ms)
}

fn views<'a>(data: &'a Dataset, rules: &'a Rules) -> (SideView<'a>, SideView<'a>) {
    (
        SideView {
            data: &data.legacy,
            sender: Sender::Legacy,
            policy: &rules.legacy,
        },
        SideView {
            data: &data.engine,
            sender: Sender::Engine,
            policy: &rules.engine,
        },
    )
}

fn finish(
    data: &Dataset,
    mut result: diff::DiffResult,
    rules: &Rules,
    name: &str,
    inputs: BTreeMap<String, String>,
    generated_at_ms: Option<i64>,
) -> Report {
    diff::diff_ingress(&data.ingress, rules, &mut result);
    let ingress_times: Vec<i64> = data.ingress.iter().map(|c| c.at).collect();
    report::build(
        name,
        result,
        data.unkeyed_exchanges,
        &ingress_times,
        data.secondary.is_some(),
        inputs,
        generated_at_ms,
    )
}

/// Where to read a comparison's inputs from.
#[derive(Debug, Clone, Default)]
pub struct CompareInput {
    /// The report's name.
    pub name: String,
    /// The capture store URL (egress and ingress exchanges).
    pub captures: Option<String>,
    /// The engine's database URL.
    pub engine_db: Option<String>,
    /// The legacy's database URL.
    pub legacy_db: Option<String>,
    /// The legacy state-transitions SQL (default: the fixture's query).
    pub legacy_query: Option<PathBuf>,
    /// A secrets file (TOML or JSON: URL → secret or [secrets]).
    pub secrets: Option<PathBuf>,
    /// A second legacy run's capture store, for learned noise.
    pub secondary_captures: Option<String>,
    /// A second legacy run's database, for learned noise.
    pub secondary_legacy_db: Option<String>,
    /// The rules.
    pub rules: Rules,
    /// Unix ms to stamp the report with.
    pub generated_at_ms: Option<i64>,
}

/// Diffs each (event, endpoint) as the capture store yields it, so memory
/// holds the databases' outcomes and states but never all exchanges.
async fn stream_compare(
    url: &str,
    mut data: Dataset,
    input: &CompareInput,
    inputs: BTreeMap<String, String>,
    progress: &mut impl FnMut(&str, u64),
) -> Result<Report, CompareError> {
    let mut legacy_h = std::mem::take(&mut data.legacy.histories);
    let mut engine_h = std::mem::take(&mut data.engine.histories);
    let rules = &input.rules;
    let (lv, ev) = views(&data, rules);
    let mut differ = diff::Differ::new(lv, ev, rules);
    let unkeyed = load::stream_captures(
        url,
        load::CaptureFilter::Both,
        |event_id, endpoint_url, group| {
            let key = (event_id, endpoint_url);
            let mut l = legacy_h.remove(&key);
            let mut r = engine_h.remove(&key);
            for (sender, n, ex) in group {
                let h = match sender {
                    Sender::Legacy => l.get_or_insert_with(Default::default),
                    Sender::Engine => r.get_or_insert_with(Default::default),
                };
                h.attempts.entry(n).or_default().exchange = Some(Box::new(ex));
            }
            differ.history(&key, l.as_ref(), r.as_ref());
        },
        |n| progress("captures", n),
    )
    .await?;
    // Deliveries the databases hold that never reached the egress.
    let rest: std::collections::BTreeSet<model::Key> =
        legacy_h.keys().chain(engine_h.keys()).cloned().collect();
    for key in rest {
        differ.history(&key, legacy_h.get(&key), engine_h.get(&key));
    }
    progress("comparing", 0);
    let result = differ.result;
    let mut data = data;
    data.unkeyed_exchanges = unkeyed;
    Ok(finish(
        &data,
        result,
        rules,
        &input.name,
        inputs,
        input.generated_at_ms,
    ))
}

/// Why a comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// An input could not be read.
    #[error(transparent)]
    Load(#[from] load::LoadError),
    /// Nothing to compare was given.
    #[error("nothing to compare: give a capture store and/or both senders' databases")]
    NoInput,
}

/// Loads every input and compares; `progress` gets (stage, rows read so far).
pub async fn run(
    input: &CompareInput,
    mut progress: impl FnMut(&str, u64),
) -> Result<Report, CompareError> {
    if input.captures.is_none() && (input.engine_db.is_none() || input.legacy_db.is_none()) {
        return Err(CompareError::NoInput);
    }
    let mut data = Dataset::default();
    let mut inputs = BTreeMap::new();
    let query = match &input.legacy_query {
        Some(p) => std::fs::read_to_string(p).map_err(|e| load::LoadError::File {
            path: p.display().to_string(),
            message: e.to_string(),
        })?,
        None => load::DEFAULT_LEGACY_QUERY.to_owned(),
    };
    // The databases first: outcomes and states are small and held in
    // memory; the capture store's exchanges are streamed past them below.
    // The two databases are independent: read them at the same time.
    if let Some(url) = &input.engine_db {
        inputs.insert("engine_db".into(), load::mask_url(url));
    }
    if let Some(url) = &input.legacy_db {
        inputs.insert("legacy_db".into(), load::mask_url(url));
    }
    if input.engine_db.is_some() || input.legacy_db.is_some() {
        progress("databases", 0);
    }
    let engine = async {
        match &input.engine_db {
            Some(url) => load::load_engine_db(url, &mut data.engine).await,
            None => Ok(()),
        }
    };
    let legacy = async {
        match &input.legacy_db {
            Some(url) => load::load_legacy_db(url, &query, &mut data.legacy).await,
            None => Ok(()),
        }
    };
    let (engine, legacy) = tokio::join!(engine, legacy);
    engine?;
    legacy?;
    if let Some(p) = &input.legacy_query {
        inputs.insert("legacy_query".into(), p.display().to_string());
    }
    if let Some(p) = &input.secrets {
        inputs.insert("secrets".into(), p.display().to_string());
        let secrets = load::load_secrets(p)?;
        // The file fills in endpoints a store has no secret for.
        for side in [&mut data.legacy, &mut data.engine] {
            for (url, list) in &secrets {
                side.secrets
                    .entry(url.clone())
                    .or_insert_with(|| list.clone());
            }
        }
    }
    let learned = input.secondary_captures.is_some() || input.secondary_legacy_db.is_some();
    if let Some(url) = &input.captures {
        inputs.insert("captures".into(), load::mask_url(url));
        data.ingress = load::load_ingress(url).await?;
        if !learned {
            progress("captures", 0);
            return stream_compare(url, data, input, inputs, &mut progress).await;
        }
        // Learned noise needs the primary run's legacy histories twice: load it all.
        data.unkeyed_exchanges = load::load_captures(
            url,
            load::CaptureFilter::Both,
            &mut data.legacy,
            &mut data.engine,
            |n| progress("captures", n),
        )
        .await?;
    }
    if learned {
        let mut second = SideData {
            secrets: data.legacy.secrets.clone(),
            ..SideData::default()
        };
        let mut unused = SideData::default();
        if let Some(url) = &input.secondary_captures {
            inputs.insert("secondary_captures".into(), load::mask_url(url));
            load::load_captures(
                url,
                load::CaptureFilter::LegacyOnly,
                &mut second,
                &mut unused,
                |n| progress("secondary captures", n),
            )
            .await?;
        }
        if let Some(url) = &input.secondary_legacy_db {
            inputs.insert("secondary_legacy_db".into(), load::mask_url(url));
            load::load_legacy_db(url, &query, &mut second).await?;
        }
        data.secondary = Some(second);
    }
    progress("comparing", 0);
    Ok(compare(
        &data,
        &input.rules,
        &input.name,
        inputs,
        input.generated_at_ms,
    ))
}
