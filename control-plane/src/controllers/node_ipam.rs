//! Node IPAM: every Node gets a free block of the cluster CIDR (a /24 of
//! 10.244.0.0/16 by default) in `spec.podCIDR` and `spec.podCIDRs`, as
//! Kubernetes' range allocator does. A block is free again once no Node
//! holds it, so deleting a Node releases its block.
//!
//! The allocator's memory is the Node cache itself plus the blocks it handed
//! out that the cache has not shown yet; one worker allocates, so two nodes
//! never get the same block.

use anyhow::Context;
use hawser_runtime::events::{EventType, Recorder};
use hawser_runtime::{Action, Informer, Informers, ObjectKey, WorkQueue, objects, run_workers};
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a node that found the cluster CIDR full looks again.
const FULL_RETRY: Duration = Duration::from_secs(30);

pub fn start(informers: &Arc<Informers>, config: &super::Config) {
    let nodes = informers.get::<Node>();
    let queue = WorkQueue::<ObjectKey>::new();
    nodes.queue_changes(&queue);
    let ipam = Arc::new(NodeIpam {
        client: informers.client(),
        nodes,
        blocks: Blocks::new(config.cluster_cidr, config.node_cidr_prefix),
        handed_out: Mutex::default(),
        recorder: Recorder::new(informers.client(), "node-ipam-controller"),
    });
    tokio::spawn(async move {
        ipam.nodes.wait_synced().await;
        // One worker: allocation decisions must not race each other.
        run_workers("node-ipam", queue, 1, move |key| {
            let ipam = ipam.clone();
            async move { ipam.reconcile(&key).await }
        })
        .await;
    });
}

struct NodeIpam {
    client: kube::Client,
    nodes: Informer<Node>,
    blocks: Blocks,
    /// Blocks written to a node that the cache may not show yet.
    handed_out: Mutex<HashMap<String, Ipv4Network>>,
    recorder: Recorder,
}

impl NodeIpam {
    async fn reconcile(&self, key: &ObjectKey) -> anyhow::Result<Action> {
        let Some(node) = self.nodes.get(key) else {
            self.handed_out.lock().unwrap().remove(&key.name);
            return Ok(Action::AwaitChange);
        };
        if pod_cidr(&node).is_some() {
            self.handed_out.lock().unwrap().remove(&key.name);
            return Ok(Action::AwaitChange);
        }
        let used: BTreeSet<Ipv4Network> = {
            let handed_out = self.handed_out.lock().unwrap();
            self.nodes.list().iter().filter_map(|n| pod_cidr(n)).chain(handed_out.values().copied()).collect()
        };
        let Some(block) = self.blocks.first_free(&used) else {
            let message = format!("Node {} has no CIDR: every block of {} is in use", key.name, self.blocks.cluster);
            self.recorder.publish(&objects::object_reference(&*node), EventType::Warning, "CIDRNotAvailable", &message);
            return Ok(Action::RequeueAfter(FULL_RETRY));
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"podCIDR": block.to_string(), "podCIDRs": [block.to_string()]},
        });
        api.patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .with_context(|| format!("assigning pod CIDR {block} to node {}", key.name))?;
        self.handed_out.lock().unwrap().insert(key.name.clone(), block);
        self.recorder.publish(
            &objects::object_reference(&*node),
            EventType::Normal,
            "CIDRAssignmentSucceeded",
            &format!("Assigned pod CIDR {block}"),
        );
        tracing::info!(node = key.name, cidr = %block, "assigned pod CIDR");
        Ok(Action::AwaitChange)
    }
}

fn pod_cidr(node: &Node) -> Option<Ipv4Network> {
    node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()
}

/// The per-node blocks of the cluster CIDR.
struct Blocks {
    cluster: Ipv4Network,
    prefix: u8,
}

impl Blocks {
    fn new(cluster: Ipv4Network, prefix: u8) -> Self {
        assert!(prefix >= cluster.prefix() && prefix <= 32, "node CIDR prefix /{prefix} must lie within {cluster}");
        Self { cluster, prefix }
    }

    fn count(&self) -> u32 {
        1 << (self.prefix - self.cluster.prefix())
    }

    fn nth(&self, n: u32) -> Ipv4Network {
        let size = if self.prefix == 32 { 1 } else { 1u32 << (32 - self.prefix) };
        let base = u32::from(self.cluster.network()) + n * size;
        Ipv4Network::new(Ipv4Addr::from(base), self.prefix).expect("prefix checked in new")
    }

    /// The lowest block no one holds (a block overlapping a held CIDR of
    /// another size counts as held).
    fn first_free(&self, used: &BTreeSet<Ipv4Network>) -> Option<Ipv4Network> {
        (0..self.count()).map(|n| self.nth(n)).find(|b| !used.iter().any(|u| u.overlaps(*b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_lowest_first_and_reused_when_freed() {
        let blocks = Blocks::new("10.244.0.0/16".parse().unwrap(), 24);
        assert_eq!(blocks.count(), 256);
        let mut used = BTreeSet::new();
        let first = blocks.first_free(&used).unwrap();
        assert_eq!(first.to_string(), "10.244.0.0/24");
        used.insert(first);
        used.insert("10.244.1.0/24".parse().unwrap());
        assert_eq!(blocks.first_free(&used).unwrap().to_string(), "10.244.2.0/24");
        used.remove(&first);
        assert_eq!(blocks.first_free(&used).unwrap().to_string(), "10.244.0.0/24", "a released block is used again");
    }

    #[test]
    fn a_full_cluster_cidr_has_no_block() {
        let blocks = Blocks::new("10.244.0.0/23".parse().unwrap(), 24);
        let used: BTreeSet<Ipv4Network> = ["10.244.0.0/24".parse().unwrap(), "10.244.1.0/24".parse().unwrap()].into();
        assert_eq!(blocks.first_free(&used), None);
    }
}
