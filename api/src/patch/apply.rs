//! Server-side apply and field ownership (`metadata.managedFields`), after
//! Kubernetes' field manager and sigs.k8s.io/structured-merge-diff:
//!
//! - an apply merges the applied configuration into the live object (lists by
//!   their keys, atomic values replaced) and makes the applier the owner of
//!   exactly the fields in its configuration;
//! - fields the applier owned before but no longer applies are removed when
//!   no other manager owns them;
//! - changing a field another manager owns is a conflict unless forced, which
//!   moves ownership; applying the same value shares ownership;
//! - every other write records its manager as owner of what it changed
//!   ([`record_update`]), taking those fields from the others.
//!
//! Not tracked, as in Kubernetes: `apiVersion`, `kind`, and the
//! `metadata` fields the server owns (`name`, `namespace`, `uid`,
//! `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`,
//! `selfLink`). `status` in an applied configuration is dropped: status
//! belongs to the status subresource, whose writes go through
//! [`record_update`].

use serde_json::{Map, Value, json};

use super::fieldpath::{FieldSet, Path, PathElement, path_string};
use super::schema::{self, Field, List, Ty};
use crate::status::ApiError;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";
/// The manager Kubernetes credits with every existing field when an object
/// that has no managed fields is first applied to, so those fields are
/// neither lost to pruning nor silently taken over.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// A field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    pub manager: String,
    /// `Apply` or `Update`: an `Update` manager is printed with its API version.
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    /// The field path as Kubernetes prints it, e.g. `.spec.replicas`.
    pub field: String,
}

impl ApplyConflict {
    /// The manager as Kubernetes' `printManager` shows it.
    fn manager_description(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == UPDATE {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApplyError {
    /// The apply would change fields other managers own (409 unless forced).
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<ApplyConflict>),
    /// The applied configuration is unusable.
    #[error("{0}")]
    Invalid(ApiError),
}

impl From<ApplyError> for ApiError {
    /// Conflicts become Kubernetes' `NewApplyConflict`: 409 Conflict with
    /// one `FieldManagerConflict` cause per field.
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(e) => e,
            ApplyError::Conflict(conflicts) => {
                let causes = conflicts
                    .iter()
                    .map(|c| StatusCause {
                        reason: Some("FieldManagerConflict".into()),
                        message: Some(format!("conflict with {}", c.manager_description())),
                        field: Some(c.field.clone()),
                    })
                    .collect();
                ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: conflict_message(&conflicts),
                    details: Some(Box::new(StatusDetails { causes: Some(causes), ..Default::default() })),
                }
            }
        }
    }
}

/// Kubernetes' wording, e.g. `Apply failed with 1 conflict: conflict with
/// "kubectl-client-side-apply" using v1: .spec.replicas`; several conflicts
/// are grouped by manager, one `- <field>` line each.
pub fn conflict_message(conflicts: &[ApplyConflict]) -> String {
    if let [c] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", c.manager_description(), c.field);
    }
    let mut sorted: Vec<&ApplyConflict> = conflicts.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.manager, &a.operation, &a.api_version, &a.subresource).cmp(&(&b.manager, &b.operation, &b.api_version, &b.subresource))
    });
    let mut lines: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for c in sorted {
        let who = c.manager_description();
        if current.as_ref() != Some(&who) {
            lines.push(format!("conflicts with {who}:"));
            current = Some(who);
        }
        lines.push(format!("- {}", c.field));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Manager {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: Option<String>,
    set: FieldSet,
}

impl Manager {
    /// Entries are the same manager when name, operation and subresource
    /// match, and for updates also the API version (Kubernetes'
    /// `BuildManagerIdentifier`: an applier keeps one entry across versions).
    fn is(&self, manager: &str, operation: &str, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.is_none()
            && (operation == APPLY || self.api_version == api_version)
    }

    fn conflicts(&self, set: &FieldSet) -> Vec<ApplyConflict> {
        set.paths()
            .iter()
            .map(|p| ApplyConflict {
                manager: self.manager.clone(),
                operation: self.operation.clone(),
                api_version: self.api_version.clone(),
                subresource: self.subresource.clone(),
                field: path_string(p),
            })
            .collect()
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), self.manager.clone().into());
        m.insert("operation".into(), self.operation.clone().into());
        m.insert("apiVersion".into(), self.api_version.clone().into());
        if let Some(t) = &self.time {
            m.insert("time".into(), t.clone().into());
        }
        m.insert("fieldsType".into(), "FieldsV1".into());
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), s.clone().into());
        }
        Value::Object(m)
    }
}

/// Reads `metadata.managedFields`; entries of one manager are merged.
fn decode_managers(obj: &Value) -> Result<Vec<Manager>, String> {
    let Some(entries) = obj.pointer("/metadata/managedFields") else {
        return Ok(Vec::new());
    };
    let entries = match entries {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err("metadata.managedFields must be a list".into()),
    };
    let mut out: Vec<Manager> = Vec::new();
    for e in entries {
        let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(t) = s("fieldsType")
            && t != "FieldsV1"
        {
            return Err(format!("invalid fieldsType {t:?}"));
        }
        let set = match e.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(v) => FieldSet::from_fields_v1(v)?,
        };
        let m = Manager {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation").unwrap_or_default(),
            api_version: s("apiVersion").unwrap_or_default(),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            time: s("time"),
            set,
        };
        match out.iter_mut().find(|o| {
            o.manager == m.manager
                && o.operation == m.operation
                && o.subresource == m.subresource
                && (m.operation == APPLY || o.api_version == m.api_version)
        }) {
            Some(o) => o.set = o.set.union(&m.set),
            None => out.push(m),
        }
    }
    Ok(out)
}

/// Writes the entries in Kubernetes' order (operation, time, manager,
/// API version, subresource), dropping managers that own nothing.
fn encode_managers(obj: &mut Value, mut managers: Vec<Manager>) {
    managers.retain(|m| !m.set.is_empty());
    let seconds = |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map_or(0, |t| t.as_second());
    managers.sort_by(|a, b| {
        (&a.operation, seconds(&a.time), &a.manager, &a.api_version, &a.subresource).cmp(&(
            &b.operation,
            seconds(&b.time),
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let Some(obj) = obj.as_object_mut() else { return };
    let meta = obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else { return };
    if managers.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(managers.iter().map(Manager::to_json).collect()));
    }
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    obj
}

/// Removes the paths the server owns, which no manager is credited with.
fn strip_untracked(set: &FieldSet) -> FieldSet {
    let mut untracked = FieldSet::default();
    let f = |n: &str| PathElement::Field(n.into());
    untracked.insert(&[f("apiVersion")]);
    untracked.insert(&[f("kind")]);
    untracked.insert(&[f("metadata")]);
    for name in
        ["name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation", "managedFields", "resourceVersion"]
    {
        untracked.insert(&[f("metadata"), f(name)]);
    }
    set.difference(&untracked)
}

/// The path element of every item of a keyed or set list; key fields
/// missing from an item take their Kubernetes default when they have one.
fn item_elements(items: &[Value], list: List) -> Result<Vec<PathElement>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match list {
            List::Map(keys) => {
                let Value::Object(m) = item else {
                    return Err(format!("element {i}: associative list with keys has an element that is not a map"));
                };
                let mut pairs = Vec::with_capacity(keys.len());
                for k in keys {
                    let Some(v) = m.get(*k).cloned().or_else(|| schema::key_default(k)) else {
                        return Err(format!("element {i}: associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"));
                    };
                    pairs.push((k.to_string(), v));
                }
                Ok(PathElement::key(pairs.into_iter()))
            }
            _ => Ok(PathElement::Value(item.to_string())),
        })
        .collect()
}

/// Item path elements for a list merged by key or as a set; `None` when
/// items cannot be identified or repeat, so the list is handled whole.
fn unique_elements(items: &[Value], list: List) -> Option<Vec<PathElement>> {
    let pes = item_elements(items, list).ok()?;
    let distinct: std::collections::HashSet<&PathElement> = pes.iter().collect();
    (distinct.len() == pes.len()).then_some(pes)
}

/// The fields an applied configuration sets (structured-merge-diff's
/// `ToFieldSet`): leaves, empty maps, atomic values, and list items
/// (with their fields).
fn collect_fields(v: &Value, f: Field, path: &mut Path, set: &mut FieldSet) -> Result<(), String> {
    match v {
        Value::Object(m) if f.ty != Ty::Atomic => {
            for (k, child) in m {
                path.push(PathElement::Field(k.clone()));
                match child {
                    Value::Null => set.insert(path),
                    Value::Object(c) if c.is_empty() => set.insert(path),
                    _ => collect_fields(child, schema::field(f.ty, k), path, set)?,
                }
                path.pop();
            }
        }
        Value::Array(items) if f.ssa != List::Atomic => {
            let pes = item_elements(items, f.ssa).map_err(|e| format!("{}: {e}", path_string(path)))?;
            let mut seen = std::collections::HashSet::new();
            for (item, pe) in items.iter().zip(pes) {
                if !seen.insert(pe.clone()) {
                    return Err(format!("{}: duplicate entries for key {pe}", path_string(path)));
                }
                path.push(pe);
                if matches!(f.ssa, List::Map(_)) {
                    collect_fields(item, Field::of(f.ty), path, set)?;
                }
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
    Ok(())
}

/// What changed between two versions of an object, as structured-merge-diff
/// compares: changed leaves, plus maps, lists and items that appeared or
/// disappeared as a whole.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

/// How a value is walked: key by key, item by item, or as one leaf.
enum Shape<'a> {
    Map(&'a Map<String, Value>),
    List(&'a [Value], Vec<PathElement>),
    Leaf,
}

fn shape(v: &Value, f: Field) -> Shape<'_> {
    match v {
        Value::Object(m) if f.ty != Ty::Atomic => Shape::Map(m),
        Value::Array(items) if f.ssa != List::Atomic => match unique_elements(items, f.ssa) {
            Some(pes) => Shape::List(items, pes),
            None => Shape::Leaf,
        },
        _ => Shape::Leaf,
    }
}

fn compare(l: Option<&Value>, r: Option<&Value>, f: Field, path: &mut Path, c: &mut Comparison) {
    if matches!(l, Some(Value::Null)) || matches!(r, Some(Value::Null)) {
        // `null` is a present value: a map or list replacing it (or replaced
        // by it) did not appear or vanish as a whole, only its contents did.
        // Go serializes unset slices without `omitempty` (`containers`) as
        // null, which is why a created pod owns no `.` on `f:containers`.
        let (l2, r2) = (l.filter(|v| !v.is_null()), r.filter(|v| !v.is_null()));
        let (ls, rs) = (l2.map(|v| shape(v, f)), r2.map(|v| shape(v, f)));
        match (&ls, &rs) {
            (None, None) => {}
            (Some(Shape::Leaf), _) | (_, Some(Shape::Leaf)) => {
                if l != r {
                    c.modified.insert(path);
                }
            }
            _ => compare_children(ls.as_ref(), rs.as_ref(), f, path, c),
        }
        return;
    }
    let ls = l.map(|v| shape(v, f));
    let rs = r.map(|v| shape(v, f));
    match (&ls, &rs) {
        (Some(Shape::Map(_)) | None, Some(Shape::Map(_)) | None) | (Some(Shape::List(..)) | None, Some(Shape::List(..)) | None)
            if !matches!((&ls, &rs), (None, None)) =>
        {
            compare_children(ls.as_ref(), rs.as_ref(), f, path, c);
            if l.is_none() {
                c.added.insert(path);
            } else if r.is_none() {
                c.removed.insert(path);
            }
        }
        (Some(Shape::Leaf), Some(Shape::Leaf)) if l != r => c.modified.insert(path),
        (Some(Shape::Leaf), Some(Shape::Leaf)) => {}
        (None, Some(Shape::Leaf)) => c.added.insert(path),
        (Some(Shape::Leaf), None) => c.removed.insert(path),
        (Some(_), Some(_)) => {
            // The value changed kind (say a map became a string): everything
            // below the old one went away and the new one arrived whole.
            compare(l, None, f, path, c);
            compare(None, r, f, path, c);
        }
        _ => {}
    }
}

fn compare_children(l: Option<&Shape<'_>>, r: Option<&Shape<'_>>, f: Field, path: &mut Path, c: &mut Comparison) {
    match (l, r) {
        (Some(Shape::Map(_)) | None, Some(Shape::Map(_)) | None) => {
            let lm = match l {
                Some(Shape::Map(m)) => Some(*m),
                _ => None,
            };
            let rm = match r {
                Some(Shape::Map(m)) => Some(*m),
                _ => None,
            };
            let mut keys: Vec<&String> = lm.into_iter().flat_map(|m| m.keys()).collect();
            keys.extend(rm.into_iter().flat_map(|m| m.keys()).filter(|k| !lm.is_some_and(|m| m.contains_key(*k))));
            for k in keys {
                path.push(PathElement::Field(k.clone()));
                compare(lm.and_then(|m| m.get(k)), rm.and_then(|m| m.get(k)), schema::field(f.ty, k), path, c);
                path.pop();
            }
        }
        _ => {
            let items = |s: Option<&Shape<'_>>| -> Vec<(PathElement, Value)> {
                match s {
                    Some(Shape::List(items, pes)) => pes.iter().cloned().zip(items.iter().cloned()).collect(),
                    _ => Vec::new(),
                }
            };
            let (li, ri) = (items(l), items(r));
            let mut pes: Vec<&PathElement> = li.iter().map(|(pe, _)| pe).collect();
            pes.extend(ri.iter().map(|(pe, _)| pe).filter(|pe| !li.iter().any(|(l, _)| l == *pe)));
            let item_field = Field::of(f.ty);
            for pe in pes {
                let lv = li.iter().find(|(p, _)| p == pe).map(|(_, v)| v);
                let rv = ri.iter().find(|(p, _)| p == pe).map(|(_, v)| v);
                path.push(pe.clone());
                compare(lv, rv, item_field, path, c);
                path.pop();
            }
        }
    }
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        v => v.clone(),
    }
}

/// Merges an applied configuration into the live object: the configuration
/// wins, maps merge key by key, keyed lists and sets item by item, anything
/// atomic is replaced. `null` in the configuration removes the field.
fn merge(l: &Value, r: &Value, f: Field) -> Value {
    match (l, r) {
        (Value::Object(lm), Value::Object(rm)) if f.ty != Ty::Atomic => {
            let mut out = lm.clone();
            for (k, rv) in rm {
                if rv.is_null() {
                    out.remove(k);
                    continue;
                }
                let v = match lm.get(k) {
                    Some(lv) => merge(lv, rv, schema::field(f.ty, k)),
                    None => without_nulls(rv),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        (Value::Array(la), Value::Array(ra)) if f.ssa != List::Atomic => match (item_elements(la, f.ssa), unique_elements(ra, f.ssa)) {
            (Ok(lp), Some(rp)) => Value::Array(merge_items(la, &lp, ra, &rp, Field::of(f.ty))),
            _ => without_nulls(r),
        },
        _ => without_nulls(r),
    }
}

/// structured-merge-diff's list merge: items keep the live order, items
/// only in the configuration are placed where the configuration puts them
/// relative to the items both share.
fn merge_items(lhs: &[Value], lpes: &[PathElement], rhs: &[Value], rpes: &[PathElement], item: Field) -> Vec<Value> {
    use std::collections::{HashMap, HashSet};
    let mut lmap: HashMap<&PathElement, Option<&Value>> = HashMap::new();
    for (pe, v) in lpes.iter().zip(lhs) {
        // A key repeated on the live side identifies no single item; the
        // configuration's item replaces them.
        lmap.entry(pe).and_modify(|e| *e = None).or_insert(Some(v));
    }
    let rmap: HashMap<&PathElement, &Value> = rpes.iter().zip(rhs).collect();
    let mut shared = rpes.iter().filter(|pe| lmap.contains_key(pe));
    let mut next_shared = shared.next();
    let mut merged_r: HashSet<&PathElement> = HashSet::new();
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let combine = |l: Option<&Value>, r: &Value| match l {
        Some(l) => merge(l, r, item),
        None => without_nulls(r),
    };
    let (mut li, mut ri) = (0, 0);
    while li < lpes.len() || ri < rpes.len() {
        if li < lpes.len() && ri < rpes.len() {
            let pe = &lpes[li];
            if *pe == rpes[ri] {
                merged_r.insert(pe);
                out.push(combine(lmap[pe], rmap[pe]));
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if rmap.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lpes.len() {
            let pe = &lpes[li];
            if !rmap.contains_key(pe) {
                out.push(lhs[li].clone());
                li += 1;
                continue;
            } else if merged_r.contains(pe) {
                li += 1;
            }
        }
        if ri < rpes.len() {
            let pe = &rpes[ri];
            merged_r.insert(pe);
            out.push(combine(lmap.get(pe).copied().flatten(), &rhs[ri]));
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    out
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Removes every path in `set` from `v` (a member goes with everything
/// below it). A map or list emptied by the removal goes too, as
/// structured-merge-diff leaves nothing (null) there, unless `keep` (the
/// applied configuration's fields) has it: an applied `{}` stays.
fn remove_paths(v: &mut Value, set: &FieldSet, keep: Option<&FieldSet>, f: Field) {
    match v {
        Value::Object(m) if f.ty != Ty::Atomic => {
            for pe in set.members() {
                if let PathElement::Field(k) = pe {
                    m.remove(k);
                }
            }
            for (pe, sub) in set.children() {
                let PathElement::Field(k) = pe else { continue };
                let Some(child) = m.get_mut(k) else { continue };
                let was_empty = is_empty_container(child);
                remove_paths(child, sub, keep.and_then(|k| k.child(pe)), schema::field(f.ty, k));
                let applied = keep.is_some_and(|k| k.has(std::slice::from_ref(pe)));
                if !was_empty && !applied && is_empty_container(child) {
                    m.remove(k);
                }
            }
        }
        Value::Array(items) if f.ssa != List::Atomic => {
            let Ok(pes) = item_elements(items, f.ssa) else { return };
            let item = Field::of(f.ty);
            let kept = std::mem::take(items)
                .into_iter()
                .zip(pes)
                .filter(|(_, pe)| !set.has(std::slice::from_ref(pe)))
                .map(|(mut v, pe)| {
                    if let Some(sub) = set.child(&pe) {
                        remove_paths(&mut v, sub, keep.and_then(|k| k.child(&pe)), item);
                    }
                    v
                })
                .collect();
            *items = kept;
        }
        _ => {}
    }
}

/// What an apply prunes: the fields the applier owned last time but no
/// longer applies and no manager (the applier included) still owns, as
/// structured-merge-diff's `prune`. Ownership is compared with every field
/// that has owned paths below it counted as owned itself, so a `.` the
/// applier held on a map, list or struct (say `f:labels` or `f:ports`,
/// which kubectl's client-side to server-side apply migration hands over)
/// never removes that field wholesale while its contents are still owned.
fn prune_set(last: &FieldSet, managers: &[Manager]) -> FieldSet {
    let owned = managers.iter().fold(FieldSet::default(), |acc, m| acc.union(&m.set));
    last.difference(&owned.with_fields_as_members())
}

fn invalid(message: String) -> ApplyError {
    ApplyError::Invalid(ApiError { code: 422, reason: "Invalid", message, details: None })
}

/// `group/version, Kind=kind` as Go prints a `GroupVersionKind`.
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    format!("{group}/{version}, Kind={kind}")
}

/// Server-side apply of `applied` (the request body) by `manager` to the
/// `live` object (`None` creates). Returns the new object with
/// `metadata.managedFields` updated; `now` (RFC 3339) stamps the applier's
/// entry when the object changed. See the module docs for the semantics.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    kind: &str,
    api_version: &str,
    now: &str,
) -> Result<Value, ApplyError> {
    let Value::Object(cfg) = applied else {
        return Err(ApplyError::Invalid(ApiError::bad_request("the apply configuration must be a JSON object")));
    };
    let got_version = cfg.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let got_kind = cfg.get("kind").and_then(Value::as_str).unwrap_or_default();
    if got_version != api_version || got_kind != kind {
        return Err(ApplyError::Invalid(ApiError::bad_request(format!("invalid object type: {}", gvk_string(got_version, got_kind)))));
    }
    if applied.pointer("/metadata/managedFields").is_some_and(|m| !m.is_null()) {
        return Err(ApplyError::Invalid(ApiError::bad_request("metadata.managedFields must be nil")));
    }
    let mut config = applied.clone();
    if let Some(c) = config.as_object_mut() {
        c.remove("status");
    }
    let root = Field::root(kind);
    let mut applied_set = FieldSet::default();
    collect_fields(&config, root, &mut Vec::new(), &mut applied_set)
        .map_err(|e| invalid(format!("failed to create typed patch object ({}): {e}", gvk_string(api_version, kind))))?;
    let applied_set = strip_untracked(&applied_set);

    let (live_obj, mut managers) = match live {
        // Undecodable managed fields are dropped rather than failing every
        // later write, as Kubernetes does for updates.
        Some(l) => (without_managed_fields(l), decode_managers(l).unwrap_or_default()),
        None => (json!({}), Vec::new()),
    };
    if live.is_some() && managers.iter().all(|m| m.set.is_empty()) {
        let mut c = Comparison::default();
        compare(Some(&schema::skeleton(kind)), Some(&live_obj), root, &mut Vec::new(), &mut c);
        let set = strip_untracked(&c.added.union(&c.modified));
        managers.push(Manager {
            manager: BEFORE_FIRST_APPLY.into(),
            operation: UPDATE.into(),
            api_version: api_version.into(),
            subresource: None,
            time: Some(now.into()),
            set,
        });
    }

    let mut new_obj = merge(&live_obj, &config, root);
    let me = match managers.iter().position(|m| m.is(manager, APPLY, api_version)) {
        Some(i) => i,
        None => {
            managers.push(Manager {
                manager: manager.into(),
                operation: APPLY.into(),
                api_version: api_version.into(),
                subresource: None,
                time: None,
                set: FieldSet::default(),
            });
            managers.len() - 1
        }
    };
    let last_set = std::mem::replace(&mut managers[me].set, applied_set);
    managers[me].api_version = api_version.into();
    if !last_set.is_empty() {
        remove_paths(&mut new_obj, &prune_set(&last_set, &managers), Some(&managers[me].set), root);
    }

    let mut c = Comparison::default();
    compare(Some(&live_obj), Some(&new_obj), root, &mut Vec::new(), &mut c);
    let changed = c.added.union(&c.modified);
    let conflicts: Vec<ApplyConflict> =
        managers.iter().enumerate().filter(|(i, _)| *i != me).flat_map(|(_, m)| m.conflicts(&m.set.intersection(&changed))).collect();
    if !force && !conflicts.is_empty() {
        return Err(ApplyError::Conflict(conflicts));
    }
    for (i, m) in managers.iter_mut().enumerate() {
        if i != me {
            m.set = m.set.difference(&changed).difference(&c.removed);
        }
    }
    if live.is_none() || new_obj != live_obj || managers[me].time.is_none() {
        managers[me].time = Some(now.into());
    }
    encode_managers(&mut new_obj, managers);
    Ok(new_obj)
}

/// For non-apply writes (create, update, patch): records `manager` with
/// operation `Update` as owner of the fields it set or changed in `new`
/// compared with `old` (`None` for a create), removing those fields (and
/// fields it removed) from the other managers, as Kubernetes' field manager
/// does. Managed fields sent in `new` are used when present (a client may
/// rewrite them), else those of `old`.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, api_version: &str, now: &str) {
    let kind = new.get("kind").or_else(|| old.and_then(|o| o.get("kind"))).and_then(Value::as_str).unwrap_or_default().to_string();
    let root = Field::root(&kind);
    let mut managers = match decode_managers(new) {
        Ok(m) if !m.is_empty() => m,
        _ => old.and_then(|o| decode_managers(o).ok()).unwrap_or_default(),
    };
    let old_obj = old.map_or_else(|| schema::skeleton(&kind), without_managed_fields);
    let new_obj = without_managed_fields(new);
    let mut c = Comparison::default();
    compare(Some(&old_obj), Some(&new_obj), root, &mut Vec::new(), &mut c);
    let changed = c.added.union(&c.modified);
    for m in &mut managers {
        m.set = strip_untracked(&m.set.difference(&changed).difference(&c.removed));
    }
    let mine = strip_untracked(&changed);
    if !mine.is_empty() {
        match managers.iter_mut().find(|m| m.is(manager, UPDATE, api_version)) {
            Some(m) => {
                m.set = m.set.union(&mine);
                m.time = Some(now.into());
            }
            None => managers.push(Manager {
                manager: manager.into(),
                operation: UPDATE.into(),
                api_version: api_version.into(),
                subresource: None,
                time: Some(now.into()),
                set: mine,
            }),
        }
    }
    encode_managers(new, managers);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2025-01-01T00:00:00Z";
    const T2: &str = "2025-01-01T00:01:00Z";
    const T3: &str = "2025-01-01T00:02:00Z";

    fn deployment(image: &str, replicas: Option<i64>, labels: Value) -> Value {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": labels},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}
                }
            }
        });
        if let Some(r) = replicas {
            d["spec"]["replicas"] = json!(r);
        }
        d
    }

    fn apply(live: Option<&Value>, cfg: &Value, manager: &str, force: bool, now: &str) -> Result<Value, ApplyError> {
        server_side_apply(live, cfg, manager, force, "Deployment", "apps/v1", now)
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
        obj["metadata"]["managedFields"].as_array()?.iter().find(|e| e["manager"] == manager)
    }

    /// What the API server adds after a write; apply must leave it alone.
    fn stored(mut obj: Value) -> Value {
        obj["metadata"]["uid"] = json!("u-1");
        obj["metadata"]["resourceVersion"] = json!("7");
        obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        obj
    }

    #[test]
    fn ssa_create_owns_exactly_the_applied_fields() {
        let cfg = deployment("nginx:1", Some(2), json!({"app": "web"}));
        let out = apply(None, &cfg, "kubectl", false, T1).unwrap();
        let e = entry(&out, "kubectl").unwrap();
        assert_eq!(e["operation"], "Apply");
        assert_eq!(e["apiVersion"], "apps/v1");
        assert_eq!(e["time"], T1);
        assert_eq!(e["fieldsType"], "FieldsV1");
        assert_eq!(
            e["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
        let mut expected = cfg.clone();
        expected["metadata"]["managedFields"] = out["metadata"]["managedFields"].clone();
        assert_eq!(out, expected);
    }

    #[test]
    fn ssa_reapply_of_same_config_is_identical() {
        let cfg = deployment("nginx:1", Some(2), json!({"app": "web"}));
        let live = stored(apply(None, &cfg, "kubectl", false, T1).unwrap());
        let again = apply(Some(&live), &cfg, "kubectl", false, T2).unwrap();
        assert_eq!(again, live);
    }

    #[test]
    fn ssa_update_changes_image_and_keeps_server_fields() {
        let live = stored(apply(None, &deployment("nginx:1", Some(2), json!({"app": "web"})), "kubectl", false, T1).unwrap());
        let out = apply(Some(&live), &deployment("nginx:2", Some(2), json!({"app": "web"})), "kubectl", false, T2).unwrap();
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:2");
        assert_eq!(c["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]));
        assert_eq!(out["metadata"]["uid"], "u-1");
        assert_eq!(entry(&out, "kubectl").unwrap()["time"], T2);
        assert_eq!(out["metadata"]["managedFields"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn ssa_removes_fields_no_longer_applied() {
        let live = stored(apply(None, &deployment("nginx:1", Some(2), json!({"app": "web", "tier": "fe"})), "kubectl", false, T1).unwrap());
        let out = apply(Some(&live), &deployment("nginx:1", None, json!({"app": "web"})), "kubectl", false, T2).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert!(out["spec"].get("replicas").is_none());
        let owned = &entry(&out, "kubectl").unwrap()["fieldsV1"];
        assert!(owned["f:spec"].get("f:replicas").is_none());
        assert!(owned["f:metadata"]["f:labels"].get("f:tier").is_none());
    }

    #[test]
    fn ssa_removing_a_list_item_deletes_it() {
        let mut two = deployment("nginx:1", None, json!({"app": "web"}));
        two["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "side", "image": "busybox"}));
        let live = apply(None, &two, "kubectl", false, T1).unwrap();
        let out = apply(Some(&live), &deployment("nginx:1", None, json!({"app": "web"})), "kubectl", false, T2).unwrap();
        let names: Vec<&Value> = out["spec"]["template"]["spec"]["containers"].as_array().unwrap().iter().map(|c| &c["name"]).collect();
        assert_eq!(names, [&json!("web")]);
    }

    #[test]
    fn ssa_keeps_fields_another_manager_set() {
        let live = stored(apply(None, &deployment("nginx:1", None, json!({"app": "web", "tier": "fe"})), "kubectl", false, T1).unwrap());
        let mut labelled = live.clone();
        labelled["metadata"]["labels"]["team"] = json!("a");
        labelled["metadata"]["labels"]["tier"] = json!("fe");
        record_update(Some(&live), &mut labelled, "kubectl-label", "apps/v1", T2);
        let out = apply(Some(&labelled), &deployment("nginx:1", None, json!({"app": "web"})), "kubectl", false, T3).unwrap();
        // `tier` was only the applier's, `team` belongs to kubectl-label.
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "team": "a"}));
    }

    #[test]
    fn ssa_conflict_with_other_manager_and_force_takes_ownership() {
        let live = stored(apply(None, &deployment("nginx:1", Some(2), json!({"app": "web"})), "kubectl", false, T1).unwrap());
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&live), &mut scaled, "kube-controller", "apps/v1", T2);
        assert!(entry(&scaled, "kubectl").unwrap()["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        assert!(entry(&scaled, "kube-controller").unwrap()["fieldsV1"]["f:spec"].get("f:replicas").is_some());

        let cfg = deployment("nginx:1", Some(3), json!({"app": "web"}));
        let Err(ApplyError::Conflict(conflicts)) = apply(Some(&scaled), &cfg, "kubectl", false, T3) else {
            panic!("expected a conflict");
        };
        assert_eq!(
            conflict_message(&conflicts),
            r#"Apply failed with 1 conflict: conflict with "kube-controller" using apps/v1: .spec.replicas"#
        );
        let status = ApiError::from(ApplyError::Conflict(conflicts));
        assert_eq!((status.code, status.reason), (409, "Conflict"));
        let cause = &status.details.unwrap().causes.unwrap()[0];
        assert_eq!(cause.field.as_deref(), Some(".spec.replicas"));
        assert_eq!(cause.reason.as_deref(), Some("FieldManagerConflict"));

        let forced = apply(Some(&scaled), &cfg, "kubectl", true, T3).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        assert!(entry(&forced, "kube-controller").is_none(), "the controller owned only replicas");
        assert!(entry(&forced, "kubectl").unwrap()["fieldsV1"]["f:spec"].get("f:replicas").is_some());
    }

    #[test]
    fn ssa_conflict_path_names_list_item_by_key() {
        let live = stored(apply(None, &deployment("nginx:1", None, json!({"app": "web"})), "kubectl", false, T1).unwrap());
        let mut edited = live.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:debug");
        record_update(Some(&live), &mut edited, "kubectl-edit", "apps/v1", T2);
        let err = apply(Some(&edited), &deployment("nginx:2", None, json!({"app": "web"})), "kubectl", false, T3).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.template.spec.containers[name="web"].image"#
        );
        // Re-applying the value the editor set is no change, so no conflict.
        let same = apply(Some(&edited), &deployment("nginx:debug", None, json!({"app": "web"})), "kubectl", false, T3).unwrap();
        assert_eq!(same["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:debug");
    }

    #[test]
    fn ssa_same_value_is_shared_not_conflicting() {
        let live = apply(None, &deployment("nginx:1", Some(2), json!({"app": "web"})), "a", false, T1).unwrap();
        let cfg_b = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let shared = apply(Some(&live), &cfg_b, "b", false, T2).unwrap();
        assert!(entry(&shared, "a").unwrap()["fieldsV1"]["f:spec"].get("f:replicas").is_some());
        assert!(entry(&shared, "b").unwrap()["fieldsV1"]["f:spec"].get("f:replicas").is_some());
        // `a` letting go of replicas leaves it: `b` still owns it.
        let released = apply(Some(&shared), &deployment("nginx:1", None, json!({"app": "web"})), "a", false, T3).unwrap();
        assert_eq!(released["spec"]["replicas"], 2);
        // A different value now conflicts with `b`, an applier, printed without version.
        let cfg = deployment("nginx:1", Some(4), json!({"app": "web"}));
        let err = apply(Some(&released), &cfg, "a", false, T3).unwrap_err();
        assert_eq!(err.to_string(), r#"Apply failed with 1 conflict: conflict with "b": .spec.replicas"#);
    }

    #[test]
    fn ssa_first_apply_to_unmanaged_object_credits_existing_fields() {
        let existing = stored(deployment("nginx:1", Some(2), json!({"app": "web"})));
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let err = apply(Some(&existing), &cfg, "kubectl", false, T1).unwrap_err();
        assert_eq!(err.to_string(), r#"Apply failed with 1 conflict: conflict with "before-first-apply" using apps/v1: .spec.replicas"#);
        let out = apply(Some(&existing), &cfg, "kubectl", true, T1).unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        assert!(entry(&out, "before-first-apply").unwrap()["fieldsV1"]["f:spec"]["f:template"].is_object());
    }

    #[test]
    fn ssa_ignores_status_and_rejects_bad_configs() {
        let mut cfg = deployment("nginx:1", None, json!({"app": "web"}));
        cfg["status"] = json!({"replicas": 9});
        let out = apply(None, &cfg, "kubectl", false, T1).unwrap();
        assert!(out.get("status").is_none());

        let mut dup = deployment("nginx:1", None, json!({"app": "web"}));
        dup["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "web", "image": "x"}));
        let Err(ApplyError::Invalid(e)) = apply(None, &dup, "kubectl", false, T1) else { panic!("duplicate keys must be invalid") };
        assert_eq!(e.code, 422);
        assert!(e.message.contains(r#".spec.template.spec.containers: duplicate entries for key [name="web"]"#), "{}", e.message);

        let wrong = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}});
        let Err(ApplyError::Invalid(e)) = apply(None, &wrong, "kubectl", false, T1) else { panic!("kind mismatch must be rejected") };
        assert_eq!((e.code, e.message.as_str()), (400, "invalid object type: /v1, Kind=Pod"));
    }

    #[test]
    fn ssa_sets_merge_and_prune_by_value() {
        let pod = |fins: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": fins}});
        let live = server_side_apply(None, &pod(json!(["a/x"])), "m1", false, "Pod", "v1", T1).unwrap();
        let both = server_side_apply(Some(&live), &pod(json!(["b/y"])), "m2", false, "Pod", "v1", T2).unwrap();
        assert_eq!(both["metadata"]["finalizers"], json!(["a/x", "b/y"]));
        assert_eq!(entry(&both, "m2").unwrap()["fieldsV1"], json!({"f:metadata": {"f:finalizers": {"v:\"b/y\"": {}}}}));
        let one = server_side_apply(Some(&both), &pod(json!([])), "m1", false, "Pod", "v1", T3).unwrap();
        assert_eq!(one["metadata"]["finalizers"], json!(["b/y"]));
    }

    #[test]
    fn record_update_on_create_tracks_set_fields_like_kubernetes() {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "uid": "u", "labels": {"run": "p"}},
            "spec": {"containers": [{"name": "p", "image": "nginx"}]}
        });
        record_update(None, &mut pod, "kubectl-run", "v1", T1);
        let e = entry(&pod, "kubectl-run").unwrap();
        assert_eq!(e["operation"], "Update");
        assert_eq!(e["time"], T1);
        assert_eq!(
            e["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:run": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"p\"}": {".": {}, "f:image": {}, "f:name": {}}}}
            })
        );
    }

    #[test]
    fn record_update_moves_changed_fields_to_the_writer() {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"run": "p"}},
            "spec": {"containers": [{"name": "p", "image": "nginx:1"}]}
        });
        record_update(None, &mut pod, "creator", "v1", T1);
        let old = pod.clone();
        pod["spec"]["containers"][0]["image"] = json!("nginx:2");
        pod["metadata"]["labels"] = json!({});
        record_update(Some(&old), &mut pod, "editor", "v1", T2);
        let creator = &entry(&pod, "creator").unwrap()["fieldsV1"];
        assert!(creator["f:spec"]["f:containers"]["k:{\"name\":\"p\"}"].get("f:image").is_none());
        assert!(creator["f:metadata"]["f:labels"].get("f:run").is_none(), "removed fields leave their owner");
        assert_eq!(entry(&pod, "creator").unwrap()["time"], T1);
        let editor = &entry(&pod, "editor").unwrap()["fieldsV1"];
        assert!(editor["f:spec"]["f:containers"]["k:{\"name\":\"p\"}"].get("f:image").is_some());

        // An unchanged write records nothing new.
        let before = pod.clone();
        record_update(Some(&before), &mut pod, "noop", "v1", T3);
        assert_eq!(pod, before);
    }

    #[test]
    fn record_update_honours_cleared_managed_fields() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}});
        record_update(None, &mut pod, "creator", "v1", T1);
        let old = pod.clone();
        // Kubernetes' documented way to clear managed fields: `[{}]`.
        pod["metadata"]["managedFields"] = json!([{}]);
        record_update(Some(&old), &mut pod, "clearer", "v1", T2);
        assert!(pod["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn conflict_message_groups_several_conflicts_by_manager() {
        let c = |manager: &str, operation: &str, field: &str| ApplyConflict {
            manager: manager.into(),
            operation: operation.into(),
            api_version: "v1".into(),
            subresource: None,
            field: field.into(),
        };
        let msg = conflict_message(&[
            c("kubectl-edit", "Update", ".spec.a"),
            c("alpha", "Apply", ".spec.b"),
            c("kubectl-edit", "Update", ".spec.c"),
        ]);
        assert_eq!(
            msg,
            "Apply failed with 3 conflicts: conflicts with \"alpha\":\n- .spec.b\nconflicts with \"kubectl-edit\" using v1:\n- .spec.a\n- .spec.c"
        );
    }

    /// Whether `obj` holds everything `cfg` sets: map keys recursively (a
    /// `null` in `cfg` asks for removal, so it must be absent), list items by
    /// some item holding them, scalars equal.
    fn holds(obj: Option<&Value>, cfg: &Value) -> bool {
        match (obj, cfg) {
            (_, Value::Object(c)) => {
                let Some(Value::Object(o)) = obj else { return false };
                c.iter().all(|(k, v)| if v.is_null() { !o.contains_key(k) } else { holds(o.get(k), v) })
            }
            (Some(Value::Array(o)), Value::Array(c)) => c.iter().all(|ci| o.iter().any(|oi| holds(Some(oi), ci))),
            (o, c) => o == Some(c),
        }
    }

    /// What `kubectl apply --server-side` does to an object last written by
    /// client-side apply before applying (kubectl's `csaupgrade`): the
    /// `kubectl-client-side-apply` Update entry's fields become the `kubectl`
    /// Apply entry's, server-defaulted fields included.
    fn migrate_csa_to_ssa(obj: &mut Value) {
        for e in obj["metadata"]["managedFields"].as_array_mut().unwrap() {
            if e["manager"] == "kubectl-client-side-apply" && e["operation"] == "Update" {
                e["manager"] = json!("kubectl");
                e["operation"] = json!("Apply");
            }
        }
    }

    /// The defaults the API server fills in a Deployment's pod template
    /// (the subset the tests here need).
    fn defaulted(mut d: Value) -> Value {
        let spec = &mut d["spec"];
        spec["progressDeadlineSeconds"] = json!(600);
        spec["revisionHistoryLimit"] = json!(10);
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
        let pod = &mut spec["template"]["spec"];
        pod["dnsPolicy"] = json!("ClusterFirst");
        pod["restartPolicy"] = json!("Always");
        pod["securityContext"] = json!({});
        for c in pod["containers"].as_array_mut().unwrap() {
            c["imagePullPolicy"] = json!("IfNotPresent");
            c["terminationMessagePath"] = json!("/dev/termination-log");
            c["resources"] = json!({});
            for p in c["ports"].as_array_mut().into_iter().flatten() {
                p.as_object_mut().unwrap().entry("protocol").or_insert(json!("TCP"));
            }
        }
        d
    }

    /// `kubectl apply` (client-side, creating), kubectl's migration to
    /// server-side apply, and what the server stored: the object as
    /// `kubectl apply --server-side` sends it to the apply afterwards.
    fn created_client_side_then_migrated(cfg: &Value) -> Value {
        let mut live = stored(defaulted(cfg.clone()));
        record_update(None, &mut live, "kubectl-client-side-apply", "apps/v1", T1);
        migrate_csa_to_ssa(&mut live);
        live
    }

    /// The reported failure, trimmed from the live object and configuration
    /// of a real kubectl 1.32 session: client-side apply, then two
    /// server-side applies of the same file; the second lost the template's
    /// labels and the container's ports (then failed validation with 422).
    #[test]
    fn ssa_reapply_of_same_config_after_csa_migration_keeps_template_labels_and_ports() {
        // The `kubectl` entry after kubectl's migration: client-side apply's
        // fields, `.` entries and server defaults included.
        let kubectl_fields = json!({
            "f:metadata": {
                "f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                "f:labels": {".": {}, "f:app": {}}
            },
            "f:spec": {
                "f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {}, "f:selector": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}}, "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {
                        "f:containers": {"k:{\"name\":\"api\"}": {
                            ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                            "f:ports": {".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}},
                            "f:resources": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}
                        }},
                        "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
                        "f:terminationGracePeriodSeconds": {}
                    }
                }
            }
        });
        let last_applied_fields = json!({"f:metadata": {"f:annotations": {"f:kubectl.kubernetes.io/last-applied-configuration": {}}}});
        let template = json!({
            "metadata": {"labels": {"app": "api"}},
            "spec": {
                "containers": [{
                    "image": "registry.example/api:1.0", "imagePullPolicy": "IfNotPresent", "name": "api",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}], "resources": {},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
                }],
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                "securityContext": {}, "terminationGracePeriodSeconds": 30
            }
        });
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "api", "namespace": "default", "uid": "22c9daae", "resourceVersion": "12", "generation": 1,
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"},
                "labels": {"app": "api"},
                "managedFields": [
                    {"apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": "kubectl", "operation": "Apply",
                     "time": "2026-11-24T13:51:15Z", "fieldsV1": kubectl_fields},
                    {"apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": "kubectl-last-applied", "operation": "Apply",
                     "time": "2026-11-24T13:51:15Z", "fieldsV1": last_applied_fields}
                ]
            },
            "spec": {
                "progressDeadlineSeconds": 600, "replicas": 2, "revisionHistoryLimit": 10,
                "selector": {"matchLabels": {"app": "api"}},
                "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
                "template": template
            },
            "status": {}
        });
        let cfg = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "labels": {"app": "api"}},
            "spec": {
                "replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "api", "image": "registry.example/api:1.0", "ports": [{"containerPort": 8080}]}]}
                }
            }
        });
        let out = apply(Some(&live), &cfg, "kubectl", false, T2).unwrap();
        assert!(holds(Some(&out), &cfg), "{out:#}");
        assert_eq!(out["spec"]["template"]["metadata"]["labels"], json!({"app": "api"}));
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        // Defaults only the migration credited to kubectl are pruned; the
        // API server defaults them again, as in Kubernetes.
        assert!(c.get("imagePullPolicy").is_none() && c.get("terminationMessagePath").is_none());
        // The annotation kubectl-last-applied still owns stays.
        assert_eq!(out["metadata"]["annotations"], live["metadata"]["annotations"]);
        assert_eq!(
            entry(&out, "kubectl").unwrap()["fieldsV1"]["f:spec"]["f:template"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"api\"}": {
                    ".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                }}}
            })
        );
        // And applying once more changes nothing.
        assert_eq!(apply(Some(&out), &cfg, "kubectl", false, T3).unwrap(), out);
    }

    #[test]
    fn ssa_prune_never_removes_a_field_present_in_the_applied_config() {
        let mut full = deployment("nginx:1", Some(2), json!({"app": "web", "tier": "fe"}));
        full["metadata"]["annotations"] = json!({"note": "x"});
        full["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
        let live = created_client_side_then_migrated(&full);

        let with = |image: &str, replicas: Option<i64>, labels: Value, edit: &dyn Fn(&mut Value)| {
            let mut c = deployment(image, replicas, labels);
            edit(&mut c);
            c
        };
        let configs = [
            full.clone(),
            with("nginx:1", None, json!({"app": "web"}), &|c| c["metadata"]["annotations"] = json!({})),
            with("nginx:2", Some(1), json!({}), &|c| c["spec"]["template"]["metadata"] = json!({})),
            with("nginx:1", None, json!({"app": "web"}), &|c| {
                let web = &mut c["spec"]["template"]["spec"]["containers"][0];
                web["env"] = json!([{"name": "B", "value": "2"}]);
                web["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
            }),
            with("nginx:1", None, json!({"app": "web"}), &|c| {
                let web = &mut c["spec"]["template"]["spec"]["containers"][0];
                web["resources"] = json!({});
                web["ports"] = json!([{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}]);
            }),
        ];

        for cfg in &configs {
            let out = apply(Some(&live), cfg, "kubectl", false, T2).unwrap();
            assert!(holds(Some(&out), cfg), "applied {cfg:#}\ngot {out:#}");
            // Pruning still happens: a label the config dropped is gone.
            if cfg["metadata"]["labels"].get("tier").is_none() {
                assert!(out["metadata"]["labels"].get("tier").is_none(), "{out:#}");
            }
            let again = apply(Some(&out), cfg, "kubectl", false, T3).unwrap();
            assert!(holds(Some(&again), cfg), "re-applied {cfg:#}\ngot {again:#}");
        }

        // A `{}` in the configuration survives the pruning of its contents.
        let out = apply(Some(&live), &configs[1], "kubectl", false, T2).unwrap();
        assert_eq!(out["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn ssa_reapply_after_kubectl_csa_migration_keeps_list_items_keyed_by_merge_key() {
        let mut cfg = deployment("nginx:1", Some(2), json!({"app": "web"}));
        cfg["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "web", "image": "nginx:1",
             "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53, "protocol": "TCP"}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "busybox", "ports": [{"containerPort": 9000}]}
        ]);
        let live = created_client_side_then_migrated(&cfg);
        let first = apply(Some(&live), &cfg, "kubectl", false, T2).unwrap();
        let second = apply(Some(&first), &cfg, "kubectl", false, T3).unwrap();
        for out in [&first, &second] {
            assert!(holds(Some(out), &cfg), "{out:#}");
            let containers = out["spec"]["template"]["spec"]["containers"].as_array().unwrap();
            let names: Vec<&Value> = containers.iter().map(|c| &c["name"]).collect();
            assert_eq!(names, [&json!("web"), &json!("side")]);
            let ports: Vec<(&Value, Option<&Value>)> =
                containers[0]["ports"].as_array().unwrap().iter().map(|p| (&p["containerPort"], p.get("protocol"))).collect();
            assert_eq!(ports, [(&json!(80), None), (&json!(53), Some(&json!("UDP"))), (&json!(53), Some(&json!("TCP")))]);
            assert_eq!(containers[0]["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
            assert_eq!(containers[1]["ports"], json!([{"containerPort": 9000}]));
            assert_eq!(out["spec"]["template"]["metadata"]["labels"], json!({"app": "web"}));
        }
        // Dropping one keyed item still removes exactly that item.
        let mut fewer = cfg.clone();
        fewer["spec"]["template"]["spec"]["containers"][0]["ports"].as_array_mut().unwrap().remove(1);
        let out = apply(Some(&second), &fewer, "kubectl", false, T3).unwrap();
        let ports = &out["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert_eq!(ports, &json!([{"containerPort": 80}, {"containerPort": 53, "protocol": "TCP"}]));
    }
}
