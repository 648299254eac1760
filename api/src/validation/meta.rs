//! `metadata` checks shared by every kind, label and annotation rules, and
//! label selectors (`k8s.io/apimachinery/pkg/api/validation`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::names::{self, NameRule};
use super::path::Path;
use crate::status::{FieldError, FieldErrorKind};

/// Total size of all annotation keys and values.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// Finalizers without a domain that Kubernetes itself defines.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

pub(crate) const IMMUTABLE: &str = "field is immutable";

pub(crate) fn too_long(p: &Path, max: usize) -> FieldError {
    FieldError { field: p.into(), kind: FieldErrorKind::TooLong, value: None, detail: format!("may not be more than {max} bytes") }
}

/// Go's `%#v` of a `map[string]string`, which Kubernetes quotes in messages.
pub(crate) fn go_map(map: Option<&BTreeMap<String, String>>) -> String {
    match map {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let body: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
            format!("map[string]string{{{}}}", body.join(", "))
        }
    }
}

/// Go's `%#v` of a `metav1.LabelSelector`.
pub(crate) fn go_selector(sel: &LabelSelector) -> String {
    let exprs = match &sel.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(exprs) => {
            let items: Vec<String> = exprs
                .iter()
                .map(|e| {
                    let values = match &e.values {
                        None => "[]string(nil)".to_string(),
                        Some(v) => format!("[]string{{{}}}", v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")),
                    };
                    format!("v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}", e.key, e.operator)
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}", go_map(sel.match_labels.as_ref()))
}

pub(crate) fn validate_labels(labels: Option<&BTreeMap<String, String>>, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        errs.extend(names::qualified_name(k).into_iter().map(|m| FieldError::invalid(p, k, m)));
        errs.extend(names::label_value(v).into_iter().map(|m| FieldError::invalid(p, v, m)));
    }
    errs
}

pub(crate) fn validate_annotations(annotations: Option<&BTreeMap<String, String>>, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut size = 0;
    for (k, v) in annotations.into_iter().flatten() {
        // Annotation keys are qualified names, except that case does not matter.
        errs.extend(names::qualified_name(&k.to_lowercase()).into_iter().map(|m| FieldError::invalid(p, k, m)));
        size += k.len() + v.len();
    }
    if size > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(p, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn validate_finalizers(finalizers: &[String], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, f) in finalizers.iter().enumerate() {
        errs.extend(names::qualified_name(f).into_iter().map(|m| FieldError::invalid(p, f, m)));
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
            errs.push(FieldError::invalid(p.index(i), f, "name is neither a standard finalizer name nor is it fully qualified"));
        }
    }
    if finalizers.iter().any(|f| f == "orphan") && finalizers.iter().any(|f| f == "foregroundDeletion") {
        errs.push(FieldError::invalid(p, format!("{finalizers:?}"), "finalizer orphan and foregroundDeletion cannot be both set"));
    }
    errs
}

/// `ValidateObjectMeta`: name (per the kind's rule), namespace presence,
/// labels, annotations, owner references, finalizers, managed fields.
///
/// A namespace on a cluster-scoped object is not reported: Kubernetes clears
/// it before validating, and so should the server.
pub(crate) fn validate_object_meta(meta: &ObjectMeta, namespaced: bool, rule: NameRule, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(gn) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
        errs.extend(names::name(rule, gn, true).into_iter().map(|m| FieldError::invalid(p.child("generateName"), gn, m)));
    }
    match meta.name.as_deref().unwrap_or("") {
        "" => errs.push(FieldError { detail: "name or generateName is required".into(), ..FieldError::required(p.child("name")) }),
        n => errs.extend(names::name(rule, n, false).into_iter().map(|m| FieldError::invalid(p.child("name"), n, m))),
    }
    if namespaced {
        match meta.namespace.as_deref().unwrap_or("") {
            "" => errs.push(FieldError::required(p.child("namespace"))),
            ns => errs.extend(names::dns1123_label(ns).into_iter().map(|m| FieldError::invalid(p.child("namespace"), ns, m))),
        }
    }
    if let Some(g) = meta.generation.filter(|g| *g < 0) {
        errs.push(FieldError::invalid(p.child("generation"), g, "must be greater than or equal to 0"));
    }
    errs.extend(validate_labels(meta.labels.as_ref(), &p.child("labels")));
    errs.extend(validate_annotations(meta.annotations.as_ref(), &p.child("annotations")));

    let owners = p.child("ownerReferences");
    let mut controller: Option<String> = None;
    for r in meta.owner_references.iter().flatten() {
        let version = r.api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(owners.child("apiVersion"), &r.api_version, "version must not be empty"));
        }
        if r.kind.is_empty() {
            errs.push(FieldError::invalid(owners.child("kind"), &r.kind, "kind must not be empty"));
        }
        if r.name.is_empty() {
            errs.push(FieldError::invalid(owners.child("name"), &r.name, "name must not be empty"));
        }
        if r.uid.is_empty() {
            errs.push(FieldError::invalid(owners.child("uid"), &r.uid, "uid must not be empty"));
        }
        if r.controller == Some(true) {
            let this = format!("{}/{}", r.kind, r.name);
            match &controller {
                Some(first) => errs.push(FieldError::invalid(
                    &owners,
                    "ownerReferences",
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"),
                )),
                None => controller = Some(this),
            }
        }
    }
    errs.extend(validate_finalizers(meta.finalizers.as_deref().unwrap_or_default(), &p.child("finalizers")));
    for (i, mf) in meta.managed_fields.iter().flatten().enumerate() {
        let mp = p.child("managedFields").index(i);
        let op = mf.operation.as_deref().unwrap_or("");
        if op != "Apply" && op != "Update" {
            errs.push(FieldError::invalid(mp.child("operation"), op, "must be `Apply` or `Update`"));
        }
        if let Some(ft) = mf.fields_type.as_deref().filter(|t| !t.is_empty() && *t != "FieldsV1") {
            errs.push(FieldError::invalid(mp.child("fieldsType"), ft, "must be `FieldsV1`"));
        }
    }
    errs
}

/// `ValidateObjectMetaUpdate`: identity fields may not change, and no
/// finalizer may be added once deletion has begun.
///
/// `creationTimestamp`, `deletionTimestamp`, `generation` and
/// `resourceVersion` are the server's to carry over from the stored object
/// before validating, as Kubernetes' registry does, so they are not checked.
pub(crate) fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.deletion_timestamp.is_some() {
        let old_f = old.finalizers.as_deref().unwrap_or_default();
        let mut extra: Vec<&String> = new.finalizers.iter().flatten().filter(|f| !old_f.contains(f)).collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            let list = extra.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ");
            errs.push(FieldError::forbidden(
                p.child("finalizers"),
                format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"),
            ));
        }
    }
    let same = |n: &Option<String>, o: &Option<String>| n.as_deref().unwrap_or("") == o.as_deref().unwrap_or("");
    if !same(&new.name, &old.name) {
        errs.push(FieldError::invalid(p.child("name"), new.name.as_deref().unwrap_or(""), IMMUTABLE));
    }
    if !same(&new.namespace, &old.namespace) {
        errs.push(FieldError::invalid(p.child("namespace"), new.namespace.as_deref().unwrap_or(""), IMMUTABLE));
    }
    // An update without a uid takes the stored one; only a different uid is wrong.
    if new.uid.as_deref().is_some_and(|u| !u.is_empty()) && !same(&new.uid, &old.uid) {
        errs.push(FieldError::invalid(p.child("uid"), new.uid.as_deref().unwrap_or(""), IMMUTABLE));
    }
    errs
}

/// The last line of defence for every kind: names must work as URL path
/// segments (`ValidateObjectMetaAccessor` with `ValidatePathSegmentName`).
pub(crate) fn validate_path_segment_meta(meta: &ObjectMeta, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(gn) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
        errs.extend(names::path_segment_name(gn).into_iter().map(|m| FieldError::invalid(p.child("generateName"), gn, m)));
    }
    match meta.name.as_deref().unwrap_or("") {
        "" => errs.push(FieldError { detail: "name or generateName is required".into(), ..FieldError::required(p.child("name")) }),
        n => errs.extend(names::path_segment_name(n).into_iter().map(|m| FieldError::invalid(p.child("name"), n, m))),
    }
    errs.extend(validate_labels(meta.labels.as_ref(), &p.child("labels")));
    errs.extend(validate_annotations(meta.annotations.as_ref(), &p.child("annotations")));
    errs
}

/// `ValidateLabelSelector` (strict about values, as workloads require).
pub(crate) fn validate_label_selector(sel: &LabelSelector, p: &Path) -> Vec<FieldError> {
    let mut errs = validate_labels(sel.match_labels.as_ref(), &p.child("matchLabels"));
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let ep = p.child("matchExpressions").index(i);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError {
                detail: "must be specified when `operator` is 'In' or 'NotIn'".into(),
                ..FieldError::required(ep.child("values"))
            }),
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                errs.push(FieldError::forbidden(ep.child("values"), "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.push(FieldError::invalid(ep.child("operator"), op, "not a valid selector operator")),
        }
        errs.extend(names::qualified_name(&e.key).into_iter().map(|m| FieldError::invalid(ep.child("key"), &e.key, m)));
        for (j, v) in values.iter().enumerate() {
            errs.extend(names::label_value(v).into_iter().map(|m| FieldError::invalid(ep.child("values").index(j), v, m)));
        }
    }
    errs
}

pub(crate) fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// Whether a selector can be turned into a `labels.Selector` at all.
pub(crate) fn selector_is_well_formed(sel: &LabelSelector) -> bool {
    sel.match_expressions.iter().flatten().all(|e| {
        let n = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" => n > 0,
            "Exists" | "DoesNotExist" => n == 0,
            _ => false,
        }
    })
}

pub(crate) fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let labels_ok = sel.match_labels.iter().flatten().all(|(k, v)| get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn missing_name_says_name_or_generate_name_is_required() {
        let errs = validate_object_meta(
            &ObjectMeta { namespace: Some("default".into()), ..Default::default() },
            true,
            NameRule::Dns1123Subdomain,
            &Path::new("metadata"),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].to_string(), "metadata.name: Required value: name or generateName is required");
    }

    #[test]
    fn namespaced_objects_need_a_namespace() {
        let meta = ObjectMeta { name: Some("x".into()), ..Default::default() };
        let errs = validate_object_meta(&meta, true, NameRule::Dns1123Subdomain, &Path::new("metadata"));
        assert_eq!(errs[0].to_string(), "metadata.namespace: Required value");
        assert!(validate_object_meta(&meta, false, NameRule::Dns1123Subdomain, &Path::new("metadata")).is_empty());
    }

    #[test]
    fn bad_label_key_and_value_are_reported_on_the_labels_path() {
        let meta = ObjectMeta { name: Some("x".into()), labels: Some(labels(&[("-k", "v!")])), ..Default::default() };
        let errs = validate_object_meta(&meta, false, NameRule::Dns1123Subdomain, &Path::new("metadata"));
        assert_eq!(errs.len(), 2);
        assert!(errs.iter().all(|e| e.field == "metadata.labels"));
        assert_eq!(errs[0].value.as_deref(), Some("-k"));
        assert_eq!(errs[1].value.as_deref(), Some("v!"));
    }

    #[test]
    fn annotations_are_case_insensitive_but_limited_in_total_size() {
        let ok = labels(&[("Example.COM/Key", "v")]);
        assert!(validate_annotations(Some(&ok), &Path::new("metadata.annotations")).is_empty());
        let big = labels(&[("k", &"x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT))]);
        let errs = validate_annotations(Some(&big), &Path::new("metadata.annotations"));
        assert_eq!(errs[0].to_string(), "metadata.annotations: Too long: may not be more than 262144 bytes");
    }

    #[test]
    fn unqualified_custom_finalizers_are_rejected() {
        let meta = ObjectMeta {
            name: Some("x".into()),
            finalizers: Some(vec!["kubernetes".into(), "mine".into(), "example.com/mine".into()]),
            ..Default::default()
        };
        let errs = validate_object_meta(&meta, false, NameRule::Dns1123Subdomain, &Path::new("metadata"));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.finalizers[1]");
    }

    #[test]
    fn renaming_on_update_is_rejected_as_immutable() {
        let old = ObjectMeta { name: Some("a".into()), namespace: Some("default".into()), uid: Some("1".into()), ..Default::default() };
        let new = ObjectMeta { name: Some("b".into()), uid: None, ..old.clone() };
        let errs = validate_object_meta_update(&new, &old, &Path::new("metadata"));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].to_string(), "metadata.name: Invalid value: \"b\": field is immutable");
    }

    #[test]
    fn finalizers_cannot_be_added_during_deletion() {
        let old = ObjectMeta {
            name: Some("a".into()),
            deletion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        };
        let new = ObjectMeta { finalizers: Some(vec!["example.com/x".into()]), ..old.clone() };
        let errs = validate_object_meta_update(&new, &old, &Path::new("metadata"));
        assert_eq!(errs[0].field, "metadata.finalizers");
        assert!(errs[0].detail.ends_with("[]string{\"example.com/x\"}"));
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(&sel, Some(&labels(&[("app", "web")]))));
        assert!(!selector_matches(&sel, Some(&labels(&[("app", "web"), ("tier", "db")]))));
        assert!(!selector_matches(&sel, None));
    }

    #[test]
    fn selector_operators_are_checked() {
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                LabelSelectorRequirement { key: "a".into(), operator: "In".into(), values: None },
                LabelSelectorRequirement { key: "b".into(), operator: "Near".into(), values: None },
            ]),
        };
        let errs = validate_label_selector(&sel, &Path::new("spec.selector"));
        assert_eq!(
            errs[0].to_string(),
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert_eq!(errs[1].field, "spec.selector.matchExpressions[1].operator");
        assert!(!selector_is_well_formed(&sel));
    }

    #[test]
    fn go_formatting_of_maps_and_selectors() {
        assert_eq!(go_map(Some(&labels(&[("app", "x")]))), r#"map[string]string{"app":"x"}"#);
        assert_eq!(go_map(None), "map[string]string(nil)");
        let sel = LabelSelector { match_labels: Some(labels(&[("app", "y")])), match_expressions: None };
        assert_eq!(
            go_selector(&sel),
            r#"v1.LabelSelector{MatchLabels:map[string]string{"app":"y"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"#
        );
    }
}
