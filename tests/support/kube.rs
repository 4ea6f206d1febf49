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

    /// Wait until the Deployment has `want` replicas, reading it every
    /// 200 ms; how long that took. Fails the test after `limit`.
    pub async fn wait_replicas(
        &self,
        ns: &str,
        name: &str,
        want: i32,
        limit: Duration,
    ) -> Duration {
        let t = std::time::Instant::now();
        loop {
            let got = self.deployment_replicas(ns, name).await;
            if got == want {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < limit,
                "{name}: replicas stayed {got}, wanted {want}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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

/// A kube-apiserver of the test's own, which the test may kill and start
/// again: a second instance of the server that `scripts/kube-env.sh` runs,
/// with the same etcd, certificates and token file (Kubernetes runs several
/// apiservers on one etcd in every HA cluster), on another port. Restarting
/// it is a real apiserver restart for whoever talks to it, while the shared
/// instance stays up for the test's own observations and for other tests.
///
/// Its command line is the shared instance's (read from
/// `<run dir>/kube-apiserver.pid`, the run dir being the admin kubeconfig's
/// directory) with `--secure-port` changed, so the flags live in one place.
pub struct OwnApiServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
    /// A kubeconfig like the admin one, pointed at this instance.
    pub kubeconfig: std::path::PathBuf,
}

impl OwnApiServer {
    /// Start on `port` and wait until its /readyz answers 200; its kubeconfig
    /// and log go into `dir`.
    pub async fn start(port: u16, dir: &std::path::Path) -> OwnApiServer {
        let admin = admin_kubeconfig_path();
        let run = std::path::Path::new(&admin)
            .parent()
            .unwrap_or_else(|| std::path::Path::new("/"))
            .to_path_buf();
        let pid_file = run.join("kube-apiserver.pid");
        let how = "start it with `scripts/kube-env.sh start` and point \
                   QSCALE_TEST_KUBECONFIG at its kubeconfig";
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("cannot read {} ({e}); {how}", pid_file.display()));
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_else(|e| {
            panic!(
                "the kube-apiserver of {} is not running ({e}); {how}",
                run.display()
            )
        });
        let mut args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let at = args
            .iter()
            .position(|a| a == "--secure-port")
            .unwrap_or_else(|| {
                panic!(
                    "no --secure-port in the command line of {}",
                    pid_file.display()
                )
            });
        let old_port = args.get(at + 1).cloned().unwrap_or_default();
        if let Some(p) = args.get_mut(at + 1) {
            *p = port.to_string();
        }

        let text = std::fs::read_to_string(&admin).expect("admin kubeconfig");
        let old = format!("https://127.0.0.1:{old_port}");
        assert!(text.contains(&old), "{admin} does not name {old}");
        let kubeconfig = dir.join("own-apiserver.kubeconfig");
        std::fs::write(
            &kubeconfig,
            text.replace(&old, &format!("https://127.0.0.1:{port}")),
        )
        .expect("write kubeconfig");
        let mut s = OwnApiServer {
            port,
            args,
            child: None,
            log: dir.join("own-apiserver.log"),
            kubeconfig,
        };
        s.restart().await;
        s
    }

    /// Kill it (SIGKILL: connections drop mid-request) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it (again) on the same port; wait until /readyz answers 200.
    pub async fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the apiserver's log");
        let child = std::process::Command::new(&self.args[0])
            .args(&self.args[1..])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("apiserver log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e})", self.args[0]));
        self.child = Some(child);
        let config = config_from(self.kubeconfig.to_str().expect("utf-8 path")).await;
        let client = kube::Client::try_from(config).expect("client for the own apiserver");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!("the own kube-apiserver exited with {st}: {tail:?}");
            }
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            let probe = tokio::time::timeout(Duration::from_secs(2), client.request_text(req));
            if let Ok(Ok(body)) = probe.await
                && body.trim() == "ok"
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the own kube-apiserver on port {} was not ready within 60s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for OwnApiServer {
    fn drop(&mut self) {
        self.kill();
    }
}
