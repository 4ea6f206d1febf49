//! The daemon's own timeline as a person sees it: the real `qscale run`
//! binary on three demo scalers, its HTML index page and SVG charts loaded
//! by a real headless Chromium (Debian's `chromium`, installed by
//! scripts/chromium.sh), and its history JSON read back.
//!
//! A browser, not string checks on the markup, decides whether the page
//! parses into a table with a row per scaler and whether the chart is an
//! SVG document with the backlog, age and replica lines. Without Chromium
//! the test says so loudly and passes, unless `CI` is set: then it fails.

#[path = "support/daemon.rs"]
mod daemon;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{Daemon, free_port, get};

use qscale::chart::hex;
use qscale::timeline::chart::LINES;

const SCALERS: [&str; 3] = ["orders", "emails", "reports/nightly"];

fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = get(addr, path).unwrap_or_else(|| panic!("GET {path} answers"));
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

/// Chromium to test with: `QSCALE_TEST_CHROMIUM`, else /usr/bin/chromium.
/// `None` (the test skips) only outside CI.
fn chromium() -> Option<PathBuf> {
    let bin = std::env::var_os("QSCALE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if bin.exists() {
        return Some(bin);
    }
    let msg = format!(
        "Chromium not found at {}: run `source scripts/chromium.sh; ensure_chromium` \
         (or set QSCALE_TEST_CHROMIUM)",
        bin.display()
    );
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("{msg}");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    None
}

/// Run headless Chromium with `args`, bounded; its stdout.
fn run_chromium(bin: &Path, profile: &Path, args: &[&str]) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = String::new();
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium {args:?} did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("reader")
}

fn config(addr: SocketAddr) -> String {
    let mut c = format!("[server]\nlisten = \"{addr}\"\n\n[defaults]\npoll_interval = \"200ms\"\n");
    for (i, name) in SCALERS.iter().enumerate() {
        c.push_str(&format!(
            r#"
[[scaler]]
name = "{name}"
[scaler.source]
kind = "demo"
queue = "q{i}"
pattern = "burst:base=5,size=150,at=1s,every=4s,noise=poisson,seed={i}"
[scaler.target]
kind = "demo"
queue = "q{i}"
seconds_per_message = 0.5
startup_delay = "1s"
initial_replicas = 1
[scaler.policy]
min_replicas = 1
max_replicas = 20
messages_per_replica = 10
max_message_age = "5s"
[scaler.policy.scale_down]
stabilization = "2s"
"#
        ));
    }
    c
}

/// Points of the 2 px polylines of `colour` in an SVG document, per line.
fn line_points(svg: &str, colour: &str) -> Vec<usize> {
    let stroke = format!("stroke=\"{colour}\" stroke-width=\"2\"");
    svg.split("<polyline")
        .skip(1)
        .filter(|el| {
            el.split('>')
                .next()
                .is_some_and(|tag| tag.contains(&stroke))
        })
        .filter_map(|el| {
            let pts = el.split("points=\"").nth(1)?.split('"').next()?;
            Some(pts.split_whitespace().count())
        })
        .collect()
}

#[test]
fn the_index_page_and_charts_render_in_a_real_browser_with_every_scaler_and_series() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let cfg = dir.path().join("qscale.toml");
    std::fs::write(&cfg, config(addr)).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qscale"));
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let _daemon = Daemon::spawn(cmd, addr, None);

    // Wait until every scaler has a few seconds of history and has scaled.
    let start = Instant::now();
    loop {
        let ready = SCALERS.iter().all(|name| {
            get(addr, &format!("/status/{name}/history"))
                .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
                .is_some_and(|h| {
                    h["points"].as_array().is_some_and(|p| p.len() >= 20)
                        && h["events"].as_array().is_some_and(|e| !e.is_empty())
                })
        });
        if ready {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the scalers did not build a history with a scale event within 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The history: ordered points with the sample's and the decision's values.
    for name in SCALERS {
        let (status, h) = get_json(addr, &format!("/status/{name}/history"));
        assert_eq!(status, 200);
        assert_eq!(h["scaler"], name);
        let points = h["points"].as_array().expect("points");
        let times: Vec<f64> = points.iter().filter_map(|p| p["at"].as_f64()).collect();
        assert_eq!(times.len(), points.len());
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert!(
            points.iter().any(|p| p["backlog"].as_u64() > Some(0)),
            "{h}"
        );
        assert!(
            points
                .iter()
                .all(|p| p["desired"].is_u64() && p["ready"].is_u64())
        );
        assert!(
            points.iter().any(|p| p["oldest_age_seconds"].is_f64()),
            "{h}"
        );
        let event = &h["events"][0];
        assert_eq!(event["acted"], true, "{event}");
        assert!(
            !event["reason"].as_str().unwrap_or("").is_empty(),
            "{event}"
        );
    }
    let (status, body) = get_json(addr, "/status/nope/history");
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no scaler named \"nope\"");
    assert_eq!(get(addr, "/chart/nope.svg").map(|r| r.0), Some(404));

    let profile = dir.path().join("chromium-profile");

    // The index page, as the browser parsed it.
    let dom = run_chromium(
        &chromium,
        &profile,
        &["--dump-dom", &format!("http://{addr}/")],
    );
    assert!(dom.contains("<table id=\"scalers\">"), "{dom}");
    for name in SCALERS {
        assert!(
            dom.contains(&format!("<tr data-scaler=\"{name}\">")),
            "{name}: {dom}"
        );
        assert!(dom.contains(&format!("<h2>{name}</h2>")), "{name}: {dom}");
        assert!(
            dom.contains(&format!("<img src=\"chart/{name}.svg\"")),
            "{name}: {dom}"
        );
        assert!(
            dom.contains(&format!("href=\"status/{name}/history\"")),
            "{name}: {dom}"
        );
    }
    assert!(
        dom.contains("signal: "),
        "the last decision's reasons are shown: {dom}"
    );

    // Each chart, as the browser parsed it: every series is a line with points.
    for name in SCALERS {
        let svg = run_chromium(
            &chromium,
            &profile,
            &["--dump-dom", &format!("http://{addr}/chart/{name}.svg")],
        );
        assert!(svg.contains("<svg"), "{name}: {svg}");
        for (label, colour) in LINES {
            assert!(svg.contains(label), "{name}: no {label} legend");
            let lines = line_points(&svg, &hex(colour));
            assert!(
                lines.iter().any(|&n| n >= 10),
                "{name}: the {label} line has too few points: {lines:?}"
            );
        }
    }

    // And drawn: a screenshot of a chart holds far more than a blank page.
    let shot = |url: &str, file: &str| -> u64 {
        let png = dir.path().join(file);
        run_chromium(
            &chromium,
            &profile,
            &[
                &format!("--screenshot={}", png.display()),
                "--window-size=900,720",
                url,
            ],
        );
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{file} is a PNG");
        bytes.len() as u64
    };
    let blank = shot("about:blank", "blank.png");
    let chart = shot(
        &format!("http://{addr}/chart/{}.svg", SCALERS[0]),
        "chart.png",
    );
    eprintln!("screenshots: blank page {blank} bytes, chart {chart} bytes");
    assert!(
        chart > 5 * blank,
        "chart {chart} bytes vs blank {blank} bytes"
    );
}
