//! Kubernetes target: any object with a `/scale` subresource.
//!
//! qscale reads and writes only through the scale subresource, so it needs
//! no rights on the object's spec and works for Deployments, StatefulSets and
//! custom resources (Argo Rollouts) alike.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Problems;

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

    pub fn validate(&self, path: &str, p: &mut Problems) {
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

    pub fn describe(&self) -> String {
        let mut d = format!("{} {}/{}", self.resource, self.namespace, self.name);
        if self.dry_run {
            d.push_str(" (dry run)");
        }
        d
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
}
