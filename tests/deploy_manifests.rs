//! The deployment artifacts under deploy/ parse, grant least privilege, and
//! agree with what the qscale binary actually does: its metric names, its
//! HTTP endpoints, its config file and environment overrides.
//!
//! Helm templates (deploy/helm/*/templates) are Go templates, not YAML, so
//! they are only checked for presence and balanced `{{ }}` / block nesting;
//! their rendered output is checked through deploy/manifests/qscale.yaml,
//! which deploy/manifests/render.sh produces from the chart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use qscale::config::Config;
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

/// Every metric qscale exports (the metrics table of the design notes).
const KNOWN_METRICS: &[&str] = &[
    "qscale_queue_messages",
    "qscale_queue_oldest_message_age_seconds",
    "qscale_queue_oldest_message_age_estimated_seconds",
    "qscale_queue_arrival_rate",
    "qscale_replicas",
    "qscale_scale_operations_total",
    "qscale_source_errors_total",
    "qscale_target_errors_total",
    "qscale_poll_duration_seconds",
    "qscale_last_successful_poll_timestamp_seconds",
    "qscale_fallback_active",
    "qscale_paused",
    "qscale_leader",
    "qscale_build_info",
    "qscale_config_reload_failures_total",
    "qscale_dead_letter_messages",
    "qscale_dead_letter_arrival_rate",
];

/// Histograms, whose series carry the _bucket/_sum/_count suffixes.
const HISTOGRAMS: &[&str] = &["qscale_poll_duration_seconds"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// All files below `dir`, sorted, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.expect("readable directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn is_helm_template(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "templates")
        && path.components().any(|c| c.as_os_str() == "helm")
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or("")
}

/// Every non-empty document of a (possibly multi-document) YAML file.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", rel(path)))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_one(path: &Path) -> Yaml {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: expected one YAML document", rel(path));
    docs.remove(0)
}

fn json(path: &Path) -> Json {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", rel(path)))
}

fn manifests() -> Vec<Yaml> {
    let path = deploy().join("manifests/qscale.yaml");
    let docs = yaml_docs(&path);
    for d in &docs {
        assert!(
            d["apiVersion"].as_str().is_some() && d["kind"].as_str().is_some(),
            "every manifest needs apiVersion and kind: {d:?}"
        );
    }
    docs
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn the_deployment(docs: &[Yaml]) -> &Yaml {
    let deps = of_kind(docs, "Deployment");
    assert_eq!(deps.len(), 1, "exactly one Deployment in the manifests");
    deps[0]
}

fn the_qscale_container(deployment: &Yaml) -> &Yaml {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("qscale"))
        .expect("a container named qscale")
}

fn strs(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `qscale_...` metric names mentioned in a query or series selector. A
/// token counts only where it starts a name (not inside another word).
fn metric_tokens(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(off) = text[i..].find("qscale_") {
        let start = i + off;
        let word_start = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        };
        let mut end = start + "qscale_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if word_start {
            out.insert(text[start..end].trim_end_matches('_').to_owned());
        }
        i = end;
    }
    out
}

fn is_known_metric(name: &str) -> bool {
    KNOWN_METRICS.contains(&name)
        || HISTOGRAMS.iter().any(|h| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{h}{s}"))
        })
}

fn assert_known_metrics(what: &str, text: &str) {
    let tokens = metric_tokens(text);
    for t in &tokens {
        assert!(
            is_known_metric(t),
            "{what}: unknown metric {t:?} in {text:?}"
        );
    }
}

/// The environment the Deployment's qscale container sets with plain values.
fn literal_env(container: &Yaml) -> Vec<(String, String)> {
    container["env"]
        .as_sequence()
        .map(|env| {
            env.iter()
                .filter_map(|e| {
                    Some((
                        e["name"].as_str()?.to_owned(),
                        e["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Check a qscale config text as the daemon would read it, with `env`.
fn load_config(what: &str, text: &str, env: Vec<(String, String)>) -> Config {
    Config::from_str_with_env(text, Path::new("/etc/qscale/qscale.toml"), env)
        .unwrap_or_else(|e| panic!("{what}: qscale rejects its config:\n{e}"))
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut parsed = BTreeSet::new();
    for path in files_under(&deploy()) {
        if is_helm_template(&path) {
            continue;
        }
        match extension(&path) {
            "yaml" | "yml" => {
                assert!(
                    !yaml_docs(&path).is_empty(),
                    "{}: no YAML document",
                    rel(&path)
                );
            }
            "json" => {
                json(&path);
            }
            _ => continue,
        }
        parsed.insert(rel(&path));
    }
    for expected in [
        "deploy/manifests/qscale.yaml",
        "deploy/prometheus/alerts.yaml",
        "deploy/grafana/qscale-dashboard.json",
        "deploy/ecs/task-definition.json",
        "deploy/ecs/iam-task-role-policy.json",
        "deploy/helm/qscale/Chart.yaml",
        "deploy/helm/qscale/values.yaml",
    ] {
        assert!(
            parsed.contains(expected),
            "{expected} missing; parsed: {parsed:?}"
        );
    }
}

#[test]
fn helm_templates_exist_and_their_braces_and_blocks_balance() {
    let dir = deploy().join("helm/qscale/templates");
    for name in [
        "_helpers.tpl",
        "configmap.yaml",
        "serviceaccount.yaml",
        "rbac.yaml",
        "deployment.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "NOTES.txt",
    ] {
        assert!(dir.join(name).is_file(), "template {name} missing");
    }
    for path in files_under(&dir) {
        let text = read(&path);
        let what = rel(&path);
        assert_eq!(
            text.matches("{{").count(),
            text.matches("}}").count(),
            "{what}: unbalanced {{{{ }}}}"
        );
        // Walk the actions in order: no action opens inside another, and
        // every if/range/with/define has its end.
        let mut blocks: Vec<(String, usize)> = Vec::new();
        let mut rest = text.as_str();
        let mut line = 1;
        while let Some(open) = rest.find("{{") {
            line += rest[..open].matches('\n').count();
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .unwrap_or_else(|| panic!("{what}:{line}: action never closed"));
            let action = &after[..close];
            assert!(
                !action.contains("{{"),
                "{what}:{line}: action opens inside another"
            );
            let body = action.trim_start_matches('-').trim_end_matches('-').trim();
            if !body.starts_with("/*") {
                let keyword = body.split_whitespace().next().unwrap_or("");
                match keyword {
                    "if" | "range" | "with" | "define" | "block" => {
                        blocks.push((keyword.to_owned(), line))
                    }
                    "end" => {
                        blocks
                            .pop()
                            .unwrap_or_else(|| panic!("{what}:{line}: end without a block"));
                    }
                    _ => {}
                }
            }
            line += action.matches('\n').count();
            rest = &after[close + 2..];
        }
        assert!(blocks.is_empty(), "{what}: blocks never ended: {blocks:?}");
    }
}

#[test]
fn rbac_grants_only_scale_subresource_hpa_list_and_leases() {
    let docs = manifests();
    // (apiGroup, resource) -> verbs qscale may hold; leases only namespaced.
    let cluster_allowed: BTreeMap<(&str, &str), &[&str]> = BTreeMap::from([
        (("apps", "deployments/scale"), &["get", "update"][..]),
        (("apps", "statefulsets/scale"), &["get", "update"][..]),
        (("apps", "deployments"), &["get"][..]),
        (("apps", "statefulsets"), &["get"][..]),
        (("autoscaling", "horizontalpodautoscalers"), &["list"][..]),
        (("keda.sh", "scaledobjects"), &["list"][..]),
    ]);
    let lease: ((&str, &str), &[&str]) = (
        ("coordination.k8s.io", "leases"),
        &["get", "create", "update"][..],
    );

    let mut granted: BTreeSet<(String, String, String)> = BTreeSet::new();
    let roles: Vec<&Yaml> = docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
        .collect();
    assert!(!roles.is_empty(), "the manifests define RBAC roles");
    for role in roles {
        let kind = role["kind"].as_str().unwrap();
        let name = role["metadata"]["name"].as_str().unwrap_or("?");
        assert!(
            role.get("aggregationRule").is_none(),
            "{kind} {name}: no aggregation"
        );
        for rule in role["rules"].as_sequence().expect("rules") {
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "{kind} {name}: no nonResourceURLs"
            );
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for v in strs(&rule[field]) {
                    assert!(
                        !v.contains('*'),
                        "{kind} {name}: wildcard in {field}: {v:?}"
                    );
                }
            }
            for group in strs(&rule["apiGroups"]) {
                for resource in strs(&rule["resources"]) {
                    for verb in strs(&rule["verbs"]) {
                        let key = (group.as_str(), resource.as_str());
                        let ok = if key == lease.0 {
                            kind == "Role"
                                && role["metadata"]["namespace"].as_str() == Some("qscale")
                                && lease.1.contains(&verb.as_str())
                        } else {
                            cluster_allowed
                                .get(&key)
                                .is_some_and(|verbs| verbs.contains(&verb.as_str()))
                        };
                        assert!(
                            ok,
                            "{kind} {name} grants {verb} on {group}/{resource}, beyond least privilege"
                        );
                        granted.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    // And it grants enough for qscale to work.
    for ((group, resource), verbs) in cluster_allowed.iter().chain([(&lease.0, &lease.1)]) {
        for verb in verbs.iter() {
            assert!(
                granted.contains(&(group.to_string(), resource.to_string(), verb.to_string())),
                "missing grant: {verb} on {group}/{resource}"
            );
        }
    }

    // The bindings bind those roles to the Deployment's service account.
    let sa = the_deployment(&docs)["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_owned();
    assert!(
        of_kind(&docs, "ServiceAccount")
            .iter()
            .any(|s| s["metadata"]["name"].as_str() == Some(sa.as_str())),
        "ServiceAccount {sa} is defined"
    );
    let bindings: Vec<&Yaml> = docs
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("ClusterRoleBinding" | "RoleBinding")
            )
        })
        .collect();
    assert!(bindings.len() >= 2, "scale and lease bindings");
    for b in bindings {
        let subjects = b["subjects"].as_sequence().expect("subjects");
        assert!(
            subjects
                .iter()
                .all(|s| s["kind"].as_str() == Some("ServiceAccount")
                    && s["name"].as_str() == Some(sa.as_str())
                    && s["namespace"].as_str() == Some("qscale")),
            "binding {:?} binds only qscale's service account",
            b["metadata"]["name"]
        );
    }
}

#[test]
fn deployment_probes_health_endpoints_and_runs_locked_down() {
    let docs = manifests();
    let dep = the_deployment(&docs);
    assert_eq!(dep["metadata"]["namespace"].as_str(), Some("qscale"));
    assert_eq!(
        dep["spec"]["replicas"].as_u64(),
        Some(2),
        "two replicas by default"
    );
    let pod = &dep["spec"]["template"]["spec"];
    let c = the_qscale_container(dep);

    assert_eq!(
        strs(&c["args"])[..3],
        ["run", "--config", "/etc/qscale/qscale.toml"],
        "runs the daemon on the mounted config"
    );
    let port = c["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("http-metrics"))
        .expect("a port named http-metrics");
    assert_eq!(port["containerPort"].as_u64(), Some(9090));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert!(
            get["port"].as_str() == Some("http-metrics") || get["port"].as_u64() == Some(9090),
            "{probe} probes the metrics port"
        );
    }

    let psc = &pod["securityContext"];
    let csc = &c["securityContext"];
    assert_eq!(
        psc["runAsNonRoot"].as_bool(),
        Some(true),
        "pod runAsNonRoot"
    );
    assert!(
        psc["runAsUser"].as_u64().is_some_and(|u| u != 0),
        "numeric non-root uid"
    );
    assert_eq!(
        psc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert_eq!(
        csc["runAsNonRoot"].as_bool(),
        Some(true),
        "container runAsNonRoot"
    );
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_ne!(csc["privileged"].as_bool(), Some(true));
    assert_eq!(strs(&csc["capabilities"]["drop"]), ["ALL"]);
    assert!(
        csc["capabilities"].get("add").is_none(),
        "no capabilities added"
    );

    // Downward API for the Lease namespace and holder identity.
    let env = c["env"].as_sequence().expect("env");
    for (name, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        let e = env
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("env {name}"));
        assert_eq!(
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some(field)
        );
    }

    // The config is mounted read-only from the ConfigMap, and a config change
    // rolls the pods.
    let mount = c["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/etc/qscale"))
        .expect("config mounted at /etc/qscale");
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the config volume");
    let cm_name = volume["configMap"]["name"]
        .as_str()
        .expect("a ConfigMap volume");
    assert!(
        of_kind(&docs, "ConfigMap")
            .iter()
            .any(|cm| cm["metadata"]["name"].as_str() == Some(cm_name)),
        "ConfigMap {cm_name} is defined"
    );
    assert!(
        dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .is_some_and(|s| s.len() == 64),
        "checksum/config annotation"
    );

    let limits = &c["resources"]["limits"];
    assert!(limits["memory"].as_str().is_some(), "memory limit set");
    assert!(
        c["resources"]["requests"]["cpu"].as_str().is_some(),
        "cpu request set"
    );
}

#[test]
fn manifests_config_is_valid_and_leader_election_env_matches_lease_rbac() {
    let docs = manifests();
    let dep = the_deployment(&docs);
    let c = the_qscale_container(dep);
    let cm = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|cm| cm["data"]["qscale.toml"].as_str().is_some())
        .expect("a ConfigMap with qscale.toml");
    let text = cm["data"]["qscale.toml"].as_str().unwrap();
    let cfg = load_config("deploy/manifests ConfigMap", text, literal_env(c));

    assert!(
        cfg.leader_election.enabled,
        "two replicas need leader election"
    );
    assert_eq!(
        cfg.server.listen.port(),
        9090,
        "server.listen matches containerPort"
    );
    let lease_names: Vec<String> = of_kind(&docs, "Role")
        .iter()
        .flat_map(|r| r["rules"].as_sequence().cloned().unwrap_or_default())
        .flat_map(|rule| strs(&rule["resourceNames"]))
        .collect();
    assert!(
        lease_names.contains(&cfg.leader_election.lease_name),
        "lease RBAC names {lease_names:?} include the Lease qscale uses ({})",
        cfg.leader_election.lease_name
    );
}

#[test]
fn plain_manifests_match_the_chart_defaults() {
    let values = yaml_one(&deploy().join("helm/qscale/values.yaml"));
    let chart = yaml_one(&deploy().join("helm/qscale/Chart.yaml"));
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    assert_eq!(chart["name"].as_str(), Some("qscale"));

    let docs = manifests();
    let dep = the_deployment(&docs);
    assert_eq!(dep["spec"]["replicas"], values["replicaCount"]);
    assert_eq!(values["replicaCount"].as_u64(), Some(2));
    let cm = of_kind(&docs, "ConfigMap")[0];
    assert_eq!(
        cm["data"]["qscale.toml"].as_str().map(str::trim_end),
        values["config"].as_str().map(str::trim_end),
        "deploy/manifests/qscale.yaml is stale: re-run deploy/manifests/render.sh"
    );
    let image = the_qscale_container(dep)["image"].as_str().expect("image");
    let app_version = chart["appVersion"].as_str().expect("appVersion");
    assert_eq!(
        image,
        format!(
            "{}:{app_version}",
            values["image"]["repository"].as_str().unwrap()
        )
    );
    // The chart's default config is itself valid for the daemon.
    load_config(
        "values.yaml config",
        values["config"].as_str().expect("config string"),
        vec![],
    );
    // The chart ships the same alert rules as deploy/prometheus.
    assert_eq!(
        read(&deploy().join("helm/qscale/files/alerts.yaml")),
        read(&deploy().join("prometheus/alerts.yaml")),
        "deploy/helm/qscale/files/alerts.yaml must be a copy of deploy/prometheus/alerts.yaml"
    );
}

#[test]
fn iam_policy_allows_exactly_the_actions_qscale_calls() {
    let policy = json(&deploy().join("ecs/iam-task-role-policy.json"));
    assert_eq!(policy["Version"], "2012-10-17");
    let mut actions = BTreeSet::new();
    for st in policy["Statement"].as_array().expect("Statement list") {
        assert_eq!(st["Effect"], "Allow");
        assert!(st.get("NotAction").is_none() && st.get("NotResource").is_none());
        let these: Vec<&str> = match &st["Action"] {
            Json::String(s) => vec![s.as_str()],
            Json::Array(a) => a
                .iter()
                .map(|v| v.as_str().expect("action string"))
                .collect(),
            other => panic!("Action must be a string or list, got {other}"),
        };
        let resources: Vec<&str> = match &st["Resource"] {
            Json::String(s) => vec![s.as_str()],
            Json::Array(a) => a
                .iter()
                .map(|v| v.as_str().expect("resource string"))
                .collect(),
            other => panic!("Resource must be a string or list, got {other}"),
        };
        for a in &these {
            assert!(!a.contains('*'), "wildcard action {a}");
        }
        // Only GetMetricData gets "*": CloudWatch has no resource-level
        // permissions for it. Everything else names its ARNs.
        if resources.contains(&"*") {
            assert_eq!(
                these,
                ["cloudwatch:GetMetricData"],
                "only GetMetricData on *"
            );
        } else {
            for r in &resources {
                assert!(r.starts_with("arn:aws:"), "resource {r} is an ARN");
            }
        }
        actions.extend(these.into_iter().map(str::to_owned));
    }
    let expected: BTreeSet<String> = [
        "sqs:GetQueueAttributes",
        // Resolves a dead-letter queue discovered from a RedrivePolicy.
        "sqs:GetQueueUrl",
        "cloudwatch:GetMetricData",
        "ecs:DescribeServices",
        "ecs:UpdateService",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(actions, expected);
}

#[test]
fn ecs_task_definition_runs_the_qscale_image_on_port_9090() {
    let td = json(&deploy().join("ecs/task-definition.json"));
    assert!(
        td["requiresCompatibilities"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "FARGATE")),
        "a Fargate task"
    );
    assert_eq!(td["networkMode"], "awsvpc", "Fargate requires awsvpc");
    assert!(
        td["taskRoleArn"]
            .as_str()
            .is_some_and(|s| s.starts_with("arn:aws:iam::"))
    );
    let containers = td["containerDefinitions"]
        .as_array()
        .expect("containerDefinitions");
    let q = containers
        .iter()
        .find(|c| c["name"] == "qscale")
        .expect("a container named qscale");
    assert!(
        q["image"].as_str().is_some_and(|i| i.contains("qscale")),
        "the qscale image"
    );
    assert_eq!(q["essential"], true);
    assert!(
        q["portMappings"]
            .as_array()
            .is_some_and(|p| p.iter().any(|m| m["containerPort"] == 9090)),
        "port 9090"
    );
    assert_eq!(q["readonlyRootFilesystem"], true);
    let user = q["user"].as_str().expect("user set");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "non-root user {user}"
    );
    let cmd: Vec<&str> = q["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cmd[..3], ["run", "--config", "/etc/qscale/qscale.toml"]);

    // The config the init container writes is valid with qscale's own env,
    // and does not use Kubernetes leader election.
    let env_of = |c: &Json| -> Vec<(String, String)> {
        c["environment"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap().to_owned(),
                            e["value"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let toml = containers
        .iter()
        .flat_map(env_of)
        .find(|(k, _)| k == "QSCALE_CONFIG_TOML")
        .map(|(_, v)| v)
        .expect("QSCALE_CONFIG_TOML for the config writer");
    let cfg = load_config("ECS task definition", &toml, env_of(q));
    assert!(!cfg.leader_election.enabled, "no Kubernetes Leases on ECS");
    assert_eq!(cfg.server.listen.port(), 9090);
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let path = deploy().join("grafana/qscale-dashboard.json");
    let d = json(&path);
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "modern schemaVersion"
    );
    assert!(d["uid"].as_str().is_some() && d["title"].as_str().is_some());

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let scaler = vars
        .iter()
        .find(|v| v["name"] == "scaler")
        .expect("scaler variable");
    assert_eq!(
        scaler["definition"],
        "label_values(qscale_replicas, scaler)"
    );
    assert_known_metrics("scaler variable", scaler["definition"].as_str().unwrap());

    let mut seen_ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut exprs = 0;
    for p in d["panels"].as_array().expect("panels") {
        let id = p["id"].as_u64().expect("panel id");
        assert!(seen_ids.insert(id), "duplicate panel id {id}");
        assert!(
            p["gridPos"]["w"].as_u64().is_some(),
            "panel {id} has a gridPos"
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("target expr");
            assert_known_metrics(&format!("panel {:?}", p["title"]), expr);
            used.extend(metric_tokens(expr));
            exprs += 1;
        }
    }
    assert!(exprs >= 10, "only {exprs} queries");
    for needed in [
        "qscale_queue_messages",
        "qscale_queue_oldest_message_age_seconds",
        "qscale_queue_arrival_rate",
        "qscale_replicas",
        "qscale_scale_operations_total",
        "qscale_source_errors_total",
        "qscale_target_errors_total",
        "qscale_poll_duration_seconds_bucket",
        "qscale_fallback_active",
        "qscale_paused",
        "qscale_leader",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn alert_rules_reference_only_exported_metrics() {
    let rules = yaml_one(&deploy().join("prometheus/alerts.yaml"));
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        assert!(group["name"].as_str().is_some(), "group name");
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("alerting rules only")
                .to_owned();
            let expr = rule["expr"].as_str().expect("expr");
            assert_known_metrics(&name, expr);
            assert!(
                !metric_tokens(expr).is_empty(),
                "{name} queries a qscale metric"
            );
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("critical" | "warning" | "info")
                ),
                "{name}: severity label"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
            assert!(names.insert(name.clone()), "duplicate alert {name}");
        }
    }
    for needed in [
        "QscaleScalerStale",
        "QscaleFallbackActive",
        "QscaleSourceErrors",
        "QscaleTargetErrors",
        "QscaleAtMaxReplicasWithGrowingBacklog",
        "QscaleNoLeader",
    ] {
        assert!(names.contains(needed), "alert {needed} missing");
    }

    // The promtool unit tests feed only series qscale really exports.
    let tests = yaml_one(&deploy().join("prometheus/alerts_test.yaml"));
    for t in tests["tests"].as_sequence().expect("tests") {
        for s in t["input_series"].as_sequence().into_iter().flatten() {
            assert_known_metrics("alerts_test.yaml", s["series"].as_str().expect("series"));
        }
    }
}

#[test]
fn metric_token_extraction_finds_names_and_histogram_suffixes() {
    let t = metric_tokens(
        r#"histogram_quantile(0.95, sum by (le) (rate(qscale_poll_duration_seconds_bucket{job="qscale"}[5m]))) / qscale_replicas{kind="desired"} and my_qscale_thing"#,
    );
    assert_eq!(
        t,
        BTreeSet::from([
            "qscale_poll_duration_seconds_bucket".to_owned(),
            "qscale_replicas".to_owned()
        ])
    );
    assert!(is_known_metric("qscale_poll_duration_seconds_count"));
    assert!(!is_known_metric("qscale_replicas_total"));
    assert!(!is_known_metric("qscale_queue_depth"));
}
