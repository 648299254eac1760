//! The embedded store: one redb file.
//!
//! All writes go through a single committer thread that takes every
//! transaction waiting in its queue, applies them in order inside one redb
//! write transaction and fsyncs once (group commit). Callers still get their
//! own revision and their answer only after the fsync, so a write is durable
//! before it is acknowledged, while concurrent writers share the cost of a sync.
//!
//! Every committed transaction is also appended to an event log keyed by
//! revision, so a watch can start from any revision still in the log (the
//! history window) even after a restart; older revisions answer `Compacted`.

use super::{Condition, Event, EventKind, EventStream, KeyValue, ListPage, Revision, Store, StoreError, Txn, Write};
use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{broadcast, oneshot};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// key → [create_revision u64 LE][mod_revision u64 LE][value]
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// revision → the events of that transaction, encoded by [`encode_events`].
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
/// Every revision at or below this one has left the log.
const META_COMPACTED: &str = "compacted";

#[derive(Clone, Debug)]
pub struct Config {
    /// Revisions kept in the event log for watches. 50,000 covers several
    /// minutes of a busy cluster (Kubernetes compacts etcd every 5 minutes)
    /// while keeping the log to tens of megabytes.
    pub history_window: u64,
    /// Most transactions applied under one fsync.
    pub max_batch: usize,
    /// Live events buffered per watcher before it is cut off as too slow.
    pub watch_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { history_window: 50_000, max_batch: 1024, watch_buffer: 16_384 }
    }
}

pub struct RedbStore {
    db: Arc<Database>,
    /// `None` only while dropping, to close the queue before joining the committer.
    queue: Option<std::sync::mpsc::SyncSender<Request>>,
    committer: Option<std::thread::JoinHandle<()>>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    revision: Arc<AtomicU64>,
    compacted: Arc<AtomicU64>,
}

struct Request {
    txn: Txn,
    reply: oneshot::Sender<Result<Revision, StoreError>>,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

impl RedbStore {
    pub fn open(path: &Path, config: Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        let db = Database::create(path).with_context(|| format!("opening store {}", path.display()))?;
        let (revision, compacted) = {
            let tx = db.begin_write()?;
            let (rev, compacted) = {
                let meta = tx.open_table(META)?;
                tx.open_table(KV)?;
                tx.open_table(LOG)?;
                let get = |k| meta.get(k).map(|v| v.map(|g| g.value()).unwrap_or(0));
                (get(META_REVISION)?, get(META_COMPACTED)?)
            };
            tx.commit()?;
            (rev, compacted)
        };
        let db = Arc::new(db);
        let (events, _) = broadcast::channel(config.watch_buffer);
        let revision = Arc::new(AtomicU64::new(revision));
        let compacted = Arc::new(AtomicU64::new(compacted));
        let (queue, rx) = std::sync::mpsc::sync_channel(config.max_batch * 4);
        let committer =
            Committer { db: db.clone(), events: events.clone(), revision: revision.clone(), compacted: compacted.clone(), config };
        let committer = std::thread::Builder::new().name("store-committer".into()).spawn(move || committer.run(rx))?;
        Ok(Self { db, queue: Some(queue), committer: Some(committer), events, revision, compacted })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&::redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db.begin_read().map_err(io)?)).await.map_err(io)?
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.read(move |tx| {
            let kv = tx.open_table(KV).map_err(io)?;
            Ok(kv.get(key.as_str()).map_err(io)?.map(|v| decode_kv(&key, v.value())))
        })
        .await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Result<ListPage, StoreError> {
        let prefix = prefix.to_string();
        let start = start_after.map(str::to_string);
        self.read(move |tx| {
            let revision = tx.open_table(META).map_err(io)?.get(META_REVISION).map_err(io)?.map(|g| g.value()).unwrap_or(0);
            let kv = tx.open_table(KV).map_err(io)?;
            let from = start.as_deref().filter(|s| s.as_bytes() > prefix.as_bytes()).unwrap_or(prefix.as_str());
            let limit = limit.unwrap_or(usize::MAX);
            let mut page = ListPage { revision, ..Default::default() };
            for entry in kv.range(from..).map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                if Some(key) == start.as_deref() {
                    continue;
                }
                if page.items.len() == limit {
                    page.more = true;
                    break;
                }
                page.items.push(decode_kv(key, v.value()));
            }
            Ok(page)
        })
        .await
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let (reply, answer) = oneshot::channel();
        let queue = self.queue.clone().ok_or(StoreError::Closed)?;
        // The queue is bounded: a full queue blocks, so hand it off the async runtime.
        tokio::task::spawn_blocking(move || queue.send(Request { txn, reply })).await.map_err(io)?.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream, StoreError> {
        // Subscribe before reading the log: anything committed after the read
        // arrives live; anything both read and received is dropped by revision.
        let live = self.events.subscribe();
        let oldest = self.compacted.load(Ordering::SeqCst);
        if after < oldest {
            return Err(StoreError::Compacted { requested: after, oldest: oldest + 1 });
        }
        let prefix = prefix.to_string();
        let log_prefix = prefix.clone();
        let (history, read_at) = self
            .read(move |tx| {
                let read_at = tx.open_table(META).map_err(io)?.get(META_REVISION).map_err(io)?.map(|g| g.value()).unwrap_or(0);
                let log = tx.open_table(LOG).map_err(io)?;
                let mut events = Vec::new();
                for entry in log.range(after + 1..=read_at).map_err(io)? {
                    let (rev, data) = entry.map_err(io)?;
                    events.extend(decode_events(rev.value(), data.value())?.into_iter().filter(|e| e.key.starts_with(&log_prefix)));
                }
                Ok((events, read_at))
            })
            .await?;
        let live = BroadcastStream::new(live).flat_map(move |batch| {
            let events: Vec<Result<Event, StoreError>> = match batch {
                Ok(batch) => batch
                    .iter()
                    .filter(|e| e.revision > read_at && e.revision > after && e.key.starts_with(&prefix))
                    .cloned()
                    .map(Ok)
                    .collect(),
                Err(BroadcastStreamRecvError::Lagged(n)) => vec![Err(StoreError::WatchLagged(n))],
            };
            futures::stream::iter(events)
        });
        Ok(futures::stream::iter(history.into_iter().map(Ok)).chain(live).boxed())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.revision.load(Ordering::SeqCst))
    }
}

impl Drop for RedbStore {
    /// Lets queued writes finish and releases the database file, so the same
    /// path can be opened again at once (a restart, or a test reopening it).
    fn drop(&mut self) {
        self.queue.take();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

struct Committer {
    db: Arc<Database>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    revision: Arc<AtomicU64>,
    compacted: Arc<AtomicU64>,
    config: Config,
}

impl Committer {
    fn run(self, queue: std::sync::mpsc::Receiver<Request>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch {
                match queue.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&self, batch: Vec<Request>) {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut committed: Vec<Arc<Vec<Event>>> = Vec::new();
        let result = (|| -> Result<Revision, StoreError> {
            let mut tx = self.db.begin_write().map_err(io)?;
            tx.set_durability(Durability::Immediate).map_err(io)?;
            let mut revision = self.revision.load(Ordering::SeqCst);
            let mut compacted = self.compacted.load(Ordering::SeqCst);
            {
                let mut kv = tx.open_table(KV).map_err(io)?;
                let mut log = tx.open_table(LOG).map_err(io)?;
                for request in &batch {
                    match apply(&mut kv, &request.txn, revision + 1)? {
                        Ok(events) if request.txn.writes.is_empty() => {
                            debug_assert!(events.is_empty());
                            outcomes.push(Ok(revision));
                        }
                        Ok(events) => {
                            revision += 1;
                            log.insert(revision, encode_events(&events).as_slice()).map_err(io)?;
                            committed.push(Arc::new(events));
                            outcomes.push(Ok(revision));
                        }
                        Err(failed) => outcomes.push(Err(failed)),
                    }
                }
                if revision.saturating_sub(compacted) > self.config.history_window {
                    let cutoff = revision - self.config.history_window;
                    log.retain_in(..=cutoff, |_, _| false).map_err(io)?;
                    compacted = cutoff;
                }
                let mut meta = tx.open_table(META).map_err(io)?;
                meta.insert(META_REVISION, revision).map_err(io)?;
                meta.insert(META_COMPACTED, compacted).map_err(io)?;
            }
            tx.commit().map_err(io)?;
            self.compacted.store(compacted, Ordering::SeqCst);
            Ok(revision)
        })();
        match result {
            Ok(revision) => {
                self.revision.store(revision, Ordering::SeqCst);
                for events in committed {
                    // No receivers is fine: nobody is watching.
                    let _ = self.events.send(events);
                }
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; the batch was not applied");
                for request in batch {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Checks `txn`'s conditions and applies its writes at `revision`. The outer
/// error is an I/O failure (abort the batch); the inner one a failed condition
/// (this transaction only).
#[allow(clippy::type_complexity)]
fn apply(kv: &mut ::redb::Table<&str, &[u8]>, txn: &Txn, revision: Revision) -> Result<Result<Vec<Event>, StoreError>, StoreError> {
    for (index, condition) in txn.conditions.iter().enumerate() {
        let current = kv.get(condition.key()).map_err(io)?.map(|v| decode_kv(condition.key(), v.value()).mod_revision);
        let holds = match condition {
            Condition::Absent(_) => current.is_none(),
            Condition::ModRevision(_, rev) => current == Some(*rev),
        };
        if !holds {
            return Ok(Err(StoreError::ConditionFailed { index, key: condition.key().to_string() }));
        }
    }
    let mut events = Vec::with_capacity(txn.writes.len());
    for write in &txn.writes {
        match write {
            Write::Put(key, value) => {
                let prev = kv.get(key.as_str()).map_err(io)?.map(|v| decode_kv(key, v.value()));
                let create_revision = prev.as_ref().map_or(revision, |p| p.create_revision);
                kv.insert(key.as_str(), encode_kv(create_revision, revision, value).as_slice()).map_err(io)?;
                events.push(Event {
                    kind: EventKind::Put,
                    key: key.clone(),
                    value: value.clone(),
                    prev_value: prev.map(|p| p.value),
                    revision,
                });
            }
            Write::Delete(key) => {
                if let Some(prev) = kv.remove(key.as_str()).map_err(io)?.map(|v| decode_kv(key, v.value())) {
                    events.push(Event {
                        kind: EventKind::Delete,
                        key: key.clone(),
                        value: prev.value.clone(),
                        prev_value: Some(prev.value),
                        revision,
                    });
                }
            }
        }
    }
    Ok(Ok(events))
}

fn encode_kv(create_revision: Revision, mod_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_kv(key: &str, raw: &[u8]) -> KeyValue {
    let (create, rest) = raw.split_at(8);
    let (modified, value) = rest.split_at(8);
    KeyValue {
        key: key.to_string(),
        value: Bytes::copy_from_slice(value),
        create_revision: u64::from_le_bytes(create.try_into().expect("8 bytes")),
        mod_revision: u64::from_le_bytes(modified.try_into().expect("8 bytes")),
    }
}

/// `[kind u8][key][value][has_prev u8][prev]`, each byte string length-prefixed (u32 LE).
fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    for e in events {
        out.push(match e.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        bytes(&mut out, e.key.as_bytes());
        bytes(&mut out, &e.value);
        match &e.prev_value {
            Some(p) => {
                out.push(1);
                bytes(&mut out, p);
            }
            None => out.push(0),
        }
    }
    out
}

fn decode_events(revision: Revision, mut raw: &[u8]) -> Result<Vec<Event>, StoreError> {
    let corrupt = || StoreError::Io(format!("event log entry {revision} is corrupt"));
    fn take<'a>(raw: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = raw.split_at_checked(n)?;
        *raw = tail;
        Some(head)
    }
    fn bytes<'a>(raw: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(take(raw, 4)?.try_into().ok()?) as usize;
        take(raw, len)
    }
    let mut events = Vec::new();
    while !raw.is_empty() {
        let kind = match take(&mut raw, 1).ok_or_else(corrupt)?[0] {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            _ => return Err(corrupt()),
        };
        let key = String::from_utf8(bytes(&mut raw).ok_or_else(corrupt)?.to_vec()).map_err(|_| corrupt())?;
        let value = Bytes::copy_from_slice(bytes(&mut raw).ok_or_else(corrupt)?);
        let prev_value = match take(&mut raw, 1).ok_or_else(corrupt)?[0] {
            1 => Some(Bytes::copy_from_slice(bytes(&mut raw).ok_or_else(corrupt)?)),
            _ => None,
        };
        events.push(Event { kind, key, value, prev_value, revision });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store(dir: &tempfile::TempDir, window: u64) -> RedbStore {
        RedbStore::open(&dir.path().join("s.redb"), Config { history_window: window, ..Config::default() }).unwrap()
    }

    async fn next(stream: &mut EventStream) -> Event {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("no watch event within 5s: the committer did not broadcast")
            .expect("stream ended")
            .unwrap()
    }

    #[tokio::test]
    async fn every_commit_gets_the_next_revision_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store(&dir, 100);
            assert_eq!(s.commit(Txn::default().put("/a/1", "x")).await.unwrap(), 1);
            assert_eq!(s.commit(Txn::default().put("/a/2", "y")).await.unwrap(), 2);
            assert_eq!(s.commit(Txn::default().put("/a/1", "z")).await.unwrap(), 3);
        }
        let s = store(&dir, 100);
        assert_eq!(s.revision().await.unwrap(), 3);
        let kv = s.get("/a/1").await.unwrap().unwrap();
        assert_eq!((kv.value.as_ref(), kv.create_revision, kv.mod_revision), (b"z".as_ref(), 1, 3));
        assert_eq!(s.commit(Txn::default().put("/a/3", "w")).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn failed_condition_applies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 100);
        s.commit(Txn::default().put("/k", "1")).await.unwrap();
        let stale = Txn::default().when(Condition::ModRevision("/k".into(), 7)).put("/k", "2").put("/other", "x");
        assert!(matches!(s.commit(stale).await, Err(StoreError::ConditionFailed { index: 0, .. })));
        let taken = Txn::default().when(Condition::Absent("/other".into())).when(Condition::Absent("/k".into())).put("/other", "x");
        assert!(matches!(s.commit(taken).await, Err(StoreError::ConditionFailed { index: 1, .. })));
        assert!(s.get("/other").await.unwrap().is_none());
        assert_eq!(s.revision().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn concurrent_commits_all_land_with_distinct_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(store(&dir, 10_000));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.commit(Txn::default().put(format!("/p/{i:03}"), "v")).await.unwrap() })
            })
            .collect();
        let mut revs = Vec::new();
        for t in tasks {
            revs.push(t.await.unwrap());
        }
        revs.sort();
        revs.dedup();
        assert_eq!(revs.len(), 200);
        assert_eq!(s.list("/p/", None, None).await.unwrap().items.len(), 200);
    }

    #[tokio::test]
    async fn list_pages_through_a_prefix_without_leaking_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 100);
        for k in ["/a/1", "/a/2", "/a/3", "/ab/1", "/b/1"] {
            s.commit(Txn::default().put(k, "v")).await.unwrap();
        }
        let first = s.list("/a/", None, Some(2)).await.unwrap();
        assert_eq!(first.items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["/a/1", "/a/2"]);
        assert!(first.more);
        let rest = s.list("/a/", Some("/a/2"), Some(2)).await.unwrap();
        assert_eq!(rest.items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["/a/3"]);
        assert!(!rest.more);
        assert_eq!(rest.revision, 5);
    }

    #[tokio::test]
    async fn watch_replays_history_then_follows_live_changes_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 100);
        s.commit(Txn::default().put("/w/a", "1")).await.unwrap();
        s.commit(Txn::default().put("/x/a", "1")).await.unwrap();
        s.commit(Txn::default().put("/w/a", "2")).await.unwrap();
        let mut w = s.watch("/w/", 1).await.unwrap();
        let e = next(&mut w).await;
        assert_eq!(
            (e.kind, e.revision, e.value.as_ref(), e.prev_value.as_deref()),
            (EventKind::Put, 3, b"2".as_ref(), Some(b"1".as_ref()))
        );
        s.commit(Txn::default().delete("/w/a")).await.unwrap();
        let e = next(&mut w).await;
        assert_eq!((e.kind, e.revision, e.value.as_ref()), (EventKind::Delete, 4, b"2".as_ref()));
        s.commit(Txn::default().put("/w/b", "3")).await.unwrap();
        assert_eq!(next(&mut w).await.revision, 5);
    }

    #[tokio::test]
    async fn watch_from_before_the_history_window_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 3);
        for i in 0..10 {
            s.commit(Txn::default().put(format!("/c/{i}"), "v")).await.unwrap();
        }
        assert!(matches!(s.watch("/c/", 2).await, Err(StoreError::Compacted { .. })));
        let mut w = s.watch("/c/", 8).await.unwrap();
        assert_eq!(next(&mut w).await.revision, 9);
    }

    #[tokio::test]
    async fn watch_history_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store(&dir, 100);
            s.commit(Txn::default().put("/r/a", "1")).await.unwrap();
            s.commit(Txn::default().put("/r/b", "2")).await.unwrap();
        }
        let s = store(&dir, 100);
        let mut w = s.watch("/r/", 0).await.unwrap();
        assert_eq!(next(&mut w).await.key, "/r/a");
        assert_eq!(next(&mut w).await.key, "/r/b");
    }
}
