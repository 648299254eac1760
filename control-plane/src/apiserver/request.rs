//! Turning a URL into what it addresses: the resource, namespace, name and
//! subresource, as Kubernetes' `RequestInfoFactory` does, plus the query
//! options of list, watch, write and delete calls.

use hawser_api::ApiError;
use hawser_api::resources::{self, ResourceInfo};
use std::collections::HashMap;

/// What a resource URL names.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: &'static ResourceInfo,
    /// Set for namespaced resources addressed within a namespace.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// The object's name, or a 400 when the URL names a collection.
    pub fn name(&self) -> Result<&str, ApiError> {
        self.name.as_deref().ok_or_else(|| ApiError::bad_request("a resource name is required for this operation"))
    }
}

/// Parses `/api/v1/...` and `/apis/<group>/<version>/...` resource paths.
/// `Ok(None)` means the path is not a resource path (discovery and others).
pub fn parse_path(path: &str) -> Result<Option<Target>, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return Ok(None),
    };
    let not_found = || ApiError::path_not_found(path);
    // `namespaces/<ns>` and `namespaces/<ns>/status` address the namespace
    // itself; `namespaces/<ns>/<plural>/...` a resource inside it.
    let (namespace, plural, name, sub) = match rest {
        ["namespaces"] => (None, "namespaces", None, None),
        ["namespaces", ns] => (None, "namespaces", Some(*ns), None),
        ["namespaces", ns, "status"] => (None, "namespaces", Some(*ns), Some("status")),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        [plural] => (None, *plural, None, None),
        [plural, name] => (None, *plural, Some(*name), None),
        [plural, name, sub] => (None, *plural, Some(*name), Some(*sub)),
        _ => return Err(not_found()),
    };
    let info = resources::lookup(group, version, plural).ok_or_else(not_found)?;
    if namespace.is_some() && !info.namespaced {
        return Err(not_found());
    }
    if let Some(sub) = sub
        && info.subresource(sub).is_none()
    {
        return Err(not_found());
    }
    Ok(Some(Target {
        info,
        namespace: namespace.filter(|_| info.namespaced).map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    }))
}

/// The query parameters, decoded once.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Self(raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.get(key).map(|v| v.parse().map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}")))).transpose()
    }

    /// `fieldValidation`: Strict, Warn (the default) or Ignore.
    pub fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.get("fieldValidation") {
            None | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Supported values are: Ignore, Strict, Warn"
            ))),
        }
    }

    /// `dryRun=All` runs every check and writes nothing.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("Invalid dry run value: {other}; supported values: All"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

/// What the client accepts back, from the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Object,
    /// `application/json;as=Table;v=v1;g=meta.k8s.io`
    Table,
}

impl Render {
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants_table = accept.is_some_and(|a| {
            a.split(',').any(|media| {
                let params: Vec<&str> = media.split(';').map(str::trim).collect();
                params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io") && params.contains(&"v=v1")
            })
        });
        if wants_table { Self::Table } else { Self::Object }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        parse_path(path).unwrap().unwrap()
    }

    #[test]
    fn namespaced_and_cluster_paths_resolve_like_kubernetes() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (t.info.plural, t.namespace.as_deref(), t.name.as_deref(), t.subresource.as_deref()),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = target("/api/v1/pods");
        assert_eq!((t.info.plural, t.namespace, t.name), ("pods", None, None));
        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!((t.info.plural, t.name.as_deref(), t.subresource), ("namespaces", Some("kube-system"), None));
        let t = target("/api/v1/namespaces/kube-system/status");
        assert_eq!((t.info.plural, t.name.as_deref(), t.subresource.as_deref()), ("namespaces", Some("kube-system"), Some("status")));
        let t = target("/apis/apps/v1/namespaces/n/deployments/d/scale");
        assert_eq!((t.info.kind, t.subresource.as_deref()), ("Deployment", Some("scale")));
        let t = target("/api/v1/nodes/n1");
        assert_eq!((t.info.kind, t.namespace, t.name.as_deref()), ("Node", None, Some("n1")));
    }

    #[test]
    fn unknown_resources_and_subresources_are_not_found() {
        assert_eq!(parse_path("/api/v1/widgets").unwrap_err().code, 404);
        assert_eq!(parse_path("/api/v1/namespaces/default/pods/web/exec2").unwrap_err().code, 404);
        assert!(parse_path("/api/v1").unwrap().is_none());
        assert!(parse_path("/version").unwrap().is_none());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&limit=5"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.number::<usize>("limit").unwrap(), Some(5));
    }

    #[test]
    fn kubectl_table_accept_header_asks_for_a_table() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(Render::from_accept(Some(kubectl)), Render::Table);
        assert_eq!(Render::from_accept(Some("application/json")), Render::Object);
    }
}
