//! Every example in config/ parses and validates, and `qscale check` treats
//! broken files the way users need: every error, with its field path, exit 2.

use std::path::{Path, PathBuf};
use std::process::Command;

use qscale::config::{Config, ConfigError};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config"))
        .expect("config/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("toml" | "yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    files
}

fn qscale(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(args)
        .env_remove("QSCALE__SERVER__LISTEN")
        .output()
        .expect("run qscale");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write temp config");
    p
}

#[test]
fn every_example_in_config_parses_and_validates() {
    let files = examples();
    assert!(
        files.len() >= 3,
        "expected the example configs, found {files:?}"
    );
    for f in files {
        let cfg = Config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!cfg.scalers.is_empty(), "{}", f.display());
    }
}

#[test]
fn check_exits_zero_with_one_summary_line_per_scaler_on_each_example() {
    for f in examples() {
        let cfg = Config::load(&f).expect("valid");
        let (code, out, err) = qscale(&["check", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {err}", f.display());
        for s in &cfg.scalers {
            assert_eq!(
                out.lines()
                    .filter(|l| l.starts_with(&format!("{}: ", s.name)))
                    .count(),
                1,
                "{out}"
            );
        }
    }
}

const BROKEN: &str = r#"
[[scaler]]
name = "a"
[scaler.source]
kind = "sqs"
queue_name = "q"
cloudwatch = false
[scaler.target]
kind = "kubernetes"
name = "w"
[scaler.policy]
min_replicas = 5
max_replicas = 3
max_message_age = "0s"

[[scaler]]
name = "a"
[scaler.source]
kind = "sqs"
queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
[scaler.target]
kind = "ecs"
cluster = "c"
service = "s"
[scaler.policy]
max_replicas = 3
[scaler.policy.fallback]
action = "replicas"
"#;

#[test]
fn check_lists_every_error_with_its_field_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "broken.toml", BROKEN);
    let (code, out, err) = qscale(&["check", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    for want in [
        "error: scaler[0].policy.max_replicas: must be >= min_replicas (5)",
        "error: scaler[0].policy.max_message_age: must be greater than 0",
        "error: scaler[1].name: duplicate name \"a\" (also scaler[0])",
        "error: scaler[1].policy: set at least one signal",
        "error: scaler[1].policy.fallback.replicas: required with this action",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("5 error(s)"), "{err}");
}

/// Nine levels of nested YAML aliases, nine items each: ten lines that a
/// parser expanding aliases would turn into 9^9 (387 million) strings.
fn alias_bomb() -> String {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let items = vec![format!("*{}", w[0]); 9].join(",");
        text.push_str(&format!("{}: &{} [{items}]\n", w[1], w[1]));
    }
    text
}

#[test]
fn bad_input_gives_one_clear_line_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            write(d, "unknown.toml", "[[scaler]]\nname = \"a\"\nbogus = 1\n"),
            "unknown field `bogus`",
        ),
        (
            write(d, "syntax.toml", "[server\nlisten = 1\n"),
            "at line 1, column 8",
        ),
        (
            write(d, "syntax.yaml", "scaler:\n  - name: a\n   source: [\n"),
            "line 3 column",
        ),
        (
            write(
                d,
                "duration.yaml",
                "scaler:\n  - name: a\n    source: {kind: sqs, queue_name: q}\n    target: {kind: kubernetes, name: w}\n    policy: {max_replicas: 3, max_message_age: soon}\n",
            ),
            "scaler[0].policy.max_message_age",
        ),
        (
            write(
                d,
                "negative.toml",
                "[[scaler]]\nname = \"a\"\nsource = { kind = \"sqs\", queue_name = \"q\" }\ntarget = { kind = \"kubernetes\", name = \"w\" }\npolicy = { max_replicas = -3 }\n",
            ),
            "scaler[0].policy.max_replicas",
        ),
        (
            write(
                d,
                "kind.toml",
                "[[scaler]]\nname = \"a\"\n[scaler.source]\nkind = \"kafka\"\n",
            ),
            "unknown variant `kafka`",
        ),
        (write(d, "empty.toml", ""), "is empty"),
        (
            write(d, "wrong.json", "{}"),
            "use a .toml, .yaml or .yml extension",
        ),
        (d.join("missing.toml"), "cannot read config file"),
        (
            write(d, "bomb.yaml", &alias_bomb()),
            "line 2: YAML aliases (*name) are not accepted",
        ),
        (
            write(
                d,
                "huge.toml",
                &"# padding\n".repeat((qscale::config::MAX_CONFIG_BYTES / 10 + 1) as usize),
            ),
            "larger than the 16 MiB limit",
        ),
    ];
    for (path, want) in cases {
        let (code, _out, err) = qscale(&["check", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{}: {err}", path.display());
        assert!(
            err.contains(want),
            "{}: want {want:?} in {err}",
            path.display()
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn check_lists_unknown_fields_bad_values_and_broken_rules_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "several.toml",
        "top = 1\n[[scaler]]\nname = \"a\"\nbogus = 1\n[scaler.source]\nkind = \"sqs\"\nqueue_name = \"q\"\ncolour = \"red\"\n[scaler.target]\nkind = \"kubernetes\"\nname = \"w\"\n[scaler.policy]\nmin_replicas = 5\nmax_replicas = 3\nmessages_per_replica = 10\nmax_message_age = \"soon\"\n",
    );
    let (code, _out, err) = qscale(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    for want in [
        "error: top: unknown field `top`",
        "error: scaler[0].bogus: unknown field `bogus`",
        "error: scaler[0].source.colour: unknown field `colour`",
        "error: scaler[0].policy.max_message_age: invalid value: string \"soon\", expected a duration",
        "error: scaler[0].policy.max_replicas: must be >= min_replicas (5)",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "want {want:?} in:\n{err}"
        );
    }
    assert_eq!(
        lines.last(),
        Some(&format!("{}: 5 error(s)", path.display()).as_str())
    );
}

#[test]
fn environment_overrides_file_values() {
    let text = std::fs::read_to_string(repo().join("config/sqs-kubernetes.toml")).unwrap();
    let env = vec![
        (
            "QSCALE__SERVER__LISTEN".to_string(),
            "127.0.0.1:9555".to_string(),
        ),
        (
            "QSCALE__DEFAULTS__POLL_INTERVAL".to_string(),
            "3s".to_string(),
        ),
        ("UNRELATED".to_string(), "x".to_string()),
    ];
    let cfg = Config::from_str_with_env(&text, Path::new("x.toml"), env).expect("valid");
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:9555");
    assert_eq!(cfg.defaults.poll_interval.as_secs(), 3);
}

#[test]
fn an_invalid_environment_override_is_reported_like_a_file_error() {
    let text = std::fs::read_to_string(repo().join("config/sqs-kubernetes.toml")).unwrap();
    let env = vec![(
        "QSCALE__SERVER__LISTEN".to_string(),
        "not-an-address".to_string(),
    )];
    let err = Config::from_str_with_env(&text, Path::new("x.toml"), env).unwrap_err();
    // Listed with its field path, like any file problem.
    assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
    assert_eq!(
        err.lines(),
        vec!["server.listen: invalid socket address syntax".to_string()]
    );
}

#[test]
fn schema_command_prints_a_json_schema_naming_every_section() {
    let (code, out, err) = qscale(&["schema"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let text = v.to_string();
    for key in [
        "scaler",
        "server",
        "messages_per_replica",
        "max_message_age",
        "queue_url",
        "stabilization",
    ] {
        assert!(text.contains(key), "schema lacks {key}");
    }
}

#[test]
fn version_flag_prints_the_crate_version() {
    let (code, out, _) = qscale(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("qscale {}", qscale::VERSION));
}

/// Every source and target kind the schema offers, with a minimal table.
/// A new kind gets a row here; the test below fails until it has one.
const SOURCE_KINDS: &[(&str, &str)] = &[
    (
        "sqs",
        r#"queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/q""#,
    ),
    ("demo", r#"pattern = "constant:rate=1""#),
    (
        "rabbitmq",
        r#"url = "amqp://127.0.0.1:5672"
queue = "q""#,
    ),
    (
        "redis",
        r#"url = "redis://127.0.0.1:6379"
key = "q""#,
    ),
    (
        "nats",
        r#"url = "nats://127.0.0.1:4222"
stream = "s"
consumer = "c""#,
    ),
    (
        "postgres",
        r#"connection = "host=127.0.0.1 user=u dbname=d"
query = "SELECT count(*) AS visible FROM jobs""#,
    ),
    (
        "prometheus",
        r#"url = "http://127.0.0.1:9090"
query = "sum(x)""#,
    ),
];
const TARGET_KINDS: &[(&str, &str)] = &[
    ("kubernetes", r#"name = "w""#),
    (
        "ecs",
        r#"cluster = "c"
service = "s""#,
    ),
    ("demo", ""),
];

/// The `kind` values the JSON Schema lists for one tagged enum.
fn schema_kinds(def: &str) -> Vec<String> {
    let schema = qscale::config::json_schema();
    let variants = schema["$defs"][def]["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{def} has oneOf variants"));
    let mut kinds: Vec<String> = variants
        .iter()
        .map(|v| {
            let k = &v["properties"]["kind"];
            k["const"]
                .as_str()
                .or_else(|| k["enum"][0].as_str())
                .unwrap_or_else(|| panic!("{def} variant without a kind: {v}"))
                .to_string()
        })
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn every_source_and_target_kind_reports_its_serde_tag() {
    for (def, table) in [
        ("SourceConfig", SOURCE_KINDS),
        ("TargetConfig", TARGET_KINDS),
    ] {
        let mut listed: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
        listed.sort();
        assert_eq!(
            listed,
            schema_kinds(def),
            "{def}: tests/config_files.rs lists other kinds than the schema"
        );
    }
    for (kind, body) in SOURCE_KINDS {
        let text = format!(
            "[[scaler]]\nname = \"s\"\n[scaler.source]\nkind = \"{kind}\"\n{body}\n\
             [scaler.target]\nkind = \"demo\"\n[scaler.policy]\nmax_replicas = 2\n\
             messages_per_replica = 1\n"
        );
        let cfg = Config::from_str_with_env(&text, Path::new("k.toml"), Vec::new())
            .unwrap_or_else(|e| panic!("source {kind}: {e}"));
        let source = cfg.scalers[0].source.as_ref().expect("one source");
        assert_eq!(source.kind(), *kind);
        let json = serde_json::to_value(source).expect("serialize");
        assert_eq!(json["kind"], *kind, "source {kind} serializes its tag");
    }
    for (kind, body) in TARGET_KINDS {
        let text = format!(
            "[[scaler]]\nname = \"s\"\n[scaler.source]\nkind = \"demo\"\npattern = \"constant:rate=1\"\n\
             [scaler.target]\nkind = \"{kind}\"\n{body}\n[scaler.policy]\nmax_replicas = 2\n\
             messages_per_replica = 1\n"
        );
        let cfg = Config::from_str_with_env(&text, Path::new("k.toml"), Vec::new())
            .unwrap_or_else(|e| panic!("target {kind}: {e}"));
        let target = &cfg.scalers[0].target;
        assert_eq!(target.kind(), *kind);
        let json = serde_json::to_value(target).expect("serialize");
        assert_eq!(json["kind"], *kind, "target {kind} serializes its tag");
    }
}

#[test]
fn a_dead_letter_fraction_outside_zero_to_one_is_refused_with_its_field_path() {
    let text = std::fs::read_to_string(repo().join("config/sqs-inference-dlq.toml")).unwrap();
    assert!(
        text.contains("max_fraction = 0.1"),
        "the example sets the rule"
    );
    for (fraction, ok) in [
        ("0.1", true),
        ("1", true),
        ("0", false),
        ("-0.2", false),
        ("1.5", false),
        ("nan", false),
    ] {
        let changed = text.replace("max_fraction = 0.1", &format!("max_fraction = {fraction}"));
        match Config::from_str_with_env(&changed, Path::new("x.toml"), Vec::new()) {
            Ok(_) => assert!(ok, "{fraction} accepted"),
            Err(e) => {
                assert!(!ok, "{fraction} refused: {e}");
                assert_eq!(
                    e.lines(),
                    vec![
                        "scaler[0].policy.dead_letter.max_fraction: must be greater than 0 and at most 1"
                            .to_string()
                    ],
                    "{fraction}"
                );
            }
        }
    }
}

const TWO_QUEUES: &str = r#"
[[scaler]]
name = "inference"
combine = "max"

[[scaler.sources]]
name = "critical"
kind = "sqs"
queue_name = "critical"
max_message_age = "30s"

[[scaler.sources]]
name = "bulk"
kind = "rabbitmq"
url = "amqp://localhost:5672/%2f"
queue = "bulk"
messages_per_replica = 100
seconds_per_message = 2.5

[scaler.target]
kind = "kubernetes"
name = "w"

[scaler.policy]
max_replicas = 10
messages_per_replica = 10
max_message_age = "5m"
"#;

#[test]
fn a_scaler_with_several_queues_gives_each_its_own_signal_settings() {
    let cfg = Config::from_str_with_env(TWO_QUEUES, Path::new("q.toml"), Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let s = &cfg.scalers[0];
    assert!(s.is_multi_queue());
    assert_eq!(s.combine(), qscale::policy::Combine::Max);
    assert_eq!(s.source_kind(), "mixed");
    let queues = s.queues();
    assert_eq!(queues.len(), 2);
    let (critical, bulk) = (&queues[0], &queues[1]);
    assert_eq!((critical.name, critical.source.kind()), ("critical", "sqs"));
    assert_eq!(
        critical.policy.max_message_age,
        Some(std::time::Duration::from_secs(30)),
        "its own objective"
    );
    assert_eq!(
        critical.policy.messages_per_replica,
        Some(10.0),
        "the policy's"
    );
    assert_eq!((bulk.name, bulk.source.kind()), ("bulk", "rabbitmq"));
    assert_eq!(bulk.policy.messages_per_replica, Some(100.0));
    assert_eq!(
        bulk.policy.max_message_age,
        Some(std::time::Duration::from_secs(300)),
        "the policy's objective where the queue sets none"
    );
    assert_eq!(
        bulk.policy
            .throughput
            .as_ref()
            .and_then(|t| t.seconds_per_message),
        Some(2.5),
        "seconds_per_message turns the throughput signal on for this queue"
    );
    // The same in YAML, and the file round-trips through serde unchanged.
    let yaml = serde_yaml_ng::to_string(&cfg).expect("yaml");
    let again = Config::from_str_with_env(&yaml, Path::new("q.yaml"), Vec::new())
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(again, cfg);
}

#[test]
fn a_bad_list_of_queues_is_refused_with_every_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            // An unknown field inside a flattened entry is still an error.
            "[[scaler]]\nname = \"a\"\n[[scaler.sources]]\nname = \"x\"\nkind = \"sqs\"\nqueue_name = \"x\"\ncolour = \"red\"\n[[scaler.sources]]\nname = \"y\"\nkind = \"sqs\"\nqueue_name = \"y\"\n[scaler.target]\nkind = \"kubernetes\"\nname = \"w\"\n[scaler.policy]\nmax_replicas = 3\nmessages_per_replica = 10\n",
            &["error: scaler[0].sources[0].colour: unknown field `colour`"],
        ),
        (
            "[[scaler]]\nname = \"a\"\n[[scaler.sources]]\nname = \"critical\"\nkind = \"sqs\"\nqueue_name = \"jobs\"\nmax_message_age = \"0s\"\n[[scaler.sources]]\nname = \"critical\"\nkind = \"sqs\"\nqueue_name = \"jobs\"\n[[scaler.sources]]\nname = \"Bulk!\"\nkind = \"rabbitmq\"\nurl = \"amqp://localhost:5672/%2f\"\nqueue = \"b\"\nmessages_per_replica = 0\n[scaler.target]\nkind = \"kubernetes\"\nname = \"w\"\n[scaler.policy]\nmax_replicas = 3\nmessages_per_replica = 10\n",
            &[
                "error: scaler[0].sources[0].max_message_age: must be greater than 0",
                "error: scaler[0].sources[1].name: duplicate queue name \"critical\" (also sources[0])",
                "error: scaler[0].sources[1]: the same queue as sources[0] (sqs queue jobs); its work would count twice",
                "error: scaler[0].sources[2].name: use only lowercase letters, digits, '-' and '_'",
                "error: scaler[0].sources[2].messages_per_replica: must be a number > 0",
            ],
        ),
        (
            "[[scaler]]\nname = \"a\"\ncombine = \"sum\"\n[scaler.source]\nkind = \"sqs\"\nqueue_name = \"q\"\n[scaler.target]\nkind = \"kubernetes\"\nname = \"w\"\n[scaler.policy]\nmax_replicas = 3\nmessages_per_replica = 10\n\n[[scaler]]\nname = \"b\"\n[[scaler.sources]]\nname = \"only\"\nkind = \"sqs\"\nqueue_name = \"q\"\n[scaler.target]\nkind = \"kubernetes\"\nname = \"w\"\n[scaler.policy]\nmax_replicas = 3\n\n[[scaler]]\nname = \"c\"\n[scaler.target]\nkind = \"kubernetes\"\nname = \"w\"\n[scaler.policy]\nmax_replicas = 3\nmessages_per_replica = 10\n",
            &[
                "error: scaler[0].combine: only used with [[scaler.sources]] (several queues)",
                "error: scaler[1].sources: list at least two queues; for one queue use [scaler.source]",
                "error: scaler[1].sources[0]: no signal for this queue: set messages_per_replica, seconds_per_message or max_message_age here or in policy",
                "error: scaler[2].source: missing field (required): give source (one queue) or [[scaler.sources]] (several)",
            ],
        ),
    ];
    for (i, (text, wants)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("bad{i}.toml"), text);
        let (code, _out, err) = qscale(&["check", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        for want in *wants {
            assert!(
                err.lines().any(|l| l.starts_with(want)),
                "want {want:?} in:\n{err}"
            );
        }
        assert!(
            err.lines()
                .last()
                .is_some_and(|l| l.ends_with(&format!("{} error(s)", wants.len()))),
            "no other problem:\n{err}"
        );
    }
}
