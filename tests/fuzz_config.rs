//! Property-driven fuzzing of config parsing: arbitrary text, and mutations
//! of the real example files, never panic and never hang; every rejection
//! is a typed error with a bounded label and at least one line of text.

use std::path::Path;

use proptest::prelude::*;
use qscale::config::Config;

const LABELS: &[&str] = &[
    "unreadable",
    "unknown_format",
    "empty",
    "parse",
    "too_large",
    "yaml_alias",
    "invalid",
];

fn examples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("config/") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) == Some("toml") {
            out.push(std::fs::read_to_string(p).expect("readable"));
        }
    }
    out
}

fn check(text: &str, ext: &str) {
    let path = format!("fuzz.{ext}");
    match Config::from_str_with_env(text, Path::new(&path), Vec::new()) {
        Ok(cfg) => assert!(cfg.validate().is_ok()),
        Err(e) => {
            assert!(LABELS.contains(&e.metric_label()), "{}", e.metric_label());
            let lines = e.lines();
            assert!(!lines.is_empty() && lines.iter().all(|l| !l.trim().is_empty()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}", yaml in any::<bool>()) {
        check(&text, if yaml { "yaml" } else { "toml" });
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..16,
        cut in 0usize..4000,
        insert in "[\\[\\]{}=\"',:\\-0-9a-z_. \\n]{0,12}",
        delete in 0usize..20,
    ) {
        let ex = examples();
        let base = &ex[which % ex.len()];
        let mut chars: Vec<char> = base.chars().collect();
        let at = cut % (chars.len() + 1);
        let end = (at + delete).min(chars.len());
        chars.splice(at..end, insert.chars());
        let text: String = chars.into_iter().collect();
        check(&text, "toml");
    }

    #[test]
    fn numbers_at_the_edges_are_rejected_or_accepted_cleanly(
        min in prop_oneof![Just(i64::MIN), Just(-1i64), Just(0i64), Just(1i64), Just(u32::MAX as i64), Just(u32::MAX as i64 + 1), Just(i64::MAX)],
        max in prop_oneof![Just(-1i64), Just(0i64), Just(3i64), Just(i32::MAX as i64), Just(i32::MAX as i64 + 1), Just(i64::MAX)],
        mpr in prop_oneof![Just("0".to_string()), Just("-1".to_string()), Just("nan".to_string()), Just("inf".to_string()), Just("1e308".to_string()), Just("20".to_string())],
        tol in prop_oneof![Just("-0.1"), Just("0"), Just("0.99"), Just("1"), Just("nan")],
        dur in prop_oneof![Just("0s"), Just("1ns"), Just("15s"), Just("999999999999h"), Just("-5s"), Just("5 parsecs")],
    ) {
        let text = format!(r#"
[defaults]
poll_interval = "{dur}"
[[scaler]]
name = "a"
source = {{ kind = "sqs", queue_name = "q" }}
target = {{ kind = "kubernetes", name = "w" }}
[scaler.policy]
min_replicas = {min}
max_replicas = {max}
messages_per_replica = {mpr}
tolerance = {tol}
max_message_age = "{dur}"
"#);
        check(&text, "toml");
    }
}
