//! Cluster IP and NodePort allocation for Services.
//!
//! Each allocated address or port is a store key
//! (`/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`)
//! written in the same transaction as the Service with an "absent" condition,
//! so two API servers can never hand out the same one, an allocation is as
//! durable as the Service holding it, and deleting the Service frees it.

use crate::store::{Condition, Store, Txn};
use hawser_api::{ApiError, FieldError};
use ipnetwork::Ipv4Network;
use rand::Rng;
use serde_json::Value;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
pub const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// The service address range and NodePort range (DESIGN.md: 10.96.0.0/12, 30000-32767).
#[derive(Clone, Debug)]
pub struct Ranges {
    pub cluster_ips: Ipv4Network,
    pub node_ports: RangeInclusive<u16>,
}

impl Default for Ranges {
    fn default() -> Self {
        Self { cluster_ips: "10.96.0.0/12".parse().expect("valid CIDR"), node_ports: 30000..=32767 }
    }
}

impl Ranges {
    /// The first usable address, reserved for the `kubernetes` Service.
    pub fn api_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cluster_ips.network()) + 1)
    }

    /// The `kube-dns` Service's address: the range's tenth, as kubeadm
    /// chooses it (10.96.0.10 in the default range).
    pub fn dns_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cluster_ips.network()) + 10)
    }
}

/// What a Service holds: its cluster IP (if any) and NodePorts (with its
/// health check node port).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    pub ip: Option<Ipv4Addr>,
    pub node_ports: Vec<u16>,
}

impl Holdings {
    pub fn of(svc: &Value) -> Self {
        let spec = &svc["spec"];
        let ip = spec["clusterIP"].as_str().and_then(|ip| ip.parse().ok());
        let health_check = spec["healthCheckNodePort"].as_u64().filter(|p| *p != 0);
        let mut node_ports: Vec<u16> =
            ports(svc).filter_map(|p| p["nodePort"].as_u64()).chain(health_check).filter_map(|p| u16::try_from(p).ok()).collect();
        node_ports.sort_unstable();
        node_ports.dedup();
        Self { ip, node_ports }
    }

    /// Adds releases of everything `self` holds that `keep` does not to `txn`.
    pub fn release_into(&self, keep: &Holdings, txn: Txn) -> Txn {
        let mut txn = txn;
        if let Some(ip) = self.ip.filter(|ip| keep.ip != Some(*ip)) {
            txn = txn.delete(format!("{IP_PREFIX}{ip}"));
        }
        for port in self.node_ports.iter().filter(|p| !keep.node_ports.contains(p)) {
            txn = txn.delete(format!("{PORT_PREFIX}{port}"));
        }
        txn
    }
}

fn ports(svc: &Value) -> impl Iterator<Item = &Value> {
    svc["spec"]["ports"].as_array().into_iter().flatten()
}

fn needs_node_ports(svc: &Value) -> bool {
    matches!(svc["spec"]["type"].as_str(), Some("NodePort" | "LoadBalancer"))
}

fn needs_health_check(svc: &Value) -> bool {
    svc["spec"]["type"].as_str() == Some("LoadBalancer") && svc["spec"]["externalTrafficPolicy"].as_str() == Some("Local")
}

fn needs_cluster_ip(svc: &Value) -> bool {
    svc["spec"]["type"].as_str() != Some("ExternalName") && svc["spec"]["clusterIP"].as_str() != Some("None")
}

/// Fills in a cluster IP and NodePorts for `svc` (create, or update from `old`),
/// checks requested ones against the ranges and the store, and returns the
/// transaction conditions and writes that claim what is new and release what
/// the old version held but the new one does not.
pub async fn allocate(store: &dyn Store, ranges: &Ranges, svc: &mut Value, old: Option<&Value>, owner: &str) -> Result<Txn, ApiError> {
    let old_holdings = old.map(Holdings::of).unwrap_or_default();
    let name = svc["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let invalid = |e: FieldError| ApiError::invalid("", "Service", &name, vec![e]);
    let mut txn = Txn::default();

    if !needs_node_ports(svc) {
        // Kubernetes drops NodePorts when a Service stops being a NodePort one.
        if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
            ports.iter_mut().filter_map(Value::as_object_mut).for_each(|p| {
                p.remove("nodePort");
            });
        }
    } else if let Some(old) = old {
        // An update that leaves a NodePort out keeps the one already held (what `kubectl apply` expects).
        let held: Vec<(Value, Value, Value)> =
            ports(old).map(|p| (p["port"].clone(), p["protocol"].clone(), p["nodePort"].clone())).collect();
        if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
            for p in ports.iter_mut().filter(|p| p.get("nodePort").is_none_or(Value::is_null)) {
                if let Some((_, _, np)) =
                    held.iter().find(|(port, proto, np)| *port == p["port"] && *proto == p["protocol"] && !np.is_null())
                {
                    p["nodePort"] = np.clone();
                }
            }
        }
    }

    // Cluster IP.
    if needs_cluster_ip(svc) {
        let requested = svc["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
        match requested {
            Some(ip_text) => {
                let ip: Ipv4Addr = ip_text
                    .parse()
                    .map_err(|_| invalid(FieldError::invalid("spec.clusterIPs[0]", &ip_text, "must be a valid IP address")))?;
                if Some(ip) != old_holdings.ip {
                    if !ranges.cluster_ips.contains(ip) || ip == ranges.cluster_ips.network() || ip == ranges.cluster_ips.broadcast() {
                        return Err(invalid(FieldError::invalid(
                            "spec.clusterIPs[0]",
                            ip,
                            format!("provided IP is not in the valid range. The range of valid IPs is {}", ranges.cluster_ips),
                        )));
                    }
                    let key = format!("{IP_PREFIX}{ip}");
                    if store.get(&key).await.map_err(super::objects::store_error)?.is_some() {
                        return Err(invalid(FieldError::invalid("spec.clusterIPs[0]", ip, "provided IP is already allocated")));
                    }
                    txn = txn.when(Condition::Absent(key.clone())).put(key, owner.to_string());
                }
            }
            None => {
                let base = u32::from(ranges.cluster_ips.network());
                let usable = ranges.cluster_ips.size().saturating_sub(3);
                // Skip the network address, the `kubernetes` Service's address and the broadcast address.
                let random = || Ipv4Addr::from(base + 2 + rand::rng().random_range(0..usable.max(1)));
                let ip = pick_free(store, IP_PREFIX, random, &[], |taken| pick_ip(ranges, taken))
                    .await?
                    .ok_or_else(|| ApiError::internal("no cluster IPs left in the service range"))?;
                let key = format!("{IP_PREFIX}{ip}");
                txn = txn.when(Condition::Absent(key.clone())).put(key, owner.to_string());
                svc["spec"]["clusterIP"] = Value::String(ip.to_string());
            }
        }
        let ip = svc["spec"]["clusterIP"].clone();
        svc["spec"]["clusterIPs"] = Value::Array(vec![ip]);
    } else if svc["spec"]["clusterIP"].as_str() == Some("None") {
        svc["spec"]["clusterIPs"] = serde_json::json!(["None"]);
    }

    // NodePorts.
    let mut claimed: Vec<u16> = Vec::new();
    if needs_node_ports(svc) {
        let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            let field = format!("spec.ports[{i}].nodePort");
            let requested = svc["spec"]["ports"][i]["nodePort"].as_u64();
            let port = node_port(store, ranges, &field, requested, &invalid, &old_holdings, &claimed, &mut txn, owner).await?;
            svc["spec"]["ports"][i]["nodePort"] = Value::from(port);
            claimed.push(port);
        }
    }

    // The health check port of a LoadBalancer with externalTrafficPolicy
    // Local, from the NodePort range (Kubernetes keeps it across updates
    // that leave it out).
    if needs_health_check(svc) {
        let requested = svc["spec"]["healthCheckNodePort"]
            .as_u64()
            .filter(|p| *p != 0)
            .or_else(|| old.filter(|o| needs_health_check(o)).and_then(|o| o["spec"]["healthCheckNodePort"].as_u64()));
        let port =
            node_port(store, ranges, "spec.healthCheckNodePort", requested, &invalid, &old_holdings, &claimed, &mut txn, owner).await?;
        svc["spec"]["healthCheckNodePort"] = Value::from(port);
    } else if let Some(spec) = svc["spec"].as_object_mut() {
        spec.remove("healthCheckNodePort");
    }

    Ok(old_holdings.release_into(&Holdings::of(svc), txn))
}

/// Claims `requested` (checked against the range and the store, unless
/// `held` or `claimed` by this Service already) or a free port, adding the
/// claim to `txn`.
#[allow(clippy::too_many_arguments)]
async fn node_port(
    store: &dyn Store,
    ranges: &Ranges,
    field: &str,
    requested: Option<u64>,
    invalid: &(dyn Fn(FieldError) -> ApiError + Sync),
    held: &Holdings,
    claimed: &[u16],
    txn: &mut Txn,
    owner: &str,
) -> Result<u16, ApiError> {
    let port = match requested {
        Some(p) => {
            let port = u16::try_from(p).ok().filter(|p| ranges.node_ports.contains(p)).ok_or_else(|| {
                invalid(FieldError::invalid(
                    field,
                    p,
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        ranges.node_ports.start(),
                        ranges.node_ports.end()
                    ),
                ))
            })?;
            // One port may serve several of the Service's ports (e.g. TCP and UDP 53).
            if held.node_ports.contains(&port) || claimed.contains(&port) {
                return Ok(port);
            }
            let key = format!("{PORT_PREFIX}{port}");
            if store.get(&key).await.map_err(super::objects::store_error)?.is_some() {
                return Err(invalid(FieldError::invalid(field, port, "provided port is already allocated")));
            }
            port
        }
        None => {
            let random = || rand::rng().random_range(ranges.node_ports.clone());
            pick_free(store, PORT_PREFIX, random, claimed, |taken| pick_port(ranges, taken, claimed))
                .await?
                .ok_or_else(|| ApiError::internal("no NodePorts left in the range"))?
        }
    };
    let key = format!("{PORT_PREFIX}{port}");
    *txn = std::mem::take(txn).when(Condition::Absent(key.clone())).put(key, owner.to_string());
    Ok(port)
}

/// Random candidates tried by point lookup before falling back to a scan of
/// every allocation. While a range is mostly free (a /12 holds a million
/// addresses) a probe almost always succeeds, so a create costs one or two
/// lookups instead of a scan that grows with the number of Services.
const PROBES: usize = 8;

/// A free value from a range: random probes first, then one full scan.
async fn pick_free<T: std::fmt::Display + PartialEq>(
    store: &dyn Store,
    prefix: &str,
    mut random: impl FnMut() -> T,
    claimed: &[T],
    scan: impl FnOnce(&HashSet<String>) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    for _ in 0..PROBES {
        let candidate = random();
        if claimed.contains(&candidate) {
            continue;
        }
        if store.get(&format!("{prefix}{candidate}")).await.map_err(super::objects::store_error)?.is_none() {
            return Ok(Some(candidate));
        }
    }
    Ok(scan(&taken(store, prefix).await?))
}

async fn taken(store: &dyn Store, prefix: &str) -> Result<HashSet<String>, ApiError> {
    let page = store.list(prefix, None, None).await.map_err(super::objects::store_error)?;
    Ok(page.items.into_iter().map(|kv| kv.key[prefix.len()..].to_string()).collect())
}

fn pick_ip(ranges: &Ranges, taken: &HashSet<String>) -> Option<Ipv4Addr> {
    let base = u32::from(ranges.cluster_ips.network());
    let size = ranges.cluster_ips.size();
    // Skip the network address, the `kubernetes` Service's address and the broadcast address.
    let usable = size.checked_sub(3)?;
    if taken.len() as u64 >= u64::from(usable) {
        return None;
    }
    let mut rng = rand::rng();
    let start = rng.random_range(0..usable);
    (0..usable).map(|i| Ipv4Addr::from(base + 2 + (start + i) % usable)).find(|ip| !taken.contains(&ip.to_string()))
}

fn pick_port(ranges: &Ranges, taken: &HashSet<String>, claimed: &[u16]) -> Option<u16> {
    let (lo, hi) = (*ranges.node_ports.start(), *ranges.node_ports.end());
    let size = u32::from(hi - lo) + 1;
    let start = rand::rng().random_range(0..size);
    (0..size).map(|i| lo + ((start + i) % size) as u16).find(|p| !taken.contains(&p.to_string()) && !claimed.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{Config, RedbStore};
    use serde_json::json;

    fn node_port_svc(node_port: Option<u16>) -> Value {
        let mut port = json!({"port": 80, "protocol": "TCP"});
        if let Some(np) = node_port {
            port["nodePort"] = json!(np);
        }
        json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [port]}})
    }

    #[tokio::test]
    async fn allocations_are_unique_in_range_and_released_on_type_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s"), Config::default()).unwrap();
        let ranges = Ranges::default();
        let mut a = node_port_svc(None);
        let txn = allocate(&store, &ranges, &mut a, None, "default/a").await.unwrap();
        store.commit(txn).await.unwrap();
        let ip: Ipv4Addr = a["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(ranges.cluster_ips.contains(ip) && ip != ranges.api_service_ip());
        let np = a["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
        assert!(ranges.node_ports.contains(&np));

        let mut b = node_port_svc(Some(np));
        let err = allocate(&store, &ranges, &mut b, None, "default/b").await.unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("spec.ports[0].nodePort") && err.message.contains("already allocated"), "{}", err.message);
        let mut c = node_port_svc(Some(8080));
        assert!(allocate(&store, &ranges, &mut c, None, "default/c").await.unwrap_err().message.contains("valid range"));
        let mut d = node_port_svc(None);
        d["spec"]["clusterIP"] = json!(ip.to_string());
        assert!(allocate(&store, &ranges, &mut d, None, "default/d").await.unwrap_err().message.contains("spec.clusterIPs[0]"));

        // NodePort → ClusterIP gives the port back.
        let mut a2 = a.clone();
        a2["spec"]["type"] = json!("ClusterIP");
        let txn = allocate(&store, &ranges, &mut a2, Some(&a), "default/a").await.unwrap();
        store.commit(txn).await.unwrap();
        assert!(a2["spec"]["ports"][0].get("nodePort").is_none());
        let mut b = node_port_svc(Some(np));
        allocate(&store, &ranges, &mut b, None, "default/b").await.unwrap();
    }

    #[tokio::test]
    async fn a_local_load_balancer_gets_a_health_check_port_kept_on_update_and_freed_with_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s"), Config::default()).unwrap();
        let ranges = Ranges::default();
        let mut lb = node_port_svc(None);
        lb["spec"]["type"] = json!("LoadBalancer");
        lb["spec"]["externalTrafficPolicy"] = json!("Local");
        store.commit(allocate(&store, &ranges, &mut lb, None, "default/lb").await.unwrap()).await.unwrap();
        let hc = lb["spec"]["healthCheckNodePort"].as_u64().expect("a health check port") as u16;
        assert!(ranges.node_ports.contains(&hc) && lb["spec"]["ports"][0]["nodePort"] != json!(hc));
        // Taken: nobody else may claim it as a NodePort.
        let mut other = node_port_svc(Some(hc));
        assert!(allocate(&store, &ranges, &mut other, None, "default/other").await.unwrap_err().message.contains("already allocated"));
        // An update that leaves it out keeps it.
        let mut again = lb.clone();
        again["spec"].as_object_mut().unwrap().remove("healthCheckNodePort");
        let txn = allocate(&store, &ranges, &mut again, Some(&lb), "default/lb").await.unwrap();
        assert!(txn.writes.is_empty(), "{txn:?}");
        assert_eq!(again["spec"]["healthCheckNodePort"], json!(hc));
        // Cluster policy: the port goes back.
        let mut cluster = lb.clone();
        cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
        store.commit(allocate(&store, &ranges, &mut cluster, Some(&lb), "default/lb").await.unwrap()).await.unwrap();
        assert!(cluster["spec"].get("healthCheckNodePort").is_none());
        allocate(&store, &ranges, &mut node_port_svc(Some(hc)), None, "default/other").await.unwrap();
    }

    #[tokio::test]
    async fn reapply_without_node_port_keeps_the_held_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s"), Config::default()).unwrap();
        let ranges = Ranges::default();
        let mut a = node_port_svc(None);
        store.commit(allocate(&store, &ranges, &mut a, None, "default/a").await.unwrap()).await.unwrap();
        let mut again = node_port_svc(None);
        again["spec"]["clusterIP"] = a["spec"]["clusterIP"].clone();
        let txn = allocate(&store, &ranges, &mut again, Some(&a), "default/a").await.unwrap();
        assert!(txn.writes.is_empty(), "nothing new to claim or release: {txn:?}");
        assert_eq!(again["spec"]["ports"][0]["nodePort"], a["spec"]["ports"][0]["nodePort"]);
    }

    #[tokio::test]
    async fn a_crowded_port_range_still_finds_the_last_free_port() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s"), Config::default()).unwrap();
        // A range of three ports, two taken: random probes mostly miss, the scan finds it.
        let ranges = Ranges { node_ports: 30000..=30002, ..Ranges::default() };
        store.commit(Txn::default().put(format!("{PORT_PREFIX}30000"), "x").put(format!("{PORT_PREFIX}30002"), "y")).await.unwrap();
        for _ in 0..20 {
            let mut svc = node_port_svc(None);
            allocate(&store, &ranges, &mut svc, None, "default/a").await.unwrap();
            assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30001);
        }
        store.commit(Txn::default().put(format!("{PORT_PREFIX}30001"), "z")).await.unwrap();
        let mut svc = node_port_svc(None);
        assert_eq!(allocate(&store, &ranges, &mut svc, None, "default/a").await.unwrap_err().code, 500);
    }
}
