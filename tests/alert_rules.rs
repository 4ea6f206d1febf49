//! The alert rules, checked by Prometheus's own `promtool` (Debian's
//! `prometheus` package, installed by scripts/prometheus.sh, which
//! scripts/test.sh runs): `promtool check rules` and the unit tests of
//! `promtool test rules`, on deploy/prometheus and on the rule groups the
//! Helm chart renders into its PrometheusRule.
//!
//! There is no `helm` binary on the test machines, so the chart's
//! templates/prometheusrule.yaml is rendered here by a renderer that knows
//! exactly the template actions that file uses, with Go's whitespace
//! trimming (`{{-`, `-}}`), and refuses any other action: a change to the
//! template fails this test until the renderer learns it. What the helpers
//! (`qscale.fullname`, `qscale.labels`) expand to is taken from
//! deploy/manifests/qscale.yaml, which Helm rendered with the default values.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Run promtool; panic with its output unless it succeeds.
fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's prometheus package \
                 (`bash scripts/prometheus.sh` does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed in {}:\n{text}",
        args.join(" "),
        dir.display()
    );
    text
}

/// `promtool check rules` on `file`, which must hold `rules` rules.
fn check_rules(dir: &Path, file: &str, rules: usize) {
    let out = promtool(&["check", "rules", file], dir);
    assert!(
        out.contains(&format!("SUCCESS: {rules} rules found")),
        "{file}: {out}"
    );
}

fn count_rules(groups: &Yaml) -> usize {
    groups["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .map(|g| g["rules"].as_sequence().map_or(0, Vec::len))
        .sum()
}

#[test]
fn promtool_accepts_the_rule_file_and_its_unit_tests_pass() {
    let dir = repo().join("deploy/prometheus");
    let rules: Yaml = serde_yaml_ng::from_str(&read(&dir.join("alerts.yaml"))).unwrap();
    assert!(count_rules(&rules) >= 10, "{rules:?}");
    check_rules(&dir, "alerts.yaml", count_rules(&rules));
    let out = promtool(&["test", "rules", "alerts_test.yaml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// `text` indented by `n` spaces on every line, after a newline: Helm's
/// `nindent`.
fn nindent(n: usize, text: &str) -> String {
    let pad = " ".repeat(n);
    let body: Vec<String> = text.split('\n').map(|l| format!("{pad}{l}")).collect();
    format!("\n{}", body.join("\n"))
}

/// What the template's actions expand to.
struct Context {
    fullname: String,
    /// The `qscale.labels` helper's output.
    labels: String,
    /// `prometheusRule.labels`, as `toYaml` prints it.
    extra_labels: String,
    /// files/alerts.yaml.
    alerts: String,
}

/// Render `template` with `ctx`: text is copied, `{{- ` trims the
/// whitespace before an action and ` -}}` the whitespace after it, comments
/// vanish, and the actions prometheusrule.yaml uses are expanded. Any other
/// action is an error.
fn render(template: &str, ctx: &Context) -> Result<String, String> {
    let mut out = String::new();
    // Blocks entered; `false` for one whose condition is empty (skipped).
    let mut blocks: Vec<bool> = Vec::new();
    let skipping = |blocks: &[bool]| blocks.iter().any(|open| !open);
    let mut rest = template;
    let mut trim_next = false;
    while !rest.is_empty() {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let text = if trim_next { text.trim_start() } else { text };
        if !skipping(&blocks) {
            out.push_str(text);
        }
        let Some(after) = after else { break };
        let close = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ at {after:?}"))?;
        let mut action = &after[2..close];
        rest = &after[close + 2..];
        if let Some(a) = action.strip_prefix("- ") {
            out.truncate(out.trim_end().len());
            action = a;
        }
        trim_next = action.ends_with(" -");
        let action = action.strip_suffix(" -").unwrap_or(action).trim();
        if action.starts_with("/*") && action.ends_with("*/") {
            continue;
        }
        if action == "end" {
            blocks.pop().ok_or("{{ end }} without a block")?;
            continue;
        }
        let emitted = match action {
            "if .Values.prometheusRule.enabled" => {
                blocks.push(true);
                String::new()
            }
            "with .Values.prometheusRule.labels" => {
                blocks.push(!ctx.extra_labels.is_empty());
                String::new()
            }
            _ if skipping(&blocks) => String::new(),
            "include \"qscale.fullname\" ." => ctx.fullname.clone(),
            ".Release.Namespace" => "qscale".to_string(),
            "include \"qscale.labels\" . | nindent 4" => nindent(4, &ctx.labels),
            // Inside `with .Values.prometheusRule.labels`, `.` is that map.
            "toYaml . | nindent 4" => nindent(4, &ctx.extra_labels),
            ".Files.Get \"files/alerts.yaml\" | nindent 2" => nindent(2, &ctx.alerts),
            other => {
                return Err(format!(
                    "{{{{ {other} }}}} is unknown to this test's renderer: teach render() \
                     what Helm makes of it"
                ));
            }
        };
        out.push_str(&emitted);
    }
    if !blocks.is_empty() {
        return Err(format!("{} block(s) without {{{{ end }}}}", blocks.len()));
    }
    Ok(out)
}

/// templates/prometheusrule.yaml as `helm template qscale deploy/helm/qscale
/// --namespace qscale --set prometheusRule.enabled=true --set
/// prometheusRule.labels.release=prometheus` renders it.
fn render_prometheus_rule() -> String {
    let chart = repo().join("deploy/helm/qscale");
    // What the helpers expand to with the default values, from Helm's own
    // rendering of the Deployment (managed-by is Helm's again here).
    let manifests = read(&repo().join("deploy/manifests/qscale.yaml"));
    let deployment = serde_yaml_ng::Deserializer::from_str(&manifests)
        .map(|d| Yaml::deserialize(d).expect("manifest YAML"))
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .expect("a Deployment in deploy/manifests/qscale.yaml");
    let ctx = Context {
        fullname: deployment["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string(),
        labels: serde_yaml_ng::to_string(&deployment["metadata"]["labels"])
            .expect("labels")
            .trim_end()
            .replace(
                "app.kubernetes.io/managed-by: kubectl",
                "app.kubernetes.io/managed-by: Helm",
            ),
        extra_labels: "release: prometheus".into(),
        alerts: read(&chart.join("files/alerts.yaml")),
    };
    let template = read(&chart.join("templates/prometheusrule.yaml"));
    render(&template, &ctx)
        .unwrap_or_else(|e| panic!("deploy/helm/qscale/templates/prometheusrule.yaml: {e}"))
}

#[test]
fn the_rules_the_chart_renders_pass_promtool_and_the_same_unit_tests() {
    let rendered = render_prometheus_rule();
    let doc: Yaml = serde_yaml_ng::from_str(&rendered)
        .unwrap_or_else(|e| panic!("the rendered PrometheusRule is not YAML ({e}):\n{rendered}"));
    assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1", "{rendered}");
    assert_eq!(doc["kind"], "PrometheusRule", "{rendered}");
    assert_eq!(doc["metadata"]["namespace"], "qscale");
    assert_eq!(doc["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        doc["metadata"]["labels"]["app.kubernetes.io/name"],
        "qscale"
    );
    // The Prometheus Operator turns spec into a rule file: do the same and
    // let promtool judge it.
    let spec = &doc["spec"];
    let plain: Yaml =
        serde_yaml_ng::from_str(&read(&repo().join("deploy/prometheus/alerts.yaml"))).unwrap();
    assert_eq!(
        spec, &plain,
        "the chart must render the rules of deploy/prometheus/alerts.yaml"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("chart-rules.yaml"),
        serde_yaml_ng::to_string(spec).expect("rules as YAML"),
    )
    .unwrap();
    check_rules(dir.path(), "chart-rules.yaml", count_rules(spec));

    // The unit tests of deploy/prometheus, pointed at the rendered rules.
    let mut tests: Yaml =
        serde_yaml_ng::from_str(&read(&repo().join("deploy/prometheus/alerts_test.yaml"))).unwrap();
    tests["rule_files"] = Yaml::Sequence(vec![Yaml::from("chart-rules.yaml")]);
    std::fs::write(
        dir.path().join("chart-rules_test.yaml"),
        serde_yaml_ng::to_string(&tests).unwrap(),
    )
    .unwrap();
    let out = promtool(&["test", "rules", "chart-rules_test.yaml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_renderer_trims_like_go_templates_and_refuses_unknown_actions() {
    let ctx = Context {
        fullname: "qscale".into(),
        labels: "a: b".into(),
        extra_labels: String::new(),
        alerts: "groups: []".into(),
    };
    let t = "{{- if .Values.prometheusRule.enabled }}\nkind: X\nmetadata:\n  name: {{ include \"qscale.fullname\" . }}\n  labels:\n    {{- include \"qscale.labels\" . | nindent 4 }}\n    {{- with .Values.prometheusRule.labels }}\n    {{- toYaml . | nindent 4 }}\n    {{- end }}\nspec:\n  {{- /* note */ -}}\n  {{- .Files.Get \"files/alerts.yaml\" | nindent 2 }}\n{{- end }}\n";
    assert_eq!(
        render(t, &ctx).unwrap(),
        "\nkind: X\nmetadata:\n  name: qscale\n  labels:\n    a: b\nspec:\n  groups: []\n"
    );
    let e = render("x: {{ .Values.other }}", &ctx).unwrap_err();
    assert!(e.contains(".Values.other"), "{e}");
    assert!(render("{{ if .Values.prometheusRule.enabled }}", &ctx).is_err());
    let full = render_prometheus_rule();
    assert!(full.starts_with("apiVersion:"), "{full}");
    // .Files.Get does not template: the alerts' own {{ $labels }} stay.
    assert!(full.contains("{{ $labels.scaler }}"), "{full}");
}
