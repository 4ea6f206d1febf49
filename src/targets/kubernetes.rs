//! Kubernetes target: any object with a `/scale` subresource.
//!
//! qscale reads and writes replica counts only through the scale
//! subresource (`autoscaling/v1` `Scale`), so it needs no rights on the
//! object's spec and works for Deployments, StatefulSets and custom resources
//! (Argo Rollouts) alike. It also reads the object itself, for two things the
//! scale subresource does not carry: the ready count (`status.readyReplicas`)
//! and the `qscale.io/paused` annotation.
//!
//! Writes use optimistic concurrency: [`KubernetesTarget::current`] remembers
//! the `resourceVersion` it read and [`KubernetesTarget::set_replicas`] sends
//! it back, so a change made by someone else in between (a human, a deploy,
//! another autoscaler) makes the API server answer 409 and qscale re-reads
//! and decides again instead of overwriting it.
//!
//! Requests are sent raw through the `kube` client (its own retry layer off)
//! so that this file owns the retry policy: bounded attempts with backoff
//! inside the caller's timeout, `Retry-After` honoured on 429, retries on
//! 500/502/503/504, dropped connections and hung attempts, and never a retry
//! after a 409. Every failure maps to one [`TargetError`] whose text says
//! what to fix.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, StatusCode};
use kube::client::Body;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::clients::Clients;
use crate::clients::error_text::{chain, one_line};
use crate::contract::{Replicas, ScaleTarget, TargetError};
use crate::targets::TargetSpec;
use crate::validate::Problems;

/// The annotation that pauses qscale for one object: set it to `"true"` on
/// the Deployment (or other object) to stop qscale from resizing it while it
/// keeps sampling and reporting.
pub const PAUSED_ANNOTATION: &str = "qscale.io/paused";

/// The field manager qscale writes as, visible in `managedFields`.
pub const FIELD_MANAGER: &str = "qscale";

/// `target.kind = "kubernetes"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesTargetConfig {
    /// Namespace of the object.
    #[serde(default = "default_namespace")]
    pub namespace: String,

    /// Name of the object.
    pub name: String,

    /// `deployments` (default), `statefulsets`, or `group/version/resource`
    /// of any resource with a `/scale` subresource, e.g.
    /// `argoproj.io/v1alpha1/rollouts`.
    #[serde(default = "default_resource")]
    pub resource: String,

    /// kubeconfig context to use (default: the current context, or the
    /// in-cluster service account).
    #[serde(default)]
    pub context: Option<String>,

    /// Decide and report, never write.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_namespace() -> String {
    "default".to_string()
}
fn default_resource() -> String {
    "deployments".to_string()
}

/// A resource named in `resource`, resolved to its API coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub group: String,
    pub version: String,
    pub plural: String,
}

impl ResourceRef {
    /// Whether this is one of the built-in workload resources of `apps`,
    /// whose `status.readyReplicas` is omitted when it is zero.
    fn is_apps(&self) -> bool {
        self.group == "apps"
    }

    /// `deployments` for built-ins, `rollouts.argoproj.io` otherwise: the
    /// name RBAC rules and `kubectl` use.
    fn qualified(&self) -> String {
        if self.is_apps() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The URL path of the collection in `namespace`.
    fn collection_path(&self, namespace: &str) -> String {
        format!(
            "/apis/{}/{}/namespaces/{}/{}",
            self.group, self.version, namespace, self.plural
        )
    }
}

impl KubernetesTargetConfig {
    /// Resolve `resource` to group/version/plural.
    pub fn resource_ref(&self) -> Result<ResourceRef, String> {
        let r = self.resource.trim();
        let apps = |plural: &str| ResourceRef {
            group: "apps".into(),
            version: "v1".into(),
            plural: plural.into(),
        };
        match r {
            "deployments" | "deployment" | "deploy" => Ok(apps("deployments")),
            "statefulsets" | "statefulset" | "sts" => Ok(apps("statefulsets")),
            "replicasets" | "replicaset" | "rs" => Ok(apps("replicasets")),
            other => {
                let parts: Vec<&str> = other.split('/').collect();
                let is_name = |s: &str| {
                    !s.is_empty()
                        && s.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                        })
                };
                match parts.as_slice() {
                    [g, v, p] if is_name(g) && is_name(v) && is_name(p) => Ok(ResourceRef {
                        group: (*g).into(),
                        version: (*v).into(),
                        plural: (*p).into(),
                    }),
                    _ => Err(format!(
                        "{other:?} is not deployments, statefulsets or group/version/resource \
                         (e.g. argoproj.io/v1alpha1/rollouts)"
                    )),
                }
            }
        }
    }
}

#[async_trait]
impl TargetSpec for KubernetesTargetConfig {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        if !dns_label(&self.namespace) {
            p.push(
                format!("{path}.namespace"),
                "must be a DNS label (lowercase letters, digits, '-')",
            );
        }
        if !dns_subdomain(&self.name) {
            p.push(
                format!("{path}.name"),
                "must be a DNS subdomain (lowercase letters, digits, '-', '.')",
            );
        }
        if let Err(e) = self.resource_ref() {
            p.push(format!("{path}.resource"), e);
        }
    }

    fn describe(&self) -> String {
        let mut d = format!("{} {}/{}", self.resource, self.namespace, self.name);
        if self.dry_run {
            d.push_str(" (dry run)");
        }
        d
    }

    async fn build(
        &self,
        clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn ScaleTarget>, TargetError> {
        Ok(Arc::new(
            KubernetesTarget::build(self, clients, timeout).await?,
        ))
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

// -------------------------------------------------------------- target ---

/// What one read of the target saw, with more detail than [`Replicas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleState {
    /// `spec.replicas` of the scale subresource.
    pub desired: u32,
    /// `status.replicas` of the scale subresource (pods that exist).
    pub replicas: u32,
    /// `status.readyReplicas` of the object, when known.
    pub ready: Option<u32>,
    /// The `resourceVersion` the next write is conditional on.
    pub resource_version: String,
}

/// A Kubernetes object resized through its `/scale` subresource.
pub struct KubernetesTarget {
    client: kube::Client,
    namespace: String,
    name: String,
    resource: ResourceRef,
    timeout: Duration,
    /// resourceVersion of the last read (or of our own last write); the
    /// next write is conditional on it.
    last_version: std::sync::Mutex<Option<String>>,
    /// The pause annotation as the object read by the last `state()` had it,
    /// so `paused()` right after `current()` costs no second GET. Taken on
    /// use, so it never answers twice from one read.
    last_paused: std::sync::Mutex<Option<bool>>,
}

/// How the object is spoken of in messages: `deployments/media/worker`.
impl std::fmt::Display for KubernetesTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.resource.qualified(),
            self.namespace,
            self.name
        )
    }
}

/// What a request was for, to word errors (`cannot update deployments/scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Update,
    List,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Update => "update",
            Verb::List => "list",
        }
    }
}

/// One request, described for retries and error messages.
struct Call<'a> {
    verb: Verb,
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    /// RBAC resource the request needs, e.g. `deployments/scale`.
    rbac_resource: String,
    /// API group of `rbac_resource` (`""` for core).
    rbac_group: &'a str,
}

/// A failed call: the error to report, and whether an earlier attempt of
/// the same call may have reached the server (a write that timed out, was
/// cut off or got a 5xx may have been applied).
struct Failed {
    error: TargetError,
    after_ambiguous: bool,
    status: Option<StatusCode>,
}

/// What one attempt ended with.
enum Attempt {
    Ok(Vec<u8>),
    /// Retry after this long (429 Retry-After) or after backoff (`None`).
    Retry {
        error: TargetError,
        after: Option<Duration>,
        ambiguous: bool,
    },
    /// Final: retrying cannot help.
    Fatal(TargetError, StatusCode),
}

/// At most this many attempts per call, whatever the timeout.
const MAX_ATTEMPTS: u32 = 6;
/// First backoff after a failed attempt; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl KubernetesTarget {
    /// The target for `cfg`, with a client from `shared` (one per kubeconfig
    /// context). Every read or write gives up after `timeout`, retries
    /// included.
    pub async fn build(
        cfg: &KubernetesTargetConfig,
        shared: &Clients,
        timeout: Duration,
    ) -> Result<KubernetesTarget, TargetError> {
        // Validate before loading a kubeconfig, so a typo is reported as
        // such and not as a connection problem.
        Self::check(cfg)?;
        let client = shared.kube.get(cfg.context.as_deref()).await?;
        KubernetesTarget::new(cfg, client, timeout)
    }

    /// The target for `cfg` using `client` as given.
    pub fn new(
        cfg: &KubernetesTargetConfig,
        client: kube::Client,
        timeout: Duration,
    ) -> Result<KubernetesTarget, TargetError> {
        let resource = Self::check(cfg)?;
        if timeout.is_zero() {
            return Err(TargetError::Invalid(
                "actuate_timeout must be greater than 0".into(),
            ));
        }
        Ok(KubernetesTarget {
            client,
            namespace: cfg.namespace.clone(),
            name: cfg.name.clone(),
            resource,
            timeout,
            last_version: std::sync::Mutex::new(None),
            last_paused: std::sync::Mutex::new(None),
        })
    }

    /// Names end up in URL paths: refuse anything validation would refuse.
    fn check(cfg: &KubernetesTargetConfig) -> Result<ResourceRef, TargetError> {
        let mut p = Problems::default();
        cfg.validate("target", &mut p);
        if !p.is_empty() {
            return Err(TargetError::Invalid(p.0.join("; ")));
        }
        cfg.resource_ref().map_err(TargetError::Invalid)
    }

    fn object_path(&self) -> String {
        format!(
            "{}/{}",
            self.resource.collection_path(&self.namespace),
            self.name
        )
    }

    fn scale_path(&self) -> String {
        format!("{}/scale", self.object_path())
    }

    fn remembered_version(&self) -> Option<String> {
        self.last_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember_version(&self, v: String) {
        *self.last_version.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }

    /// Read the scale subresource and the object; remember the
    /// resourceVersion for the next write.
    pub async fn state(&self) -> Result<ScaleState, TargetError> {
        let deadline = Instant::now() + self.timeout;
        let scale = self.get_scale(deadline).await?;
        let ready = match self.get_object(deadline).await {
            Ok(obj) => {
                *self.last_paused.lock().unwrap_or_else(|e| e.into_inner()) = Some(is_paused(&obj));
                ready_replicas(&obj, &self.resource)?
            }
            // The scale subresource is what qscale must have; without `get`
            // on the object it still works, only blind to readiness.
            Err(TargetError::Forbidden(msg)) => {
                tracing::warn!(target = %self, "ready count unknown: {msg}");
                None
            }
            Err(e) => return Err(e),
        };
        self.remember_version(scale.resource_version.clone());
        Ok(ScaleState {
            desired: scale.spec_replicas,
            replicas: scale.status_replicas,
            ready,
            resource_version: scale.resource_version,
        })
    }

    async fn get_scale(&self, deadline: Instant) -> Result<ParsedScale, TargetError> {
        let call = self.scale_call(Verb::Get, Method::GET, self.scale_path(), None);
        let body = self.send(&call, deadline).await.map_err(|f| f.error)?;
        parse_scale(&body).map_err(|e| self.bad_response("scale", &e))
    }

    async fn get_object(&self, deadline: Instant) -> Result<Value, TargetError> {
        let call = Call {
            verb: Verb::Get,
            method: Method::GET,
            path: self.object_path(),
            body: None,
            rbac_resource: self.resource.plural.clone(),
            rbac_group: &self.resource.group,
        };
        let body = self.send(&call, deadline).await.map_err(|f| f.error)?;
        serde_json::from_slice(&body).map_err(|e| self.bad_response("object", &e.to_string()))
    }

    fn scale_call(
        &self,
        verb: Verb,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Call<'_> {
        Call {
            verb,
            method,
            path,
            body,
            rbac_resource: format!("{}/scale", self.resource.plural),
            rbac_group: &self.resource.group,
        }
    }

    fn bad_response(&self, what: &str, err: &str) -> TargetError {
        TargetError::Unavailable(format!(
            "the API server sent an unreadable {what} for {self}: {err}; check that {} \
             has a /scale subresource",
            self.resource.qualified()
        ))
    }

    /// Write `n` through the scale subresource, conditional on the
    /// resourceVersion of the last read.
    async fn write(&self, n: u32) -> Result<(), TargetError> {
        let replicas = i32::try_from(n).map_err(|_| {
            TargetError::Invalid(format!(
                "{n} replicas for {self} is beyond the int32 range Kubernetes accepts; \
                 lower policy.max_replicas"
            ))
        })?;
        let deadline = Instant::now() + self.timeout;
        let version = match self.remembered_version() {
            Some(v) => v,
            // Nothing read yet by this instance: the write is conditional on
            // the state as of now.
            None => self.get_scale(deadline).await?.resource_version,
        };
        let body = serde_json::json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": version,
            },
            "spec": { "replicas": replicas },
        });
        let body = serde_json::to_vec(&body)
            .map_err(|e| TargetError::Invalid(format!("cannot encode the scale body: {e}")))?;
        let path = format!("{}?fieldManager={FIELD_MANAGER}", self.scale_path());
        let call = self.scale_call(Verb::Update, Method::PUT, path, Some(body));
        match self.send(&call, deadline).await {
            Ok(resp) => {
                // Later writes without a re-read are conditional on our own.
                if let Ok(s) = parse_scale(&resp) {
                    self.remember_version(s.resource_version);
                }
                Ok(())
            }
            Err(Failed {
                error: TargetError::Conflict(msg),
                after_ambiguous: true,
                ..
            }) => {
                // An earlier attempt may have been applied before its answer
                // was lost; then the 409 is about our own write. Look, do not
                // write again.
                match self.get_scale(deadline).await {
                    Ok(s) if s.spec_replicas == n => {
                        self.remember_version(s.resource_version);
                        Ok(())
                    }
                    _ => Err(TargetError::Conflict(msg)),
                }
            }
            Err(f) => Err(f.error),
        }
    }

    /// HPAs and KEDA ScaledObjects in the namespace that also scale this
    /// object, one warning line each.
    async fn find_conflicts(&self) -> Result<Vec<String>, TargetError> {
        let deadline = Instant::now() + self.timeout;
        let obj = self.get_object(deadline).await?;
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| builtin_kind(&self.resource.plural).map(str::to_string))
            .unwrap_or_default();
        let me = TargetIdentity {
            group: &self.resource.group,
            kind: &kind,
            name: &self.name,
        };

        let mut lines = Vec::new();
        let mut keda_owned = Vec::new();
        let keda = Call {
            verb: Verb::List,
            method: Method::GET,
            path: format!(
                "/apis/keda.sh/v1alpha1/namespaces/{}/scaledobjects",
                self.namespace
            ),
            body: None,
            rbac_resource: "scaledobjects".into(),
            rbac_group: "keda.sh",
        };
        match self.send(&keda, deadline).await {
            Ok(body) => {
                for (so, target) in scale_target_refs(&body, "keda.sh")? {
                    if me.matches(&target) {
                        lines.push(format!(
                            "KEDA ScaledObject {}/{so} also scales {self}: two controllers will \
                             fight; remove one",
                            self.namespace
                        ));
                        keda_owned.push(so);
                    }
                }
            }
            // KEDA is not installed: nothing to conflict with.
            Err(Failed {
                status: Some(StatusCode::NOT_FOUND),
                ..
            }) => {}
            // Not being allowed to look must not hide the HPA check; say
            // what could not be checked instead.
            Err(Failed {
                error: TargetError::Forbidden(msg),
                ..
            }) => lines.push(format!(
                "cannot check for KEDA ScaledObjects that also scale {self}: {msg}"
            )),
            Err(f) => return Err(f.error),
        }

        let hpa = Call {
            verb: Verb::List,
            method: Method::GET,
            path: format!(
                "/apis/autoscaling/v1/namespaces/{}/horizontalpodautoscalers",
                self.namespace
            ),
            body: None,
            rbac_resource: "horizontalpodautoscalers".into(),
            rbac_group: "autoscaling",
        };
        let body = self.send(&hpa, deadline).await.map_err(|f| f.error)?;
        for (name, target) in scale_target_refs(&body, "autoscaling")? {
            // KEDA drives the object through an HPA it owns; the ScaledObject
            // line already names the conflict.
            if me.matches(&target) && !target.owned_by_any(&keda_owned) {
                lines.push(format!(
                    "HPA {}/{name} also scales {self}: two controllers will fight; remove one",
                    self.namespace
                ));
            }
        }
        Ok(lines)
    }

    /// Send `call` with bounded retries until `deadline`.
    async fn send(&self, call: &Call<'_>, deadline: Instant) -> Result<Vec<u8>, Failed> {
        let mut backoff = FIRST_BACKOFF;
        let mut ambiguous = false;
        let mut last: Option<TargetError> = None;
        for attempt in 1..=MAX_ATTEMPTS {
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                break;
            }
            // Leave room for at least one more attempt after a hung one.
            let per_attempt = (self.timeout / 3)
                .max(Duration::from_millis(500))
                .min(remaining);
            let outcome = match tokio::time::timeout(per_attempt, self.attempt(call)).await {
                Ok(o) => o,
                Err(_) => Attempt::Retry {
                    error: TargetError::Timeout(self.timeout),
                    after: None,
                    ambiguous: true,
                },
            };
            match outcome {
                Attempt::Ok(body) => return Ok(body),
                Attempt::Fatal(error, status) => {
                    return Err(Failed {
                        error,
                        after_ambiguous: ambiguous,
                        status: Some(status),
                    });
                }
                Attempt::Retry {
                    error,
                    after,
                    ambiguous: a,
                } => {
                    ambiguous |= a && call.method != Method::GET;
                    let wait = match after {
                        Some(d) => d,
                        None => jitter(backoff),
                    };
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let left = deadline.saturating_duration_since(Instant::now());
                    tracing::debug!(target = %self, attempt, error = %error, ?wait, "retrying");
                    last = Some(error);
                    if attempt == MAX_ATTEMPTS || wait >= left {
                        // Waiting would overrun the deadline: report now.
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(Failed {
            error: last.unwrap_or(TargetError::Timeout(self.timeout)),
            after_ambiguous: ambiguous,
            status: None,
        })
    }

    /// One HTTP exchange, classified.
    async fn attempt(&self, call: &Call<'_>) -> Attempt {
        let mut req = http::Request::builder()
            .method(call.method.clone())
            .uri(&call.path)
            .header(http::header::ACCEPT, "application/json");
        if call.body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = match req.body(Body::from(call.body.clone().unwrap_or_default())) {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Fatal(
                    TargetError::Invalid(format!("cannot build request {}: {e}", call.path)),
                    StatusCode::BAD_REQUEST,
                );
            }
        };
        let resp = match self.client.send(req).await {
            Ok(r) => r,
            Err(kube::Error::Auth(e)) => {
                return Attempt::Fatal(
                    TargetError::Forbidden(format!(
                        "qscale cannot obtain credentials for the API server ({e}): fix the \
                         kubeconfig user or the service account token"
                    )),
                    StatusCode::UNAUTHORIZED,
                );
            }
            Err(e) => {
                return Attempt::Retry {
                    error: TargetError::Unavailable(format!(
                        "cannot reach the API server for {self}: {}; check the network path \
                         and the API server",
                        chain(&e)
                    )),
                    after: None,
                    // The request may have been sent before the connection
                    // broke.
                    ambiguous: true,
                };
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match resp.into_body().collect_bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => {
                return Attempt::Retry {
                    error: TargetError::Unavailable(format!(
                        "the API server cut off its answer for {self}: {}",
                        chain(&e)
                    )),
                    after: None,
                    ambiguous: true,
                };
            }
        };
        if status.is_success() {
            return Attempt::Ok(body);
        }
        self.classify(call, status, retry_after, &body)
    }

    /// Turn an error status into an attempt outcome with a fix-it message.
    fn classify(
        &self,
        call: &Call<'_>,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Attempt {
        let server = status_message(body);
        let said = if server.is_empty() {
            String::new()
        } else {
            format!(" (API server: {server})")
        };
        let verb = call.verb.as_str();
        let group = if call.rbac_group.is_empty() {
            "the core API group".to_string()
        } else {
            format!("API group {:?}", call.rbac_group)
        };
        let ns = &self.namespace;
        let res = &call.rbac_resource;
        match status {
            StatusCode::CONFLICT => Attempt::Fatal(
                TargetError::Conflict(format!(
                    "{self} changed since qscale read it; re-read and decide again{said}"
                )),
                status,
            ),
            StatusCode::FORBIDDEN => Attempt::Fatal(
                TargetError::Forbidden(format!(
                    "qscale's service account cannot {verb} {res} in namespace {ns}: grant \
                     {verb} on {res} in {group} with a Role (see docs/rbac.md){said}"
                )),
                status,
            ),
            StatusCode::UNAUTHORIZED => Attempt::Fatal(
                TargetError::Forbidden(format!(
                    "the API server rejected qscale's credentials (401): refresh the kubeconfig \
                     token or the service account token{said}"
                )),
                status,
            ),
            StatusCode::NOT_FOUND => Attempt::Fatal(
                TargetError::NotFound(format!(
                    "{} {ns}/{} does not exist (or {} is not served by this cluster): check \
                     target.namespace, target.name and target.resource{said}",
                    if call.verb == Verb::List {
                        res.clone()
                    } else {
                        self.resource.qualified()
                    },
                    self.name,
                    self.resource.qualified(),
                )),
                status,
            ),
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                error: TargetError::Throttled(format!(
                    "the API server rejected {verb} {res} with 429 Too Many Requests: \
                     lengthen poll_interval or raise qscale's API priority and fairness \
                     share{said}"
                )),
                after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
                ambiguous: false,
            },
            StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Attempt::Retry {
                error: TargetError::Unavailable(format!(
                    "the API server answered {status} to {verb} {res}: check the control plane \
                     (API server, etcd){said}"
                )),
                after: retry_after,
                ambiguous: true,
            },
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Attempt::Fatal(
                TargetError::Invalid(format!(
                    "the API server refused to {verb} {res} of {self}: {status}{said}"
                )),
                status,
            ),
            other => Attempt::Fatal(
                TargetError::Unavailable(format!(
                    "unexpected answer {other} to {verb} {res} of {self}{said}"
                )),
                other,
            ),
        }
    }
}

#[async_trait]
impl ScaleTarget for KubernetesTarget {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn current(&self) -> Result<Replicas, TargetError> {
        let s = self.state().await?;
        Ok(Replicas::new(s.desired, s.ready))
    }

    async fn set_replicas(&self, n: u32) -> Result<(), TargetError> {
        self.write(n).await
    }

    async fn paused(&self) -> Result<bool, TargetError> {
        let cached = self
            .last_paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = cached {
            return Ok(p);
        }
        let obj = self.get_object(Instant::now() + self.timeout).await?;
        Ok(is_paused(&obj))
    }

    async fn conflicts(&self) -> Result<Vec<String>, TargetError> {
        self.find_conflicts().await
    }
}

// ------------------------------------------------------ response parsing ---

/// The parts of an `autoscaling/v1` Scale that qscale uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedScale {
    spec_replicas: u32,
    status_replicas: u32,
    resource_version: String,
}

fn parse_scale(body: &[u8]) -> Result<ParsedScale, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let resource_version = v
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("no metadata.resourceVersion")?
        .to_string();
    // Kubernetes omits zero-valued integers.
    let count = |ptr: &str| -> Result<u32, String> {
        match v.pointer(ptr) {
            None | Some(Value::Null) => Ok(0),
            Some(x) => x
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{ptr} is {x}, not a replica count")),
        }
    };
    Ok(ParsedScale {
        spec_replicas: count("/spec/replicas")?,
        status_replicas: count("/status/replicas")?,
        resource_version,
    })
}

/// `status.readyReplicas` of the object. The built-in workloads omit it
/// when it is zero; for other resources a missing field means unknown.
fn ready_replicas(obj: &Value, resource: &ResourceRef) -> Result<Option<u32>, TargetError> {
    match obj.pointer("/status/readyReplicas") {
        Some(Value::Null) | None if resource.is_apps() => Ok(Some(0)),
        Some(Value::Null) | None => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                TargetError::Unavailable(format!(
                    "status.readyReplicas is {x}, not a replica count"
                ))
            }),
    }
}

fn is_paused(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(PAUSED_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn builtin_kind(plural: &str) -> Option<&'static str> {
    match plural {
        "deployments" => Some("Deployment"),
        "statefulsets" => Some("StatefulSet"),
        "replicasets" => Some("ReplicaSet"),
        _ => None,
    }
}

/// The object a scaler points at, as `scaleTargetRef` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScaleTargetRef {
    group: String,
    kind: String,
    name: String,
    /// Kinds and names of the scaler's owners (KEDA owns its HPAs).
    owners: Vec<(String, String)>,
}

impl ScaleTargetRef {
    fn owned_by_any(&self, scaled_objects: &[String]) -> bool {
        self.owners
            .iter()
            .any(|(kind, name)| kind == "ScaledObject" && scaled_objects.contains(name))
    }
}

struct TargetIdentity<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
}

impl TargetIdentity<'_> {
    fn matches(&self, r: &ScaleTargetRef) -> bool {
        // Old manifests name Deployments in `extensions`; same object.
        let norm = |g: &str| if g == "extensions" { "apps" } else { g }.to_string();
        r.name == self.name && r.kind == self.kind && norm(&r.group) == norm(self.group)
    }
}

/// `(name, scaleTargetRef)` of each item of an HPA or ScaledObject list.
/// KEDA defaults `apiVersion` to `apps/v1` and `kind` to `Deployment`.
fn scale_target_refs(
    body: &[u8],
    list_group: &str,
) -> Result<Vec<(String, ScaleTargetRef)>, TargetError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        TargetError::Unavailable(format!(
            "unreadable {list_group} list from the API server: {e}"
        ))
    })?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let keda = list_group == "keda.sh";
    let mut out = Vec::new();
    for item in &items {
        let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let Some(r) = item.pointer("/spec/scaleTargetRef") else {
            continue;
        };
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let mut api_version = s("apiVersion");
        let mut kind = s("kind");
        if keda && api_version.is_empty() {
            api_version = "apps/v1".into();
        }
        if keda && kind.is_empty() {
            kind = "Deployment".into();
        }
        // `apps/v1` -> `apps`; `v1` (core) -> ``.
        let group = match api_version.rsplit_once('/') {
            Some((g, _)) => g.to_string(),
            None => String::new(),
        };
        let owners = item
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|os| {
                os.iter()
                    .filter_map(|o| {
                        Some((
                            o.get("kind")?.as_str()?.to_string(),
                            o.get("name")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            name.to_string(),
            ScaleTargetRef {
                group,
                kind,
                name: s("name"),
                owners,
            },
        ));
    }
    Ok(out)
}

/// The `message` of a `metav1.Status` body, else the body's first line.
fn status_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && let Some(m) = v.get("message").and_then(Value::as_str)
    {
        return one_line(m);
    }
    let text = String::from_utf8_lossy(body);
    let line = one_line(&text);
    line.chars().take(200).collect()
}

/// Runs every parser of API-server answers on `body` and drops the results.
/// The coverage-guided fuzz target in `fuzz/` lives outside this crate and
/// cannot reach the private parsers; this is its only way in. Not an API.
#[doc(hidden)]
pub fn parse_api_answers_for_fuzzing(body: &[u8]) {
    let _ = parse_scale(body);
    let _ = scale_target_refs(body, "autoscaling");
    let _ = scale_target_refs(body, "keda.sh");
    let _ = status_message(body);
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let _ = is_paused(&v);
        for group in ["apps", "argoproj.io"] {
            let resource = ResourceRef {
                group: group.into(),
                version: "v1".into(),
                plural: "widgets".into(),
            };
            let _ = ready_replicas(&v, &resource);
        }
    }
}

/// Spread retries of many scalers so they do not hit the server in step.
fn jitter(d: Duration) -> Duration {
    let f = 0.75 + rand::random::<f64>() * 0.5;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(resource: &str) -> KubernetesTargetConfig {
        KubernetesTargetConfig {
            namespace: "default".into(),
            name: "worker".into(),
            resource: resource.into(),
            context: None,
            dry_run: false,
        }
    }

    #[test]
    fn resources_resolve_to_api_coordinates() {
        let table = [
            ("deployments", Some(("apps", "v1", "deployments"))),
            ("statefulsets", Some(("apps", "v1", "statefulsets"))),
            (
                "argoproj.io/v1alpha1/rollouts",
                Some(("argoproj.io", "v1alpha1", "rollouts")),
            ),
            ("pods", None),
            ("a/b", None),
            ("Apps/V1/Deployments", None),
        ];
        for (input, want) in table {
            let got = cfg(input).resource_ref().ok();
            let want = want.map(|(g, v, p)| ResourceRef {
                group: g.into(),
                version: v.into(),
                plural: p.into(),
            });
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn names_must_be_kubernetes_names() {
        let mut p = Problems::default();
        KubernetesTargetConfig {
            namespace: "Bad_NS".into(),
            name: "Worker".into(),
            ..cfg("deployments")
        }
        .validate("t", &mut p);
        assert_eq!(p.0.len(), 2, "{p}");
        assert!(p.0[0].starts_with("t.namespace:"));
        assert!(p.0[1].starts_with("t.name:"));
    }

    #[test]
    fn a_scale_parses_with_omitted_zero_counts() {
        let s = parse_scale(br#"{"metadata":{"resourceVersion":"42"},"spec":{}}"#).unwrap();
        assert_eq!(
            s,
            ParsedScale {
                spec_replicas: 0,
                status_replicas: 0,
                resource_version: "42".into()
            }
        );
        let s = parse_scale(
            br#"{"metadata":{"resourceVersion":"7"},"spec":{"replicas":3},"status":{"replicas":2}}"#,
        )
        .unwrap();
        assert_eq!((s.spec_replicas, s.status_replicas), (3, 2));
    }

    #[test]
    fn a_malformed_scale_is_an_error_not_a_panic() {
        for body in [
            &b"not json"[..],
            br#"{"spec":{"replicas":3}}"#,
            br#"{"metadata":{"resourceVersion":"1"},"spec":{"replicas":-1}}"#,
            br#"{"metadata":{"resourceVersion":"1"},"spec":{"replicas":"3"}}"#,
            br#"{"metadata":{"resourceVersion":"1"},"spec":{"replicas":99999999999}}"#,
            br#"[]"#,
        ] {
            assert!(
                parse_scale(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn missing_ready_count_means_zero_for_workloads_and_unknown_for_custom_resources() {
        let apps = cfg("deployments").resource_ref().unwrap();
        let crd = cfg("example.com/v1/workers").resource_ref().unwrap();
        let none = serde_json::json!({"status": {}});
        let three = serde_json::json!({"status": {"readyReplicas": 3}});
        assert_eq!(ready_replicas(&none, &apps).unwrap(), Some(0));
        assert_eq!(ready_replicas(&none, &crd).unwrap(), None);
        assert_eq!(ready_replicas(&three, &crd).unwrap(), Some(3));
        let bad = serde_json::json!({"status": {"readyReplicas": "x"}});
        assert!(ready_replicas(&bad, &apps).is_err());
    }

    #[test]
    fn only_the_exact_annotation_value_true_pauses() {
        let obj =
            |v: Value| serde_json::json!({"metadata": {"annotations": {PAUSED_ANNOTATION: v}}});
        assert!(is_paused(&obj("true".into())));
        assert!(is_paused(&obj(" True ".into())));
        assert!(!is_paused(&obj("false".into())));
        assert!(!is_paused(&obj("yes".into())));
        assert!(!is_paused(&obj(true.into())));
        assert!(!is_paused(&serde_json::json!({"metadata": {}})));
    }

    #[test]
    fn scale_target_refs_match_by_group_kind_and_name() {
        let hpas = serde_json::json!({"items": [
            {"metadata": {"name": "a"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}}},
            {"metadata": {"name": "b"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "worker"}}},
            {"metadata": {"name": "c"}, "spec": {"scaleTargetRef": {"apiVersion": "extensions/v1beta1", "kind": "Deployment", "name": "worker"}}},
            {"metadata": {"name": "d"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "other"}}},
            {"metadata": {"name": "e"}},
            {"spec": {}}
        ]});
        let refs = scale_target_refs(hpas.to_string().as_bytes(), "autoscaling").unwrap();
        let me = TargetIdentity {
            group: "apps",
            kind: "Deployment",
            name: "worker",
        };
        let hits: Vec<&str> = refs
            .iter()
            .filter(|(_, r)| me.matches(r))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(hits, ["a", "c"]);
    }

    #[test]
    fn keda_scale_target_refs_default_to_apps_v1_deployments() {
        let sos = serde_json::json!({"items": [
            {"metadata": {"name": "so"}, "spec": {"scaleTargetRef": {"name": "worker"}}}
        ]});
        let refs = scale_target_refs(sos.to_string().as_bytes(), "keda.sh").unwrap();
        assert_eq!(refs[0].1.group, "apps");
        assert_eq!(refs[0].1.kind, "Deployment");
    }

    #[test]
    fn api_status_messages_become_one_line() {
        let body = br#"{"kind":"Status","message":"deployments.apps \"x\" is forbidden:\n User \"limited\" cannot get"}"#;
        assert_eq!(
            status_message(body),
            r#"deployments.apps "x" is forbidden: User "limited" cannot get"#
        );
        assert_eq!(
            status_message(b"upstream\nconnect error"),
            "upstream connect error"
        );
    }
}
