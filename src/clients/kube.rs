//! Kubernetes clients shared by every scaler of the process.
//!
//! The Kubernetes target and leader election both talk to the API server;
//! loading a kubeconfig can run exec plugins and a client holds a connection
//! pool, so one client per kubeconfig context is built on first use and
//! shared. kube's own retry layer is turned off: the target retries within
//! its own deadline, and two nested retry loops would overrun it.

use std::collections::HashMap;
use std::sync::Arc;

use kube::config::KubeConfigOptions;

use crate::contract::TargetError;

/// Kubernetes clients shared by every scaler of the process, one per
/// kubeconfig context (`None`: the current context or in-cluster config).
///
/// Loading a kubeconfig can run exec plugins and a client holds a
/// connection pool, so scalers that target the same cluster share one.
#[derive(Clone, Default)]
pub struct KubeClients {
    inner: Arc<tokio::sync::Mutex<HashMap<Option<String>, kube::Client>>>,
}

impl KubeClients {
    pub fn new() -> KubeClients {
        KubeClients::default()
    }

    /// The client for `context`, loaded on first use the way kube-rs finds
    /// configuration: `$KUBECONFIG` or `~/.kube/config`, else the in-cluster
    /// service account when `context` is `None`.
    pub async fn get(&self, context: Option<&str>) -> Result<kube::Client, TargetError> {
        let key = context.map(str::to_string);
        let mut map = self.inner.lock().await;
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let client = client_from_config(load_config(context).await?)?;
        map.insert(key, client.clone());
        Ok(client)
    }

    /// Use `client` for `context` from now on (tests, or an embedding
    /// program that built its own client).
    pub async fn insert(&self, context: Option<&str>, client: kube::Client) {
        self.inner
            .lock()
            .await
            .insert(context.map(str::to_string), client);
    }
}

/// Load the client configuration for `context` as kube-rs does.
pub async fn load_config(context: Option<&str>) -> Result<kube::Config, TargetError> {
    match context {
        None => kube::Config::infer().await.map_err(|e| {
            TargetError::Invalid(format!(
                "no Kubernetes configuration found ({e}): set KUBECONFIG, create ~/.kube/config, \
                 or run qscale in a pod with a service account"
            ))
        }),
        Some(ctx) => {
            let options = KubeConfigOptions {
                context: Some(ctx.to_string()),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_kubeconfig(&options).await.map_err(|e| {
                TargetError::Invalid(format!(
                    "cannot load kubeconfig context {ctx:?} ({e}): check target.context and \
                     KUBECONFIG"
                ))
            })
        }
    }
}

/// Build a client from `config` with kube's own retry layer turned off:
/// the Kubernetes target retries itself within its timeout, and two nested
/// retry loops would multiply attempts and overrun it.
pub fn client_from_config(mut config: kube::Config) -> Result<kube::Client, TargetError> {
    config.default_retry = false;
    let url = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|e| {
        TargetError::Invalid(format!(
            "cannot build a Kubernetes client for {url}: {e}; check the kubeconfig"
        ))
    })
}
