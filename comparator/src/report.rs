//! The divergence report: one [`Report`] value (schema in REPORT-SCHEMA.md),
//! written as `report.json`, `report.md` (for a pull-request comment) and
//! `index.html` (one self-contained page: inline CSS, JS and SVG, no
//! external assets). Rendering is pure string building; [`write_reports`]
//! is the only function here that touches the file system.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diff::{Category, DiffResult, Divergence, Severity, Suppressed};

/// The version of the report.json schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// The overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No divergence left after noise rules.
    Pass,
    /// Only minor divergences.
    Warn,
    /// At least one major or critical divergence.
    Fail,
}

impl Verdict {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// The time the compared traffic spans.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Earliest exchange or call, unix ms.
    pub start_ms: Option<i64>,
    /// Latest, unix ms.
    pub end_ms: Option<i64>,
    /// end - start in seconds (0 without data).
    pub duration_s: f64,
}

/// How much was compared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// (event, URL, attempt) keys where both senders' exchanges were captured.
    pub attempt_pairs: u64,
    /// Attempts seen on either side.
    pub attempts: u64,
    /// (event, endpoint) histories.
    pub histories: u64,
    /// Ingress calls compared.
    pub ingress_calls: u64,
    /// Egress exchanges without an event id (not comparable).
    pub unkeyed_exchanges: u64,
}

/// Health figures the gate can budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Ingress calls whose shadow answer was dropped or failed.
    pub shadow_dropped: u64,
    /// shadow_dropped / ingress calls seen.
    pub shadow_drop_rate: f64,
    /// Attempts one side made and the other did not (missing + extra at attempt level).
    pub unpaired_attempts: u64,
    /// unpaired_attempts / attempts.
    pub unpaired_rate: f64,
}

/// One bucket of the divergence-rate timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Bucket start, unix ms.
    pub start_ms: i64,
    /// Bucket end (exclusive), unix ms.
    pub end_ms: i64,
    /// Attempt pairs that started in the bucket.
    pub pairs: u64,
    /// Of those, pairs with at least one divergence.
    pub divergent: u64,
}

/// A comparison's result; serialised as report.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The report's name (its folder under reports/).
    pub name: String,
    /// Unix ms when the report was made.
    pub generated_at_ms: Option<i64>,
    /// pass, warn or fail.
    pub verdict: Verdict,
    /// Why, in one sentence.
    pub verdict_reason: String,
    /// What was read (URLs without passwords, file paths).
    pub inputs: BTreeMap<String, String>,
    /// The time the traffic spans.
    pub window: Window,
    /// Sample counts.
    pub samples: Samples,
    /// Divergences per category (every category present, zeros included).
    pub counts: BTreeMap<String, u64>,
    /// counts / the category's denominator (attempt pairs, histories or ingress calls).
    pub rates: BTreeMap<String, f64>,
    /// Divergences per severity.
    pub severities: BTreeMap<String, u64>,
    /// Health figures.
    pub health: Health,
    /// Whether a second legacy run was used to learn noise.
    pub learned_noise: bool,
    /// Suppressed differences by rule, category and field.
    pub suppressed: Vec<Suppressed>,
    /// Total suppressed.
    pub suppressed_total: u64,
    /// Checks that could not run, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Divergence rate over time.
    pub timeline: Vec<Bucket>,
    /// Every divergence, most severe first, then by key.
    pub divergences: Vec<Divergence>,
}

/// Builds the report from a diff result.
pub fn build(
    name: &str,
    mut result: DiffResult,
    unkeyed_exchanges: u64,
    ingress_times: &[i64],
    learned_noise: bool,
    inputs: BTreeMap<String, String>,
    generated_at_ms: Option<i64>,
) -> Report {
    result.divergences.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.category.cmp(&b.category))
            .then(a.key.cmp(&b.key))
    });
    let mut counts: BTreeMap<String, u64> = Category::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), 0))
        .collect();
    let mut severities: BTreeMap<String, u64> = ["critical", "major", "minor"]
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    let mut unpaired = 0;
    for d in &result.divergences {
        *counts.entry(d.category.as_str().to_owned()).or_default() += 1;
        let sev = match d.severity {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
        };
        *severities.entry(sev.to_owned()).or_default() += 1;
        if matches!(d.category, Category::Missing | Category::Extra) && d.key.attempt.is_some() {
            unpaired += 1;
        }
    }
    let rate = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let rates = Category::ALL
        .iter()
        .map(|c| {
            let denom = if c.per_pair() {
                result.attempt_pairs
            } else if *c == Category::ApiResponse {
                result.ingress_calls
            } else {
                result.histories
            };
            (c.as_str().to_owned(), rate(counts[c.as_str()], denom))
        })
        .collect();
    let times = result
        .pair_times
        .iter()
        .map(|(t, _)| *t)
        .chain(ingress_times.iter().copied())
        .chain(result.divergences.iter().filter_map(|d| d.at));
    let (start, end) = times.fold((None, None), |(lo, hi): (Option<i64>, Option<i64>), t| {
        (
            Some(lo.map_or(t, |x| x.min(t))),
            Some(hi.map_or(t, |x| x.max(t))),
        )
    });
    let window = Window {
        start_ms: start,
        end_ms: end,
        duration_s: match (start, end) {
            (Some(a), Some(b)) => (b - a) as f64 / 1000.0,
            _ => 0.0,
        },
    };
    let timeline = timeline(&result.pair_times, start, end, 24);
    let shadow_dropped = result
        .skipped
        .get("api: shadow answer dropped or failed")
        .copied()
        .unwrap_or(0);
    let health = Health {
        shadow_dropped,
        shadow_drop_rate: rate(shadow_dropped, result.ingress_calls),
        unpaired_attempts: unpaired,
        unpaired_rate: rate(unpaired, result.attempts),
    };
    let serious = severities["critical"] + severities["major"];
    let (verdict, verdict_reason) = if serious > 0 {
        (
            Verdict::Fail,
            format!(
                "{} critical and {} major divergences",
                severities["critical"], severities["major"]
            ),
        )
    } else if severities["minor"] > 0 {
        (
            Verdict::Warn,
            format!("{} minor divergences only", severities["minor"]),
        )
    } else {
        (
            Verdict::Pass,
            format!(
                "no divergence in {} attempt pairs and {} histories",
                result.attempt_pairs, result.histories
            ),
        )
    };
    let suppressed: Vec<Suppressed> = result.suppressed.into_values().collect();
    Report {
        schema_version: SCHEMA_VERSION,
        name: name.to_owned(),
        generated_at_ms,
        verdict,
        verdict_reason,
        inputs,
        window,
        samples: Samples {
            attempt_pairs: result.attempt_pairs,
            attempts: result.attempts,
            histories: result.histories,
            ingress_calls: result.ingress_calls,
            unkeyed_exchanges,
        },
        counts,
        rates,
        severities,
        health,
        learned_noise,
        suppressed_total: suppressed.iter().map(|s| s.count).sum(),
        suppressed,
        skipped: result.skipped,
        timeline,
        divergences: result.divergences,
    }
}

fn timeline(pairs: &[(i64, bool)], start: Option<i64>, end: Option<i64>, n: i64) -> Vec<Bucket> {
    let (Some(start), Some(end)) = (start, end) else {
        return Vec::new();
    };
    if pairs.is_empty() {
        return Vec::new();
    }
    let width = ((end - start) / n + 1).max(1);
    let mut buckets: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            start_ms: start + i * width,
            end_ms: start + (i + 1) * width,
            pairs: 0,
            divergent: 0,
        })
        .collect();
    for &(t, div) in pairs {
        let i = ((t - start) / width).clamp(0, n - 1) as usize;
        buckets[i].pairs += 1;
        if div {
            buckets[i].divergent += 1;
        }
    }
    buckets
}

/// Where [`write_reports`] put the files.
#[derive(Debug, Clone)]
pub struct ReportPaths {
    /// report.json.
    pub json: PathBuf,
    /// report.md.
    pub markdown: PathBuf,
    /// index.html.
    pub html: PathBuf,
}

/// Writes report.json, report.md and index.html into `dir` (created if missing).
pub fn write_reports(report: &Report, dir: &Path) -> std::io::Result<ReportPaths> {
    std::fs::create_dir_all(dir)?;
    let paths = ReportPaths {
        json: dir.join("report.json"),
        markdown: dir.join("report.md"),
        html: dir.join("index.html"),
    };
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&paths.json, json)?;
    std::fs::write(&paths.markdown, markdown(report))?;
    std::fs::write(&paths.html, html(report))?;
    Ok(paths)
}

fn pct(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

/// The Markdown summary for a pull-request comment.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let icon = match r.verdict {
        Verdict::Pass => "✅",
        Verdict::Warn => "⚠️",
        Verdict::Fail => "❌",
    };
    let _ = writeln!(
        s,
        "## hookshift compare: {icon} {} — {}\n",
        r.verdict.as_str().to_uppercase(),
        r.verdict_reason
    );
    let _ = writeln!(
        s,
        "Report `{}`: {} attempt pairs, {} attempts, {} histories, {} ingress calls over {:.0} s. {} differences suppressed by noise rules{}.\n",
        r.name,
        r.samples.attempt_pairs,
        r.samples.attempts,
        r.samples.histories,
        r.samples.ingress_calls,
        r.window.duration_s,
        r.suppressed_total,
        if r.learned_noise { " (learned noise on)" } else { "" }
    );
    let _ = writeln!(s, "| category | divergences | rate |\n|---|---:|---:|");
    for c in Category::ALL {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            c.as_str(),
            r.counts.get(c.as_str()).unwrap_or(&0),
            pct(*r.rates.get(c.as_str()).unwrap_or(&0.0))
        );
    }
    if !r.divergences.is_empty() {
        let _ = writeln!(s, "\n### Top divergences\n");
        for d in r.divergences.iter().take(20) {
            let _ = writeln!(
                s,
                "- **{}** `{}` {} → {}{}: {} _(rule `{}`)_",
                sev(d.severity),
                d.category.as_str(),
                d.key.event_id,
                d.key.endpoint_url,
                d.key.attempt.map(|a| format!(" #{a}")).unwrap_or_default(),
                d.summary.replace('|', "\\|"),
                d.rule
            );
        }
        if r.divergences.len() > 20 {
            let _ = writeln!(
                s,
                "\n…and {} more in report.json / index.html.",
                r.divergences.len() - 20
            );
        }
    }
    if !r.suppressed.is_empty() {
        let _ = writeln!(s, "\n<details><summary>Suppressed by noise rules</summary>\n\n| rule | category | field | count |\n|---|---|---|---:|");
        for x in &r.suppressed {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                x.rule,
                x.category.as_str(),
                x.field,
                x.count
            );
        }
        let _ = writeln!(s, "\n</details>");
    }
    s
}

fn sev(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Major => "major",
        Severity::Minor => "minor",
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// How many divergences per category the HTML shows; the rest are in report.json.
const HTML_PER_CATEGORY: usize = 200;

/// The self-contained HTML page.
pub fn html(r: &Report) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let verdict = r.verdict.as_str();
    let _ = write!(
        s,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>hookshift compare: {name}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}}
header{{padding:16px 24px;color:#fff}} header.pass{{background:#1f7a3d}} header.warn{{background:#a86a00}} header.fail{{background:#b3261e}}
header h1{{margin:0 0 4px;font-size:22px}} main{{padding:16px 24px;max-width:1300px}}
table{{border-collapse:collapse;background:#fff}} td,th{{border:1px solid #d8dce3;padding:4px 10px;text-align:left}} td.n{{text-align:right;font-variant-numeric:tabular-nums}}
.cards{{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}} .card{{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:8px 14px}} .card b{{display:block;font-size:20px}}
section{{margin-top:22px}} .div{{background:#fff;border:1px solid #d8dce3;border-left:5px solid #999;border-radius:4px;margin:8px 0;padding:8px 12px}}
.div.critical{{border-left-color:#b3261e}} .div.major{{border-left-color:#d97706}} .div.minor{{border-left-color:#6b7280}}
.sides{{display:grid;grid-template-columns:1fr 1fr;gap:8px}} pre{{background:#f1f3f6;padding:6px 8px;overflow:auto;max-height:320px;margin:4px 0;font-size:12px}}
.diff .add{{color:#1f7a3d}} .diff .del{{color:#b3261e}} .meta{{color:#555;font-size:12px}} .hidden{{display:none}} #errors{{color:#b3261e}}
</style></head><body>
<header class="{verdict}"><h1>hookshift compare: <span id="verdict">{verdict_up}</span></h1><div id="verdict-reason">{reason}</div></header>
<main>
<div id="errors"></div>
<div class="cards">
<div class="card"><b id="n-pairs">{pairs}</b>attempt pairs</div>
<div class="card"><b id="n-histories">{histories}</b>histories</div>
<div class="card"><b id="n-divergences">{ndiv}</b>divergences</div>
<div class="card"><b id="n-suppressed">{nsup}</b>suppressed as noise</div>
<div class="card"><b>{dur:.0} s</b>window</div>
</div>
<table id="counts"><tr><th>category</th><th>divergences</th><th>rate</th></tr>
"#,
        name = esc(&r.name),
        verdict_up = verdict.to_uppercase(),
        reason = esc(&r.verdict_reason),
        pairs = r.samples.attempt_pairs,
        histories = r.samples.histories,
        ndiv = r.divergences.len(),
        nsup = r.suppressed_total,
        dur = r.window.duration_s,
    );
    for c in Category::ALL {
        let _ = writeln!(
            s,
            r##"<tr><td><a href="#cat-{c}">{c}</a></td><td class="n" id="count-{c}">{n}</td><td class="n">{rate}</td></tr>"##,
            c = c.as_str(),
            n = r.counts.get(c.as_str()).unwrap_or(&0),
            rate = pct(*r.rates.get(c.as_str()).unwrap_or(&0.0))
        );
    }
    s.push_str("</table>\n<section><h2>Divergence rate over time</h2>\n");
    s.push_str(&chart(&r.timeline));
    s.push_str("</section>\n");

    // Filters.
    let mut endpoints: Vec<&str> = r
        .divergences
        .iter()
        .map(|d| d.key.endpoint_url.as_str())
        .collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    s.push_str("<section><h2>Divergences</h2><label>category <select id=\"f-cat\"><option value=\"\">all</option>");
    for c in Category::ALL {
        let _ = write!(s, "<option>{}</option>", c.as_str());
    }
    s.push_str(
        "</select></label> <label>endpoint <select id=\"f-ep\"><option value=\"\">all</option>",
    );
    for e in &endpoints {
        let _ = write!(s, "<option>{}</option>", esc(e));
    }
    s.push_str("</select></label> <span id=\"f-shown\"></span></section>\n");

    // Sections with the most severe divergences come first (critical before
    // major before minor; ties keep the usual category order), so a reviewer
    // meets a lost or wrongly recorded delivery before a header difference.
    let mut order = Category::ALL;
    order.sort_by_key(|c| {
        std::cmp::Reverse(
            r.divergences
                .iter()
                .filter(|d| d.category == *c)
                .map(|d| d.severity)
                .max(),
        )
    });
    for c in order {
        let items: Vec<&Divergence> = r.divergences.iter().filter(|d| d.category == c).collect();
        let _ = writeln!(
            s,
            r#"<section class="cat" id="cat-{c}" data-category="{c}"><h3>{c} ({n})</h3>"#,
            c = c.as_str(),
            n = items.len()
        );
        if items.is_empty() {
            s.push_str("<p class=\"meta\">none</p>");
        }
        for d in items.iter().take(HTML_PER_CATEGORY) {
            let _ = write!(
                s,
                r#"<div class="div {sev}" data-category="{c}" data-endpoint="{ep}"><div><b>{sev}</b> · {summary}</div><div class="meta">event {ev} · {epx}{att} · field {field} · rule <code>{rule}</code></div><div class="sides"><div><div class="meta">legacy</div><pre>{l}</pre></div><div><div class="meta">engine</div><pre>{e}</pre></div></div>"#,
                sev = sev(d.severity),
                c = c.as_str(),
                ep = esc(&d.key.endpoint_url),
                summary = esc(&d.summary),
                ev = esc(&d.key.event_id),
                epx = esc(&d.key.endpoint_url),
                att = d
                    .key
                    .attempt
                    .map(|a| format!(" · attempt {a}"))
                    .unwrap_or_default(),
                field = esc(&d.field),
                rule = esc(&d.rule),
                l = esc(&serde_json::to_string_pretty(&d.legacy).unwrap_or_default()),
                e = esc(&serde_json::to_string_pretty(&d.engine).unwrap_or_default()),
            );
            if let Some(diff) = &d.diff {
                s.push_str("<pre class=\"diff\">");
                for line in diff.lines() {
                    let class = if line.starts_with('+') && !line.starts_with("+++") {
                        "add"
                    } else if line.starts_with('-') && !line.starts_with("---") {
                        "del"
                    } else {
                        ""
                    };
                    let _ = writeln!(s, "<span class=\"{class}\">{}</span>", esc(line));
                }
                s.push_str("</pre>");
            }
            s.push_str("</div>\n");
        }
        if items.len() > HTML_PER_CATEGORY {
            let _ = writeln!(
                s,
                "<p class=\"meta\">{} more in report.json</p>",
                items.len() - HTML_PER_CATEGORY
            );
        }
        s.push_str("</section>\n");
    }

    s.push_str("<section><h2>Suppressed by noise rules</h2><table id=\"suppressed\"><tr><th>rule</th><th>category</th><th>field</th><th>count</th><th>example</th></tr>\n");
    for x in &r.suppressed {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{} → {}</td></tr>",
            esc(&x.rule),
            x.category.as_str(),
            esc(&x.field),
            x.count,
            esc(&x.example.event_id),
            esc(&x.example.endpoint_url)
        );
    }
    s.push_str("</table></section>\n");
    if !r.skipped.is_empty() {
        s.push_str("<section><h2>Checks skipped</h2><ul>");
        for (k, v) in &r.skipped {
            let _ = write!(s, "<li>{}: {v}</li>", esc(k));
        }
        s.push_str("</ul></section>\n");
    }
    s.push_str(
        r#"</main>
<script>
window.addEventListener('error', function (e) {
  document.getElementById('errors').textContent += 'script error: ' + e.message + '\n';
});
(function () {
  var cat = document.getElementById('f-cat'), ep = document.getElementById('f-ep');
  function apply() {
    var shown = 0;
    document.querySelectorAll('.div').forEach(function (d) {
      var ok = (!cat.value || d.dataset.category === cat.value) && (!ep.value || d.dataset.endpoint === ep.value);
      d.classList.toggle('hidden', !ok);
      if (ok) shown++;
    });
    document.querySelectorAll('section.cat').forEach(function (s) {
      s.classList.toggle('hidden', !!cat.value && s.dataset.category !== cat.value);
    });
    document.getElementById('f-shown').textContent = shown + ' shown';
  }
  cat.addEventListener('change', apply);
  ep.addEventListener('change', apply);
  apply();
})();
</script>
</body></html>
"#,
    );
    s
}

/// An inline SVG chart of the divergence rate per timeline bucket.
fn chart(buckets: &[Bucket]) -> String {
    if buckets.is_empty() {
        return "<p class=\"meta\" id=\"chart-empty\">no attempt pairs to chart</p>".into();
    }
    let (w, h, pad) = (720.0, 180.0, 30.0);
    let n = buckets.len() as f64;
    let bw = (w - 2.0 * pad) / n;
    let mut s = format!(
        r##"<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="divergence rate over time"><rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>"##
    );
    let _ = write!(
        s,
        r##"<line x1="{pad}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#888"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{y0}" stroke="#888"/><text x="2" y="{pad}" font-size="10">100%</text><text x="10" y="{y0}" font-size="10">0%</text>"##,
        y0 = h - pad,
        x1 = w - pad
    );
    let mut points = Vec::new();
    for (i, b) in buckets.iter().enumerate() {
        let rate = if b.pairs == 0 {
            0.0
        } else {
            b.divergent as f64 / b.pairs as f64
        };
        let x = pad + i as f64 * bw;
        let bh = rate * (h - 2.0 * pad);
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{bw1:.1}" height="{bh:.1}" fill="#e8a39e"><title>{pairs} pairs, {div} divergent ({r:.1}%)</title></rect>"##,
            y = h - pad - bh,
            bw1 = (bw - 1.0).max(0.5),
            pairs = b.pairs,
            div = b.divergent,
            r = rate * 100.0
        );
        points.push(format!("{:.1},{:.1}", x + bw / 2.0, h - pad - bh));
    }
    let _ = write!(
        s,
        r##"<polyline fill="none" stroke="#b3261e" stroke-width="1.5" points="{}"/></svg>"##,
        points.join(" ")
    );
    s
}
