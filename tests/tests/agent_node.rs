//! The agent's Node registration against a real server: the Node carries
//! this machine's capacity and is Ready, its Lease is renewed, node IPAM
//! gives it a pod CIDR, and a restarted agent takes its Node over.

use hawser_agent::node::{self, Machine, NodeConfig};
use hawser_tests::{TestCluster, block_on};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn a_registered_node_reports_the_machine_renews_its_lease_and_gets_a_pod_cidr() {
    let cluster = TestCluster::start();
    block_on(async {
        let client = cluster.kube_client().await;
        let machine = Machine::read().expect("read this machine");
        let config = NodeConfig {
            name: "agent-node".into(),
            node_ip: "198.51.100.7".parse().unwrap(),
            labels: BTreeMap::from([("topology.kubernetes.io/zone".to_string(), "a".to_string())]),
            max_pods: node::DEFAULT_MAX_PODS,
            runtime_version: "hawser-process://0.1.0".into(),
            port: 10250,
        };
        let registered = node::register(&client, &config, &machine).await.expect("register the node");
        let capacity = registered.status.as_ref().and_then(|s| s.capacity.clone()).expect("capacity");
        assert_eq!(capacity["cpu"].0, machine.cpus.to_string());
        assert_eq!(capacity["pods"].0, "110");

        let cidr = tokio::time::timeout(Duration::from_secs(10), node::wait_for_pod_cidr(&client, "agent-node"))
            .await
            .expect("node IPAM assigns a pod CIDR within 10 s")
            .expect("a valid pod CIDR");
        assert_eq!(cidr.prefix(), 24);
        assert!("10.244.0.0/16".parse::<ipnetwork::Ipv4Network>().unwrap().contains(cidr.network()));

        let leases: Api<Lease> = Api::namespaced(client.clone(), node::LEASE_NAMESPACE);
        let renewed_at = |lease: Lease| lease.spec.and_then(|s| s.renew_time).expect("renewTime").0;
        let first = renewed_at(leases.get("agent-node").await.expect("the lease exists"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let beat = tokio::spawn(node::heartbeat(client.clone(), config.clone(), machine.clone(), Duration::from_millis(300), async {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let later = renewed_at(leases.get("agent-node").await.unwrap());
        assert!(later > first, "the heartbeat renews the lease ({first} → {later})");
        let _ = stop.send(());
        beat.await.unwrap();

        // A restarted agent registers again: same Node, labels and status refreshed.
        node::register(&client, &config, &machine).await.expect("register again after a restart");
        let nodes: Api<Node> = Api::all(client);
        let stored = nodes.get("agent-node").await.unwrap();
        assert_eq!(stored.metadata.labels.unwrap()["topology.kubernetes.io/zone"], "a");
        assert_eq!(stored.spec.unwrap().pod_cidr.as_deref(), Some(cidr.to_string().as_str()), "the pod CIDR is kept");
        let ready = stored.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
    });
}
