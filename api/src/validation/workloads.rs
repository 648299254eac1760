//! ReplicationControllers, ReplicaSets and Deployments: defaults
//! (`SetDefaults_ReplicationController`, apps/v1 defaults) and validation
//! (`ValidateReplicationController`, apps `ValidateReplicaSet`,
//! `ValidateDeployment`, and the apps/v1 strategies' selector immutability).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{self, IMMUTABLE};
use super::names::{self, NameRule};
use super::path::Path;
use super::pod;
use crate::status::FieldError;

const NON_NEGATIVE: &str = "must be greater than or equal to 0";

fn non_negative(v: Option<i32>, p: &Path, errs: &mut Vec<FieldError>) {
    if let Some(v) = v.filter(|v| *v < 0) {
        errs.push(FieldError::invalid(p, v, NON_NEGATIVE));
    }
}

// ---------------------------------------------------------------- defaults

pub(crate) fn default_replication_controller(rc: &mut ReplicationController) {
    let spec = rc.spec.get_or_insert_with(Default::default);
    // Selector and object labels come from the template when left empty.
    if let Some(labels) = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()) {
        if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
            spec.selector = Some(labels.clone());
        }
        if rc.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            rc.metadata.labels = Some(labels);
        }
    }
    spec.replicas.get_or_insert(1);
    if let Some(t) = &mut spec.template {
        pod::default_template(t);
    }
    // A new controller starts with an empty status, which reads `replicas: 0`.
    rc.status.get_or_insert_with(Default::default);
}

pub(crate) fn default_replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    if let Some(t) = &mut spec.template {
        pod::default_template(t);
    }
    rs.status.get_or_insert_with(Default::default);
}

pub(crate) fn default_deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
    if strategy.type_.as_deref().unwrap_or("").is_empty() {
        strategy.type_ = Some("RollingUpdate".into());
    }
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_unavailable.get_or_insert_with(|| IntOrString::String("25%".into()));
        ru.max_surge.get_or_insert_with(|| IntOrString::String("25%".into()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    pod::default_template(&mut spec.template);
    d.status.get_or_insert_with(Default::default);
}

// ---------------------------------------------------------------- validation

/// Template checks shared by all three controllers: labels match the
/// selector, the pod spec is valid, and pods are restarted forever.
fn validate_controller_template(
    template: Option<&PodTemplateSpec>,
    matches: Option<bool>,
    kind_for_deadline: &str,
    p: &Path,
    errs: &mut Vec<FieldError>,
) {
    let Some(t) = template else {
        errs.push(FieldError::required(p));
        return;
    };
    let labels = t.metadata.as_ref().and_then(|m| m.labels.as_ref());
    if matches == Some(false) {
        errs.push(FieldError::invalid(
            p.child("metadata").child("labels"),
            meta::go_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(pod::validate_template(t, p));
    let spec = t.spec.clone().unwrap_or_default();
    let restart = spec.restart_policy.as_deref().unwrap_or("");
    if restart != "Always" {
        errs.push(FieldError::not_supported(p.child("spec").child("restartPolicy"), restart, &["Always"]));
    }
    if spec.active_deadline_seconds.is_some() {
        errs.push(FieldError::forbidden(
            p.child("spec").child("activeDeadlineSeconds"),
            format!("activeDeadlineSeconds in {kind_for_deadline} is not Supported"),
        ));
    }
}

pub(crate) fn validate_replication_controller(rc: &ReplicationController, old: Option<&ReplicationController>) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    let mut errs = match old {
        Some(o) => meta::validate_object_meta_update(&rc.metadata, &o.metadata, &mp),
        None => Vec::new(),
    };
    errs.extend(meta::validate_object_meta(&rc.metadata, true, NameRule::Dns1123Subdomain, &mp));
    let sp = Path::new("spec");
    let spec = rc.spec.clone().unwrap_or_default();
    non_negative(spec.min_ready_seconds, &sp.child("minReadySeconds"), &mut errs);
    let selector: &BTreeMap<String, String> = &spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        errs.push(FieldError::required(sp.child("selector")));
    }
    non_negative(spec.replicas, &sp.child("replicas"), &mut errs);
    // An empty RC selector matches nothing and is reported on its own.
    let matches = (!selector.is_empty()).then(|| {
        let labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref());
        selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    });
    validate_controller_template(spec.template.as_ref(), matches, "ReplicationController", &sp.child("template"), &mut errs);
    errs
}

/// The apps/v1 selector rules: required, strictly valid, non-empty, and
/// matching the template's labels.
fn validate_apps_selector(
    sel: &LabelSelector,
    template: Option<&PodTemplateSpec>,
    kind_for_deadline: &str,
    sp: &Path,
    errs: &mut Vec<FieldError>,
) {
    let selp = sp.child("selector");
    // The typed round-trip turns an absent selector into `{}`, so both read
    // as missing; Kubernetes reports `{}` as "empty selector is invalid".
    let missing = meta::selector_is_empty(sel);
    if missing {
        errs.push(FieldError::required(&selp));
    } else {
        errs.extend(meta::validate_label_selector(sel, &selp));
    }
    if !meta::selector_is_well_formed(sel) {
        // Kubernetes cannot build a selector from it, and skips the template.
        errs.push(FieldError::invalid(&selp, meta::go_selector(sel), "invalid label selector"));
        return;
    }
    // A nil selector matches nothing in Kubernetes, so a missing one is also
    // reported as not matching the template.
    let labels = template.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref());
    let matches = !missing && meta::selector_matches(sel, labels);
    validate_controller_template(template, Some(matches), kind_for_deadline, &sp.child("template"), errs);
}

fn selector_immutable(new: &LabelSelector, old: &LabelSelector, errs: &mut Vec<FieldError>) {
    if new != old {
        errs.push(FieldError::invalid(Path::new("spec").child("selector"), meta::go_selector(new), IMMUTABLE));
    }
}

pub(crate) fn validate_replica_set(rs: &ReplicaSet, old: Option<&ReplicaSet>) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    let mut errs = match old {
        Some(o) => meta::validate_object_meta_update(&rs.metadata, &o.metadata, &mp),
        None => Vec::new(),
    };
    errs.extend(meta::validate_object_meta(&rs.metadata, true, NameRule::Dns1123Subdomain, &mp));
    let sp = Path::new("spec");
    let spec = rs.spec.clone().unwrap_or_default();
    non_negative(spec.replicas, &sp.child("replicas"), &mut errs);
    non_negative(spec.min_ready_seconds, &sp.child("minReadySeconds"), &mut errs);
    validate_apps_selector(&spec.selector, spec.template.as_ref(), "ReplicaSet", &sp, &mut errs);
    if let Some(o) = old {
        selector_immutable(&spec.selector, &o.spec.clone().unwrap_or_default().selector, &mut errs);
    }
    errs
}

/// `getIntOrPercentValue`: the number, whether written as `3` or `3%`.
fn int_or_percent_value(v: &IntOrString) -> i64 {
    match v {
        IntOrString::Int(i) => i64::from(*i),
        IntOrString::String(s) => names::percent(s).unwrap_or(0),
    }
}

fn validate_positive_int_or_percent(v: &IntOrString, p: &Path, errs: &mut Vec<FieldError>) {
    match v {
        IntOrString::String(s) => {
            if let Err(m) = names::percent(s) {
                errs.push(FieldError::invalid(p, s, m));
            }
        }
        IntOrString::Int(i) => non_negative(Some(*i), p, errs),
    }
}

fn validate_strategy(strategy: Option<&DeploymentStrategy>, p: &Path, errs: &mut Vec<FieldError>) {
    let default = DeploymentStrategy::default();
    let strategy = strategy.unwrap_or(&default);
    match strategy.type_.as_deref().unwrap_or("") {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(p.child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'"));
            }
        }
        "RollingUpdate" => match &strategy.rolling_update {
            None => errs.push(FieldError {
                detail: "this should be defaulted and never be nil".into(),
                ..FieldError::required(p.child("rollingUpdate"))
            }),
            Some(ru) => {
                let rp = p.child("rollingUpdate");
                let zero = IntOrString::Int(0);
                let unavailable = ru.max_unavailable.as_ref().unwrap_or(&zero);
                let surge = ru.max_surge.as_ref().unwrap_or(&zero);
                validate_positive_int_or_percent(unavailable, &rp.child("maxUnavailable"), errs);
                validate_positive_int_or_percent(surge, &rp.child("maxSurge"), errs);
                if int_or_percent_value(unavailable) == 0 && int_or_percent_value(surge) == 0 {
                    errs.push(FieldError::invalid(
                        rp.child("maxUnavailable"),
                        int_or_string(unavailable),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                if let IntOrString::String(s) = unavailable
                    && names::percent(s).is_ok_and(|v| v > 100)
                {
                    errs.push(FieldError::invalid(rp.child("maxUnavailable"), s, "must not be greater than 100%"));
                }
            }
        },
        other => errs.push(FieldError::not_supported(p, other, &["Recreate", "RollingUpdate"])),
    }
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

pub(crate) fn validate_deployment(d: &Deployment, old: Option<&Deployment>) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    let mut errs = match old {
        Some(o) => meta::validate_object_meta_update(&d.metadata, &o.metadata, &mp),
        None => Vec::new(),
    };
    errs.extend(meta::validate_object_meta(&d.metadata, true, NameRule::Dns1123Subdomain, &mp));
    let sp = Path::new("spec");
    let spec = d.spec.clone().unwrap_or_default();
    non_negative(spec.replicas, &sp.child("replicas"), &mut errs);
    // Deployments share the ReplicaSet template rules, messages included.
    validate_apps_selector(&spec.selector, Some(&spec.template), "ReplicaSet", &sp, &mut errs);
    validate_strategy(spec.strategy.as_ref(), &sp.child("strategy"), &mut errs);
    non_negative(spec.min_ready_seconds, &sp.child("minReadySeconds"), &mut errs);
    non_negative(spec.revision_history_limit, &sp.child("revisionHistoryLimit"), &mut errs);
    if let Some(pds) = spec.progress_deadline_seconds {
        non_negative(Some(pds), &sp.child("progressDeadlineSeconds"), &mut errs);
        if pds <= spec.min_ready_seconds.unwrap_or(0) {
            errs.push(FieldError::invalid(sp.child("progressDeadlineSeconds"), pds, "must be greater than minReadySeconds"));
        }
    }
    if let Some(o) = old {
        selector_immutable(&spec.selector, &o.spec.clone().unwrap_or_default().selector, &mut errs);
    }
    errs
}
