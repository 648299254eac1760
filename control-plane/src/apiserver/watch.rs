//! Watch: newline-delimited `WatchEvent`s from a resourceVersion.
//!
//! `resourceVersion` unset or `0` starts with the current objects as ADDED
//! events, then follows changes; any other value follows changes after it,
//! or answers 410 Gone (`Expired`) when it is older than the store's history.
//! Selectors are applied to the old and new object, so an object that stops
//! matching is DELETED for this watcher and one that starts matching ADDED,
//! as Kubernetes' watch cache does. Bookmarks carry the newest revision seen.

use super::Api;
use super::objects::{self, store_error};
use super::request::{Query, Render, Target};
use super::rest::Selectors;
use crate::store::{Event, EventKind, Revision, StoreError};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use hawser_api::table::{self, IncludeObject};
use hawser_api::{ApiError, ResourceInfo};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Kubernetes' default watch timeout is a random 30-60 minutes; clients
/// re-watch either way.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often an idle watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

struct Watch {
    info: &'static ResourceInfo,
    selectors: Selectors,
    render: Render,
    include: IncludeObject,
}

impl Watch {
    /// The event to send for one store change, if this watcher sees one.
    fn translate(&self, e: &Event) -> Result<Option<(&'static str, Value)>, ApiError> {
        let new = objects::decode_at(&e.key, &e.value, e.revision)?;
        let old_matched = match &e.prev_value {
            Some(prev) => self.selectors.matches(self.info, &objects::decode_at(&e.key, prev, e.revision)?),
            None => false,
        };
        let new_matches = self.selectors.matches(self.info, &new);
        let kind = match (e.kind, old_matched, new_matches) {
            (EventKind::Delete, true, _) => "DELETED",
            (EventKind::Delete, false, _) => return Ok(None),
            (EventKind::Put, true, true) => "MODIFIED",
            (EventKind::Put, false, true) => "ADDED",
            (EventKind::Put, true, false) => "DELETED",
            (EventKind::Put, false, false) => return Ok(None),
        };
        Ok(Some((kind, new)))
    }

    fn line(&self, kind: &str, obj: Value) -> Bytes {
        let object = match self.render {
            Render::Object => obj,
            Render::Table => table::table(self.info, &[obj], None, None, self.include, jiff::Timestamp::now()),
        };
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON");
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, revision: Revision) -> Bytes {
        let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {
            "kind": self.info.kind, "apiVersion": self.info.api_version(),
            "metadata": {"resourceVersion": revision.to_string()}
        }}))
        .expect("JSON");
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn error_line(e: &ApiError) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_json()})).expect("JSON");
    line.push(b'\n');
    Bytes::from(line)
}

/// Starts a watch; errors before the first byte are answered as a Status.
pub async fn watch(api: &Arc<Api>, t: &Target, q: &Query, render: Render) -> Result<impl Stream<Item = Bytes> + Send + 'static, ApiError> {
    let watch = Watch {
        info: t.info,
        selectors: Selectors::from_query(t.info, q)?,
        render,
        include: IncludeObject::parse(q.get("includeObject")).map_err(ApiError::bad_request)?,
    };
    let timeout = q.number::<u64>("timeoutSeconds")?.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let bookmarks = q.flag("allowWatchBookmarks");
    let mut prefix = t.info.key_prefix(t.namespace.as_deref());
    if let Some(name) = &t.name {
        prefix.push_str(name);
    }
    let exact_key = t.name.as_ref().map(|_| prefix.clone());

    // Unset or "0": the current state first, as ADDED events.
    let (initial, from) = match q.get("resourceVersion") {
        None | Some("0") => {
            let page = api.store.list(&prefix, None, None).await.map_err(store_error)?;
            let mut lines = Vec::new();
            for kv in page.items.iter().filter(|kv| exact_key.as_ref().is_none_or(|k| *k == kv.key)) {
                let obj = objects::decode(kv)?;
                if watch.selectors.matches(t.info, &obj) {
                    lines.push(watch.line("ADDED", obj));
                }
            }
            (lines, page.revision)
        }
        Some(rv) => (Vec::new(), objects::parse_resource_version(rv)?),
    };
    let events = api.store.watch(&prefix, from).await.map_err(store_error)?;
    let events = events.filter(move |e| {
        let keep = match (&exact_key, e) {
            (Some(k), Ok(e)) => e.key == *k,
            _ => true,
        };
        futures::future::ready(keep)
    });

    Ok(event_lines(watch, initial, events, from, timeout, bookmarks))
}

/// The initial lines, then one line per visible change, a bookmark when idle
/// (if asked for), until the timeout, the store stream ends, or an error line.
fn event_lines(
    watch: Watch,
    initial: Vec<Bytes>,
    events: impl Stream<Item = Result<Event, StoreError>> + Send + 'static,
    from: Revision,
    timeout: Duration,
    bookmarks: bool,
) -> impl Stream<Item = Bytes> + Send + 'static {
    struct State<S> {
        watch: Watch,
        events: std::pin::Pin<Box<S>>,
        last: Revision,
        deadline: tokio::time::Instant,
        bookmarks: bool,
        done: bool,
    }
    let state =
        State { watch, events: Box::pin(events), last: from, deadline: tokio::time::Instant::now() + timeout, bookmarks, done: false };
    let live = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let bookmark_due = tokio::time::sleep(BOOKMARK_EVERY);
            tokio::select! {
                _ = tokio::time::sleep_until(s.deadline) => return None,
                _ = bookmark_due, if s.bookmarks => return Some((s.watch.bookmark(s.last), s)),
                next = s.events.next() => match next {
                    None => return None,
                    Some(Err(StoreError::WatchLagged(_))) => return None,
                    Some(Err(e)) => {
                        s.done = true;
                        return Some((error_line(&store_error(e)), s));
                    }
                    Some(Ok(event)) => {
                        s.last = event.revision;
                        match s.watch.translate(&event) {
                            Ok(Some((kind, obj))) => return Some((s.watch.line(kind, obj), s)),
                            Ok(None) => continue,
                            Err(e) => {
                                s.done = true;
                                return Some((error_line(&e), s));
                            }
                        }
                    }
                }
            }
        }
    });
    futures::stream::iter(initial).chain(live)
}
