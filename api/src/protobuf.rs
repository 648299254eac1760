//! Kubernetes' protobuf wire format for request bodies, as kubectl's
//! generator commands send it (`kubectl create namespace|configmap|secret|deployment|service`).
//!
//! A body is `k8s\0` followed by a `runtime.Unknown` message whose `raw`
//! field holds the object. We decode the objects those commands produce,
//! field by field, into the same JSON every other client sends. Go's
//! marshaller also writes the zero value of every non-pointer field; a field
//! outside our tables is therefore accepted only when its value is zero (the
//! same as leaving it out of JSON). Any other value is refused with 415, so a
//! field is never silently dropped.

use crate::ApiError;
use base64::Engine;
use serde_json::{Map, Value};

/// The content type kubectl uses for protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Msg(&'static Message),
    /// `map<string,string>`.
    MapStr,
    /// `map<string,bytes>`.
    MapBytes,
    /// `map<string,Quantity>`.
    MapQuantity,
    IntOrString,
    Time,
}

struct Field {
    number: u64,
    name: &'static str,
    kind: Kind,
    repeated: bool,
    /// A Go pointer field: an explicit zero (`replicas: 0`) is a value, not an omission.
    pointer: bool,
}

const fn f(number: u64, name: &'static str, kind: Kind) -> Field {
    Field { number, name, kind, repeated: false, pointer: false }
}
const fn list(number: u64, name: &'static str, kind: Kind) -> Field {
    Field { number, name, kind, repeated: true, pointer: false }
}
const fn ptr(number: u64, name: &'static str, kind: Kind) -> Field {
    Field { number, name, kind, repeated: false, pointer: true }
}

struct Message {
    name: &'static str,
    fields: &'static [Field],
}

// Field numbers are those of Kubernetes' `generated.proto` for each type.
static OBJECT_META: Message = Message {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", Kind::Str),
        f(2, "generateName", Kind::Str),
        f(3, "namespace", Kind::Str),
        f(11, "labels", Kind::MapStr),
        f(12, "annotations", Kind::MapStr),
        list(13, "ownerReferences", Kind::Msg(&OWNER_REFERENCE)),
        list(14, "finalizers", Kind::Str),
        f(8, "creationTimestamp", Kind::Time),
    ],
};
static OWNER_REFERENCE: Message = Message {
    name: "OwnerReference",
    fields: &[
        f(5, "apiVersion", Kind::Str),
        f(1, "kind", Kind::Str),
        f(3, "name", Kind::Str),
        f(4, "uid", Kind::Str),
        ptr(6, "controller", Kind::Bool),
        ptr(7, "blockOwnerDeletion", Kind::Bool),
    ],
};
static LABEL_SELECTOR: Message = Message {
    name: "LabelSelector",
    fields: &[f(1, "matchLabels", Kind::MapStr), list(2, "matchExpressions", Kind::Msg(&SELECTOR_REQUIREMENT))],
};
static SELECTOR_REQUIREMENT: Message = Message {
    name: "LabelSelectorRequirement",
    fields: &[f(1, "key", Kind::Str), f(2, "operator", Kind::Str), list(3, "values", Kind::Str)],
};
static NAMESPACE: Message = Message {
    name: "Namespace",
    fields: &[
        f(1, "metadata", Kind::Msg(&OBJECT_META)),
        f(2, "spec", Kind::Msg(&NAMESPACE_SPEC)),
        f(3, "status", Kind::Msg(&NAMESPACE_STATUS)),
    ],
};
static NAMESPACE_SPEC: Message = Message { name: "NamespaceSpec", fields: &[list(1, "finalizers", Kind::Str)] };
static NAMESPACE_STATUS: Message = Message { name: "NamespaceStatus", fields: &[f(1, "phase", Kind::Str)] };
static CONFIG_MAP: Message = Message {
    name: "ConfigMap",
    fields: &[
        f(1, "metadata", Kind::Msg(&OBJECT_META)),
        f(2, "data", Kind::MapStr),
        f(3, "binaryData", Kind::MapBytes),
        ptr(4, "immutable", Kind::Bool),
    ],
};
static SECRET: Message = Message {
    name: "Secret",
    fields: &[
        f(1, "metadata", Kind::Msg(&OBJECT_META)),
        f(2, "data", Kind::MapBytes),
        f(3, "type", Kind::Str),
        f(4, "stringData", Kind::MapStr),
        ptr(5, "immutable", Kind::Bool),
    ],
};
static SERVICE: Message = Message {
    name: "Service",
    fields: &[
        f(1, "metadata", Kind::Msg(&OBJECT_META)),
        f(2, "spec", Kind::Msg(&SERVICE_SPEC)),
        f(3, "status", Kind::Msg(&SERVICE_STATUS)),
    ],
};
static SERVICE_SPEC: Message = Message {
    name: "ServiceSpec",
    fields: &[
        list(1, "ports", Kind::Msg(&SERVICE_PORT)),
        f(2, "selector", Kind::MapStr),
        f(3, "clusterIP", Kind::Str),
        list(18, "clusterIPs", Kind::Str),
        f(4, "type", Kind::Str),
        list(5, "externalIPs", Kind::Str),
        f(7, "sessionAffinity", Kind::Str),
        f(8, "loadBalancerIP", Kind::Str),
        f(10, "externalName", Kind::Str),
        f(11, "externalTrafficPolicy", Kind::Str),
        f(12, "healthCheckNodePort", Kind::Int),
        f(13, "publishNotReadyAddresses", Kind::Bool),
        list(19, "ipFamilies", Kind::Str),
        ptr(17, "ipFamilyPolicy", Kind::Str),
        ptr(22, "internalTrafficPolicy", Kind::Str),
    ],
};
static SERVICE_PORT: Message = Message {
    name: "ServicePort",
    fields: &[
        f(1, "name", Kind::Str),
        f(2, "protocol", Kind::Str),
        f(3, "port", Kind::Int),
        f(4, "targetPort", Kind::IntOrString),
        f(5, "nodePort", Kind::Int),
        ptr(6, "appProtocol", Kind::Str),
    ],
};
/// As for Deployments: a create's status is reset by the server, so only zeros are accepted.
static SERVICE_STATUS: Message = Message { name: "ServiceStatus", fields: &[] };
static DEPLOYMENT: Message = Message {
    name: "Deployment",
    fields: &[
        f(1, "metadata", Kind::Msg(&OBJECT_META)),
        f(2, "spec", Kind::Msg(&DEPLOYMENT_SPEC)),
        f(3, "status", Kind::Msg(&DEPLOYMENT_STATUS)),
    ],
};
static DEPLOYMENT_SPEC: Message = Message {
    name: "DeploymentSpec",
    fields: &[
        ptr(1, "replicas", Kind::Int),
        f(2, "selector", Kind::Msg(&LABEL_SELECTOR)),
        f(3, "template", Kind::Msg(&POD_TEMPLATE_SPEC)),
        f(4, "strategy", Kind::Msg(&DEPLOYMENT_STRATEGY)),
        f(5, "minReadySeconds", Kind::Int),
        ptr(6, "revisionHistoryLimit", Kind::Int),
        f(7, "paused", Kind::Bool),
        ptr(9, "progressDeadlineSeconds", Kind::Int),
    ],
};
static DEPLOYMENT_STRATEGY: Message =
    Message { name: "DeploymentStrategy", fields: &[f(1, "type", Kind::Str), f(2, "rollingUpdate", Kind::Msg(&ROLLING_UPDATE))] };
static ROLLING_UPDATE: Message =
    Message { name: "RollingUpdateDeployment", fields: &[f(1, "maxUnavailable", Kind::IntOrString), f(2, "maxSurge", Kind::IntOrString)] };
/// A create carries no status worth keeping (the server resets it); only zeros are accepted.
static DEPLOYMENT_STATUS: Message = Message { name: "DeploymentStatus", fields: &[] };
static POD_TEMPLATE_SPEC: Message =
    Message { name: "PodTemplateSpec", fields: &[f(1, "metadata", Kind::Msg(&OBJECT_META)), f(2, "spec", Kind::Msg(&POD_SPEC))] };
static POD_SPEC: Message = Message {
    name: "PodSpec",
    fields: &[
        list(2, "containers", Kind::Msg(&CONTAINER)),
        list(20, "initContainers", Kind::Msg(&CONTAINER)),
        f(3, "restartPolicy", Kind::Str),
        ptr(4, "terminationGracePeriodSeconds", Kind::Int),
        f(6, "dnsPolicy", Kind::Str),
        f(7, "nodeSelector", Kind::MapStr),
        f(8, "serviceAccountName", Kind::Str),
    ],
};
static CONTAINER: Message = Message {
    name: "Container",
    fields: &[
        f(1, "name", Kind::Str),
        f(2, "image", Kind::Str),
        list(3, "command", Kind::Str),
        list(4, "args", Kind::Str),
        f(5, "workingDir", Kind::Str),
        list(6, "ports", Kind::Msg(&CONTAINER_PORT)),
        list(7, "env", Kind::Msg(&ENV_VAR)),
        f(8, "resources", Kind::Msg(&RESOURCES)),
        f(13, "terminationMessagePath", Kind::Str),
        f(14, "imagePullPolicy", Kind::Str),
        f(16, "stdin", Kind::Bool),
        f(17, "stdinOnce", Kind::Bool),
        f(18, "tty", Kind::Bool),
        f(20, "terminationMessagePolicy", Kind::Str),
    ],
};
static CONTAINER_PORT: Message = Message {
    name: "ContainerPort",
    fields: &[
        f(1, "name", Kind::Str),
        f(2, "hostPort", Kind::Int),
        f(3, "containerPort", Kind::Int),
        f(4, "protocol", Kind::Str),
        f(5, "hostIP", Kind::Str),
    ],
};
static ENV_VAR: Message = Message { name: "EnvVar", fields: &[f(1, "name", Kind::Str), f(2, "value", Kind::Str)] };
static RESOURCES: Message =
    Message { name: "ResourceRequirements", fields: &[f(1, "limits", Kind::MapQuantity), f(2, "requests", Kind::MapQuantity)] };

/// The kinds decoded, by `apiVersion` and `kind`.
static ROOTS: &[(&str, &str, &Message)] = &[
    ("v1", "Namespace", &NAMESPACE),
    ("v1", "ConfigMap", &CONFIG_MAP),
    ("v1", "Secret", &SECRET),
    ("v1", "Service", &SERVICE),
    ("apps/v1", "Deployment", &DEPLOYMENT),
];

fn unsupported(message: String) -> ApiError {
    let mut err = ApiError::unsupported_media_type(CONTENT_TYPE);
    err.message = format!("{message}; send this object as JSON (Content-Type: application/json)");
    err
}

/// Decodes a protobuf request body into the object's JSON form.
pub fn decode_object(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| ApiError::bad_request("protobuf body lacks the k8s\\0 prefix"))?;
    let (mut api_version, mut kind, mut raw, mut encoding) = (String::new(), String::new(), None, String::new());
    for field in Fields::new(envelope) {
        match field.map_err(ApiError::bad_request)? {
            (1, Wire::Bytes(type_meta)) => {
                for field in Fields::new(type_meta) {
                    match field.map_err(ApiError::bad_request)? {
                        (1, Wire::Bytes(v)) => api_version = utf8(v).map_err(ApiError::bad_request)?,
                        (2, Wire::Bytes(v)) => kind = utf8(v).map_err(ApiError::bad_request)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(bytes)) => raw = Some(bytes),
            (3, Wire::Bytes(v)) => encoding = utf8(v).map_err(ApiError::bad_request)?,
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(unsupported(format!("protobuf content encoding {encoding:?} is not supported")));
    }
    let message = ROOTS.iter().find(|(v, k, _)| *v == api_version && *k == kind).map(|(_, _, m)| *m).ok_or_else(|| {
        unsupported(format!(
            "protobuf bodies are decoded for {} only, not {api_version} {kind}",
            ROOTS.iter().map(|(_, k, _)| *k).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let mut obj = decode_message(message, raw.unwrap_or_default()).map_err(unsupported)?;
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(obj))
}

fn decode_message(message: &Message, bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for field in Fields::new(bytes) {
        let (number, wire) = field?;
        let Some(def) = message.fields.iter().find(|d| d.number == number) else {
            if is_zero(&wire) {
                continue;
            }
            return Err(format!("the protobuf body sets field {number} of {}, which Hawser does not decode yet", message.name));
        };
        let context = |e: String| format!("{}.{}: {e}", message.name, def.name);
        match def.kind {
            Kind::MapStr | Kind::MapBytes | Kind::MapQuantity => {
                let Wire::Bytes(entry) = wire else { return Err(context("expected a map entry".into())) };
                let (key, value) = map_entry(def.kind, entry).map_err(context)?;
                let map = out.entry(def.name).or_insert_with(|| Value::Object(Map::new()));
                map.as_object_mut().expect("maps are objects").insert(key, value);
            }
            kind => {
                let value = scalar(kind, wire).map_err(context)?;
                if def.repeated {
                    out.entry(def.name).or_insert_with(|| Value::Array(Vec::new())).as_array_mut().expect("lists are arrays").push(value);
                } else if def.pointer || !is_empty_value(&value) {
                    out.insert(def.name.into(), value);
                }
            }
        }
    }
    Ok(out)
}

fn scalar(kind: Kind, wire: Wire<'_>) -> Result<Value, String> {
    Ok(match (kind, wire) {
        (Kind::Str, Wire::Bytes(b)) => Value::String(utf8(b)?),
        // int32 negatives arrive sign-extended to 64 bits.
        (Kind::Int, Wire::Varint(v)) => Value::from(v as i64),
        (Kind::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Kind::Msg(m), Wire::Bytes(b)) => Value::Object(decode_message(m, b)?),
        (Kind::IntOrString, Wire::Bytes(b)) => {
            let (mut is_string, mut int, mut string) = (false, 0i64, String::new());
            for field in Fields::new(b) {
                match field? {
                    (1, Wire::Varint(t)) => is_string = t == 1,
                    (2, Wire::Varint(v)) => int = v as i64,
                    (3, Wire::Bytes(s)) => string = utf8(s)?,
                    _ => {}
                }
            }
            if is_string { Value::String(string) } else { Value::from(int) }
        }
        (Kind::Time, Wire::Bytes(b)) => {
            let (mut seconds, mut nanos) = (0i64, 0i64);
            for field in Fields::new(b) {
                match field? {
                    (1, Wire::Varint(v)) => seconds = v as i64,
                    (2, Wire::Varint(v)) => nanos = v as i64,
                    _ => {}
                }
            }
            if seconds == 0 && nanos == 0 {
                Value::Null
            } else {
                let ts = jiff::Timestamp::new(seconds, 0).map_err(|e| e.to_string())?;
                Value::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            }
        }
        _ => return Err("unexpected wire type".into()),
    })
}

fn map_entry(kind: Kind, entry: &[u8]) -> Result<(String, Value), String> {
    let (mut key, mut value) = (String::new(), None);
    for field in Fields::new(entry) {
        match field? {
            (1, Wire::Bytes(k)) => key = utf8(k)?,
            (2, Wire::Bytes(v)) => {
                value = Some(match kind {
                    Kind::MapBytes => Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                    Kind::MapQuantity => {
                        // resource.Quantity { string = 1 }
                        let mut q = String::new();
                        for field in Fields::new(v) {
                            if let (1, Wire::Bytes(s)) = field? {
                                q = utf8(s)?;
                            }
                        }
                        Value::String(q)
                    }
                    _ => Value::String(utf8(v)?),
                })
            }
            _ => {}
        }
    }
    let empty = match kind {
        Kind::MapStr | Kind::MapBytes => Value::String(String::new()),
        _ => Value::String("0".into()),
    };
    Ok((key, value.unwrap_or(empty)))
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Bool(b) => !b,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
    }
}

/// Whether an unknown field holds only zero values (what Go writes for a field nobody set).
fn is_zero(wire: &Wire<'_>) -> bool {
    match wire {
        Wire::Varint(v) => *v == 0,
        Wire::Fixed(b) => b.iter().all(|b| *b == 0),
        // An empty string, bytes or message; or a message whose fields are all zero.
        Wire::Bytes(b) => b.is_empty() || Fields::new(b).all(|f| f.is_ok_and(|(_, w)| is_zero(&w))),
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed(&'a [u8]),
}

/// The fields of one protobuf message, in order.
struct Fields<'a> {
    buf: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, failed: false }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or("truncated field")?;
        self.buf = tail;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<(u64, Wire<'a>), String> {
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed(self.take(8)?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Wire::Bytes(self.take(len)?)
            }
            5 => Wire::Fixed(self.take(4)?),
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok((key >> 3, wire))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() || self.failed {
            return None;
        }
        let field = self.next_field();
        self.failed = field.is_err();
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tag(out: &mut Vec<u8>, number: u64, wire: u64) {
        varint(out, (number << 3) | wire);
    }
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(out: &mut Vec<u8>, number: u64, b: &[u8]) {
        tag(out, number, 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    fn int(out: &mut Vec<u8>, number: u64, v: u64) {
        tag(out, number, 0);
        varint(out, v);
    }
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes(&mut type_meta, 1, api_version.as_bytes());
        bytes(&mut type_meta, 2, kind.as_bytes());
        let mut unknown = Vec::new();
        bytes(&mut unknown, 1, &type_meta);
        bytes(&mut unknown, 2, raw);
        bytes(&mut unknown, 3, b"");
        bytes(&mut unknown, 4, b"");
        [MAGIC, &unknown].concat()
    }
    /// ObjectMeta as Go writes it: every string field, set or not, and a zero creationTimestamp.
    fn meta(name: &str) -> Vec<u8> {
        let mut m = Vec::new();
        bytes(&mut m, 1, name.as_bytes());
        for n in [2, 3, 4, 5, 6] {
            bytes(&mut m, n, b"");
        }
        int(&mut m, 7, 0);
        let mut time = Vec::new();
        int(&mut time, 1, 0);
        int(&mut time, 2, 0);
        bytes(&mut m, 8, &time);
        m
    }

    #[test]
    fn a_namespace_from_kubectl_create_decodes_to_its_json() {
        let mut ns = Vec::new();
        bytes(&mut ns, 1, &meta("made"));
        bytes(&mut ns, 2, b"");
        let mut status = Vec::new();
        bytes(&mut status, 1, b"");
        bytes(&mut ns, 3, &status);
        let obj = decode_object(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(obj, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "made"}}));
    }

    #[test]
    fn a_deployment_keeps_explicit_zero_replicas_and_its_containers() {
        let mut container = Vec::new();
        bytes(&mut container, 1, b"web");
        bytes(&mut container, 2, b"nginx:1.27");
        let mut port = Vec::new();
        int(&mut port, 3, 80);
        bytes(&mut port, 4, b"TCP");
        bytes(&mut container, 6, &port);
        let mut pod_spec = Vec::new();
        bytes(&mut pod_spec, 2, &container);
        bytes(&mut pod_spec, 3, b"");
        let mut labels = Vec::new();
        bytes(&mut labels, 1, b"app");
        bytes(&mut labels, 2, b"web");
        let mut template_meta = meta("");
        bytes(&mut template_meta, 11, &labels);
        let mut template = Vec::new();
        bytes(&mut template, 1, &template_meta);
        bytes(&mut template, 2, &pod_spec);
        let mut selector = Vec::new();
        bytes(&mut selector, 1, &labels);
        let mut spec = Vec::new();
        int(&mut spec, 1, 0);
        bytes(&mut spec, 2, &selector);
        bytes(&mut spec, 3, &template);
        bytes(&mut spec, 4, b"");
        int(&mut spec, 5, 0);
        int(&mut spec, 7, 0);
        let mut status = Vec::new();
        int(&mut status, 1, 0);
        int(&mut status, 2, 0);
        let mut deployment = Vec::new();
        bytes(&mut deployment, 1, &meta("web"));
        bytes(&mut deployment, 2, &spec);
        bytes(&mut deployment, 3, &status);
        let obj = decode_object(&envelope("apps/v1", "Deployment", &deployment)).unwrap();
        assert_eq!(obj["spec"]["replicas"], 0, "{obj}");
        assert_eq!(obj["spec"]["selector"], json!({"matchLabels": {"app": "web"}}));
        assert_eq!(obj["spec"]["template"]["metadata"], json!({"labels": {"app": "web"}}));
        assert_eq!(
            obj["spec"]["template"]["spec"],
            json!({"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]})
        );
        assert!(obj.get("status").is_none(), "{obj}");
    }

    #[test]
    fn secret_data_is_base64_as_in_json() {
        let mut entry = Vec::new();
        bytes(&mut entry, 1, b"password");
        bytes(&mut entry, 2, b"s3cret");
        let mut secret = Vec::new();
        bytes(&mut secret, 1, &meta("creds"));
        bytes(&mut secret, 2, &entry);
        bytes(&mut secret, 3, b"Opaque");
        let obj = decode_object(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(obj["data"]["password"], "czNjcmV0");
        assert_eq!(obj["type"], "Opaque");
    }

    #[test]
    fn a_set_field_we_do_not_decode_is_refused_never_dropped() {
        let mut container = Vec::new();
        bytes(&mut container, 1, b"web");
        let mut mount = Vec::new();
        bytes(&mut mount, 1, b"data");
        bytes(&mut container, 9, &mount); // volumeMounts
        let mut pod_spec = Vec::new();
        bytes(&mut pod_spec, 2, &container);
        let mut template = Vec::new();
        bytes(&mut template, 2, &pod_spec);
        let mut spec = Vec::new();
        bytes(&mut spec, 3, &template);
        let mut deployment = Vec::new();
        bytes(&mut deployment, 2, &spec);
        let err = decode_object(&envelope("apps/v1", "Deployment", &deployment)).unwrap_err();
        assert_eq!(err.code, 415);
        assert!(err.message.contains("field 9 of Container"), "{}", err.message);
        let err = decode_object(&envelope("v1", "Pod", &[])).unwrap_err();
        assert_eq!(err.code, 415);
        assert!(err.message.contains("send this object as JSON"), "{}", err.message);
        assert_eq!(decode_object(b"{}").unwrap_err().code, 400);
    }
}
