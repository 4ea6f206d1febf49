//! docs/configuration.md cannot fall behind the code.
//!
//! The reference is checked against the JSON Schema that `qscale schema`
//! prints (`qscale::config::json_schema()`), walked whole, `$defs` and every
//! `oneOf` variant included:
//!
//! - every property name appears in the document as `` `name` ``;
//! - every property's description (its `///` doc comment, the user
//!   reference) appears in the document word for word (whitespace aside);
//! - every source and target `kind` has a section heading naming it, and every
//!   enum value (`hold`, `max`, ...) appears in backticks.
//!
//! So a new source kind, a new field, or a reworded doc comment fails this
//! test until the reference says the same.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reference() -> String {
    let path = repo().join("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Collapse runs of whitespace, so wrapped comment lines match table cells.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Default)]
struct Found {
    /// (where, property name, description)
    properties: Vec<(String, String, Option<String>)>,
    /// `const` tags of tagged-enum variants (`sqs`, `kubernetes`, ...).
    kinds: BTreeSet<String>,
    /// Values of string enums (`hold`, `max`, ...).
    values: BTreeSet<String>,
}

fn walk(v: &Value, at: &str, found: &mut Found) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                for (name, prop) in props {
                    let desc = prop
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    found.properties.push((at.to_string(), name.clone(), desc));
                    if name == "kind"
                        && let Some(k) = prop.get("const").and_then(Value::as_str)
                    {
                        found.kinds.insert(k.to_string());
                    }
                }
            }
            if let Some(Value::Array(values)) = map.get("enum") {
                for e in values.iter().filter_map(Value::as_str) {
                    found.values.insert(e.to_string());
                }
            }
            for (k, child) in map {
                walk(child, &format!("{at}/{k}"), found);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn schema() -> Found {
    let schema = qscale::config::json_schema();
    assert!(schema.is_object(), "qscale schema is not a JSON object");
    let mut found = Found::default();
    walk(&schema, "#", &mut found);
    found
}

#[test]
fn the_walk_sees_the_whole_schema() {
    // Guard the guard: if the schema's shape changes so that the walk misses
    // $defs or oneOf variants, the other tests would pass vacuously.
    let f = schema();
    let names: BTreeSet<&str> = f.properties.iter().map(|(_, n, _)| n.as_str()).collect();
    for expected in [
        "server",
        "listen",
        "poll_interval",
        "lease_duration",
        "max_replicas",
        "seconds_per_message",
        "stabilization",
        "period",
        "after_failures",
        "queue_url",
        "resource",
        "cluster",
    ] {
        assert!(names.contains(expected), "walk missed {expected}");
    }
    assert!(f.kinds.contains("sqs") && f.kinds.contains("kubernetes") && f.kinds.contains("ecs"));
    assert!(f.values.contains("current_if_higher") && f.values.contains("disabled"));
}

#[test]
fn every_schema_property_is_documented() {
    let doc = reference();
    let missing: Vec<String> = schema()
        .properties
        .iter()
        .filter(|(_, name, _)| !doc.contains(&format!("`{name}`")))
        .map(|(at, name, _)| format!("{name} (at {at})"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not mention these fields as `name`:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_doc_comment_is_quoted_in_the_reference() {
    let doc = squash(&reference());
    let missing: Vec<String> = schema()
        .properties
        .iter()
        .filter_map(|(at, name, desc)| {
            let d = squash(desc.as_deref()?);
            (!doc.contains(&d)).then(|| format!("{name} (at {at}): {d}"))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks the doc comment text of:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_kind_has_a_section_and_every_enum_value_is_named() {
    let doc = reference();
    let f = schema();
    for kind in &f.kinds {
        let tag = format!("`kind = \"{kind}\"`");
        assert!(
            doc.lines().any(|l| l.starts_with('#') && l.contains(&tag)),
            "docs/configuration.md has no heading with {tag}"
        );
    }
    for value in &f.values {
        assert!(
            doc.contains(&format!("`{value}`")) || doc.contains(&format!("\"{value}\"")),
            "docs/configuration.md never names the value {value:?}"
        );
    }
}

#[test]
fn the_documented_environment_overrides_work() {
    // The examples of the "Environment overrides" section.
    let doc = reference();
    let text = std::fs::read_to_string(repo().join("config/sqs-kubernetes.toml")).unwrap();
    let env = [
        ("QSCALE__SERVER__LISTEN", "127.0.0.1:9100"),
        ("QSCALE__DEFAULTS__POLL_INTERVAL", "30s"),
        ("QSCALE__LEADER_ELECTION__ENABLED", "true"),
        ("QSCALE__SCALER[0]__POLICY__MAX_REPLICAS", "80"),
    ];
    for (k, v) in env {
        assert!(
            doc.contains(&format!("{k}={v}")),
            "docs/configuration.md does not show {k}={v}"
        );
    }
    let cfg = qscale::config::Config::from_str_with_env(
        &text,
        Path::new("x.toml"),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("documented overrides give a valid config");
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:9100");
    assert_eq!(
        cfg.defaults.poll_interval,
        std::time::Duration::from_secs(30)
    );
    assert!(cfg.leader_election.enabled);
    assert_eq!(cfg.scalers[0].policy.max_replicas, 80);
}
