//! The Kubernetes target against a real kube-apiserver with etcd
//! (`scripts/kube-env.sh start`), through the real `kube` client: reads and
//! writes through `/scale`, optimistic concurrency, RBAC, custom resources,
//! the pause annotation and the HPA-conflict warning. Faults the real server
//! does not produce on demand (429, 500, hangs, drops) come from a
//! fault-injecting proxy in front of it.
//!
//! Needs `QSCALE_TEST_KUBECONFIG` (default `/tmp/qscale-kube/kubeconfig`)
//! and `QSCALE_TEST_KUBECONFIG_LIMITED` (default
//! `/tmp/qscale-kube/kubeconfig-limited`); fails, never skips, without them.

#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/kube.rs"]
mod kube_support;

use std::time::{Duration, Instant};

use http::Method;
use qscale::clients::Clients;
use qscale::clients::kube::client_from_config;
use qscale::contract::{Replicas, ScaleTarget, TargetError};
use qscale::targets::TargetConfig;
use qscale::targets::kubernetes::{KubernetesTarget, PAUSED_ANNOTATION};
use serde_json::{Value, json};

use fault_proxy::{Fault, FaultProxy};
use kube_support::{CRD_GROUP, CRD_PLURAL, CRD_VERSION, Kube, target_config, unique};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A target built the way the daemon builds it: `TargetConfig::build` with
/// a `Clients` whose default-context client is the test server's.
async fn built_target(
    client: kube::Client,
    ns: &str,
    name: &str,
    resource: &str,
) -> std::sync::Arc<dyn ScaleTarget> {
    let shared = Clients::new();
    shared.kube.insert(None, client).await;
    TargetConfig::Kubernetes(target_config(ns, name, resource))
        .build(&shared, TIMEOUT)
        .await
        .expect("build target")
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, TargetError>) -> TargetError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            // Shown with --nocapture: the messages users will read.
            eprintln!("{}: {e}", e.metric_label());
            e
        }
    }
}

#[tokio::test]
async fn scaling_a_deployment_up_writes_spec_replicas_through_the_scale_subresource() {
    let k = Kube::admin().await;
    let ns = k.namespace("up").await;
    k.create_deployment(&ns, "worker", 1).await;
    let t = built_target(k.client.clone(), &ns, "worker", "deployments").await;
    assert_eq!(t.kind(), "kubernetes");

    // No kubelet: nothing is ready until the test says so.
    assert_eq!(t.current().await.unwrap(), Replicas::new(1, Some(0)));
    k.patch_status(
        &ns,
        "deployments",
        "worker",
        json!({"replicas": 1, "readyReplicas": 1}),
    )
    .await;
    assert_eq!(t.current().await.unwrap(), Replicas::new(1, Some(1)));

    t.set_replicas(5).await.unwrap();
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 5);
    assert_eq!(t.current().await.unwrap(), Replicas::new(5, Some(1)));
}

#[tokio::test]
async fn scaling_a_deployment_down_lowers_spec_replicas() {
    let k = Kube::admin().await;
    let ns = k.namespace("down").await;
    k.create_deployment(&ns, "worker", 6).await;
    let t = built_target(k.client.clone(), &ns, "worker", "deployment").await;
    assert_eq!(t.current().await.unwrap().desired, 6);
    t.set_replicas(2).await.unwrap();
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 2);
    // Scale to zero is a valid count too.
    t.current().await.unwrap();
    t.set_replicas(0).await.unwrap();
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 0);
}

#[tokio::test]
async fn a_write_after_someone_else_changed_the_object_is_a_conflict_and_a_re_read_then_succeeds() {
    let k = Kube::admin().await;
    let ns = k.namespace("conflict").await;
    k.create_deployment(&ns, "worker", 2).await;
    let t = built_target(k.client.clone(), &ns, "worker", "deployments").await;
    assert_eq!(t.current().await.unwrap().desired, 2);

    // Someone else scales between qscale's read and its write.
    k.merge_patch(
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/worker"),
        json!({"spec": {"replicas": 7}}),
    )
    .await;
    let err = expect_err(t.set_replicas(3).await);
    assert_eq!(err.metric_label(), "conflict", "{err}");
    assert!(err.to_string().contains("re-read"), "{err}");
    // The other writer's value stands.
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 7);

    // A stale write stays refused until qscale has looked again.
    assert_eq!(
        expect_err(t.set_replicas(3).await).metric_label(),
        "conflict"
    );

    assert_eq!(t.current().await.unwrap().desired, 7);
    t.set_replicas(3).await.unwrap();
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 3);
}

#[tokio::test]
async fn a_user_without_rbac_rights_is_forbidden_with_a_message_naming_the_grant() {
    let k = Kube::admin().await;
    let ns = k.namespace("forbidden").await;
    k.create_deployment(&ns, "worker", 2).await;
    let limited = Kube::limited_client().await;
    let t = built_target(limited, &ns, "worker", "deployments").await;

    let err = expect_err(t.current().await);
    assert_eq!(err.metric_label(), "forbidden", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("deployments/scale") && msg.contains(&ns) && msg.contains("grant"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");

    let err = expect_err(t.set_replicas(9).await);
    assert_eq!(err.metric_label(), "forbidden", "{err}");
    assert_eq!(expect_err(t.paused().await).metric_label(), "forbidden");
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 2);
}

/// The ClusterRole in docs/rbac.md, as the API expects it.
fn documented_cluster_role() -> Value {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/rbac.md"))
        .expect("docs/rbac.md");
    let yaml = doc
        .split("```yaml")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a yaml block in docs/rbac.md");
    for d in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(d).expect("valid YAML");
        if v.get("kind") == Some(&json!("ClusterRole")) {
            return v;
        }
    }
    panic!("no ClusterRole in the first yaml block of docs/rbac.md");
}

#[tokio::test]
async fn the_role_in_docs_rbac_md_is_enough_to_scale_a_deployment() {
    let k = Kube::admin().await;
    let ns = k.namespace("rbac").await;
    let other = k.namespace("rbac-other").await;
    k.create_deployment(&ns, "worker", 1).await;
    k.create_deployment(&other, "worker", 1).await;

    let mut role = documented_cluster_role();
    let role_name = unique("qscale-target");
    role["metadata"] = json!({ "name": role_name });
    k.post("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
        .await;
    k.post(
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        json!({
            "metadata": {"name": "qscale-target"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": Kube::limited_user()}]
        }),
    )
    .await;

    let limited = Kube::limited_client().await;
    let t = built_target(limited.clone(), &ns, "worker", "deployments").await;
    // RBAC changes reach the authorizer's cache quickly but not instantly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        match t.current().await {
            Err(e) if e.metric_label() == "forbidden" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };
    assert_eq!(first.unwrap(), Replicas::new(1, Some(0)));
    t.set_replicas(4).await.unwrap();
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 4);
    assert!(!t.paused().await.unwrap());
    assert_eq!(t.conflicts().await.unwrap(), Vec::<String>::new());

    // The RoleBinding grants nothing in another namespace.
    let elsewhere = built_target(limited, &other, "worker", "deployments").await;
    assert_eq!(
        expect_err(elsewhere.current().await).metric_label(),
        "forbidden"
    );
}

#[tokio::test]
async fn a_missing_object_is_not_found_and_nothing_is_written() {
    let k = Kube::admin().await;
    let ns = k.namespace("missing").await;
    let t = built_target(k.client.clone(), &ns, "no-such-worker", "deployments").await;
    let err = expect_err(t.current().await);
    assert_eq!(err.metric_label(), "not_found", "{err}");
    assert!(err.to_string().contains("no-such-worker"), "{err}");
    let err = expect_err(t.set_replicas(3).await);
    assert_eq!(err.metric_label(), "not_found", "{err}");
    assert_eq!(expect_err(t.paused().await).metric_label(), "not_found");

    // Creating it afterwards shows nothing was written under that name.
    k.create_deployment(&ns, "no-such-worker", 1).await;
    assert_eq!(k.deployment_replicas(&ns, "no-such-worker").await, 1);

    // A namespace that does not exist is just as missing.
    let t = built_target(k.client.clone(), "no-such-namespace-qs", "w", "deployments").await;
    assert_eq!(expect_err(t.current().await).metric_label(), "not_found");
}

#[tokio::test]
async fn replicas_beyond_int32_are_invalid_and_nothing_is_written() {
    let k = Kube::admin().await;
    let ns = k.namespace("int32").await;
    k.create_deployment(&ns, "worker", 2).await;
    let t = built_target(k.client.clone(), &ns, "worker", "deployments").await;
    t.current().await.unwrap();
    let err = expect_err(t.set_replicas(i32::MAX as u32 + 1).await);
    assert_eq!(err.metric_label(), "invalid", "{err}");
    assert!(err.to_string().contains("int32"), "{err}");
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 2);
}

#[tokio::test]
async fn a_statefulset_scales_and_reports_its_ready_replicas() {
    let k = Kube::admin().await;
    let ns = k.namespace("sts").await;
    k.create_statefulset(&ns, "db-worker", 1).await;
    let t = built_target(k.client.clone(), &ns, "db-worker", "statefulsets").await;
    k.patch_status(
        &ns,
        "statefulsets",
        "db-worker",
        json!({"replicas": 1, "readyReplicas": 1}),
    )
    .await;
    assert_eq!(t.current().await.unwrap(), Replicas::new(1, Some(1)));
    t.set_replicas(3).await.unwrap();
    let s = k
        .get(&format!(
            "/apis/apps/v1/namespaces/{ns}/statefulsets/db-worker"
        ))
        .await;
    assert_eq!(s.pointer("/spec/replicas"), Some(&json!(3)));
}

#[tokio::test]
async fn a_custom_resource_with_a_scale_subresource_scales() {
    let k = Kube::admin().await;
    k.ensure_worker_crd().await;
    let ns = k.namespace("crd").await;
    k.create_worker(&ns, "thumbs", 2).await;
    let resource = format!("{CRD_GROUP}/{CRD_VERSION}/{CRD_PLURAL}");
    let t = built_target(k.client.clone(), &ns, "thumbs", &resource).await;

    // A custom resource without status.readyReplicas: ready is unknown.
    assert_eq!(t.current().await.unwrap(), Replicas::new(2, None));
    let obj_path = format!("/apis/{CRD_GROUP}/{CRD_VERSION}/namespaces/{ns}/{CRD_PLURAL}/thumbs");
    k.merge_patch(
        &format!("{obj_path}/status"),
        json!({"status": {"replicas": 2, "readyReplicas": 2}}),
    )
    .await;
    assert_eq!(t.current().await.unwrap(), Replicas::new(2, Some(2)));

    t.set_replicas(6).await.unwrap();
    assert_eq!(
        k.get(&obj_path).await.pointer("/spec/replicas"),
        Some(&json!(6))
    );

    // The conflict check knows the object's kind from the object itself.
    assert_eq!(t.conflicts().await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn the_paused_annotation_pauses_the_target() {
    let k = Kube::admin().await;
    let ns = k.namespace("paused").await;
    k.create_deployment(&ns, "worker", 1).await;
    let t = built_target(k.client.clone(), &ns, "worker", "deployments").await;
    assert!(!t.paused().await.unwrap());
    k.annotate_deployment(&ns, "worker", PAUSED_ANNOTATION, "true")
        .await;
    assert!(t.paused().await.unwrap());
    k.annotate_deployment(&ns, "worker", PAUSED_ANNOTATION, "false")
        .await;
    assert!(!t.paused().await.unwrap());
}

#[tokio::test]
async fn an_hpa_on_the_same_deployment_is_reported_as_a_conflict() {
    let k = Kube::admin().await;
    let ns = k.namespace("hpa").await;
    k.create_deployment(&ns, "thumbnail-worker", 1).await;
    k.create_deployment(&ns, "other", 1).await;
    k.create_statefulset(&ns, "thumbnail-sts", 1).await;
    let hpa = |name: &str, kind: &str, target: &str| {
        json!({
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
                "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50
            }
        })
    };
    let hpas = format!("/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers");
    k.post(&hpas, hpa("foo", "Deployment", "thumbnail-worker"))
        .await;
    // Same name, other kind: not the same object.
    k.post(&hpas, hpa("bar", "StatefulSet", "thumbnail-worker"))
        .await;

    let t = built_target(k.client.clone(), &ns, "thumbnail-worker", "deployments").await;
    let lines = t.conflicts().await.unwrap();
    assert_eq!(
        lines,
        [format!(
            "HPA {ns}/foo also scales deployments/{ns}/thumbnail-worker: two controllers will \
             fight; remove one"
        )]
    );

    let t = built_target(k.client.clone(), &ns, "other", "deployments").await;
    assert_eq!(t.conflicts().await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn an_unknown_kubeconfig_context_is_invalid() {
    let shared = Clients::new();
    let mut cfg = target_config("default", "worker", "deployments");
    cfg.context = Some("no-such-context-qscale-test".into());
    let err = expect_err(
        TargetConfig::Kubernetes(cfg)
            .build(&shared, TIMEOUT)
            .await
            .map(|_| ()),
    );
    assert_eq!(err.metric_label(), "invalid", "{err}");
    assert!(
        err.to_string().contains("no-such-context-qscale-test"),
        "{err}"
    );
}

// ----------------------------------------------------------------- faults ---

/// A deployment `worker` in a fresh namespace, and a target that reaches the
/// server through a fault proxy.
async fn behind_proxy(
    prefix: &str,
    replicas: i32,
    timeout: Duration,
) -> (Kube, String, FaultProxy, KubernetesTarget) {
    let k = Kube::admin().await;
    let ns = k.namespace(prefix).await;
    k.create_deployment(&ns, "worker", replicas).await;
    let proxy = FaultProxy::start(&k.config).await;
    let mut cfg = k.config.clone();
    cfg.cluster_url = proxy.url.parse().expect("proxy url");
    let client = client_from_config(cfg).expect("client via proxy");
    let t = KubernetesTarget::new(
        &target_config(&ns, "worker", "deployments"),
        client,
        timeout,
    )
    .expect("target");
    (k, ns, proxy, t)
}

#[tokio::test]
async fn throttled_requests_are_retried_after_retry_after_and_the_write_lands_once() {
    let (k, ns, proxy, t) = behind_proxy("f429", 1, TIMEOUT).await;
    proxy.fail_next(1, Fault::Status(429, Some(1)));
    let started = Instant::now();
    assert_eq!(t.current().await.unwrap().desired, 1);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );

    proxy.fail_next_method(Method::PUT, 2, Fault::Status(429, Some(1)));
    let started = Instant::now();
    t.set_replicas(4).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert!(started.elapsed() < TIMEOUT);
    assert_eq!(proxy.applied_writes(), 1);
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 4);
}

#[tokio::test]
async fn throttling_that_outlasts_the_timeout_is_reported_as_throttled_in_time() {
    let timeout = Duration::from_secs(2);
    let (_k, _ns, proxy, t) = behind_proxy("f429long", 1, timeout).await;
    proxy.fail_next(100, Fault::Status(429, Some(1)));
    let started = Instant::now();
    let err = expect_err(t.current().await);
    assert_eq!(err.metric_label(), "throttled", "{err}");
    assert!(started.elapsed() <= timeout + Duration::from_millis(300));
}

#[tokio::test]
async fn server_errors_are_retried_and_the_write_lands_exactly_once() {
    let (k, ns, proxy, t) = behind_proxy("f500", 2, TIMEOUT).await;
    proxy.fail_next(2, Fault::Status(500, None));
    assert_eq!(t.current().await.unwrap().desired, 2);

    proxy.fail_next_method(Method::PUT, 1, Fault::Status(500, None));
    proxy.fail_next_method(Method::PUT, 1, Fault::Status(503, None));
    t.set_replicas(5).await.unwrap();
    assert_eq!(proxy.applied_writes(), 1);
    assert_eq!(proxy.forwarded(Method::PUT), 1);
    // Writes name qscale's field manager. (kube-apiserver 1.20 does not yet
    // record managers of scale-subresource writes in managedFields, so the
    // request itself is checked.)
    let puts: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::PUT)
        .map(|s| s.path)
        .collect();
    assert!(
        puts.iter()
            .all(|p| p.ends_with("/scale?fieldManager=qscale")),
        "{puts:?}"
    );
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 5);
}

#[tokio::test]
async fn a_server_that_keeps_failing_is_unavailable_within_the_timeout() {
    let timeout = Duration::from_secs(2);
    let (_k, _ns, proxy, t) = behind_proxy("f503", 1, timeout).await;
    proxy.fail_next(100, Fault::Status(503, None));
    let started = Instant::now();
    let err = expect_err(t.current().await);
    assert_eq!(err.metric_label(), "unavailable", "{err}");
    assert!(started.elapsed() <= timeout + Duration::from_millis(300));
}

#[tokio::test]
async fn a_hung_server_yields_timeout_within_the_timeout() {
    let timeout = Duration::from_secs(2);
    let (k, ns, proxy, t) = behind_proxy("fhang", 1, timeout).await;
    proxy.fail_next(100, Fault::Hang);
    let started = Instant::now();
    let err = expect_err(t.current().await);
    assert_eq!(err.metric_label(), "timeout", "{err}");
    let took = started.elapsed();
    assert!(
        took <= timeout + Duration::from_millis(300),
        "took {took:?}"
    );
    assert!(
        took >= timeout - Duration::from_millis(300),
        "took {took:?}"
    );

    let err = expect_err(t.set_replicas(3).await);
    assert_eq!(err.metric_label(), "timeout", "{err}");
    assert_eq!(proxy.applied_writes(), 0);
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 1);
}

#[tokio::test]
async fn one_hung_attempt_is_retried_within_the_timeout() {
    let (_k, _ns, proxy, t) = behind_proxy("fhang1", 3, TIMEOUT).await;
    proxy.fail_next(1, Fault::Hang);
    let started = Instant::now();
    assert_eq!(t.current().await.unwrap().desired, 3);
    assert!(started.elapsed() < TIMEOUT);
}

#[tokio::test]
async fn a_dropped_connection_is_retried_and_the_write_lands_once() {
    let (k, ns, proxy, t) = behind_proxy("fdrop", 1, TIMEOUT).await;
    proxy.fail_next(1, Fault::Drop);
    assert_eq!(t.current().await.unwrap().desired, 1);

    proxy.fail_next_method(Method::PUT, 1, Fault::Drop);
    t.set_replicas(2).await.unwrap();
    assert_eq!(proxy.applied_writes(), 1);
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 2);
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_not_applied_twice() {
    let (k, ns, proxy, t) = behind_proxy("flost", 1, TIMEOUT).await;
    t.current().await.unwrap();
    // The server applies the write but the answer never arrives; the retry
    // (same resourceVersion) is refused with 409 and a re-read shows the
    // intended count is in place.
    proxy.fail_next_method(Method::PUT, 1, Fault::DropAfterForward);
    t.set_replicas(4).await.unwrap();
    assert_eq!(proxy.applied_writes(), 1);
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 4);
}

#[tokio::test]
async fn a_conflict_is_never_retried() {
    let (k, ns, proxy, t) = behind_proxy("f409", 1, TIMEOUT).await;
    t.current().await.unwrap();
    k.merge_patch(
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/worker"),
        json!({"spec": {"replicas": 8}}),
    )
    .await;
    proxy.clear_log();
    let err = expect_err(t.set_replicas(2).await);
    assert_eq!(err.metric_label(), "conflict", "{err}");
    assert_eq!(proxy.forwarded(Method::PUT), 1);
    assert_eq!(proxy.applied_writes(), 0);
    assert_eq!(k.deployment_replicas(&ns, "worker").await, 8);
}
