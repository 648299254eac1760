//! A kube-rs client for a Hawser (or any Kubernetes) API server.

use anyhow::Context;
use std::path::Path;

/// A client authenticated as the kubeconfig's current context says.
pub async fn from_kubeconfig(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the API client")
}
