//! Events (core/v1), as `kubectl describe` shows them. Repeats of the same
//! event for the same object bump `count` and `lastTimestamp` on the existing
//! Event instead of creating another, as Kubernetes' event correlator does.
//! Writes happen in the background: a control loop never waits on an Event.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Aggregation memory is bounded; when full it starts over (a repeat then
/// makes a new Event, which is harmless).
const MAX_REMEMBERED: usize = 8192;
/// Concurrent Event writes; more wait their turn.
const MAX_IN_FLIGHT: usize = 16;

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
    seen: Arc<Mutex<HashMap<Signature, Seen>>>,
    in_flight: Arc<tokio::sync::Semaphore>,
    serial: Arc<AtomicU64>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Signature {
    uid: String,
    namespace: String,
    name: String,
    kind: String,
    type_: EventType,
    reason: String,
    message: String,
}

#[derive(Clone)]
struct Seen {
    event_name: String,
    count: i32,
}

impl Recorder {
    /// `component` is what `kubectl describe` shows in its `From` column
    /// (`default-scheduler`, `replication-controller`, ...).
    pub fn new(client: kube::Client, component: &str) -> Self {
        Self {
            client,
            component: component.to_string(),
            host: None,
            seen: Arc::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            serial: Arc::default(),
        }
    }

    /// Sets `source.host` (the agent's node name).
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_string());
        self
    }

    /// Records an event about `object` without waiting for the write.
    pub fn publish(&self, object: &ObjectReference, type_: EventType, reason: &str, message: &str) {
        let this = self.clone();
        let object = object.clone();
        let (reason, message) = (reason.to_string(), message.to_string());
        tokio::spawn(async move {
            let Ok(_permit) = this.in_flight.acquire().await else { return };
            if let Err(e) = this.write(&object, type_, &reason, &message).await {
                tracing::debug!(component = this.component, object = ?object.name, reason, error = %e, "could not write event");
            }
        });
    }

    async fn write(&self, object: &ObjectReference, type_: EventType, reason: &str, message: &str) -> Result<(), kube::Error> {
        // Events of cluster-scoped objects (nodes) live in `default`, as in Kubernetes.
        let namespace = object.namespace.clone().filter(|ns| !ns.is_empty()).unwrap_or_else(|| "default".into());
        let signature = Signature {
            uid: object.uid.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            name: object.name.clone().unwrap_or_default(),
            kind: object.kind.clone().unwrap_or_default(),
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = crate::objects::now();
        let previous = self.seen.lock().unwrap().get(&signature).cloned();
        if let Some(seen) = previous {
            let count = seen.count + 1;
            let patch = serde_json::json!({"count": count, "lastTimestamp": now});
            match api.patch(&seen.event_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.remember(signature, Seen { event_name: seen.event_name, count });
                    return Ok(());
                }
                // The Event expired or was deleted: write a fresh one.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let nanos = jiff::Timestamp::now().as_nanosecond() as u64 + self.serial.fetch_add(1, Ordering::Relaxed);
        let event_name = format!("{}.{:x}", signature.name, nanos);
        let event = Event {
            metadata: ObjectMeta { name: Some(event_name.clone()), namespace: Some(namespace), ..Default::default() },
            involved_object: object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            source: Some(EventSource { component: Some(self.component.clone()), host: self.host.clone() }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.remember(signature, Seen { event_name, count: 1 });
        Ok(())
    }

    fn remember(&self, signature: Signature, seen: Seen) {
        let mut map = self.seen.lock().unwrap();
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
        map.insert(signature, seen);
    }
}
