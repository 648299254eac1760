//! The generic REST storage behind every resource: get, list, create,
//! update, patch, delete and deletecollection over the store, with
//! Kubernetes' admission order (decode → default → system metadata →
//! validate → commit) and its metadata rules (uid, resourceVersion,
//! generation, managedFields, finalizers, deletionTimestamp).

use super::objects::{self, meta, meta_mut, meta_str, store_error};
use super::request::{FieldValidation, Query, Render, Target};
use super::{Api, Reply, lifecycle, services};
use crate::store::{Condition, Revision, StoreError, Txn};
use hawser_api::patch::{self, ApplyError, PatchType};
use hawser_api::selector::{FieldSelector, LabelSelector, labels_of};
use hawser_api::table::{self, IncludeObject};
use hawser_api::{ApiError, ResourceInfo, validation};
use serde_json::{Value, json};
use std::sync::Arc;

/// Attempts at a read-modify-write before answering Conflict, for writes the
/// client did not pin to a resourceVersion (Kubernetes' GuaranteedUpdate retries the same way).
const UPDATE_ATTEMPTS: usize = 8;

/// Kinds that PUT may create, as Kubernetes' `AllowCreateOnUpdate`.
fn create_on_update(info: &ResourceInfo) -> bool {
    matches!(info.plural, "endpoints" | "events" | "leases")
}

/// Kinds whose status a create may not set (Kubernetes' PrepareForCreate resets it).
fn status_reset_on_create(info: &ResourceInfo) -> bool {
    matches!(info.plural, "pods" | "services" | "replicationcontrollers" | "replicasets" | "deployments")
}

impl Api {
    /// One object and the revision that last wrote it.
    pub async fn read(&self, info: &'static ResourceInfo, namespace: Option<&str>, name: &str) -> Result<(Value, Revision), ApiError> {
        let kv = self.store.get(&info.key(namespace, name)).await.map_err(store_error)?;
        let kv = kv.ok_or_else(|| ApiError::not_found(info.group, info.plural, name))?;
        Ok((objects::decode(&kv)?, kv.mod_revision))
    }

    pub async fn get(&self, t: &Target, q: &Query, render: Render) -> Result<Reply, ApiError> {
        let (obj, rv) = self.read(t.info, t.namespace.as_deref(), t.name()?).await?;
        Ok(Reply::ok(self.render(t.info, vec![obj], render, q, rv, None)?.single()))
    }

    /// Lists with label and field selectors and `limit`/`continue` paging.
    pub async fn list(&self, t: &Target, q: &Query, render: Render) -> Result<Reply, ApiError> {
        let selectors = Selectors::from_query(t.info, q)?;
        let limit: Option<usize> = q.number("limit")?.filter(|l| *l > 0);
        let start_after = q.get("continue").map(decode_continue).transpose()?;
        let prefix = t.info.key_prefix(t.namespace.as_deref());
        let (items, revision, next) = self.list_matching(t.info, &prefix, &selectors, start_after, limit).await?;
        let continue_token = next.map(|(key, rv)| encode_continue(&key, rv));
        let rendered = self.render(t.info, items, render, q, revision, continue_token)?;
        Ok(Reply::ok(rendered.list(t.info)))
    }

    /// Reads pages from the store until `limit` matching objects are found.
    async fn list_matching(
        &self,
        info: &'static ResourceInfo,
        prefix: &str,
        selectors: &Selectors,
        mut start_after: Option<(String, Revision)>,
        limit: Option<usize>,
    ) -> Result<(Vec<Value>, Revision, Option<(String, Revision)>), ApiError> {
        let mut items = Vec::new();
        // A continued list reports the revision of its first page, as Kubernetes does.
        let mut revision = start_after.as_ref().map(|(_, rv)| *rv);
        loop {
            let want = limit.map(|l| l - items.len());
            let page = self.store.list(prefix, start_after.as_ref().map(|(k, _)| k.as_str()), want).await.map_err(store_error)?;
            let rv = *revision.get_or_insert(page.revision);
            let last_key = page.items.last().map(|kv| kv.key.clone());
            for kv in &page.items {
                let obj = objects::decode(kv)?;
                if selectors.matches(info, &obj) {
                    items.push(obj);
                }
            }
            match (page.more, last_key) {
                (true, Some(key)) if limit.is_some_and(|l| items.len() >= l) => return Ok((items, rv, Some((key, rv)))),
                (true, Some(key)) => start_after = Some((key, rv)),
                _ => return Ok((items, rv, None)),
            }
        }
    }

    fn render(
        &self,
        info: &'static ResourceInfo,
        items: Vec<Value>,
        render: Render,
        q: &Query,
        revision: Revision,
        continue_token: Option<String>,
    ) -> Result<Rendered, ApiError> {
        Ok(match render {
            Render::Object => Rendered::Objects { items, revision, continue_token },
            Render::Table => {
                let include = IncludeObject::parse(q.get("includeObject")).map_err(ApiError::bad_request)?;
                Rendered::Table(table::table(
                    info,
                    &items,
                    Some(&revision.to_string()),
                    continue_token.as_deref(),
                    include,
                    jiff::Timestamp::now(),
                ))
            }
        })
    }

    /// POST to a collection.
    pub async fn create(self: &Arc<Self>, t: &Target, q: &Query, body: Value) -> Result<Reply, ApiError> {
        let manager = q.get("fieldManager").unwrap_or("unknown").to_string();
        let mut warnings = Vec::new();
        let obj = self.admit(t, q, body, None, &manager, &mut warnings)?;
        let created = self.commit_create(t.info, obj, q.dry_run()?).await?;
        Ok(Reply::created(created).warn(warnings))
    }

    /// Decodes, defaults and validates a proposed object (`old` on update) and
    /// stamps the system metadata.
    fn admit(
        &self,
        t: &Target,
        q: &Query,
        mut obj: Value,
        old: Option<&Value>,
        manager: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Value, ApiError> {
        let info = t.info;
        check_kind(info, &mut obj)?;
        self.check_namespace(t, &mut obj)?;
        if old.is_none() {
            fill_generated_name(&mut obj);
        }
        let unknown = validation::decode(info, &obj)?;
        if !unknown.is_empty() {
            match q.field_validation()? {
                FieldValidation::Strict => {
                    let list = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect::<Vec<_>>().join(", ");
                    return Err(ApiError::bad_request(format!("strict decoding error: {list}")));
                }
                FieldValidation::Warn => warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\""))),
                FieldValidation::Ignore => {}
            }
        }
        validation::normalize(info, &mut obj)?;
        match old {
            None => {
                if status_reset_on_create(info)
                    && let Some(map) = obj.as_object_mut()
                {
                    map.remove("status");
                }
                stamp_create(&mut obj);
            }
            Some(old) => carry_system_fields(info, old, &mut obj, t.subresource.as_deref()),
        }
        validation::apply_defaults(info, &mut obj);
        if info.kind == "Pod" && old.is_none() {
            validation::admit_new_pod(&mut obj, self.default_toleration_seconds);
        }
        let name = objects::name(&obj).to_string();
        if name.is_empty() {
            return Err(ApiError::invalid(info.group, info.kind, "", vec![hawser_api::FieldError::required("metadata.name")]));
        }
        let errors = validation::validate(info, &obj, old);
        if !errors.is_empty() {
            return Err(ApiError::invalid(info.group, info.kind, &name, errors));
        }
        if let Some(old) = old {
            bump_generation(old, &mut obj);
        }
        patch::record_update(old, &mut obj, manager, &info.api_version(), &objects::now());
        Ok(obj)
    }

    fn check_namespace(&self, t: &Target, obj: &mut Value) -> Result<(), ApiError> {
        let meta = meta_mut(obj);
        if !t.info.namespaced {
            meta.remove("namespace");
            return Ok(());
        }
        let url_ns = t.namespace.as_deref().ok_or_else(|| ApiError::bad_request("a namespace is required for this resource"))?;
        match meta.get("namespace").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            Some(ns) if ns != url_ns => {
                Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"))
            }
            _ => {
                meta.insert("namespace".into(), Value::String(url_ns.to_string()));
                Ok(())
            }
        }
    }

    /// Writes a new object; the namespace must exist and not be terminating.
    pub(super) async fn commit_create(
        self: &Arc<Self>,
        info: &'static ResourceInfo,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let namespace = meta_str(&obj, "namespace").map(str::to_string);
        if let Some(ns) = namespace.as_deref() {
            let nsinfo = hawser_api::resources::lookup("", "v1", "namespaces").expect("namespaces are served");
            let (ns_obj, _) = self.read(nsinfo, None, ns).await?;
            if meta(&ns_obj).contains_key("deletionTimestamp") {
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    info.plural,
                    objects::name(&obj)
                )));
            }
        }
        let name = objects::name(&obj).to_string();
        let key = info.key(namespace.as_deref(), &name);
        let mut txn = Txn::default();
        if info.plural == "services" {
            // Report a duplicate name as AlreadyExists before allocation can
            // complain that the duplicate's requested cluster IP is taken.
            if self.store.get(&key).await.map_err(store_error)?.is_some() {
                return Err(ApiError::already_exists(info.group, info.plural, &name));
            }
            txn = services::allocate(self.store.as_ref(), &self.ranges, &mut obj, None, &key).await?;
        }
        // Condition 0 is the object's own key; later ones are allocations.
        txn.conditions.insert(0, Condition::Absent(key.clone()));
        if dry_run {
            return Ok(obj);
        }
        txn = txn.put(key.clone(), objects::encode(&obj));
        match self.store.commit(txn).await {
            Ok(rev) => {
                objects::set_resource_version(&mut obj, rev);
                Ok(obj)
            }
            Err(StoreError::ConditionFailed { index: 0, .. }) => Err(ApiError::already_exists(info.group, info.plural, &name)),
            Err(StoreError::ConditionFailed { key, .. }) => {
                Err(ApiError::conflict(info.group, info.plural, &name, &format!("{key} was allocated concurrently; please retry")))
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Writes `new` over `old` (read at `old_rev`) if nothing changed it
    /// since; releases and claims service allocations; deletes the object
    /// instead when the last finalizer of a deleting object is gone.
    /// Returns the stored object, or `old` untouched when nothing changed.
    pub(super) async fn commit_update(
        self: &Arc<Self>,
        info: &'static ResourceInfo,
        old: &Value,
        old_rev: Revision,
        mut new: Value,
        dry_run: bool,
    ) -> Result<Value, UpdateError> {
        if same_object(old, &new) {
            return Ok(old.clone());
        }
        let namespace = meta_str(old, "namespace").map(str::to_string);
        let name = objects::name(old).to_string();
        let key = info.key(namespace.as_deref(), &name);
        let mut txn = Txn::default();
        if info.plural == "services" {
            txn = services::allocate(self.store.as_ref(), &self.ranges, &mut new, Some(old), &key).await.map_err(UpdateError::Api)?;
        }
        let deleting = meta(&new).contains_key("deletionTimestamp")
            && objects::finalizers(&new).is_empty()
            && !is_graceful_pod(info, &new)
            && (info.plural != "namespaces" || namespace_finalized(&new));
        txn.conditions.insert(0, Condition::ModRevision(key.clone(), old_rev));
        if dry_run {
            return Ok(new);
        }
        if deleting {
            if info.plural == "services" {
                txn = services::Holdings::of(old).release_into(&services::Holdings::default(), txn);
            }
            let rev = self.store.commit(txn.delete(key)).await.map_err(|e| UpdateError::from_store(info, &name, e))?;
            objects::set_resource_version(&mut new, rev);
            lifecycle::after_delete(self, &new);
            return Ok(new);
        }
        let rev = self.store.commit(txn.put(key, objects::encode(&new))).await.map_err(|e| UpdateError::from_store(info, &name, e))?;
        objects::set_resource_version(&mut new, rev);
        lifecycle::after_write(self, info, &new);
        Ok(new)
    }

    /// Read-modify-write with retries: `change` maps the current object to
    /// the desired one. `pinned` is the resourceVersion the client required.
    pub(super) async fn guaranteed_update(
        self: &Arc<Self>,
        t: &Target,
        pinned: Option<Revision>,
        dry_run: bool,
        mut change: impl FnMut(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let name = t.name()?.to_string();
        for _ in 0..UPDATE_ATTEMPTS {
            let (old, rev) = self.read(t.info, t.namespace.as_deref(), &name).await?;
            if let Some(pinned) = pinned
                && pinned != rev
            {
                return Err(modified(t.info, &name));
            }
            let new = change(&old)?;
            match self.commit_update(t.info, &old, rev, new, dry_run).await {
                Ok(obj) => return Ok(obj),
                Err(UpdateError::Stale) if pinned.is_none() => continue,
                Err(UpdateError::Stale) => return Err(modified(t.info, &name)),
                Err(UpdateError::Api(e)) => return Err(e),
            }
        }
        Err(modified(t.info, &name))
    }

    /// PUT of a whole object (or its `status`).
    pub async fn update(self: &Arc<Self>, t: &Target, q: &Query, body: Value) -> Result<Reply, ApiError> {
        let name = t.name()?.to_string();
        if let Some(body_name) = meta_str(&body, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
        }
        let manager = q.get("fieldManager").unwrap_or("unknown").to_string();
        let pinned = objects::resource_version(&body);
        let exists = self.store.get(&t.info.key(t.namespace.as_deref(), &name)).await.map_err(store_error)?.is_some();
        if !exists && t.subresource.is_none() && create_on_update(t.info) {
            let mut body = body;
            meta_mut(&mut body).insert("name".into(), Value::String(name));
            return self.create(t, q, body).await;
        }
        let mut warnings = Vec::new();
        let obj = self
            .guaranteed_update(t, pinned, q.dry_run()?, |old| {
                let mut proposed = body.clone();
                meta_mut(&mut proposed).insert("name".into(), Value::String(name.clone()));
                self.admit(t, q, proposed, Some(old), &manager, &mut warnings)
            })
            .await?;
        Ok(Reply::ok(obj).warn(warnings))
    }

    /// PATCH with any of the four patch types; apply patches create when missing.
    pub async fn patch(self: &Arc<Self>, t: &Target, q: &Query, content_type: &str, body: &[u8]) -> Result<Reply, ApiError> {
        let patch_type = PatchType::from_content_type(content_type).ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
        let doc: Value = match patch_type {
            PatchType::Apply => serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
            _ => serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        };
        let name = t.name()?.to_string();
        let force = q.flag("force");
        let manager = match (patch_type, q.get("fieldManager")) {
            (_, Some(m)) => m.to_string(),
            (PatchType::Apply, None) => return Err(ApiError::bad_request("PATCH with an apply patch requires fieldManager to be set")),
            (_, None) => "unknown".to_string(),
        };
        if patch_type == PatchType::Apply
            && t.subresource.is_none()
            && self.store.get(&t.info.key(t.namespace.as_deref(), &name)).await.map_err(store_error)?.is_none()
        {
            return self.apply_create(t, q, &doc, &manager, force).await;
        }
        let api_version = t.info.api_version();
        let mut warnings = Vec::new();
        let obj = self
            .guaranteed_update(t, None, q.dry_run()?, |old| {
                let patched = match patch_type {
                    PatchType::Json => patch::json_patch(old, &doc)?,
                    PatchType::Merge => patch::merge_patch(old, &doc),
                    PatchType::StrategicMerge => patch::strategic_merge_patch(old, &doc, t.info.kind)?,
                    PatchType::Apply => {
                        let applied =
                            patch::server_side_apply(Some(old), &doc, &manager, force, t.info.kind, &api_version, &objects::now())
                                .map_err(|e| apply_error(t.info, &name, e))?;
                        return self.admit_applied(t, q, applied, Some(old), &mut warnings);
                    }
                };
                // A patch that names a resourceVersion is a precondition on it.
                if let Some(rv) = objects::resource_version(&patched)
                    && Some(rv) != objects::resource_version(old)
                {
                    return Err(modified(t.info, &name));
                }
                self.admit(t, q, patched, Some(old), &manager, &mut warnings)
            })
            .await?;
        Ok(Reply::ok(obj).warn(warnings))
    }

    /// Server-side apply of an object that does not exist yet: a create.
    async fn apply_create(self: &Arc<Self>, t: &Target, q: &Query, doc: &Value, manager: &str, force: bool) -> Result<Reply, ApiError> {
        let name = t.name()?;
        let applied = patch::server_side_apply(None, doc, manager, force, t.info.kind, &t.info.api_version(), &objects::now())
            .map_err(|e| apply_error(t.info, name, e))?;
        let mut warnings = Vec::new();
        let obj = self.admit_applied(t, q, applied, None, &mut warnings)?;
        let created = self.commit_create(t.info, obj, q.dry_run()?).await?;
        Ok(Reply::created(created).warn(warnings))
    }

    /// `admit` for the result of server-side apply, whose managedFields the
    /// apply already computed.
    fn admit_applied(
        &self,
        t: &Target,
        q: &Query,
        applied: Value,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<Value, ApiError> {
        let managed = meta(&applied).get("managedFields").cloned();
        let mut obj = self.admit(t, q, applied, old, "", warnings)?;
        match managed {
            Some(m) => meta_mut(&mut obj).insert("managedFields".into(), m),
            None => meta_mut(&mut obj).remove("managedFields"),
        };
        Ok(obj)
    }

    /// DELETE of one object, honouring preconditions, grace periods,
    /// finalizers and `propagationPolicy`.
    pub async fn delete(self: &Arc<Self>, t: &Target, q: &Query, body: Option<Value>) -> Result<Reply, ApiError> {
        let options = DeleteOptions::from(q, body.as_ref())?;
        let name = t.name()?.to_string();
        let dry_run = options.dry_run;
        for _ in 0..UPDATE_ATTEMPTS {
            let (old, rev) = self.read(t.info, t.namespace.as_deref(), &name).await?;
            options.check_preconditions(t.info, &name, &old, rev)?;
            let mut new = old.clone();
            let m = meta_mut(&mut new);
            let already_deleting = m.contains_key("deletionTimestamp");
            let mut finalizers = objects::finalizers(&old);
            match options.propagation() {
                Propagation::Orphan if !finalizers.iter().any(|f| f == lifecycle::ORPHAN) => finalizers.push(lifecycle::ORPHAN.into()),
                Propagation::Foreground if !finalizers.iter().any(|f| f == lifecycle::FOREGROUND) => {
                    finalizers.push(lifecycle::FOREGROUND.into())
                }
                _ => {}
            }
            let grace = pod_grace_period(t.info, &old, options.grace_period_seconds);
            let keep_for_finalizers = !finalizers.is_empty() || (t.info.plural == "namespaces" && !namespace_finalized(&old));
            if keep_for_finalizers || grace > 0 {
                if !already_deleting || grace == 0 {
                    let when = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                    m.insert("deletionTimestamp".into(), Value::String(when.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
                    m.insert("deletionGracePeriodSeconds".into(), Value::from(grace));
                }
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), json!(finalizers));
                }
                if t.info.plural == "namespaces" {
                    new["status"]["phase"] = json!("Terminating");
                }
                if already_deleting && new == old {
                    return Ok(Reply::ok(old));
                }
                match self.commit_update(t.info, &old, rev, new, dry_run).await {
                    Ok(obj) => return Ok(Reply::ok(obj)),
                    Err(UpdateError::Stale) => continue,
                    Err(UpdateError::Api(e)) => return Err(e),
                }
            }
            // Deleted at once.
            let key = t.info.key(t.namespace.as_deref(), &name);
            let mut txn = Txn::default().when(Condition::ModRevision(key.clone(), rev)).delete(key);
            if t.info.plural == "services" {
                txn = services::Holdings::of(&old).release_into(&services::Holdings::default(), txn);
            }
            if dry_run {
                return Ok(Reply::ok(old));
            }
            match self.store.commit(txn).await {
                Ok(rev) => {
                    let mut gone = old;
                    objects::set_resource_version(&mut gone, rev);
                    lifecycle::after_delete(self, &gone);
                    return Ok(Reply::ok(gone));
                }
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(modified(t.info, &name))
    }

    /// DELETE on a collection: every object the selectors match.
    pub async fn delete_collection(self: &Arc<Self>, t: &Target, q: &Query, body: Option<Value>) -> Result<Reply, ApiError> {
        let selectors = Selectors::from_query(t.info, q)?;
        let prefix = t.info.key_prefix(t.namespace.as_deref());
        let (items, revision, _) = self.list_matching(t.info, &prefix, &selectors, None, None).await?;
        let mut deleted = Vec::with_capacity(items.len());
        for obj in items {
            let one = Target {
                info: t.info,
                namespace: meta_str(&obj, "namespace").map(str::to_string),
                name: Some(objects::name(&obj).to_string()),
                subresource: None,
            };
            match self.delete(&one, q, body.clone()).await {
                Ok(reply) => deleted.push(reply.body),
                // Deleted by someone else meanwhile: that is what was asked.
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Reply::ok(Rendered::Objects { items: deleted, revision, continue_token: None }.list(t.info)))
    }
}

fn modified(info: &'static ResourceInfo, name: &str) -> ApiError {
    ApiError::conflict(
        info.group,
        info.plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

fn apply_error(info: &'static ResourceInfo, name: &str, e: ApplyError) -> ApiError {
    match e {
        ApplyError::Conflict(conflicts) => {
            let mut err = ApiError::conflict(info.group, info.plural, name, "");
            err.message = patch::conflict_message(&conflicts);
            err
        }
        ApplyError::Invalid(e) => e,
    }
}

/// Why a read-modify-write did not land.
pub(super) enum UpdateError {
    /// Someone else wrote the object since it was read.
    Stale,
    Api(ApiError),
}

impl UpdateError {
    fn from_store(info: &'static ResourceInfo, name: &str, e: StoreError) -> Self {
        match e {
            StoreError::ConditionFailed { index: 0, .. } => Self::Stale,
            StoreError::ConditionFailed { key, .. } => {
                Self::Api(ApiError::conflict(info.group, info.plural, name, &format!("{key} was allocated concurrently; please retry")))
            }
            other => Self::Api(store_error(other)),
        }
    }
}

/// The body's apiVersion/kind must name the resource addressed; absent ones are filled in.
fn check_kind(info: &'static ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let map = obj.as_object_mut().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let api_version = info.api_version();
    match map.get("kind").and_then(Value::as_str) {
        Some(kind) if kind != info.kind => {
            return Err(ApiError::bad_request(format!("the kind of the object ({kind}) does not match the resource ({})", info.kind)));
        }
        _ => map.insert("kind".into(), Value::String(info.kind.to_string())),
    };
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => map.insert("apiVersion".into(), Value::String(api_version)),
    };
    Ok(())
}

fn fill_generated_name(obj: &mut Value) {
    let m = meta_mut(obj);
    if m.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
        && let Some(prefix) = m.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty())
    {
        // Kubernetes appends five random characters from a reduced alphabet (no vowels, no look-alikes).
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        use rand::Rng;
        let mut rng = rand::rng();
        let suffix: String = (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        let prefix: String = prefix.chars().take(63 - 5).collect();
        m.insert("name".into(), Value::String(format!("{prefix}{suffix}")));
    }
}

/// System metadata of a new object; anything the client sent there is replaced.
fn stamp_create(obj: &mut Value) {
    let m = meta_mut(obj);
    for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        m.remove(field);
    }
    m.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), Value::String(objects::now()));
    m.insert("generation".into(), Value::from(1));
}

/// On update the system-owned metadata comes from the stored object; for
/// kinds with a status subresource the main resource keeps the old status
/// and `/status` keeps everything but status (and labels/annotations).
fn carry_system_fields(info: &'static ResourceInfo, old: &Value, new: &mut Value, subresource: Option<&str>) {
    let old_meta = meta(old).clone();
    if subresource == Some("status") {
        let status = new.get("status").cloned();
        let (labels, annotations) = (meta(new).get("labels").cloned(), meta(new).get("annotations").cloned());
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                new.as_object_mut().map(|m| m.remove("status"));
            }
        }
        let m = meta_mut(new);
        for (field, value) in [("labels", labels), ("annotations", annotations)] {
            match value {
                Some(v) => m.insert(field.into(), v),
                None => m.remove(field),
            };
        }
        return;
    }
    let m = meta_mut(new);
    for field in ["uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace"] {
        match old_meta.get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
    m.remove("resourceVersion");
    if info.has_status() {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().map(|m| m.remove("status"));
            }
        }
    }
    // A client that leaves a Service's allocated cluster IP out keeps it (kubectl apply).
    if info.plural == "services" {
        for field in ["clusterIP", "clusterIPs"] {
            if new["spec"].get(field).is_none_or(|v| v.is_null() || v == "")
                && let Some(v) = old["spec"].get(field)
                && new["spec"].is_object()
            {
                new["spec"][field] = v.clone();
            }
        }
    }
}

/// Generation counts changes to anything but metadata and status.
fn bump_generation(old: &Value, new: &mut Value) {
    let content = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    let generation = meta(old).get("generation").and_then(Value::as_i64).unwrap_or(1);
    let next = if content(old) != content(new) { generation + 1 } else { generation };
    meta_mut(new).insert("generation".into(), Value::from(next));
}

/// Equal but for resourceVersion and managedFields timestamps: nothing to write.
fn same_object(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        let m = meta_mut(&mut v);
        m.remove("resourceVersion");
        m.remove("managedFields");
        v
    };
    strip(old) == strip(new) && {
        let times = |v: &Value| {
            meta(v).get("managedFields").and_then(Value::as_array).map(|a| {
                a.iter()
                    .map(|e| {
                        let mut e = e.clone();
                        e.as_object_mut().map(|m| m.remove("time"));
                        e
                    })
                    .collect::<Vec<_>>()
            })
        };
        times(old) == times(new)
    }
}

fn namespace_finalized(ns: &Value) -> bool {
    ns["spec"]["finalizers"].as_array().is_none_or(Vec::is_empty)
}

/// A pod on a node is stopped by its agent before it goes: it stays, marked
/// for deletion, for its grace period. A pod on no node goes at once.
fn pod_grace_period(info: &'static ResourceInfo, obj: &Value, requested: Option<i64>) -> i64 {
    if info.plural != "pods" || obj["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        return 0;
    }
    if matches!(obj["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
        return 0;
    }
    requested.or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30).max(0)
}

fn is_graceful_pod(info: &'static ResourceInfo, obj: &Value) -> bool {
    info.plural == "pods" && meta(obj).get("deletionGracePeriodSeconds").and_then(Value::as_i64).is_some_and(|g| g > 0)
}

enum Propagation {
    Orphan,
    Background,
    Foreground,
}

struct DeleteOptions {
    propagation: Option<Propagation>,
    grace_period_seconds: Option<i64>,
    precondition_uid: Option<String>,
    precondition_rv: Option<Revision>,
    dry_run: bool,
}

impl DeleteOptions {
    fn from(q: &Query, body: Option<&Value>) -> Result<Self, ApiError> {
        let body = body.cloned().unwrap_or(Value::Null);
        let policy = body["propagationPolicy"].as_str().or(q.get("propagationPolicy"));
        let propagation = match policy {
            None => match body["orphanDependents"].as_bool().or_else(|| q.get("orphanDependents").map(|v| v == "true")) {
                Some(true) => Some(Propagation::Orphan),
                Some(false) => Some(Propagation::Background),
                None => None,
            },
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(ApiError::invalid(
                    "",
                    "DeleteOptions",
                    "",
                    vec![hawser_api::FieldError::not_supported("propagationPolicy", other, &["Foreground", "Background", "Orphan"])],
                ));
            }
        };
        let grace_period_seconds = match body["gracePeriodSeconds"].as_i64() {
            Some(g) => Some(g),
            None => q.number("gracePeriodSeconds")?,
        };
        let dry_run = body["dryRun"].as_array().is_some_and(|a| a.iter().any(|v| v == "All")) || q.dry_run()?;
        Ok(Self {
            propagation,
            grace_period_seconds,
            precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
            precondition_rv: body["preconditions"]["resourceVersion"].as_str().map(objects::parse_resource_version).transpose()?,
            dry_run,
        })
    }

    /// Background unless the client asked otherwise, the server default for every kind we serve.
    fn propagation(&self) -> Propagation {
        match self.propagation {
            Some(Propagation::Orphan) => Propagation::Orphan,
            Some(Propagation::Foreground) => Propagation::Foreground,
            _ => Propagation::Background,
        }
    }

    fn check_preconditions(&self, info: &'static ResourceInfo, name: &str, obj: &Value, rev: Revision) -> Result<(), ApiError> {
        if let Some(uid) = &self.precondition_uid
            && meta_str(obj, "uid") != Some(uid.as_str())
        {
            let why = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(obj, "uid").unwrap_or_default()
            );
            return Err(ApiError::conflict(info.group, info.plural, name, &why));
        }
        if let Some(rv) = self.precondition_rv
            && rv != rev
        {
            let why = format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {rev}");
            return Err(ApiError::conflict(info.group, info.plural, name, &why));
        }
        Ok(())
    }
}

/// Label and field selectors of a list, watch or deletecollection.
pub struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    pub fn from_query(info: &'static ResourceInfo, q: &Query) -> Result<Self, ApiError> {
        // The parser words its errors as Kubernetes does.
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
        // Any object shows which fields the kind supports.
        let probe = json!({"metadata": {}});
        for field in fields.fields() {
            if validation::field_value(info, &probe, field).is_none() {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
        }
        Ok(Self { labels, fields })
    }

    pub fn matches(&self, info: &'static ResourceInfo, obj: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(&labels_of(obj)))
            && (self.fields.is_empty() || self.fields.matches(|f| validation::field_value(info, obj, f)))
    }
}

/// The `continue` token: where the next page starts and the revision of the first page.
fn encode_continue(key: &str, revision: Revision) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"v": "hawser.io/v1", "rv": revision, "start": key}).to_string())
}

fn decode_continue(token: &str) -> Result<(String, Revision), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid: the token is malformed");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((v["start"].as_str().ok_or_else(bad)?.to_string(), v["rv"].as_u64().ok_or_else(bad)?))
}

/// Objects as they leave the server: plain, as a list, or as a Table.
pub enum Rendered {
    Objects { items: Vec<Value>, revision: Revision, continue_token: Option<String> },
    Table(Value),
}

impl Rendered {
    pub fn list(self, info: &ResourceInfo) -> Value {
        match self {
            Self::Objects { items, revision, continue_token } => {
                let mut metadata = json!({"resourceVersion": revision.to_string()});
                if let Some(c) = continue_token {
                    metadata["continue"] = Value::String(c);
                }
                json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": metadata, "items": items})
            }
            Self::Table(t) => t,
        }
    }

    fn single(self) -> Value {
        match self {
            Self::Objects { mut items, .. } => items.pop().unwrap_or(Value::Null),
            Self::Table(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_continue("/registry/pods/default/web-7", 42);
        assert_eq!(decode_continue(&token).unwrap(), ("/registry/pods/default/web-7".to_string(), 42));
        assert_eq!(decode_continue("not a token").unwrap_err().code, 400);
    }

    #[test]
    fn generation_counts_spec_changes_only() {
        let old = json!({"metadata": {"generation": 3, "labels": {"a": "1"}}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"]["a"] = json!("2");
        relabelled["status"]["replicas"] = json!(5);
        bump_generation(&old, &mut relabelled);
        assert_eq!(relabelled["metadata"]["generation"], 3);
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(2);
        bump_generation(&old, &mut scaled);
        assert_eq!(scaled["metadata"]["generation"], 4);
    }

    #[test]
    fn a_bound_pod_waits_for_its_grace_period_and_an_unbound_one_does_not() {
        let pods = hawser_api::resources::lookup("", "v1", "pods").unwrap();
        let unbound = json!({"spec": {"terminationGracePeriodSeconds": 30}});
        assert_eq!(pod_grace_period(pods, &unbound, None), 0);
        let bound = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30}});
        assert_eq!(pod_grace_period(pods, &bound, None), 30);
        assert_eq!(pod_grace_period(pods, &bound, Some(0)), 0);
    }
}
