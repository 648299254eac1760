//! A list+watch cache of one resource kind with change handlers: client-go's
//! shared informer, built on kube-rs's `watcher` (which owns the list → watch
//! → relist-on-410 state machine and reconnects with backoff).
//!
//! Handlers get the old and the new object of every change and must be cheap
//! (they usually map the change to keys and push them onto a work queue). A
//! handler registered late first sees every cached object as an add, so a
//! loop never misses an object that was listed before it subscribed.

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

/// `namespace/name` (or `name` for cluster-scoped objects): the identity
/// queues and caches use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    pub fn of<K: Resource>(obj: &K) -> Self {
        Self { namespace: obj.meta().namespace.clone().unwrap_or_default(), name: obj.meta().name.clone().unwrap_or_default() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() { write!(f, "{}", self.name) } else { write!(f, "{}/{}", self.namespace, self.name) }
    }
}

/// One change seen by the informer: an add (`old` is None), an update (both),
/// or a delete (`new` is None).
pub struct Change<'a, K> {
    pub old: Option<&'a K>,
    pub new: Option<&'a K>,
}

impl<K> Change<'_, K> {
    /// The object as it is now, or as it was last seen when deleted.
    pub fn object(&self) -> &K {
        self.new.or(self.old).expect("a change has an old or a new object")
    }

    /// Both versions that exist, old first (a handler that maps objects to
    /// keys usually wants the keys of each, e.g. when a pod's labels change).
    pub fn versions(&self) -> impl Iterator<Item = &K> {
        self.old.into_iter().chain(self.new)
    }
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;
type Cache<K> = BTreeMap<String, HashMap<String, Arc<K>>>;

struct Inner<K> {
    kind: &'static str,
    cache: RwLock<Cache<K>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

/// A shared, cheaply clonable handle to one kind's cache.
pub struct Informer<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

/// What an informer can cache: any typed Kubernetes resource.
pub trait Cached: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static {}
impl<K> Cached for K where K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static {}

impl<K: Cached> Informer<K> {
    /// Starts listing and watching every `K` in every namespace.
    pub fn start(client: kube::Client) -> Self {
        Self::start_with(client, watcher::Config::default())
    }

    /// Starts listing and watching the `K`s `config` selects (e.g. an
    /// agent's pods: `fields("spec.nodeName=<node>")`).
    pub fn start_with(client: kube::Client, config: watcher::Config) -> Self {
        let (synced, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            kind: std::any::type_name::<K>().rsplit("::").next().unwrap_or("object"),
            cache: RwLock::default(),
            handlers: RwLock::default(),
            synced,
        });
        let api: Api<K> = Api::all(client);
        tokio::spawn(run(inner.clone(), api, config));
        Self { inner }
    }

    /// Calls `handler` for every cached object (as an add), then for every
    /// later change. Handlers run under the informer's handler lock: one must
    /// not register another handler on the same informer.
    pub fn on_change(&self, handler: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        let mut handlers = self.inner.handlers.write().unwrap();
        for obj in self.list() {
            handler(&Change { old: None, new: Some(&obj) });
        }
        handlers.push(Box::new(handler));
    }

    /// Queues the key of every object that changes: the handler for a
    /// controller's own kind.
    pub fn queue_changes(&self, queue: &Arc<crate::WorkQueue<ObjectKey>>) {
        let queue = queue.clone();
        self.on_change(move |change| queue.add(ObjectKey::of(change.object())));
    }

    /// Resolves once the first full list has been loaded.
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.inner.cache.read().unwrap().get(&key.namespace)?.get(&key.name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.inner.cache.read().unwrap().values().flat_map(|m| m.values().cloned()).collect()
    }

    /// Every cached object in `namespace` (cluster-scoped kinds: "").
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.inner.cache.read().unwrap().get(namespace).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.inner.cache.read().unwrap().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn run<K: Cached>(inner: Arc<Inner<K>>, api: Api<K>, config: watcher::Config) {
    let mut events = watcher(api, config).boxed();
    // A relist is buffered and swapped in whole at InitDone, so the cache
    // never shows half a list.
    let mut relist: Option<Vec<K>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => relist = Some(Vec::new()),
            Ok(Event::InitApply(obj)) => relist.get_or_insert_with(Vec::new).push(obj),
            Ok(Event::InitDone) => {
                replace_all(&inner, relist.take().unwrap_or_default());
                inner.synced.send_replace(true);
            }
            Ok(Event::Apply(obj)) => apply(&inner, obj),
            Ok(Event::Delete(obj)) => delete(&inner, &obj),
            Err(e) => tracing::warn!(kind = inner.kind, error = %e, "watch failed; retrying with backoff"),
        }
    }
}

fn watcher<K: Cached>(api: Api<K>, config: watcher::Config) -> impl futures::Stream<Item = watcher::Result<Event<K>>> + Send {
    // managedFields are large and no control loop reads them.
    watcher::watcher(api, config).default_backoff().map(|e| e.map(|e| e.modify(|obj| obj.meta_mut().managed_fields = None)))
}

fn apply<K: Cached>(inner: &Inner<K>, obj: K) {
    let key = ObjectKey::of(&obj);
    let new = Arc::new(obj);
    let old = inner.cache.write().unwrap().entry(key.namespace).or_default().insert(key.name, new.clone());
    if old.as_ref().is_some_and(|old| old.resource_version() == new.resource_version()) {
        return;
    }
    notify(inner, &Change { old: old.as_deref(), new: Some(&new) });
}

fn delete<K: Cached>(inner: &Inner<K>, obj: &K) {
    let key = ObjectKey::of(obj);
    let old = {
        let mut cache = inner.cache.write().unwrap();
        let old = cache.get_mut(&key.namespace).and_then(|m| m.remove(&key.name));
        if cache.get(&key.namespace).is_some_and(HashMap::is_empty) {
            cache.remove(&key.namespace);
        }
        old
    };
    // The last state we knew is the better "old" (a delete event carries
    // the object as stored at deletion, which is what we want when unknown).
    let last = old.as_deref().unwrap_or(obj);
    notify(inner, &Change { old: Some(last), new: None });
}

fn replace_all<K: Cached>(inner: &Inner<K>, objects: Vec<K>) {
    let mut fresh: Cache<K> = BTreeMap::new();
    for obj in objects {
        let key = ObjectKey::of(&obj);
        fresh.entry(key.namespace).or_default().insert(key.name, Arc::new(obj));
    }
    let previous = std::mem::replace(&mut *inner.cache.write().unwrap(), fresh.clone());
    for (ns, objects) in &fresh {
        for (name, new) in objects {
            let old = previous.get(ns).and_then(|m| m.get(name));
            if old.is_none_or(|old| old.resource_version() != new.resource_version()) {
                notify(inner, &Change { old: old.map(|o| &**o), new: Some(new) });
            }
        }
    }
    for (ns, objects) in &previous {
        for (name, old) in objects {
            if fresh.get(ns).is_none_or(|m| !m.contains_key(name)) {
                notify(inner, &Change { old: Some(old), new: None });
            }
        }
    }
}

fn notify<K>(inner: &Inner<K>, change: &Change<'_, K>) {
    for handler in inner.handlers.read().unwrap().iter() {
        handler(change);
    }
}

/// One informer per kind for a whole process, started on first use, so the
/// scheduler and every controller share one pod cache and one watch.
pub struct Informers {
    client: kube::Client,
    started: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Informers {
    pub fn new(client: kube::Client) -> Self {
        Self { client, started: Mutex::default() }
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn get<K: Cached>(&self) -> Informer<K> {
        let mut started = self.started.lock().unwrap();
        let entry = started.entry(TypeId::of::<K>()).or_insert_with(|| Box::new(Informer::<K>::start(self.client.clone())));
        entry.downcast_ref::<Informer<K>>().expect("informer map keyed by type").clone()
    }
}
