//! Helpers for tests against the real kube-apiserver that
//! `scripts/kube-env.sh start` runs on 127.0.0.1 (envtest style: no kubelet,
//! no controller-manager, so pods never start and tests patch `/status`).
//!
//! Tests read the admin kubeconfig from `QSCALE_TEST_KUBECONFIG` (default
//! `/tmp/qscale-kube/kubeconfig`) and the kubeconfig of a user without any
//! RBAC rights from `QSCALE_TEST_KUBECONFIG_LIMITED` (default
//! `/tmp/qscale-kube/kubeconfig-limited`). An unreachable server fails the
//! test with a message that says how to start it: a skipped integration test
//! would look like a passing one.
//!
//! Tests run in parallel in one process and share one server, so every test
//! works in a namespace of its own ([`Kube::namespace`]).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use qscale::clients::kube::client_from_config;
use qscale::targets::kubernetes::KubernetesTargetConfig;
use serde_json::{Value, json};

pub const DEFAULT_KUBECONFIG: &str = "/tmp/qscale-kube/kubeconfig";
pub const DEFAULT_KUBECONFIG_LIMITED: &str = "/tmp/qscale-kube/kubeconfig-limited";

/// The group, version and plural of the test custom resource with /scale.
pub const CRD_GROUP: &str = "qscale-test.example.com";
pub const CRD_VERSION: &str = "v1";
pub const CRD_PLURAL: &str = "workers";

pub fn admin_kubeconfig_path() -> String {
    std::env::var("QSCALE_TEST_KUBECONFIG").unwrap_or_else(|_| DEFAULT_KUBECONFIG.to_string())
}

pub fn limited_kubeconfig_path() -> String {
    std::env::var("QSCALE_TEST_KUBECONFIG_LIMITED")
        .unwrap_or_else(|_| DEFAULT_KUBECONFIG_LIMITED.to_string())
}

/// The client configuration in the kubeconfig at `path`; panics with a
/// how-to-fix message if the file is missing.
pub async fn config_from(path: &str) -> kube::Config {
    let kc = Kubeconfig::read_from(path).unwrap_or_else(|e| {
        panic!(
            "cannot read kubeconfig {path} ({e}). Start the test API server with \
             `scripts/kube-env.sh start` or point QSCALE_TEST_KUBECONFIG / \
             QSCALE_TEST_KUBECONFIG_LIMITED at a running one"
        )
    });
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {path} is unusable: {e}"))
}

/// Fail loudly if nobody answers at the kubeconfig's server.
pub async fn ensure_reachable(client: &kube::Client, path: &str) {
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!(
            "the test API server from {path} does not answer: {e}. Start it with \
             `scripts/kube-env.sh start` (QSCALE_TEST_KUBECONFIG points at its kubeconfig)"
        ),
        Err(_) => panic!(
            "the test API server from {path} did not answer within 10s. Start it with \
             `scripts/kube-env.sh start`"
        ),
    }
}

/// An admin client and the helpers that set the stage for a test.
#[derive(Clone)]
pub struct Kube {
    pub client: kube::Client,
    pub config: kube::Config,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (in this run or an earlier one) uses.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000_000)
        .unwrap_or(0);
    let mut s = format!("{prefix}-{}-{n}-{t}", std::process::id());
    s.truncate(63);
    s.trim_end_matches('-').to_string()
}

impl Kube {
    /// Connect as the admin user.
    pub async fn admin() -> Kube {
        let path = admin_kubeconfig_path();
        let config = config_from(&path).await;
        let client = client_from_config(config.clone()).expect("client from admin kubeconfig");
        ensure_reachable(&client, &path).await;
        Kube { client, config }
    }

    /// A client for the user without RBAC rights.
    pub async fn limited_client() -> kube::Client {
        let path = limited_kubeconfig_path();
        let config = config_from(&path).await;
        let client = client_from_config(config).expect("client from limited kubeconfig");
        ensure_reachable(&client, &path).await;
        client
    }

    /// The name of the user in the limited kubeconfig (for RoleBindings).
    pub fn limited_user() -> String {
        let kc = Kubeconfig::read_from(limited_kubeconfig_path()).expect("limited kubeconfig");
        kc.auth_infos
            .first()
            .map(|a| a.name.clone())
            .expect("limited kubeconfig names a user")
    }

    /// Create a fresh namespace for one test. (Without a controller-manager
    /// a deleted namespace would stay Terminating, so they are left behind;
    /// the server is throwaway.)
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = unique(prefix);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    pub async fn create_deployment(&self, ns: &str, name: &str, replicas: i32) -> Deployment {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "worker", "image": "busybox"}]}
                }
            }
        }))
        .unwrap();
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &d)
            .await
            .unwrap_or_else(|e| panic!("create deployment {ns}/{name}: {e}"))
    }

    pub async fn create_statefulset(&self, ns: &str, name: &str, replicas: i32) -> StatefulSet {
        let s: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "worker", "image": "busybox"}]}
                }
            }
        }))
        .unwrap();
        Api::<StatefulSet>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &s)
            .await
            .unwrap_or_else(|e| panic!("create statefulset {ns}/{name}: {e}"))
    }

    /// `spec.replicas` of a Deployment as stored.
    pub async fn deployment_replicas(&self, ns: &str, name: &str) -> i32 {
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get deployment {ns}/{name}: {e}"))
            .spec
            .replicas
            .unwrap_or(0)
    }

    /// Write `status` of an apps/v1 object, standing in for the missing
    /// controller-manager.
    pub async fn patch_status(&self, ns: &str, plural: &str, name: &str, status: Value) {
        let path = format!("/apis/apps/v1/namespaces/{ns}/{plural}/{name}/status");
        self.merge_patch(&path, json!({ "status": status })).await;
    }

    /// A JSON merge patch on an arbitrary path.
    pub async fn merge_patch(&self, path: &str, patch: Value) -> Value {
        let req = http::Request::patch(path)
            .header("content-type", "application/merge-patch+json")
            .body(serde_json::to_vec(&patch).unwrap())
            .unwrap();
        self.client
            .request::<Value>(req)
            .await
            .unwrap_or_else(|e| panic!("PATCH {path}: {e}"))
    }

    /// POST a JSON object to a collection path.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let req = http::Request::post(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        self.client
            .request::<Value>(req)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn get(&self, path: &str) -> Value {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        self.client
            .request::<Value>(req)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Annotate a Deployment.
    pub async fn annotate_deployment(&self, ns: &str, name: &str, key: &str, value: &str) {
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .unwrap_or_else(|e| panic!("annotate {ns}/{name}: {e}"));
    }

    /// Install the test CRD (a namespaced `Worker` with the scale
    /// subresource) once per server, and wait until it is served.
    pub async fn ensure_worker_crd(&self) {
        let name = format!("{CRD_PLURAL}.{CRD_GROUP}");
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": CRD_GROUP,
                "scope": "Namespaced",
                "names": {"plural": CRD_PLURAL, "singular": "worker", "kind": "Worker"},
                "versions": [{
                    "name": CRD_VERSION,
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {
                                "replicas": {"type": "integer", "format": "int32"}
                            }},
                            "status": {"type": "object", "properties": {
                                "replicas": {"type": "integer", "format": "int32"},
                                "readyReplicas": {"type": "integer", "format": "int32"},
                                "selector": {"type": "string"}
                            }}
                        }
                    }},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector"
                        }
                    }
                }]
            }
        });
        let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
        let req = http::Request::post(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&crd).unwrap())
            .unwrap();
        match self.client.request::<Value>(req).await {
            Ok(_) => {}
            // Another test got there first.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create CRD {name}: {e}"),
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.get(&format!("{path}/{name}")).await;
            let established = got
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.get("type") == Some(&json!("Established"))
                            && c.get("status") == Some(&json!("True"))
                    })
                });
            // Established flips slightly before discovery serves the
            // resource: also wait for the collection to answer.
            let collection = format!("/apis/{CRD_GROUP}/{CRD_VERSION}/{CRD_PLURAL}");
            let req = http::Request::get(&collection).body(Vec::new()).unwrap();
            if established && self.client.request::<Value>(req).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "CRD {name} not Established within 30s: {got}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Create a `Worker` custom resource.
    pub async fn create_worker(&self, ns: &str, name: &str, replicas: i32) -> Value {
        self.post(
            &format!("/apis/{CRD_GROUP}/{CRD_VERSION}/namespaces/{ns}/{CRD_PLURAL}"),
            json!({
                "apiVersion": format!("{CRD_GROUP}/{CRD_VERSION}"),
                "kind": "Worker",
                "metadata": {"name": name},
                "spec": {"replicas": replicas}
            }),
        )
        .await
    }
}

/// A target config for `resource` `ns/name`.
pub fn target_config(ns: &str, name: &str, resource: &str) -> KubernetesTargetConfig {
    KubernetesTargetConfig {
        namespace: ns.into(),
        name: name.into(),
        resource: resource.into(),
        context: None,
        dry_run: false,
    }
}
