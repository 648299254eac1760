//! What changed since the last sync (kube-proxy's change trackers): the
//! informers' handlers record the Service each Service or EndpointSlice
//! change touches, and the sync loop takes the set. Recording is cheap
//! and never blocks; a change that lands during a sync waits for the next
//! one, so none is lost.

use super::state::SERVICE_NAME_LABEL;
use hawser_runtime::{Change, Informer, ObjectKey};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use tokio::sync::Notify;

#[derive(Default)]
pub struct ChangeTracker {
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    pending: BTreeSet<ObjectKey>,
    /// Each Service's EndpointSlices (by slice name), from their
    /// `kubernetes.io/service-name` label: an index, so a sync reads only
    /// the slices of the services it rebuilds.
    slices: HashMap<ObjectKey, BTreeSet<String>>,
}

impl ChangeTracker {
    /// A tracker fed by every change the `services` and `slices` caches see
    /// (the ones already cached count as added).
    pub fn watching(services: &Informer<Service>, slices: &Informer<EndpointSlice>) -> Arc<Self> {
        let tracker = Arc::new(ChangeTracker::default());
        let on_service = tracker.clone();
        services.on_change(move |change| on_service.service_changed(ObjectKey::of(change.object())));
        let on_slice = tracker.clone();
        slices.on_change(move |change| on_slice.slice_changed(change));
        tracker
    }

    pub fn service_changed(&self, key: ObjectKey) {
        self.inner.lock().unwrap().pending.insert(key);
        self.changed.notify_one();
    }

    pub fn slice_changed(&self, change: &Change<'_, EndpointSlice>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(old) = change.old
            && let Some(service) = service_of(old)
        {
            let name = old.metadata.name.clone().unwrap_or_default();
            if let Some(names) = inner.slices.get_mut(&service) {
                names.remove(&name);
                if names.is_empty() {
                    inner.slices.remove(&service);
                }
            }
            inner.pending.insert(service);
        }
        if let Some(new) = change.new
            && let Some(service) = service_of(new)
        {
            inner.slices.entry(service.clone()).or_default().insert(new.metadata.name.clone().unwrap_or_default());
            inner.pending.insert(service);
        }
        drop(inner);
        self.changed.notify_one();
    }

    /// The Services changed since the last call.
    pub fn take(&self) -> BTreeSet<ObjectKey> {
        std::mem::take(&mut self.inner.lock().unwrap().pending)
    }

    /// The keys of `service`'s EndpointSlices.
    pub fn slices_of(&self, service: &ObjectKey) -> Vec<ObjectKey> {
        let inner = self.inner.lock().unwrap();
        inner.slices.get(service).into_iter().flatten().map(|name| ObjectKey::new(service.namespace.clone(), name.clone())).collect()
    }

    /// Resolves once something changed since the last [`take`](Self::take)
    /// (at once if a change came while nobody waited).
    pub async fn wait(&self) {
        if !self.inner.lock().unwrap().pending.is_empty() {
            return;
        }
        self.changed.notified().await;
    }
}

fn service_of(slice: &EndpointSlice) -> Option<ObjectKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ObjectKey::new(slice.metadata.namespace.clone().unwrap_or_default(), name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(name: &str, service: &str) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "endpoints": []
        }))
        .unwrap()
    }

    #[test]
    fn slices_are_indexed_by_service_and_relabelling_touches_both_services() {
        let tracker = ChangeTracker::default();
        let a1 = slice("a-1", "a");
        tracker.slice_changed(&Change { old: None, new: Some(&a1) });
        assert_eq!(tracker.take(), BTreeSet::from([ObjectKey::new("default", "a")]));
        assert_eq!(tracker.slices_of(&ObjectKey::new("default", "a")), [ObjectKey::new("default", "a-1")]);
        let moved = slice("a-1", "b");
        tracker.slice_changed(&Change { old: Some(&a1), new: Some(&moved) });
        assert_eq!(tracker.take(), BTreeSet::from([ObjectKey::new("default", "a"), ObjectKey::new("default", "b")]));
        assert!(tracker.slices_of(&ObjectKey::new("default", "a")).is_empty());
        tracker.slice_changed(&Change { old: Some(&moved), new: None });
        assert!(tracker.slices_of(&ObjectKey::new("default", "b")).is_empty());
        assert!(tracker.take().contains(&ObjectKey::new("default", "b")));
        assert!(tracker.take().is_empty());
    }

    #[tokio::test]
    async fn a_change_made_before_waiting_is_not_missed() {
        let tracker = ChangeTracker::default();
        tracker.service_changed(ObjectKey::new("default", "a"));
        tokio::time::timeout(std::time::Duration::from_secs(1), tracker.wait()).await.expect("a pending change wakes at once");
        tracker.take();
        tracker.service_changed(ObjectKey::new("default", "b"));
        tokio::time::timeout(std::time::Duration::from_secs(1), tracker.wait()).await.expect("the stored permit wakes");
    }
}
