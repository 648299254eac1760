//! Sets of field paths and their `FieldsV1` encoding, as in
//! sigs.k8s.io/structured-merge-diff: `f:<name>` for a field, `k:<json>` for
//! a list item identified by its keys, `v:<json>` for an item of a set, and
//! `i:<n>` for a positional item; `.` marks a node that is itself a member
//! when it also has members below it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One step of a path. Key and set values are kept as their JSON text, which
/// is canonical for the scalars Kubernetes uses there and makes elements
/// orderable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PathElement {
    Field(String),
    /// Key field names (sorted) with their JSON-encoded values.
    Key(Vec<(String, String)>),
    Value(String),
    Index(usize),
}

impl PathElement {
    /// The `FieldsV1` object key.
    pub(crate) fn encode(&self) -> String {
        match self {
            Self::Field(name) => format!("f:{name}"),
            Self::Key(pairs) => {
                let body: Vec<String> = pairs.iter().map(|(n, v)| format!("{}:{v}", Value::String(n.clone()))).collect();
                format!("k:{{{}}}", body.join(","))
            }
            Self::Value(v) => format!("v:{v}"),
            Self::Index(i) => format!("i:{i}"),
        }
    }

    pub(crate) fn decode(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| format!("missing colon: {s}"))?;
        match kind {
            "f" => Ok(Self::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(m)) => Ok(Self::key(m.into_iter())),
                _ => Err(format!("invalid key path element: {s}")),
            },
            "v" => serde_json::from_str::<Value>(rest)
                .map(|v| Self::Value(v.to_string()))
                .map_err(|e| format!("invalid value path element {s}: {e}")),
            "i" => rest.parse().map(Self::Index).map_err(|_| format!("invalid index path element: {s}")),
            _ => Err(format!("unknown path element type: {s}")),
        }
    }

    pub(crate) fn key(pairs: impl Iterator<Item = (String, Value)>) -> Self {
        let mut pairs: Vec<(String, String)> = pairs.map(|(k, v)| (k, v.to_string())).collect();
        pairs.sort();
        Self::Key(pairs)
    }
}

/// As Kubernetes prints paths in conflict messages: `.spec.replicas`,
/// `[name="web"]`, `[=value]`, `[0]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field(name) => write!(f, ".{name}"),
            Self::Key(pairs) => {
                let body: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
                write!(f, "[{}]", body.join(","))
            }
            Self::Value(v) => write!(f, "[={v}]"),
            Self::Index(i) => write!(f, "[{i}]"),
        }
    }
}

pub(crate) type Path = Vec<PathElement>;

pub(crate) fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of paths, stored as a tree: `members` are the paths ending at this
/// level, `children` the subtrees below (never empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    pub(crate) fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub(crate) fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// Members directly at this level (paths of length one).
    pub(crate) fn members(&self) -> impl Iterator<Item = &PathElement> {
        self.members.iter()
    }

    /// The subset of paths that start with `pe`, with `pe` removed.
    pub(crate) fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    pub(crate) fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// Paths in `self` that are not in `other` (exact paths; a member of
    /// `other` does not remove paths below it).
    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, c)| {
                let d = match other.children.get(pe) {
                    Some(o) => c.difference(o),
                    None => c.clone(),
                };
                (!d.is_empty()).then(|| (pe.clone(), d))
            })
            .collect();
        FieldSet { members, children }
    }

    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, c)| {
                let i = c.intersection(other.children.get(pe)?);
                (!i.is_empty()).then(|| (pe.clone(), i))
            })
            .collect();
        FieldSet { members, children }
    }

    /// This set with every field that has paths below it also a member, as
    /// structured-merge-diff's `EnsureNamedFieldsAreMembers` makes struct
    /// fields members before pruning: owning anything inside a field means
    /// the field itself must stay. List items (`k:`, `v:`, `i:`) are not
    /// added; an item stays or goes by its own membership.
    pub(crate) fn with_fields_as_members(&self) -> FieldSet {
        let members =
            self.members.iter().cloned().chain(self.children.keys().filter(|pe| matches!(pe, PathElement::Field(_))).cloned()).collect();
        let children = self.children.iter().map(|(pe, c)| (pe.clone(), c.with_fields_as_members())).collect();
        FieldSet { members, children }
    }

    /// Every path in the set, in order.
    pub(crate) fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        let keys: BTreeSet<&PathElement> = self.members.iter().chain(self.children.keys()).collect();
        for pe in keys {
            prefix.push(pe.clone());
            if self.members.contains(pe) {
                out.push(prefix.clone());
            }
            if let Some(c) = self.children.get(pe) {
                c.collect(prefix, out);
            }
            prefix.pop();
        }
    }

    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut obj = Map::new();
        let keys: BTreeSet<&PathElement> = self.members.iter().chain(self.children.keys()).collect();
        for pe in keys {
            let v = match self.children.get(pe) {
                Some(c) => {
                    let mut inner = Map::new();
                    if self.members.contains(pe) {
                        inner.insert(".".into(), Value::Object(Map::new()));
                    }
                    if let Value::Object(m) = c.to_fields_v1() {
                        inner.extend(m);
                    }
                    Value::Object(inner)
                }
                None => Value::Object(Map::new()),
            };
            obj.insert(pe.encode(), v);
        }
        Value::Object(obj)
    }

    pub(crate) fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(obj) = v else {
            return Err("fieldsV1 must be an object".into());
        };
        let mut set = FieldSet::default();
        for (k, child) in obj {
            if k == "." {
                continue;
            }
            let pe = PathElement::decode(k)?;
            let Value::Object(inner) = child else {
                return Err(format!("fieldsV1 entry {k} must be an object"));
            };
            if inner.is_empty() || inner.contains_key(".") {
                set.members.insert(pe.clone());
            }
            let sub = FieldSet::from_fields_v1(child)?;
            if !sub.is_empty() {
                set.children.insert(pe, sub);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    #[test]
    fn fields_v1_round_trips_with_dot_for_member_nodes() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}},
            "f:finalizers": {"v:\"a/b\"": {}}
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert!(set.has(&[f("metadata"), f("labels")]));
        assert!(set.has(&[f("metadata"), f("labels"), f("app")]));
        assert!(!set.has(&[f("metadata")]));
        let web = PathElement::key([("name".to_string(), json!("web"))].into_iter());
        assert!(set.has(&[f("spec"), f("containers"), web.clone(), f("image")]));
        assert!(set.has(&[f("spec"), f("containers"), web]));
        assert_eq!(set.to_fields_v1(), v);
    }

    #[test]
    fn key_elements_sort_fields_and_print_like_kubernetes() {
        let pe = PathElement::key([("protocol".to_string(), json!("TCP")), ("containerPort".to_string(), json!(80))].into_iter());
        assert_eq!(pe.encode(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        assert_eq!(pe.to_string(), r#"[containerPort=80,protocol="TCP"]"#);
        assert_eq!(PathElement::decode(&pe.encode()).unwrap(), pe);
        assert_eq!(path_string(&[f("spec"), f("replicas")]), ".spec.replicas");
    }

    #[test]
    fn set_algebra_works_on_exact_paths() {
        let mut a = FieldSet::default();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::default();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("metadata"), f("labels"), f("x")]);
        assert_eq!(a.intersection(&b).paths(), vec![vec![f("spec"), f("replicas")]]);
        assert_eq!(a.difference(&b).paths(), vec![vec![f("spec"), f("paused")]]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(a.difference(&a).is_empty());
    }

    #[test]
    fn fields_with_paths_below_become_members_but_list_items_do_not() {
        let web = PathElement::key([("name".to_string(), json!("web"))].into_iter());
        let mut s = FieldSet::default();
        s.insert(&[f("metadata"), f("labels"), f("app")]);
        s.insert(&[f("spec"), f("containers"), web.clone(), f("image")]);
        let e = s.with_fields_as_members();
        assert!(e.has(&[f("metadata")]));
        assert!(e.has(&[f("metadata"), f("labels")]));
        assert!(e.has(&[f("metadata"), f("labels"), f("app")]));
        assert!(e.has(&[f("spec"), f("containers")]));
        assert!(!e.has(&[f("spec"), f("containers"), web.clone()]));
        assert!(e.has(&[f("spec"), f("containers"), web, f("image")]));
        // A `.` on a map whose keys are still owned is not left over.
        let owned_before = FieldSet::from_fields_v1(&json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}})).unwrap();
        assert!(owned_before.difference(&e).is_empty());
    }
}
