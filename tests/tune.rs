//! `qscale tune`, black-box: on the bundled 30-minute traces its proposal,
//! merged into the config file and replayed by `qscale simulate`, meets the
//! age objective at fewer replica-seconds than the starting config and within
//! the action budget; the output is deterministic; a goal no candidate can
//! meet is one line; and the binary's exit codes and output shape.
//!
//! The simulator is the peer here (the same one `qscale simulate` runs), so
//! these tests need no broker.

use std::path::PathBuf;
use std::process::Command;

use qscale::config::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn qscale(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run qscale");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Merge `snippet` (a partial config: `[[scaler]]` with its `name` and the
/// keys to set) into the config text, as the report tells the user to.
fn merge(config: &str, snippet: &str) -> String {
    fn deep(into: &mut toml::Table, from: &toml::Table) {
        for (k, v) in from {
            match (into.get_mut(k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => deep(a, b),
                _ => {
                    into.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let mut doc: toml::Table = config.parse().expect("config parses as TOML");
    let patch: toml::Table = snippet.parse().expect("the snippet parses as TOML");
    let patch = patch["scaler"].as_array().expect("[[scaler]]")[0]
        .as_table()
        .expect("a table")
        .clone();
    let scalers = doc
        .get_mut("scaler")
        .and_then(|s| s.as_array_mut())
        .expect("[[scaler]]");
    let target = scalers
        .iter_mut()
        .filter_map(|s| s.as_table_mut())
        .find(|s| s.get("name") == patch.get("name"))
        .expect("the snippet names a scaler of the file");
    deep(target, &patch);
    toml::to_string(&doc).expect("serialize")
}

/// A scaler that keeps far too many workers around: a small backlog target,
/// no tolerance, and a five-minute wait before coming down.
const WASTEFUL: &str = r#"
[[scaler]]
name = "reports"
poll_interval = "15s"

[scaler.source]
kind = "sqs"
queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/reports"

[scaler.target]
kind = "kubernetes"
namespace = "default"
name = "reports"

[scaler.policy]
min_replicas = 3
max_replicas = 100
messages_per_replica = 5
max_message_age = "2m"
tolerance = 0

[scaler.policy.scale_down]
stabilization = "5m"
"#;

/// Tune, merge, check, replay: returns (tune's JSON, simulate's JSON of the
/// merged file).
fn tune_and_replay(config_text: &str, trace: &str) -> (serde_json::Value, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = dir.path().join("before.toml");
    std::fs::write(&before, config_text).expect("write");
    let b = before.to_str().expect("utf-8");
    let (code, out, err) = qscale(&[
        "tune",
        "--config",
        b,
        "--trace",
        trace,
        "--seconds-per-message",
        "2",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let tuned = json(&out);
    let snippet = tuned["snippet"].as_str().expect("snippet");
    let after = dir.path().join("after.toml");
    std::fs::write(&after, merge(config_text, snippet)).expect("write");
    Config::load(&after).unwrap_or_else(|e| panic!("merged config is invalid: {e}\n{snippet}"));
    let (code, out, err) = qscale(&[
        "simulate",
        "--config",
        after.to_str().expect("utf-8"),
        "--trace",
        trace,
        "--seconds-per-message",
        "2",
        "--compare",
        "hpa",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    (tuned, json(&out))
}

fn assert_cheaper_and_on_objective(tuned: &serde_json::Value, replayed: &serde_json::Value) {
    let q = &replayed["qscale"];
    assert_eq!(q["seconds_over_objective"], 0, "{replayed}");
    assert!(
        q["replica_seconds"].as_u64() < tuned["current"]["replica_seconds"].as_u64(),
        "proposal {} vs current {}",
        q["replica_seconds"],
        tuned["current"]["replica_seconds"]
    );
    // The default budget: twice the actions of the HPA given the starting
    // config's backlog target (the replay's HPA gets the proposal's).
    let hpa_actions = tuned["hpa"]["scale_actions"].as_u64().expect("hpa");
    assert_eq!(tuned["goal"]["max_actions"].as_u64(), Some(2 * hpa_actions));
    assert!(q["scale_actions"].as_u64() <= Some(2 * hpa_actions), "{q}");
    // What tune reported is what simulate replays.
    assert_eq!(&tuned["proposal"], q);
}

#[test]
fn the_out_of_the_box_config_tuned_on_a_flash_crowd_replays_cheaper_and_on_objective() {
    let text = std::fs::read_to_string(repo().join("config/out-of-the-box.toml")).expect("read");
    let (tuned, replayed) = tune_and_replay(&text, "traces/flash-crowd.csv");
    assert_cheaper_and_on_objective(&tuned, &replayed);
}

#[test]
fn a_wasteful_config_tuned_on_batches_replays_much_cheaper_and_on_objective() {
    let (tuned, replayed) = tune_and_replay(WASTEFUL, "traces/batch.csv");
    assert_cheaper_and_on_objective(&tuned, &replayed);
    let saved = tuned["current"]["replica_seconds"]
        .as_u64()
        .expect("current")
        - replayed["qscale"]["replica_seconds"]
            .as_u64()
            .expect("proposal");
    assert!(
        saved * 4
            > tuned["current"]["replica_seconds"]
                .as_u64()
                .expect("current"),
        "a policy this wasteful should lose over a quarter of its cost: {tuned}"
    );
    // Every change is explained by the run with it put back.
    for c in tuned["changes"].as_array().expect("changes") {
        assert_eq!(
            c["replica_seconds_saved"].as_i64(),
            Some(
                c["reverted"]["replica_seconds"].as_i64().expect("reverted")
                    - tuned["proposal"]["replica_seconds"].as_i64().expect("p")
            )
        );
    }
}

#[test]
fn the_same_arguments_give_the_same_proposal() {
    let args = [
        "tune",
        "--config",
        "config/out-of-the-box.toml",
        "--trace",
        "traces/ramp.csv",
        "--seconds-per-message",
        "2",
        "--seed",
        "7",
        "--output",
        "json",
    ];
    let strip = |out: &str| {
        let mut v = json(out);
        v.as_object_mut().expect("object").remove("search_seconds");
        v
    };
    let (c1, a, _) = qscale(&args);
    let (c2, b, _) = qscale(&args);
    assert_eq!((c1, c2), (0, 0));
    assert_eq!(strip(&a), strip(&b));
}

#[test]
fn a_goal_no_candidate_can_meet_is_one_line_and_exit_1() {
    // Three replicas of 2 s per message cannot keep a 20 msg/s crowd under
    // two minutes, whatever the knobs.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.toml");
    std::fs::write(
        &path,
        WASTEFUL.replace("max_replicas = 100", "max_replicas = 3"),
    )
    .expect("write");
    let (code, out, err) = qscale(&[
        "tune",
        "--config",
        path.to_str().expect("utf-8"),
        "--trace",
        "traces/flash-crowd.csv",
        "--seconds-per-message",
        "2",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: no policy tried meets the objective on this trace: the best had "),
        "{err}"
    );
    assert!(err.contains("raise max_replicas"), "{err}");
}

#[test]
fn the_text_report_has_the_table_the_explanations_the_snippet_and_the_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("tune.svg");
    let (code, out, err) = qscale(&[
        "tune",
        "--config",
        "config/out-of-the-box.toml",
        "--trace",
        "traces/flash-crowd.csv",
        "--seconds-per-message",
        "2",
        "--chart",
        svg.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    // Not a terminal: no progress line.
    assert!(err.is_empty(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0]
            .starts_with("scaler workers, trace flash-crowd.csv: at most 0 s over 2m, at most "),
        "{out}"
    );
    assert!(lines[1].starts_with("searched "), "{out}");
    let header: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(header, ["current", "proposal", "hpa"], "{out}");
    for row in [
        "seconds over objective (2m)",
        "replica-seconds",
        "scale actions",
        "message age p95 (s)",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
    assert!(
        out.contains("what each change bought (the proposal with that knob put back):"),
        "{out}"
    );
    let snippet = out
        .split_once("[[scaler]]")
        .map(|(_, s)| format!("[[scaler]]{}", s.split("# chart").next().unwrap_or(s)))
        .expect("a snippet");
    let text = std::fs::read_to_string(repo().join("config/out-of-the-box.toml")).expect("read");
    let merged = dir.path().join("merged.toml");
    std::fs::write(&merged, merge(&text, &snippet)).expect("write");
    Config::load(&merged).expect("the printed snippet merges into a valid config");
    let chart = std::fs::read_to_string(&svg).expect("chart written");
    assert!(
        chart.starts_with("<svg") || chart.starts_with("<?xml"),
        "{}",
        &chart[..80.min(chart.len())]
    );
    for label in ["(current)", "(proposal)", "(hpa)"] {
        assert!(chart.contains(label), "{label} missing from the chart");
    }
}

#[test]
fn the_time_budget_stops_the_search_and_reports_the_best_so_far() {
    // Each candidate on 6 h of a daily cycle takes a noticeable time in a
    // debug build; one second allows only a few.
    let (code, out, err) = qscale(&[
        "tune",
        "--config",
        "config/out-of-the-box.toml",
        "--trace",
        "traces/diurnal.csv",
        "--duration",
        "6h",
        "--seconds-per-message",
        "0.5",
        "--budget-seconds",
        "1",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["stopped_early"], true, "{out}");
    assert!(v["search_seconds"].as_f64() < Some(10.0), "{out}");
}

#[test]
fn bad_input_gives_the_documented_exit_codes() {
    let (code, _, err) = qscale(&[
        "tune",
        "--config",
        "config/out-of-the-box.toml",
        "--trace",
        "traces/flash-crowd.csv",
        "--action-budget",
        "twice",
    ]);
    assert_eq!(code, 2, "clap refuses a bad flag: {err}");
    assert!(err.contains("2x-hpa"), "{err}");
    let (code, _, err) = qscale(&[
        "tune",
        "--config",
        "config/out-of-the-box.toml",
        "--trace",
        "traces/flash-crowd.csv",
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--seconds-per-message"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        WASTEFUL.replace("max_replicas = 100", "max_replicas = 0"),
    )
    .expect("write");
    let (code, _, err) = qscale(&[
        "tune",
        "--config",
        bad.to_str().expect("utf-8"),
        "--trace",
        "traces/flash-crowd.csv",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("max_replicas"), "{err}");
}

#[test]
fn the_current_column_is_what_simulate_shows_for_the_unchanged_config() {
    // The search re-expresses the start with every knob explicit (defaults
    // written out, the [defaults] poll interval on the scaler); that must be
    // the same policy.
    for (config, trace) in [
        ("config/simulate-example.toml", "traces/burst.csv"),
        ("config/out-of-the-box.toml", "traces/diurnal-30m.csv"),
    ] {
        let common = [
            "--config",
            config,
            "--trace",
            trace,
            "--seconds-per-message",
            "1",
            "--output",
            "json",
        ];
        let (code, tuned, err) = qscale(&[&["tune"], &common[..]].concat());
        assert_eq!(code, 0, "{err}");
        let (code, simulated, err) =
            qscale(&[&["simulate", "--compare", "hpa"], &common[..]].concat());
        assert_eq!(code, 0, "{err}");
        let (tuned, simulated) = (json(&tuned), json(&simulated));
        assert_eq!(tuned["current"], simulated["qscale"], "{config}");
        assert_eq!(tuned["hpa"], simulated["hpa"], "{config}");
    }
}

#[test]
fn a_terminal_gets_a_progress_line_that_is_cleared_at_the_end() {
    // `script` (util-linux) gives the command a pseudo-terminal; stdout goes
    // to a file so only stderr's progress reaches the terminal.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.json");
    let cmd = format!(
        "{} tune --config config/out-of-the-box.toml --trace traces/diurnal.csv --duration 3h \
         --seconds-per-message 0.5 --output json > {}",
        env!("CARGO_BIN_EXE_qscale"),
        out.display()
    );
    let run = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(repo())
        .output()
        .expect("run script (util-linux)");
    assert!(run.status.success(), "{run:?}");
    let tty = String::from_utf8_lossy(&run.stdout);
    assert!(tty.starts_with("\rtune: "), "{tty:?}");
    assert!(tty.contains(" policies simulated, best "), "{tty:?}");
    // The last thing on the terminal blanks the line and returns to its
    // start, so the shell prompt is not left after a stale count.
    assert!(tty.ends_with(&format!("\r{:70}\r", "")), "{tty:?}");
    // The report itself is untouched by the progress line.
    json(&std::fs::read_to_string(&out).expect("report"));
}

#[test]
fn a_scaler_with_several_queues_is_refused_with_one_line_saying_what_to_do() {
    let (code, out, err) = qscale(&[
        "tune",
        "--config",
        "config/rabbitmq-inference-dlq.toml",
        "--trace",
        "constant:rate=1",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("drains several queues (sources), and the simulator models one queue")
            && err.contains("as its [scaler.source]"),
        "{err}"
    );
}
