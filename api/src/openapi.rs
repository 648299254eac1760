//! The OpenAPI v3 documents kubectl needs: `GET /openapi/v3` (the root, one
//! entry per document) and `GET /openapi/v3/<path>` (one document per API
//! group-version, plus the discovery documents `api` and `apis`).
//!
//! kubectl relies on them for more than `explain`:
//! - `apply`, `create` and `apply --server-side` look for a `patch` operation
//!   of the object's kind that lists the `fieldValidation` query parameter;
//!   without it they fall back to OpenAPI v2 (protobuf only) and fail;
//! - client-side `apply` computes its strategic merge patch from the schemas'
//!   `x-kubernetes-patch-strategy`/`x-kubernetes-patch-merge-key` when the
//!   kind's patch operation accepts `application/strategic-merge-patch+json`.
//!
//! Everything is derived from what we serve ([`crate::resources`]) and from
//! k8s-openapi's schemars schemas, which already carry the Kubernetes schema
//! names and descriptions. The schemas are reshaped into OpenAPI 3.0 (kube-
//! openapi's parser rejects JSON Schema-only forms), and the few facts
//! k8s-openapi's schemas lack are added here: kind annotations
//! (`x-kubernetes-group-version-kind`), the `…List` kinds and the patch
//! strategies of [`PATCH_STRATEGIES`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v1 as autoscaling, coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::transform::RemoveRefSiblings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::resources::{GROUPS, RESOURCES, ResourceInfo, VERBS, group_version, in_group_version};

const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";

/// How a field merges in a strategic merge patch: the `patchStrategy` and
/// `patchMergeKey` tags of the Kubernetes API types (k8s.io/api v0.33),
/// published as `x-kubernetes-patch-strategy`/`x-kubernetes-patch-merge-key`.
/// Limited to the types reachable from the kinds we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchStrategy {
    /// Schema (type) name, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub schema: &'static str,
    /// JSON field name.
    pub field: &'static str,
    /// `merge`, `retainKeys` or `merge,retainKeys`.
    pub strategy: &'static str,
    /// Key identifying list items (merge strategy on lists of objects).
    pub merge_key: Option<&'static str>,
}

macro_rules! strategies {
    ($($schema:literal . $field:literal => $strategy:literal $(by $key:literal)?;)*) => {
        &[$(PatchStrategy { schema: $schema, field: $field, strategy: $strategy, merge_key: strategies!(@key $($key)?) }),*]
    };
    (@key $key:literal) => { Some($key) };
    (@key) => { None };
}

/// See [`PatchStrategy`].
pub static PATCH_STRATEGIES: &[PatchStrategy] = strategies! {
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"."finalizers" => "merge";
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"."ownerReferences" => "merge" by "uid";
    "io.k8s.api.core.v1.Container"."ports" => "merge" by "containerPort";
    "io.k8s.api.core.v1.Container"."env" => "merge" by "name";
    "io.k8s.api.core.v1.Container"."volumeMounts" => "merge" by "mountPath";
    "io.k8s.api.core.v1.Container"."volumeDevices" => "merge" by "devicePath";
    "io.k8s.api.core.v1.EphemeralContainer"."ports" => "merge" by "containerPort";
    "io.k8s.api.core.v1.EphemeralContainer"."env" => "merge" by "name";
    "io.k8s.api.core.v1.EphemeralContainer"."volumeMounts" => "merge" by "mountPath";
    "io.k8s.api.core.v1.EphemeralContainer"."volumeDevices" => "merge" by "devicePath";
    "io.k8s.api.core.v1.ContainerStatus"."volumeMounts" => "merge" by "mountPath";
    "io.k8s.api.core.v1.ContainerStatus"."allocatedResourcesStatus" => "merge" by "name";
    "io.k8s.api.core.v1.PodSpec"."volumes" => "merge,retainKeys" by "name";
    "io.k8s.api.core.v1.PodSpec"."initContainers" => "merge" by "name";
    "io.k8s.api.core.v1.PodSpec"."containers" => "merge" by "name";
    "io.k8s.api.core.v1.PodSpec"."ephemeralContainers" => "merge" by "name";
    "io.k8s.api.core.v1.PodSpec"."imagePullSecrets" => "merge" by "name";
    "io.k8s.api.core.v1.PodSpec"."hostAliases" => "merge" by "ip";
    "io.k8s.api.core.v1.PodSpec"."topologySpreadConstraints" => "merge" by "topologyKey";
    "io.k8s.api.core.v1.PodSpec"."schedulingGates" => "merge" by "name";
    "io.k8s.api.core.v1.PodSpec"."resourceClaims" => "merge,retainKeys" by "name";
    "io.k8s.api.core.v1.PodStatus"."conditions" => "merge" by "type";
    "io.k8s.api.core.v1.PodStatus"."hostIPs" => "merge" by "ip";
    "io.k8s.api.core.v1.PodStatus"."podIPs" => "merge" by "ip";
    "io.k8s.api.core.v1.PodStatus"."resourceClaimStatuses" => "merge,retainKeys" by "name";
    "io.k8s.api.core.v1.ReplicationControllerStatus"."conditions" => "merge" by "type";
    "io.k8s.api.core.v1.ServiceSpec"."ports" => "merge" by "port";
    "io.k8s.api.core.v1.ServiceStatus"."conditions" => "merge" by "type";
    "io.k8s.api.core.v1.NodeSpec"."podCIDRs" => "merge";
    "io.k8s.api.core.v1.NodeStatus"."conditions" => "merge" by "type";
    "io.k8s.api.core.v1.NodeStatus"."addresses" => "merge" by "type";
    "io.k8s.api.core.v1.NamespaceStatus"."conditions" => "merge" by "type";
    "io.k8s.api.apps.v1.DeploymentSpec"."strategy" => "retainKeys";
    "io.k8s.api.apps.v1.DeploymentStatus"."conditions" => "merge" by "type";
    "io.k8s.api.apps.v1.ReplicaSetStatus"."conditions" => "merge" by "type";
};

/// The root document: `{"paths": {"api/v1": {"serverRelativeURL": ...}, ...}}`,
/// each URL carrying the hash of its document so clients can cache it.
pub fn v3_root() -> Value {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|(name, doc)| (name.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{name}?hash={}", doc.hash)})))
        .collect();
    json!({ "paths": paths })
}

/// The document for `api/v1`, `apis/apps/v1`, ... (the path after
/// `/openapi/v3/`), or `None` when we serve no such document.
pub fn v3_document(path: &str) -> Option<Arc<Value>> {
    documents().get(normalize(path)).map(|doc| doc.value.clone())
}

/// The document serialized as JSON: the exact bytes whose hash the root
/// advertises, so a server can send them without re-serializing.
pub fn v3_document_bytes(path: &str) -> Option<Arc<[u8]>> {
    documents().get(normalize(path)).map(|doc| doc.bytes.clone())
}

/// The hash the root advertises for a document (uppercase hex).
pub fn v3_document_hash(path: &str) -> Option<&'static str> {
    documents().get(normalize(path)).map(|doc| doc.hash.as_str())
}

fn normalize(path: &str) -> &str {
    path.trim_matches('/')
}

struct Document {
    value: Arc<Value>,
    bytes: Arc<[u8]>,
    hash: String,
}

/// Every document, built once: generating the schemas walks the whole type
/// tree of the API, and the documents never change while the server runs.
fn documents() -> &'static BTreeMap<String, Document> {
    static DOCUMENTS: OnceLock<BTreeMap<String, Document>> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        let mut docs = BTreeMap::new();
        let mut core_versions: Vec<&str> = RESOURCES.iter().filter(|r| r.group.is_empty()).map(|r| r.version).collect();
        core_versions.dedup();
        for version in core_versions {
            docs.insert(format!("api/{version}"), group_version_document("", version));
        }
        for (group, version) in GROUPS {
            docs.insert(format!("apis/{group}/{version}"), group_version_document(group, version));
        }
        docs.insert("api".into(), discovery_document::<meta::APIVersions>("/api/", "getCoreAPIVersions", "core"));
        docs.insert("apis".into(), discovery_document::<meta::APIGroupList>("/apis/", "getAPIVersions", "apis"));
        docs.into_iter()
            .map(|(name, value)| {
                let bytes: Arc<[u8]> = serde_json::to_vec(&value).expect("a JSON value serializes").into();
                let hash = fnv1a_128(&bytes);
                (name, Document { value: Arc::new(value), bytes, hash })
            })
            .collect()
    })
}

/// FNV-1a, 128 bits, in uppercase hex: a stable content hash (it never
/// changes between builds or Rust versions), which is all a cache key needs.
fn fnv1a_128(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let hash = bytes.iter().fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    format!("{hash:032X}")
}

// ---------------------------------------------------------------------------
// Schemas

/// A generator producing OpenAPI 3.0 schemas referenced as
/// `#/components/schemas/<Kubernetes name>`. `$ref` keeps its sibling
/// `description`, as the Kubernetes API server publishes it (and as kubectl
/// explain reads it), instead of being wrapped in `allOf`.
fn generator() -> SchemaGenerator {
    SchemaSettings::openapi3()
        .with(|s| {
            s.meta_schema = None;
            s.transforms.retain(|t| !t.is::<RemoveRefSiblings>());
        })
        .into_generator()
}

/// Registers the schema of the kind `api_version`/`kind` and returns its
/// schema name, or `None` for a kind we have no type for.
fn kind_schema(generator: &mut SchemaGenerator, api_version: &str, kind: &str) -> Option<String> {
    macro_rules! kinds {
        ($($ty:ty),* $(,)?) => {
            $(
                if api_version == <$ty as k8s_openapi::Resource>::API_VERSION && kind == <$ty as k8s_openapi::Resource>::KIND {
                    generator.subschema_for::<$ty>();
                    return Some(<$ty as JsonSchema>::schema_name().into_owned());
                }
            )*
        };
    }
    kinds!(
        core::Namespace,
        core::Pod,
        core::Service,
        core::Endpoints,
        core::ReplicationController,
        core::Node,
        core::Event,
        core::ConfigMap,
        core::Secret,
        core::Binding,
        apps::ReplicaSet,
        apps::Deployment,
        coordination::Lease,
        discovery::EndpointSlice,
        autoscaling::Scale,
    );
    None
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMA_REF_PREFIX}{name}") })
}

/// A kind served at one group-version, with the names of its schemas.
struct ServedKind<'a> {
    info: &'a ResourceInfo,
    schema: String,
    list_schema: String,
    /// Subresource name → schema of the kind it speaks, for those with one.
    sub_schemas: BTreeMap<&'static str, String>,
}

fn group_version_document(group: &str, version: &str) -> Value {
    let mut generator = generator();
    let mut served = Vec::new();
    // Kinds spoken by subresources (autoscaling/v1 Scale, Binding), each once.
    let mut sub_kinds: BTreeMap<String, Value> = BTreeMap::new();
    for info in in_group_version(group, version) {
        let Some(schema) = kind_schema(&mut generator, &info.api_version(), info.kind) else {
            continue;
        };
        let mut sub_schemas = BTreeMap::new();
        for sub in info.subresources.iter().filter(|s| !s.kind.is_empty()) {
            if let Some(name) = kind_schema(&mut generator, &group_version(sub.group, sub.version), sub.kind) {
                sub_kinds.entry(name.clone()).or_insert_with(|| gvk(sub.group, sub.version, sub.kind));
                sub_schemas.insert(sub.name, name);
            }
        }
        let list_schema = format!("{schema}List");
        served.push(ServedKind { info, schema, list_schema, sub_schemas });
    }
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::WatchEvent<core::Pod>>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::APIResourceList>();
    let mut schemas = generator.take_definitions(true);

    for kind in &served {
        let list = list_schema(&schemas, kind);
        schemas.insert(kind.list_schema.clone(), list);
    }
    for schema in schemas.values_mut() {
        sanitize(schema);
    }
    reshape_for_kubernetes(&mut schemas);
    add_patch_strategies(&mut schemas);

    // Kind annotations: what kubectl matches objects against.
    let mut annotate = |name: &str, gvks: Vec<Value>| {
        if let Some(Value::Object(schema)) = schemas.get_mut(name) {
            schema.insert("x-kubernetes-group-version-kind".into(), Value::Array(gvks));
        }
    };
    for kind in &served {
        let info = kind.info;
        annotate(&kind.schema, vec![gvk(info.group, info.version, info.kind)]);
        annotate(&kind.list_schema, vec![gvk(info.group, info.version, &info.list_kind())]);
    }
    for (name, kind_gvk) in &sub_kinds {
        annotate(name, vec![kind_gvk.clone()]);
    }
    // The option and status kinds are registered in every group we serve.
    let every_group = |kind: &str| -> Vec<Value> {
        let mut gvks = vec![gvk("", "v1", kind)];
        gvks.extend(GROUPS.iter().map(|(g, v)| gvk(g, v, kind)));
        gvks
    };
    annotate(DELETE_OPTIONS, every_group("DeleteOptions"));
    annotate(WATCH_EVENT, every_group("WatchEvent"));
    annotate(STATUS, vec![gvk("", "v1", "Status")]);
    annotate(API_RESOURCE_LIST, vec![gvk("", "v1", "APIResourceList")]);

    let mut paths = Map::new();
    let prefix = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    let tag = tag(group, version);
    paths.insert(
        format!("{prefix}/"),
        json!({"get": {
            "description": "get available resources",
            "operationId": format!("get{}APIResources", operation_group(group, version)),
            "tags": [tag],
            "responses": responses(&[("200", "OK", json_content(schema_ref(API_RESOURCE_LIST)))]),
        }}),
    );
    for kind in &served {
        resource_paths(&mut paths, &prefix, &tag, kind);
    }

    document(paths, schemas)
}

/// `<Kind>List`, built like the Kubernetes list types: standard list
/// metadata and the items.
fn list_schema(schemas: &Map<String, Value>, kind: &ServedKind) -> Value {
    let item = schemas.get(&kind.schema);
    let property = |name: &str| item.and_then(|s| s.pointer(&format!("/properties/{name}"))).cloned().unwrap_or(json!({"type": "string"}));
    json!({
        "description": format!("{} is a list of {} objects.", kind.info.list_kind(), kind.info.kind),
        "type": "object",
        "properties": {
            "apiVersion": property("apiVersion"),
            "kind": property("kind"),
            "items": {
                "description": format!("List of {}.", kind.info.plural),
                "type": "array",
                "items": schema_ref(&kind.schema),
            },
            "metadata": {
                "$ref": format!("{SCHEMA_REF_PREFIX}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            },
        },
        "required": ["items"],
    })
}

/// Brings a schemars schema to OpenAPI 3.0 as kube-openapi parses it:
/// a single `type` (nullability as `nullable`), no JSON Schema-only keywords.
fn sanitize(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if let Some(Value::Array(types)) = map.get("type").cloned() {
        let non_null: Vec<&Value> = types.iter().filter(|t| t.as_str() != Some("null")).collect();
        if non_null.len() < types.len() {
            map.insert("nullable".into(), true.into());
        }
        match non_null.as_slice() {
            [single] => {
                map.insert("type".into(), (*single).clone());
            }
            _ => {
                // Several types: OpenAPI 3.0 says so with oneOf.
                map.remove("type");
                map.insert("oneOf".into(), non_null.iter().map(|t| json!({ "type": t })).collect());
            }
        }
    }
    if let Some(value) = map.remove("const") {
        map.insert("enum".into(), json!([value]));
    }
    if let Some(Value::Array(examples)) = map.remove("examples")
        && let Some(first) = examples.into_iter().next()
    {
        map.entry("example").or_insert(first);
    }
    map.retain(|key, _| key.starts_with("x-") || OPENAPI3_SCHEMA_KEYWORDS.contains(&key.as_str()));
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" => {
                if let Value::Object(props) = value {
                    props.values_mut().for_each(sanitize);
                }
            }
            "items" | "additionalProperties" | "not" => sanitize(value),
            "allOf" | "oneOf" | "anyOf" => {
                if let Value::Array(subs) = value {
                    subs.iter_mut().for_each(sanitize);
                }
            }
            _ => {}
        }
    }
}

/// The keywords of an OpenAPI 3.0 Schema Object (besides `x-` extensions).
const OPENAPI3_SCHEMA_KEYWORDS: &[&str] = &[
    "$ref",
    "title",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "type",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "items",
    "properties",
    "additionalProperties",
    "description",
    "format",
    "default",
    "nullable",
    "discriminator",
    "readOnly",
    "writeOnly",
    "xml",
    "externalDocs",
    "example",
    "deprecated",
];

/// Where k8s-openapi's schemas differ from what the Kubernetes API server
/// publishes, publish what Kubernetes does.
fn reshape_for_kubernetes(schemas: &mut Map<String, Value>) {
    // k8s-openapi describes these two with `x-kubernetes-int-or-string` and no
    // type; Kubernetes' v3 documents spell the alternatives out.
    if let Some(Value::Object(s)) = schemas.get_mut("io.k8s.apimachinery.pkg.util.intstr.IntOrString") {
        s.remove("x-kubernetes-int-or-string");
        s.insert("format".into(), "int-or-string".into());
        s.insert("oneOf".into(), json!([{"type": "integer"}, {"type": "string"}]));
    }
    if let Some(Value::Object(s)) = schemas.get_mut("io.k8s.apimachinery.pkg.api.resource.Quantity") {
        s.remove("x-kubernetes-int-or-string");
        s.insert("oneOf".into(), json!([{"type": "string"}, {"type": "number"}]));
    }
    // k8s-openapi makes `metadata` a required field of every resource, for
    // Rust's convenience. In Kubernetes only core/v1 Event requires it.
    for (name, schema) in schemas.iter_mut() {
        if name == "io.k8s.api.core.v1.Event" {
            continue;
        }
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|r| r != "metadata");
            if required.is_empty() {
                schema.as_object_mut().map(|s| s.remove("required"));
            }
        }
    }
}

fn add_patch_strategies(schemas: &mut Map<String, Value>) {
    for s in PATCH_STRATEGIES {
        let Some(Value::Object(field)) =
            schemas.get_mut(s.schema).and_then(|schema| schema.pointer_mut(&format!("/properties/{}", s.field)))
        else {
            continue;
        };
        field.insert("x-kubernetes-patch-strategy".into(), s.strategy.into());
        if let Some(key) = s.merge_key {
            field.insert("x-kubernetes-patch-merge-key".into(), key.into());
        }
    }
}

/// The `api` and `apis` documents: the discovery endpoints.
fn discovery_document<T: JsonSchema>(path: &str, operation_id: &str, tag: &str) -> Value {
    let mut generator = generator();
    generator.subschema_for::<T>();
    let name = T::schema_name().into_owned();
    let mut schemas = generator.take_definitions(true);
    for schema in schemas.values_mut() {
        sanitize(schema);
    }
    let kind = name.rsplit('.').next().unwrap_or_default().to_string();
    if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
        schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk("", "v1", &kind)]));
    }
    let mut paths = Map::new();
    paths.insert(
        path.to_string(),
        json!({"get": {
            "description": "get available API versions",
            "operationId": operation_id,
            "tags": [tag],
            "responses": responses(&[("200", "OK", json_content(schema_ref(&name)))]),
        }}),
    );
    document(paths, schemas)
}

fn document(paths: Map<String, Value>, schemas: Map<String, Value>) -> Value {
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Hawser", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {"type": "apiKey", "in": "header", "name": "authorization", "description": "Bearer Token authentication"},
            },
        },
        "security": [{"BearerToken": []}],
    })
}

// ---------------------------------------------------------------------------
// Paths and operations

/// `CoreV1`, `AppsV1`, `CoordinationV1`: the group-version part of
/// Kubernetes operation ids (`.k8s.io` dropped, dotted parts capitalized).
fn operation_group(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group.trim_end_matches(".k8s.io") };
    group.split('.').map(capitalize).chain(std::iter::once(capitalize(version))).collect()
}

/// `core_v1`, `apps_v1`, `coordination_v1`.
fn tag(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group.trim_end_matches(".k8s.io") };
    let mut parts = group.split('.');
    let first = parts.next().unwrap_or_default().to_string();
    format!("{}_{version}", parts.fold(first, |acc, p| acc + &capitalize(p)))
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn param(name: &str, location: &str, ty: &str, description: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "description": description, "schema": {"type": ty}});
    if location == "path" {
        p["required"] = true.into();
    }
    p
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    param(name, "query", ty, description)
}

fn pretty() -> Value {
    query("pretty", "string", "If 'true', then the output is pretty printed.")
}

fn dry_run() -> Value {
    query("dryRun", "string", "When present, indicates that modifications should not be persisted. Valid value: All.")
}

/// The parameters of every writing operation. kubectl enables server-side
/// field validation for a kind only when its patch operation lists
/// `fieldValidation`.
fn write_params() -> Vec<Value> {
    vec![
        dry_run(),
        query("fieldManager", "string", "A name for the actor making these changes, recorded in metadata.managedFields."),
        query(
            "fieldValidation",
            "string",
            "How the server treats unknown and duplicate fields in the request body: Ignore (drop them), Warn (drop them with a warning) or Strict (fail the request).",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", "boolean", "Ask a watch for BOOKMARK events."),
        query("continue", "string", "The continue token of a previous, limited list, to get the next page."),
        query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        query("limit", "integer", "The most items to return; more remain available through the continue token."),
        query("resourceVersion", "string", "Which resource version the list is served from, or a watch starts after."),
        query("resourceVersionMatch", "string", "How resourceVersion applies to a list: Exact or NotOlderThan."),
        query("timeoutSeconds", "integer", "Timeout for the list/watch call."),
        query("watch", "boolean", "Watch for changes to the described resources and return them as a stream of events."),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted; zero means delete immediately.",
        ),
        query("orphanDependents", "boolean", "Deprecated: use propagationPolicy."),
        query("propagationPolicy", "string", "Whether and how dependents are garbage collected: Orphan, Background or Foreground."),
    ]
}

fn log_params() -> Vec<Value> {
    vec![
        query("container", "string", "The container to stream logs of. Defaults to the only container if there is one."),
        query("follow", "boolean", "Follow the log stream of the pod."),
        query("limitBytes", "integer", "The number of bytes to read from the server before terminating the log output."),
        query("previous", "boolean", "Return the logs of the previous, terminated container."),
        query("sinceSeconds", "integer", "Only return logs newer than this many seconds."),
        query("tailLines", "integer", "The number of lines from the end of the logs to show."),
        query("timestamps", "boolean", "Prefix every line of log output with an RFC3339 timestamp."),
    ]
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn responses(entries: &[(&str, &str, Value)]) -> Value {
    let mut map = Map::new();
    for (code, description, content) in entries {
        map.insert(code.to_string(), json!({"description": description, "content": content}));
    }
    map.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(map)
}

/// The patch formats the API server accepts, each typed as a `Patch`.
fn patch_body() -> Value {
    let content: Map<String, Value> = [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ]
    .iter()
    .map(|ty| (ty.to_string(), json!({"schema": schema_ref(PATCH)})))
    .collect();
    json!({"content": content, "required": true})
}

struct Operation<'a> {
    action: &'a str,
    id: String,
    description: String,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
    gvk: Value,
}

impl Operation<'_> {
    fn into_json(self, tag: &str) -> Value {
        let mut op = json!({
            "description": self.description,
            "operationId": self.id,
            "tags": [tag],
            "responses": self.responses,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": self.gvk,
        });
        if !self.params.is_empty() {
            op["parameters"] = Value::Array(self.params);
        }
        if let Some(body) = self.body {
            op["requestBody"] = body;
        }
        op
    }
}

fn resource_paths(paths: &mut Map<String, Value>, prefix: &str, tag: &str, kind: &ServedKind) {
    let info = kind.info;
    let og = operation_group(info.group, info.version);
    let scope = if info.namespaced { "Namespaced" } else { "" };
    let ns_path = if info.namespaced { "/namespaces/{namespace}" } else { "" };
    let collection = format!("{prefix}{ns_path}/{}", info.plural);
    let item = format!("{collection}/{{name}}");
    let kind_gvk = gvk(info.group, info.version, info.kind);
    let object = || schema_ref(&kind.schema);
    let has = |verb: &str| VERBS.contains(&verb);

    let namespace_param = || param("namespace", "path", "string", "object name and auth scope, such as for teams and projects");
    let name_param = || param("name", "path", "string", &format!("name of the {}", info.kind));
    let mut collection_params = vec![pretty()];
    let mut item_params = vec![name_param(), pretty()];
    if info.namespaced {
        collection_params.insert(0, namespace_param());
        item_params.insert(1, namespace_param());
    }

    let mut collection_ops = Map::new();
    if has("list") {
        let op = Operation {
            action: "list",
            id: format!("list{og}{scope}{}", info.kind),
            description: format!("list or watch objects of kind {}", info.kind),
            params: list_params(),
            body: None,
            responses: list_responses(&kind.list_schema),
            gvk: kind_gvk.clone(),
        };
        collection_ops.insert("get".into(), op.into_json(tag));
    }
    if has("create") {
        let op = Operation {
            action: "post",
            id: format!("create{og}{scope}{}", info.kind),
            description: format!("create a {}", info.kind),
            params: write_params(),
            body: Some(json!({"content": json_content(object()), "required": true})),
            responses: responses(&[("200", "OK", json_content(object())), ("201", "Created", json_content(object()))]),
            gvk: kind_gvk.clone(),
        };
        collection_ops.insert("post".into(), op.into_json(tag));
    }
    if has("deletecollection") {
        let mut params = delete_params();
        params.extend(list_params().into_iter().filter(|p| p["name"] != "watch" && p["name"] != "allowWatchBookmarks"));
        let op = Operation {
            action: "deletecollection",
            id: format!("delete{og}Collection{scope}{}", info.kind),
            description: format!("delete collection of {}", info.kind),
            params,
            body: Some(json!({"content": json_content(schema_ref(DELETE_OPTIONS))})),
            responses: responses(&[("200", "OK", json_content(schema_ref(STATUS)))]),
            gvk: kind_gvk.clone(),
        };
        collection_ops.insert("delete".into(), op.into_json(tag));
    }
    if !collection_ops.is_empty() {
        collection_ops.insert("parameters".into(), Value::Array(collection_params));
        paths.insert(collection, Value::Object(collection_ops));
    }

    if info.namespaced && has("list") {
        let op = Operation {
            action: "list",
            id: format!("list{og}{}ForAllNamespaces", info.kind),
            description: format!("list or watch objects of kind {}", info.kind),
            params: list_params(),
            body: None,
            responses: list_responses(&kind.list_schema),
            gvk: kind_gvk.clone(),
        };
        paths.insert(format!("{prefix}/{}", info.plural), json!({"get": op.into_json(tag), "parameters": [pretty()]}));
    }

    let mut item_ops = Map::new();
    object_operations(&mut item_ops, tag, &format!("{og}{scope}{}", info.kind), info.kind, &kind_gvk, object, &|verb| has(verb));
    if !item_ops.is_empty() {
        item_ops.insert("parameters".into(), Value::Array(item_params.clone()));
        paths.insert(item.clone(), Value::Object(item_ops));
    }

    for sub in info.subresources {
        let sub_id = format!("{og}{scope}{}{}", info.kind, capitalize(sub.name));
        // A subresource without its own kind (status) speaks the parent's.
        let (sub_gvk, sub_schema) = if sub.kind.is_empty() {
            (kind_gvk.clone(), kind.schema.clone())
        } else {
            let Some(name) = kind.sub_schemas.get(sub.name) else {
                continue;
            };
            (gvk(sub.group, sub.version, sub.kind), name.clone())
        };
        let mut ops = Map::new();
        if sub.name == "log" {
            // Logs are plain text, read from the pod.
            let op = Operation {
                action: "get",
                id: format!("read{sub_id}"),
                description: format!("read log of the specified {}", info.kind),
                params: log_params(),
                body: None,
                responses: responses(&[("200", "OK", json!({"text/plain": {"schema": {"type": "string"}}}))]),
                gvk: sub_gvk,
            };
            ops.insert("get".into(), op.into_json(tag));
        } else {
            let sub_object = || schema_ref(&sub_schema);
            let description =
                if sub.kind.is_empty() { format!("{} of the specified {}", sub.name, info.kind) } else { sub.kind.to_string() };
            object_operations(&mut ops, tag, &sub_id, &description, &sub_gvk, sub_object, &|verb| sub.verbs.contains(&verb));
            if sub.verbs.contains(&"create") {
                let op = Operation {
                    action: "post",
                    id: format!("create{sub_id}"),
                    description: format!("create {} of a {}", sub.kind, info.kind),
                    params: write_params(),
                    body: Some(json!({"content": json_content(sub_object()), "required": true})),
                    responses: responses(&[("200", "OK", json_content(sub_object())), ("201", "Created", json_content(sub_object()))]),
                    gvk: sub_gvk.clone(),
                };
                ops.insert("post".into(), op.into_json(tag));
            }
        }
        if !ops.is_empty() {
            ops.insert("parameters".into(), Value::Array(item_params.clone()));
            paths.insert(format!("{item}/{}", sub.name), Value::Object(ops));
        }
    }
}

/// get (`read`), put (`replace`), patch and delete of one object.
fn object_operations(
    ops: &mut Map<String, Value>,
    tag: &str,
    id_suffix: &str,
    what: &str,
    op_gvk: &Value,
    object: impl Fn() -> Value,
    has: &dyn Fn(&str) -> bool,
) {
    if has("get") {
        let op = Operation {
            action: "get",
            id: format!("read{id_suffix}"),
            description: format!("read the specified {what}"),
            params: vec![],
            body: None,
            responses: responses(&[("200", "OK", json_content(object()))]),
            gvk: op_gvk.clone(),
        };
        ops.insert("get".into(), op.into_json(tag));
    }
    if has("update") {
        let op = Operation {
            action: "put",
            id: format!("replace{id_suffix}"),
            description: format!("replace the specified {what}"),
            params: write_params(),
            body: Some(json!({"content": json_content(object()), "required": true})),
            responses: responses(&[("200", "OK", json_content(object())), ("201", "Created", json_content(object()))]),
            gvk: op_gvk.clone(),
        };
        ops.insert("put".into(), op.into_json(tag));
    }
    if has("patch") {
        let mut params = write_params();
        params.push(query(
            "force",
            "boolean",
            "Force an apply request to take over fields owned by other managers. Only for apply patches.",
        ));
        let op = Operation {
            action: "patch",
            id: format!("patch{id_suffix}"),
            description: format!("partially update the specified {what}"),
            params,
            body: Some(patch_body()),
            responses: responses(&[("200", "OK", json_content(object())), ("201", "Created", json_content(object()))]),
            gvk: op_gvk.clone(),
        };
        ops.insert("patch".into(), op.into_json(tag));
    }
    if has("delete") {
        let op = Operation {
            action: "delete",
            id: format!("delete{id_suffix}"),
            description: format!("delete a {what}"),
            params: delete_params(),
            body: Some(json!({"content": json_content(schema_ref(DELETE_OPTIONS))})),
            responses: responses(&[("200", "OK", json_content(object())), ("202", "Accepted", json_content(object()))]),
            gvk: op_gvk.clone(),
        };
        ops.insert("delete".into(), op.into_json(tag));
    }
}

fn list_responses(list_schema: &str) -> Value {
    responses(&[(
        "200",
        "OK",
        json!({
            "application/json": {"schema": schema_ref(list_schema)},
            "application/json;stream=watch": {"schema": schema_ref(WATCH_EVENT)},
        }),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_documents() -> Vec<(String, Arc<Value>)> {
        let root = v3_root();
        root["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|name| (name.clone(), v3_document(name).unwrap_or_else(|| panic!("root lists {name} but it is not served"))))
            .collect()
    }

    fn doc(path: &str) -> Arc<Value> {
        v3_document(path).unwrap()
    }

    /// Every schema object in a document, with a path for messages.
    fn walk_schemas<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a Map<String, Value>)>) {
        let Value::Object(map) = value else { return };
        out.push((at.clone(), map));
        for (key, v) in map {
            match key.as_str() {
                "properties" => {
                    for (name, p) in v.as_object().unwrap() {
                        walk_schemas(p, format!("{at}.{name}"), out);
                    }
                }
                "items" | "additionalProperties" | "not" => walk_schemas(v, format!("{at}[{key}]"), out),
                "allOf" | "oneOf" | "anyOf" => {
                    for (i, s) in v.as_array().unwrap().iter().enumerate() {
                        walk_schemas(s, format!("{at}.{key}[{i}]"), out);
                    }
                }
                _ => {}
            }
        }
    }

    fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref" {
                        out.push(v.as_str().unwrap());
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    fn document_path(info: &ResourceInfo) -> String {
        if info.group.is_empty() { format!("api/{}", info.version) } else { format!("apis/{}/{}", info.group, info.version) }
    }

    fn patch_operations<'a>(document: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
        document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(path, item)| item.get("patch").map(|op| (path, op)))
            .filter(|(_, op)| op["x-kubernetes-group-version-kind"]["kind"] == kind)
            .collect()
    }

    #[test]
    fn root_lists_every_served_group_version_with_a_content_hash() {
        let root = v3_root();
        let paths = root["paths"].as_object().unwrap();
        for name in ["api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1", "apis/discovery.k8s.io/v1", "api", "apis"] {
            let url = paths[name]["serverRelativeURL"].as_str().unwrap();
            let hash = v3_document_hash(name).unwrap();
            assert_eq!(url, format!("/openapi/v3/{name}?hash={hash}"));
            assert_eq!(hash.len(), 32);
            assert_eq!(hash, fnv1a_128(&v3_document_bytes(name).unwrap()));
        }
        assert_eq!(paths.len(), 1 + GROUPS.len() + 2);
        assert!(v3_document("apis/batch/v1").is_none());
        assert!(v3_document("/api/v1/").is_some());
    }

    #[test]
    fn document_bytes_are_the_document() {
        let parsed: Value = serde_json::from_slice(&v3_document_bytes("api/v1").unwrap()).unwrap();
        assert_eq!(parsed, *doc("api/v1"));
        assert_eq!(doc("api/v1")["openapi"], "3.0.0");
    }

    #[test]
    fn hash_is_stable_and_content_sensitive() {
        assert_eq!(fnv1a_128(b""), "6C62272E07BB014262B821756295C58D");
        assert_ne!(fnv1a_128(b"{\"a\":1}"), fnv1a_128(b"{\"a\":2}"));
    }

    #[test]
    fn every_served_kind_and_its_list_carry_their_group_version_kind() {
        for info in RESOURCES {
            let document = doc(&document_path(info));
            let schemas = document["components"]["schemas"].as_object().unwrap();
            for kind in [info.kind.to_string(), info.list_kind()] {
                let expected = gvk(info.group, info.version, &kind);
                let found = schemas
                    .values()
                    .filter(|s| s["x-kubernetes-group-version-kind"].as_array().is_some_and(|g| g.contains(&expected)))
                    .count();
                assert_eq!(found, 1, "{kind} in {}", document_path(info));
            }
        }
    }

    #[test]
    fn scale_is_published_in_the_documents_of_scalable_kinds() {
        for path in ["api/v1", "apis/apps/v1"] {
            let scale = &doc(path)["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"];
            assert_eq!(scale["x-kubernetes-group-version-kind"], json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}]));
            assert!(scale["properties"]["spec"].is_object());
        }
        let d = doc("apis/apps/v1");
        let op = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Scale");
        assert_eq!(op["requestBody"]["content"]["application/merge-patch+json"]["schema"]["$ref"], format!("{SCHEMA_REF_PREFIX}{PATCH}"));
        assert_eq!(
            op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
        );
    }

    #[test]
    fn every_kind_patch_operation_lists_field_validation() {
        // kubectl takes the first patch operation of the kind it finds, in
        // any order, so all of them (status included) must list it.
        for info in RESOURCES {
            let document = doc(&document_path(info));
            let ops = patch_operations(&document, info.kind);
            assert!(!ops.is_empty(), "no patch operation for {}", info.kind);
            for (path, op) in ops {
                let names: Vec<&str> = op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "query")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                for required in ["fieldValidation", "fieldManager", "dryRun", "force"] {
                    assert!(names.contains(&required), "{path} patch lacks {required}");
                }
                assert!(op["requestBody"]["content"].get("application/strategic-merge-patch+json").is_some());
                assert_eq!(op["x-kubernetes-group-version-kind"], gvk(info.group, info.version, info.kind));
            }
        }
    }

    #[test]
    fn every_ref_resolves_within_its_document() {
        for (name, document) in all_documents() {
            let schemas = document["components"]["schemas"].as_object().unwrap();
            let mut refs = Vec::new();
            collect_refs(&document, &mut refs);
            assert!(!refs.is_empty());
            for r in refs {
                let target = r.strip_prefix(SCHEMA_REF_PREFIX).unwrap_or_else(|| panic!("{name}: foreign $ref {r}"));
                assert!(schemas.contains_key(target), "{name}: dangling $ref {r}");
            }
        }
    }

    #[test]
    fn schemas_use_only_openapi_3_0_keywords() {
        for (name, document) in all_documents() {
            let mut all = Vec::new();
            for (schema_name, schema) in document["components"]["schemas"].as_object().unwrap() {
                walk_schemas(schema, schema_name.clone(), &mut all);
            }
            for (at, schema) in all {
                for (key, value) in schema {
                    assert!(key.starts_with("x-") || OPENAPI3_SCHEMA_KEYWORDS.contains(&key.as_str()), "{name} {at}: keyword {key}");
                    if key == "type" {
                        assert!(value.is_string(), "{name} {at}: type {value}");
                    }
                    if key == "exclusiveMinimum" || key == "exclusiveMaximum" {
                        assert!(value.is_boolean(), "{name} {at}: {key} {value}");
                    }
                }
            }
        }
    }

    #[test]
    fn sanitize_turns_json_schema_forms_into_openapi_3_0() {
        let mut s = json!({
            "type": ["string", "null"], "$schema": "x", "const": "a", "examples": [1, 2],
            "properties": {"p": {"type": ["integer", "string"]}},
            "items": {"$id": "y", "type": "object"},
        });
        sanitize(&mut s);
        assert_eq!(
            s,
            json!({
                "type": "string", "nullable": true, "enum": ["a"], "example": 1,
                "properties": {"p": {"oneOf": [{"type": "integer"}, {"type": "string"}]}},
                "items": {"type": "object"},
            })
        );
    }

    #[test]
    fn schemas_keep_kubernetes_descriptions_for_explain() {
        let d = doc("api/v1");
        let schemas = &d["components"]["schemas"];
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(containers["items"]["$ref"], "#/components/schemas/io.k8s.api.core.v1.Container");
        assert!(containers["description"].as_str().unwrap().contains("List of containers belonging to the pod"));
        let spec = &schemas["io.k8s.api.core.v1.Pod"]["properties"]["spec"];
        assert_eq!(spec["$ref"], "#/components/schemas/io.k8s.api.core.v1.PodSpec");
        assert!(spec["description"].as_str().unwrap().starts_with("Specification of the desired behavior of the pod."));
        assert_eq!(schemas["io.k8s.api.core.v1.PodSpec"]["required"], json!(["containers"]));
    }

    #[test]
    fn metadata_is_optional_except_on_events_as_in_kubernetes() {
        let d = doc("api/v1");
        let schemas = &d["components"]["schemas"];
        assert!(schemas["io.k8s.api.core.v1.Pod"].get("required").is_none());
        assert!(schemas["io.k8s.api.core.v1.Event"]["required"].as_array().unwrap().contains(&json!("metadata")));
        assert_eq!(schemas["io.k8s.api.core.v1.Binding"]["required"], json!(["target"]));
    }

    #[test]
    fn int_or_string_and_quantity_spell_out_their_alternatives() {
        let d = doc("api/v1");
        let schemas = &d["components"]["schemas"];
        let ios = &schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(ios["format"], "int-or-string");
        assert_eq!(ios["oneOf"], json!([{"type": "integer"}, {"type": "string"}]));
        assert_eq!(schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]["oneOf"], json!([{"type": "string"}, {"type": "number"}]));
    }

    #[test]
    fn lists_merge_by_the_kubernetes_patch_merge_keys() {
        let d = doc("apis/apps/v1");
        let schemas = &d["components"]["schemas"];
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        let ports = &schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let strategy = &schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        assert!(strategy.get("x-kubernetes-patch-merge-key").is_none());
        let svc_ports = &doc("api/v1")["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(svc_ports["x-kubernetes-patch-merge-key"], "port");
    }

    #[test]
    fn every_patch_strategy_names_a_published_field() {
        let core = doc("api/v1");
        let apps = doc("apis/apps/v1");
        for s in PATCH_STRATEGIES {
            let field = [&core, &apps]
                .iter()
                .find_map(|d| d["components"]["schemas"].get(s.schema).and_then(|schema| schema["properties"].get(s.field)))
                .unwrap_or_else(|| panic!("{}.{} is not published", s.schema, s.field));
            // Merging by key only makes sense for lists; retainKeys alone is for structs.
            if s.strategy.contains("merge") {
                assert_eq!(field["type"], "array", "{}.{}", s.schema, s.field);
            }
            assert_eq!(field["x-kubernetes-patch-strategy"], s.strategy);
        }
    }

    #[test]
    fn explain_finds_pods_through_the_collection_path() {
        // kubectl explain maps a resource to its kind through the operation
        // of its collection path, then to the schema carrying that kind.
        let d = doc("api/v1");
        let get = &d["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
        assert_eq!(get["x-kubernetes-group-version-kind"], json!({"group": "", "kind": "Pod", "version": "v1"}));
        assert_eq!(get["x-kubernetes-action"], "list");
        assert_eq!(get["operationId"], "listCoreV1NamespacedPod");
        let nodes = &d["paths"]["/api/v1/nodes/{name}"];
        assert_eq!(nodes["get"]["operationId"], "readCoreV1Node");
        assert_eq!(nodes["parameters"].as_array().unwrap().len(), 2);
        assert!(d["paths"].get("/api/v1/namespaces/{namespace}/nodes").is_none());
        assert_eq!(d["paths"]["/api/v1/pods"]["get"]["operationId"], "listCoreV1PodForAllNamespaces");
    }

    #[test]
    fn subresource_paths_follow_the_registry() {
        let d = doc("api/v1");
        let paths = d["paths"].as_object().unwrap();
        let status = &paths["/api/v1/namespaces/{namespace}/pods/{name}/status"];
        assert_eq!(status["patch"]["operationId"], "patchCoreV1NamespacedPodStatus");
        assert_eq!(status["put"]["x-kubernetes-action"], "put");
        assert!(status.get("delete").is_none());
        let binding = &paths["/api/v1/namespaces/{namespace}/pods/{name}/binding"];
        assert_eq!(binding["post"]["x-kubernetes-group-version-kind"], json!({"group": "", "kind": "Binding", "version": "v1"}));
        assert!(binding.get("get").is_none());
        let log = &paths["/api/v1/namespaces/{namespace}/pods/{name}/log"];
        assert_eq!(log["get"]["responses"]["200"]["content"]["text/plain"]["schema"]["type"], "string");
        let rc_scale = &paths["/api/v1/namespaces/{namespace}/replicationcontrollers/{name}/scale"];
        assert_eq!(rc_scale["get"]["operationId"], "readCoreV1NamespacedReplicationControllerScale");
        // Operation ids are unique within a document, as OpenAPI requires.
        for (name, document) in all_documents() {
            let mut ids: Vec<&str> = document["paths"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|item| item.as_object().unwrap().values())
                .filter_map(|op| op.get("operationId").and_then(Value::as_str))
                .collect();
            let n = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), n, "{name}");
        }
    }

    #[test]
    fn group_names_become_kubernetes_operation_prefixes_and_tags() {
        assert_eq!(operation_group("", "v1"), "CoreV1");
        assert_eq!(operation_group("coordination.k8s.io", "v1"), "CoordinationV1");
        assert_eq!(operation_group("rbac.authorization.k8s.io", "v1"), "RbacAuthorizationV1");
        assert_eq!(tag("rbac.authorization.k8s.io", "v1"), "rbacAuthorization_v1");
        assert_eq!(tag("", "v1"), "core_v1");
    }

    #[test]
    fn discovery_documents_describe_api_and_apis() {
        let api = doc("api");
        assert_eq!(
            api["paths"]["/api/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions"
        );
        let apis = doc("apis");
        assert!(
            apis["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList"]["x-kubernetes-group-version-kind"]
                .is_array()
        );
    }
}
