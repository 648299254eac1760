//! ReplicationControllers: the replica logic of [`super::replicaset`], for
//! the older kind whose selector is a plain label map.

use super::replicaset::{self, Workload};
use hawser_api::selector::LabelSelector;
use hawser_runtime::Informers;
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use serde_json::Value;
use std::sync::Arc;

impl Workload for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn pod_selector(&self) -> Option<LabelSelector> {
        // The API server defaults a missing selector to the template's labels.
        let selector = self.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())?;
        Some(LabelSelector::from_map(selector))
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }

    fn current_status(&self) -> Option<Value> {
        serde_json::to_value(self.status.as_ref()?).ok()
    }
}

pub fn start(informers: &Arc<Informers>, config: &super::Config) {
    replicaset::start::<ReplicationController>(informers, config, "replicationcontroller");
}
