//! Scoring: among the nodes a pod fits on, prefer the least allocated and
//! the ones running fewest pods of the same controller or Service, so
//! replicas spread out and load evens out.

use super::cache::{Cache, NodeFacts, NodeInfo, Resources};
use super::filters::{Candidate, FitError, feasible_nodes};
use rand::Rng;
use std::collections::BTreeMap;

pub const MAX_SCORE: i64 = 100;
/// Spreading weighs twice as much as free capacity (Kubernetes gives its
/// topology spreading weight 2 against NodeResourcesFit's 1): losing a
/// replica's node should not take out two replicas because one node was a
/// little emptier.
pub const LEAST_ALLOCATED_WEIGHT: i64 = 1;
pub const SPREAD_WEIGHT: i64 = 2;

/// The share of cpu and of memory left free after `requested` (which
/// includes the pod being scored), averaged, 0..=100.
pub fn least_allocated(allocatable: Resources, requested: Resources) -> i64 {
    (free_share(allocatable.milli_cpu, requested.milli_cpu) + free_share(allocatable.memory, requested.memory)) / 2
}

fn free_share(capacity: i64, requested: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    // i128: byte counts times 100 can overflow an i64.
    let share = i128::from(capacity - requested) * i128::from(MAX_SCORE) / i128::from(capacity);
    i64::try_from(share).unwrap_or(MAX_SCORE)
}

/// 100 on the nodes with fewest pods of the pod's group, 0 on the most
/// crowded, linear in between; 100 everywhere when none has any.
pub fn spread(count: u32, max: u32) -> i64 {
    if max == 0 {
        return MAX_SCORE;
    }
    MAX_SCORE * i64::from(max.saturating_sub(count)) / i64::from(max)
}

/// The best-scoring of `feasible` (not empty), ties broken uniformly at
/// random so equal nodes share the load. `service_selectors` are the
/// selectors of the Services that select the pod.
pub fn select_node<'c>(
    cache: &Cache,
    feasible: &[(&'c NodeFacts, &NodeInfo)],
    pod: &Candidate,
    service_selectors: &[&BTreeMap<String, String>],
    rng: &mut impl Rng,
) -> Option<&'c str> {
    let counts = cache.spread_counts(&pod.usage.namespace, &pod.usage.group, service_selectors);
    let count = |facts: &NodeFacts| counts.get(facts.name.as_str()).copied().unwrap_or(0);
    let max = feasible.iter().map(|(facts, _)| count(facts)).max().unwrap_or(0);
    let mut best: Option<(&str, i64)> = None;
    let mut ties = 0u32;
    for (facts, info) in feasible {
        let requested = info.nonzero_requested.plus(pod.usage.nonzero_requests);
        let score = LEAST_ALLOCATED_WEIGHT * least_allocated(facts.allocatable, requested) + SPREAD_WEIGHT * spread(count(facts), max);
        match best {
            Some((_, top)) if score < top => {}
            // Reservoir sampling: each of n tied nodes ends up chosen with
            // probability 1/n without collecting them.
            Some((_, top)) if score == top => {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = Some((&facts.name, score));
                }
            }
            _ => {
                best = Some((&facts.name, score));
                ties = 1;
            }
        }
    }
    best.map(|(name, _)| name)
}

/// Filters then scores: the node `pod` should be bound to, or why there is
/// none.
pub fn decide(
    cache: &Cache,
    pod: &Candidate,
    service_selectors: &[&BTreeMap<String, String>],
    rng: &mut impl Rng,
) -> Result<String, FitError> {
    let feasible = feasible_nodes(cache, pod)?;
    let node = select_node(cache, &feasible, pod, service_selectors, rng).expect("feasible_nodes returns at least one node");
    Ok(node.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::tests::{pod, ready_node};
    use crate::scheduler::cache::{NodeFacts, PodUsage};
    use hawser_runtime::ObjectKey;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use serde_json::json;
    use std::collections::HashMap;

    fn cache_with(nodes: &[(&str, &str, &str)]) -> Cache {
        let mut cache = Cache::default();
        for (name, cpu, memory) in nodes {
            cache.set_node(NodeFacts::of(&ready_node(name, cpu, memory, "110")));
        }
        cache
    }

    /// A pod of replication controller `owner` (none: a bare pod) labelled
    /// `app: <app>`, requesting `cpu` and 100Mi.
    fn replica(name: &str, owner: Option<&str>, app: &str, cpu: &str) -> k8s_openapi::api::core::v1::Pod {
        let owners: Vec<_> = owner
            .into_iter()
            .map(|o| json!({"apiVersion": "v1", "kind": "ReplicationController", "name": o, "uid": format!("uid-{o}"), "controller": true}))
            .collect();
        pod(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": app}, "ownerReferences": owners},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]}
        }))
    }

    /// Schedules `pods` one after the other as the scheduler loop does
    /// (decide, then assume), returning the node of each.
    fn schedule_all(
        cache: &mut Cache,
        pods: &[k8s_openapi::api::core::v1::Pod],
        selectors: &[&BTreeMap<String, String>],
        rng: &mut StdRng,
    ) -> Vec<Result<String, FitError>> {
        pods.iter()
            .map(|p| {
                let candidate = Candidate::of(p);
                let decision = decide(cache, &candidate, selectors, rng);
                if let Ok(node) = &decision {
                    cache.assume(ObjectKey::of(p), PodUsage::of(p), node);
                }
                decision
            })
            .collect()
    }

    fn per_node(decisions: &[Result<String, FitError>]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for d in decisions {
            *counts.entry(d.clone().expect("every pod fits")).or_default() += 1;
        }
        counts
    }

    #[test]
    fn six_replicas_spread_two_per_node_over_three_equal_nodes() {
        for seed in 0..50 {
            let mut cache = cache_with(&[("n1", "4", "8Gi"), ("n2", "4", "8Gi"), ("n3", "4", "8Gi")]);
            let pods: Vec<_> = (0..6).map(|i| replica(&format!("web-{i}"), Some("web"), "web", "100m")).collect();
            let decisions = schedule_all(&mut cache, &pods, &[], &mut StdRng::seed_from_u64(seed));
            let expected: BTreeMap<String, usize> = [("n1", 2), ("n2", 2), ("n3", 2)].map(|(n, c)| (n.to_string(), c)).into();
            assert_eq!(per_node(&decisions), expected, "seed {seed}");
        }
    }

    #[test]
    fn pods_selected_by_the_same_service_spread_without_a_common_owner() {
        let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
        for seed in 0..20 {
            let mut cache = cache_with(&[("n1", "4", "8Gi"), ("n2", "4", "8Gi")]);
            // Bare pods: only the Service ties them together.
            let pods: Vec<_> = (0..4).map(|i| replica(&format!("web-{i}"), None, "web", "100m")).collect();
            let decisions = schedule_all(&mut cache, &pods, &[&web], &mut StdRng::seed_from_u64(seed));
            assert_eq!(per_node(&decisions).values().copied().collect::<Vec<_>>(), [2, 2], "seed {seed}");
        }
    }

    #[test]
    fn spreading_outweighs_a_moderate_load_difference() {
        let mut cache = cache_with(&[("n1", "4", "8Gi"), ("n2", "4", "8Gi")]);
        // Unrelated load on n2: a quarter of its cpu.
        let load = replica("batch", Some("batch"), "batch", "1");
        cache.assume(ObjectKey::of(&load), PodUsage::of(&load), "n2");
        let pods = [replica("web-0", Some("web"), "web", "100m"), replica("web-1", Some("web"), "web", "100m")];
        let decisions = schedule_all(&mut cache, &pods, &[], &mut StdRng::seed_from_u64(1));
        assert_eq!(decisions[0].as_deref().ok(), Some("n1"), "the first replica goes to the emptier node");
        assert_eq!(decisions[1].as_deref().ok(), Some("n2"), "the second replica avoids its sibling's node");
    }

    #[test]
    fn pods_prefer_the_emptier_node() {
        let mut cache = cache_with(&[("busy", "4", "8Gi"), ("idle", "4", "8Gi")]);
        let load = replica("load", None, "load", "2");
        cache.assume(ObjectKey::of(&load), PodUsage::of(&load), "busy");
        for seed in 0..20 {
            let decisions = schedule_all(&mut cache, &[replica("p", None, "p", "100m")], &[], &mut StdRng::seed_from_u64(seed));
            assert_eq!(decisions[0].as_deref().ok(), Some("idle"));
            cache.forget_assumed(&ObjectKey::new("default", "p"), "uid-p");
        }
    }

    #[test]
    fn request_less_pods_still_make_a_node_look_busier() {
        let mut cache = cache_with(&[("busy", "4", "8Gi"), ("idle", "4", "8Gi")]);
        for i in 0..5 {
            let p = pod(json!({"metadata": {"name": format!("bare-{i}"), "namespace": "default", "uid": format!("u{i}")},
                "spec": {"containers": [{"name": "c"}]}}));
            cache.assume(ObjectKey::of(&p), PodUsage::of(&p), "busy");
        }
        let decisions = schedule_all(&mut cache, &[replica("p", None, "p", "100m")], &[], &mut StdRng::seed_from_u64(0));
        assert_eq!(decisions[0].as_deref().ok(), Some("idle"));
    }

    #[test]
    fn a_node_too_small_for_the_requests_gets_none() {
        for seed in 0..20 {
            let mut cache = cache_with(&[("big", "8", "16Gi"), ("small", "500m", "16Gi")]);
            let pods: Vec<_> = (0..4).map(|i| replica(&format!("web-{i}"), Some("web"), "web", "1")).collect();
            let decisions = schedule_all(&mut cache, &pods, &[], &mut StdRng::seed_from_u64(seed));
            assert_eq!(per_node(&decisions), BTreeMap::from([("big".to_string(), 4)]), "seed {seed}");
        }
    }

    #[test]
    fn assumed_pods_count_against_capacity() {
        let mut cache = cache_with(&[("n1", "1", "8Gi")]);
        let pods = [replica("a", None, "a", "600m"), replica("b", None, "b", "600m")];
        let decisions = schedule_all(&mut cache, &pods, &[], &mut StdRng::seed_from_u64(0));
        assert_eq!(decisions[0].as_deref().ok(), Some("n1"));
        assert_eq!(decisions[1].as_ref().unwrap_err().to_string(), "0/1 nodes are available: 1 Insufficient cpu.");
        // Once the first binding fails and is forgotten, the room is back.
        cache.forget_assumed(&ObjectKey::new("default", "a"), "uid-a");
        let decisions = schedule_all(&mut cache, &pods[1..], &[], &mut StdRng::seed_from_u64(0));
        assert_eq!(decisions[0].as_deref().ok(), Some("n1"));
    }

    #[test]
    fn ties_are_broken_randomly() {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for seed in 0..60 {
            let mut cache = cache_with(&[("n1", "4", "8Gi"), ("n2", "4", "8Gi"), ("n3", "4", "8Gi")]);
            let decisions = schedule_all(&mut cache, &[replica("p", None, "p", "100m")], &[], &mut StdRng::seed_from_u64(seed));
            *seen.entry(decisions[0].clone().unwrap()).or_default() += 1;
        }
        assert_eq!(seen.len(), 3, "every equal node gets picked sometimes: {seen:?}");
    }

    #[test]
    fn scores_are_proportional_to_what_is_left() {
        let alloc = Resources { milli_cpu: 1000, memory: 1000, pods: 10 };
        assert_eq!(least_allocated(alloc, Resources { milli_cpu: 0, memory: 0, pods: 0 }), 100);
        assert_eq!(least_allocated(alloc, Resources { milli_cpu: 500, memory: 1000, pods: 1 }), 25);
        assert_eq!(least_allocated(alloc, Resources { milli_cpu: 2000, memory: 0, pods: 1 }), 50, "over-requested counts as full");
        assert_eq!(least_allocated(Resources::default(), Resources::default()), 0);
        assert_eq!(spread(0, 0), 100);
        assert_eq!(spread(0, 4), 100);
        assert_eq!(spread(1, 4), 75);
        assert_eq!(spread(4, 4), 0);
    }
}
