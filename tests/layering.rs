//! The layers of the crate, checked: no module imports one above it.
//!
//! docs/architecture.md draws the crate as layers. Bottom up: the
//! vocabulary every layer shares (`validate`, `contract`, `clock`, `world`); the
//! process-wide clients and the pure policy; the sources and targets; the
//! config file and what the daemon records; the daemon; the commands. A
//! layer may use any layer below it and never one above, so the policy
//! never depends on a client library, a source never depends on a target or
//! the simulator, and the adapters never depend on the daemon or the CLI.
//!
//! This test reads `src/` and fails on every `crate::<module>` reference in
//! code (comments are skipped) that the table below does not allow, and on
//! any top-level module the table does not place, so a new module has to be
//! given its layer on the day it is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module and the top-level modules it may use.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    const BOTTOM: &[&str] = &["validate", "contract"];
    let mut m: BTreeMap<&'static str, &'static [&'static str]> = BTreeMap::new();
    // Layer 0: the shared vocabulary.
    m.insert("validate", &[]);
    m.insert("contract", &[]);
    m.insert("clock", &[]);
    m.insert("world", &["validate", "clock"]);
    // Layer 1: process-wide clients; the pure policy.
    m.insert("clients", &["validate", "contract", "clock", "world"]);
    m.insert("policy", BOTTOM);
    m.insert("chart", &[]);
    // Layer 2: the adapters.
    m.insert("sources", &["validate", "contract", "world", "clients"]);
    m.insert("targets", &["validate", "contract", "world", "clients"]);
    // Layer 3: the config file; what the daemon records and shows.
    m.insert(
        "config",
        &["validate", "contract", "policy", "sources", "targets"],
    );
    m.insert("metrics", &["contract"]);
    m.insert("status", &["contract", "policy", "timeline"]);
    m.insert("timeline", &["chart"]);
    // Layer 4: the daemon.
    m.insert(
        "leader",
        &["validate", "contract", "clients", "config", "metrics"],
    );
    m.insert(
        "control_loop",
        &[
            "validate", "contract", "clock", "clients", "policy", "sources", "targets", "config",
            "metrics", "status", "timeline", "leader",
        ],
    );
    m.insert(
        "http",
        &["contract", "policy", "metrics", "status", "timeline"],
    );
    // Layer 5: the commands.
    m.insert(
        "run",
        &[
            "validate",
            "contract",
            "clock",
            "clients",
            "policy",
            "sources",
            "targets",
            "config",
            "metrics",
            "status",
            "leader",
            "control_loop",
            "http",
        ],
    );
    m.insert(
        "simulate",
        &[
            "validate", "contract", "world", "policy", "sources", "targets", "config", "chart",
        ],
    );
    m.insert(
        "history",
        &[
            "validate", "contract", "world", "clients", "sources", "config",
        ],
    );
    m.insert(
        "cli",
        &[
            "validate",
            "contract",
            "clock",
            "world",
            "clients",
            "policy",
            "sources",
            "targets",
            "config",
            "metrics",
            "status",
            "leader",
            "control_loop",
            "http",
            "run",
            "simulate",
            "history",
        ],
    );
    m
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/sources/sqs.rs` -> sources).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// Every `crate::<name>` in the code of `text` (not in comments), with its
/// line number.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let table = allowed();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(ok) = table.get(module.as_str()) else {
            problems.push(format!(
                "{}: module `{module}` has no layer: add it to tests/layering.rs and \
                 docs/architecture.md",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, used) in crate_refs(&text) {
            if used != module && used != "VERSION" && !ok.contains(&used.as_str()) {
                problems.push(format!(
                    "{}:{line}: `{module}` uses `crate::{used}`, which is not below it",
                    file.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_layer_uses_only_modules_that_exist() {
    let table = allowed();
    for (module, uses) in &table {
        for u in *uses {
            assert!(table.contains_key(u), "{module} may use unknown `{u}`");
        }
    }
}

#[test]
fn the_reference_scanner_skips_comments_and_finds_paths() {
    let text = "use crate::policy::Decision; // crate::cli is fine here\n\
                //! [`crate::simulate`] in a doc\n\
                let x = crate::metrics::Metrics::new();";
    let got: Vec<String> = crate_refs(text).into_iter().map(|(_, m)| m).collect();
    assert_eq!(got, vec!["policy".to_string(), "metrics".to_string()]);
}
