//! Expectations, as Kubernetes' controllers keep them: after a controller
//! creates or deletes pods for an owner, its pod cache lags behind its own
//! writes; until the cache has seen them, acting again on the owner would
//! create or delete twice. The owner's reconcile checks
//! [`satisfied`](Expectations::satisfied) before changing the pod count.

use crate::informer::ObjectKey;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// After this long, expectations are given up on (a watch event can be lost
/// to a relist), as Kubernetes' `ExpectationsTimeout`.
pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
pub struct Expectations {
    owners: Mutex<HashMap<ObjectKey, Pending>>,
}

struct Pending {
    /// Creations not yet seen (a count: the names are the server's to pick).
    adds: i64,
    /// UIDs being deleted whose deletion is not yet seen.
    deletes: HashSet<String>,
    since: Instant,
}

impl Expectations {
    /// True when every expected add and delete for `owner` was seen (or they timed out).
    pub fn satisfied(&self, owner: &ObjectKey) -> bool {
        let owners = self.owners.lock().unwrap();
        match owners.get(owner) {
            None => true,
            Some(p) => (p.adds <= 0 && p.deletes.is_empty()) || p.since.elapsed() > TIMEOUT,
        }
    }

    /// Records `count` creations about to be sent; call before sending.
    pub fn expect_creations(&self, owner: &ObjectKey, count: usize) {
        let mut owners = self.owners.lock().unwrap();
        let p = owners.entry(owner.clone()).or_insert_with(|| Pending { adds: 0, deletes: HashSet::new(), since: Instant::now() });
        p.adds += count as i64;
        p.since = Instant::now();
    }

    /// Records deletions about to be sent, by pod UID.
    pub fn expect_deletions(&self, owner: &ObjectKey, uids: impl IntoIterator<Item = String>) {
        let mut owners = self.owners.lock().unwrap();
        let p = owners.entry(owner.clone()).or_insert_with(|| Pending { adds: 0, deletes: HashSet::new(), since: Instant::now() });
        p.deletes.extend(uids);
        p.since = Instant::now();
    }

    /// A creation was seen in the cache, or a create request failed (so it never will be).
    pub fn creation_observed(&self, owner: &ObjectKey) {
        if let Some(p) = self.owners.lock().unwrap().get_mut(owner) {
            p.adds -= 1;
        }
    }

    /// A deletion (or a deletionTimestamp) was seen, or a delete request failed.
    pub fn deletion_observed(&self, owner: &ObjectKey, uid: &str) {
        if let Some(p) = self.owners.lock().unwrap().get_mut(owner) {
            p.deletes.remove(uid);
        }
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &ObjectKey) {
        self.owners.lock().unwrap().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_only_after_every_expected_change_is_seen() {
        let e = Expectations::default();
        let rc = ObjectKey::new("default", "web");
        assert!(e.satisfied(&rc));
        e.expect_creations(&rc, 2);
        e.expect_deletions(&rc, ["uid-1".to_string()]);
        e.creation_observed(&rc);
        assert!(!e.satisfied(&rc));
        e.creation_observed(&rc);
        assert!(!e.satisfied(&rc), "a deletion is still pending");
        e.deletion_observed(&rc, "uid-other");
        assert!(!e.satisfied(&rc));
        e.deletion_observed(&rc, "uid-1");
        assert!(e.satisfied(&rc));
    }
}
