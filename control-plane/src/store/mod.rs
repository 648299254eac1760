//! The cluster's durable state: a key-value store with one global revision,
//! compare-and-swap transactions and watches from any revision in its
//! history window — the contract Kubernetes gets from etcd, so an etcd
//! backend (revision = etcd revision, keys `/registry/<resource>/<ns>/<name>`)
//! slots in behind the same trait.
//!
//! - [`redb`]: the embedded default, a single file in the data dir.

pub mod redb;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::path::Path;
use std::sync::Arc;

/// The store's global write counter; every committed transaction gets the next one.
pub type Revision = u64;

/// A stored value and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// What must hold for a transaction to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last modified at exactly this revision.
    ModRevision(String, Revision),
}

impl Condition {
    pub fn key(&self) -> &str {
        match self {
            Self::Absent(k) | Self::ModRevision(k, _) => k,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put(String, Bytes),
    Delete(String),
}

/// An all-or-nothing change: every condition holds and every write applies
/// under one new revision, or nothing happens.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    pub conditions: Vec<Condition>,
    pub writes: Vec<Write>,
}

impl Txn {
    pub fn when(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.writes.push(Write::Put(key.into(), value.into()));
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.writes.push(Write::Delete(key.into()));
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    /// The new value; for a delete, the value that was deleted.
    pub value: Bytes,
    /// The value before this change (absent for a create).
    pub prev_value: Option<Bytes>,
    /// The revision of the transaction that made the change.
    pub revision: Revision,
}

/// One page of a prefix listing, read at one revision.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The store revision the page was read at.
    pub revision: Revision,
    /// Keys after the last item remain under the prefix.
    pub more: bool,
}

pub type EventStream = BoxStream<'static, Result<Event, StoreError>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Condition number `index` of the transaction did not hold.
    #[error("transaction condition on {key} failed")]
    ConditionFailed { index: usize, key: String },
    /// The revision asked for is older than the history kept.
    #[error("revision {requested} has been compacted; the oldest watchable revision is {oldest}")]
    Compacted { requested: Revision, oldest: Revision },
    /// The watcher fell too far behind the writers and must start again.
    #[error("watcher fell behind by {0} events")]
    WatchLagged(u64),
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("store is closed")]
    Closed,
}

/// The store every control-plane component reads and writes through.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Keys under `prefix` in key order, starting after `start_after`, at most `limit`.
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Result<ListPage, StoreError>;

    /// Applies `txn` durably (on disk before this returns) and returns its revision.
    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError>;

    /// Every change under `prefix` with a revision greater than `after`, then
    /// live changes as they commit, in revision order.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream, StoreError>;

    /// The revision of the newest committed transaction.
    async fn revision(&self) -> Result<Revision, StoreError>;
}

/// Opens the store named by `--store`: `redb` (a file in `data_dir`) or `etcd://HOST:PORT[,...]`.
pub fn open(spec: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    match spec {
        "redb" => Ok(Arc::new(redb::RedbStore::open(&data_dir.join("store.redb"), redb::Config::default())?)),
        s if s.starts_with("etcd://") => {
            anyhow::bail!("--store {s}: the etcd backend is not built yet (it arrives with multi-node control planes); use --store redb")
        }
        other => anyhow::bail!("--store {other:?} is not a store: use `redb` or `etcd://HOST:PORT[,HOST:PORT...]`"),
    }
}
