//! Fuzz target: configuration text, parsed as TOML and as YAML through
//! `Config::from_str_with_env`, the step `Config::load` (and so `qscale
//! check`, `qscale run` and every reload) takes after reading the file, with
//! its size limit and its refusal of YAML aliases. The input is the file's
//! text as is, so every corpus file is a config file a person can read.
//!
//! Beyond "never panics", it holds the promises `qscale check` makes: an
//! accepted file validates, and a refused one says why in bounded-label,
//! non-empty lines.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
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

fn check(text: &str, path: &str) {
    match Config::from_str_with_env(text, Path::new(path), Vec::new()) {
        Ok(cfg) => assert!(cfg.validate().is_ok(), "accepted but invalid"),
        Err(e) => {
            assert!(LABELS.contains(&e.metric_label()), "{}", e.metric_label());
            let lines = e.lines();
            assert!(!lines.is_empty(), "a refusal without a reason");
            assert!(lines.iter().all(|l| !l.trim().is_empty()), "{lines:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // `Config::load` refuses text that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text, "fuzz.toml");
    check(text, "fuzz.yaml");
});
