//! index.html in a real browser: headless Chromium (Debian's `chromium`)
//! loads the page, the counts must render, the filter script must have run
//! (it writes "N shown"), and nothing may reach the console as an error.
//! Skips with a notice when chromium is absent, unless CI=true.

use std::collections::BTreeMap;
use std::process::Command;

use comparator::model::{Dataset, Exchange, History, SideData};
use comparator::Rules;

fn chromium() -> Option<&'static str> {
    for bin in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(bin);
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but chromium is not installed: the HTML report test must run in CI");
    }
    eprintln!("notice: chromium is not installed; skipping the HTML report test");
    None
}

fn ex(body: &str, at: i64, header: (&str, &str)) -> Exchange {
    Exchange {
        http_version: "HTTP/1.1".into(),
        request_headers: vec![
            ("Content-Type".into(), "application/json".into()),
            (header.0.into(), header.1.into()),
        ],
        request_body: body.as_bytes().to_vec(),
        response_status: Some(200),
        latency_us: 1000,
        started_at: at,
        ..Exchange::default()
    }
}

/// Ten events over ten minutes: two payload divergences (one with `<script>` in it), one header.
fn dataset() -> Dataset {
    let mut d = Dataset::default();
    let t0 = 1_700_000_000_000;
    for i in 0..10 {
        let at = t0 + i * 60_000;
        let (lb, eb) = match i {
            2 => (
                r#"{"a":"\u003cscript\u003ealert(1)\u003c/script\u003e"}"#,
                r#"{"a":"<script>alert(1)</script>"}"#,
            ),
            7 => (r#"{"a":1}"#, r#"{"a":2}"#),
            _ => (r#"{"a":1}"#, r#"{"a":1}"#),
        };
        let url = if i % 2 == 0 {
            "https://a.example/hook"
        } else {
            "https://b.example/hook"
        };
        let eh = if i == 5 {
            ("X-Extra", "2")
        } else {
            ("X-Extra", "1")
        };
        for (side, body, h) in [
            (&mut d.legacy, lb, ("X-Extra", "1")),
            (&mut d.engine, eb, eh),
        ] {
            let side: &mut SideData = side;
            let mut h1 = History::default();
            h1.attempts.entry(1).or_default().exchange = Some(Box::new(ex(body, at, h)));
            side.histories.insert((format!("evt_{i}"), url.into()), h1);
        }
    }
    d
}

#[test]
fn index_html_renders_counts_without_console_errors() {
    let Some(bin) = chromium() else { return };
    let report = comparator::compare(
        &dataset(),
        &Rules::default(),
        "html-test",
        BTreeMap::new(),
        None,
    );
    assert_eq!(report.counts["payload"], 2);
    assert_eq!(report.counts["header"], 1);
    let dir = tempfile::tempdir().unwrap();
    let paths = comparator::write_reports(&report, dir.path()).unwrap();
    let html = std::fs::read_to_string(&paths.html).unwrap();
    assert!(!html.contains("<script>alert"), "evidence must be escaped");
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "no external assets"
    );

    let profile = dir.path().join("chrome-profile");
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &format!("file://{}", paths.html.display()),
        ])
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    assert!(
        dom.contains(r#"id="count-payload">2<"#),
        "payload count not rendered:\n{dom}"
    );
    assert!(
        dom.contains(r#"id="count-header">1<"#),
        "header count not rendered"
    );
    assert!(
        dom.contains(r#"id="n-pairs">10<"#),
        "pair count not rendered"
    );
    assert!(
        dom.contains(r#"<span id="f-shown">3 shown</span>"#),
        "the filter script did not run:\n{dom}"
    );
    assert!(
        dom.contains(r#"<div id="errors"></div>"#),
        "the page reported a script error:\n{dom}"
    );
    assert!(dom.contains("<svg id=\"chart\""), "no chart");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:#?}"
    );
}

/// The page's sections open with the most severe divergences: here the
/// payload whose meaning changed (critical) comes before the header value
/// (major), and both before the empty signature section, although the
/// usual category order is signature, header, payload.
#[test]
fn sections_are_ordered_by_severity() {
    let report = comparator::compare(
        &dataset(),
        &Rules::default(),
        "order-test",
        BTreeMap::new(),
        None,
    );
    let html = comparator::report::html(&report);
    let at = |c: &str| {
        html.find(&format!(r#"<section class="cat" id="cat-{c}""#))
            .unwrap_or_else(|| panic!("no section for {c}"))
    };
    assert!(
        at("payload") < at("header"),
        "the critical payload section must come first"
    );
    assert!(at("header") < at("signature"), "empty sections come last");
}
