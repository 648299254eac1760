//! Pod volumes on the node: `emptyDir` (a directory every container of the
//! pod mounts), `configMap` and `secret` (their keys as files, rewritten
//! when the object changes), `hostPath` (the node's own path, created for
//! the `DirectoryOrCreate`/`FileOrCreate` types).
//!
//! Volumes live under `<root>/<pod uid>/volumes/<name>`, outside any
//! runtime, so both runtimes bind-mount the same directories and a restarted
//! agent finds them again.

use super::spec::{Referenced, SpecError};
use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The directory of a pod's volumes.
pub fn pod_volumes_dir(root: &Path, pod_uid: &str) -> PathBuf {
    root.join(pod_uid).join("volumes")
}

/// Makes every volume of `pod` exist and returns each volume's host path.
/// ConfigMap and Secret files are (re)written from `refs`; running it again
/// updates them in place.
pub fn materialize(root: &Path, pod: &Pod, refs: &Referenced) -> Result<HashMap<String, PathBuf>, SpecError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = pod_volumes_dir(root, uid);
    let mut paths = HashMap::new();
    for volume in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let path = materialize_one(&dir, volume, refs)?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> SpecError {
    move |e| SpecError::Invalid(format!("{what}: {e}"))
}

fn materialize_one(dir: &Path, volume: &Volume, refs: &Referenced) -> Result<PathBuf, SpecError> {
    let own = dir.join(&volume.name);
    let create = |path: &Path| fs::create_dir_all(path).map_err(io_error(format!("creating volume {} at {}", volume.name, path.display())));
    if volume.empty_dir.is_some() {
        create(&own)?;
        // Writable by any user in the pod, as an emptyDir is.
        fs::set_permissions(&own, fs::Permissions::from_mode(0o777)).map_err(io_error(format!("opening up {}", own.display())))?;
        return Ok(own);
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => create(&path)?,
            "FileOrCreate" if !path.exists() => {
                if let Some(parent) = path.parent() {
                    create(parent)?;
                }
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o644)
                    .open(&path)
                    .map_err(io_error(format!("creating {}", path.display())))?;
            }
            "Directory" if !path.is_dir() => {
                return Err(SpecError::Invalid(format!("hostPath type check failed: {} is not a directory", host.path)));
            }
            "File" if !path.is_file() => {
                return Err(SpecError::Invalid(format!("hostPath type check failed: {} is not a file", host.path)));
            }
            _ => {}
        }
        return Ok(path);
    }
    if let Some(cm) = &volume.config_map {
        let files = match refs.config_maps.get(&cm.name) {
            Some(obj) => {
                let mut data: BTreeMap<String, Vec<u8>> =
                    obj.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
                data.extend(obj.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
                data
            }
            None if cm.optional == Some(true) => BTreeMap::new(),
            None => return Err(SpecError::ConfigMapNotFound(cm.name.clone())),
        };
        write_files(&own, &files, cm.items.as_deref(), cm.default_mode.unwrap_or(0o644), &format!("configmap {}", cm.name))?;
        return Ok(own);
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let files = match refs.secrets.get(&name) {
            Some(obj) => obj.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
            None if secret.optional == Some(true) => BTreeMap::new(),
            None => return Err(SpecError::SecretNotFound(name)),
        };
        write_files(&own, &files, secret.items.as_deref(), secret.default_mode.unwrap_or(0o644), &format!("secret {name}"))?;
        return Ok(own);
    }
    Err(SpecError::Invalid(format!(
        "volume {:?}: only emptyDir, configMap, secret and hostPath volumes are supported by this agent",
        volume.name
    )))
}

/// Writes `data` as files in `dir` (all keys, or only `items` at their
/// paths), each replaced atomically, and removes files of keys that went.
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    what: &str,
) -> Result<(), SpecError> {
    fs::create_dir_all(dir).map_err(io_error(format!("creating the volume of {what} at {}", dir.display())))?;
    let wanted: Vec<(String, &Vec<u8>, i32)> = match items {
        Some(items) => items
            .iter()
            .map(|item| match data.get(&item.key) {
                Some(value) => Ok((item.path.clone(), value, item.mode.unwrap_or(default_mode))),
                None => Err(SpecError::Invalid(format!("{what} has no key {:?}", item.key))),
            })
            .collect::<Result<_, _>>()?,
        None => data.iter().map(|(k, v)| (k.clone(), v, default_mode)).collect(),
    };
    for (path, value, mode) in &wanted {
        let relative = Path::new(path);
        if relative.is_absolute() || relative.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(SpecError::Invalid(format!("{what}: item path {path:?} must be relative without '..'")));
        }
        let target = dir.join(relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_error(format!("creating {}", parent.display())))?;
        }
        let temp = target.with_extension("hawser-tmp");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(*mode as u32 & 0o777)
            .open(&temp)
            .map_err(io_error(format!("writing {}", temp.display())))?;
        file.write_all(value).map_err(io_error(format!("writing {}", temp.display())))?;
        fs::set_permissions(&temp, fs::Permissions::from_mode(*mode as u32 & 0o777))
            .map_err(io_error(format!("chmod {}", temp.display())))?;
        fs::rename(&temp, &target).map_err(io_error(format!("replacing {}", target.display())))?;
    }
    // Keys that were removed from the object disappear from the volume.
    let keep: Vec<PathBuf> = wanted.iter().map(|(p, _, _)| dir.join(p)).collect();
    for entry in fs::read_dir(dir).map_err(io_error(format!("listing {}", dir.display())))?.flatten() {
        let path = entry.path();
        if path.is_file() && !keep.contains(&path) {
            let _ = fs::remove_file(&path);
        }
    }
    Ok(())
}

/// Removes the pod's volume directories (never a hostPath: those are not
/// under the pod's directory).
pub fn remove(root: &Path, pod_uid: &str) -> std::io::Result<()> {
    match fs::remove_dir_all(root.join(pod_uid)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_maps_and_secrets_become_files_that_follow_the_object() {
        let root = tempfile::tempdir().unwrap();
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u1"}, "spec": {"containers": [{"name": "a"}], "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "picked", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "sub/renamed"}]}},
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            ]}}))
            .unwrap();
        let mut refs = Referenced::default();
        refs.config_maps
            .insert("cfg".into(), serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}})).unwrap());
        refs.secrets.insert(
            "creds".into(),
            serde_json::from_value(json!({"metadata": {"name": "creds"}, "data": {"password": "czNjcjN0"}})).unwrap(),
        );
        let paths = materialize(root.path(), &pod, &refs).unwrap();
        assert!(paths["scratch"].is_dir());
        assert_eq!(fs::read_to_string(paths["cfg"].join("b")).unwrap(), "2");
        assert_eq!(fs::read_to_string(paths["picked"].join("sub/renamed")).unwrap(), "1");
        assert!(!paths["picked"].join("b").exists());
        let secret = paths["creds"].join("password");
        assert_eq!(fs::read_to_string(&secret).unwrap(), "s3cr3t");
        assert_eq!(fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o400);
        // The object changes: a key goes, another changes.
        refs.config_maps.insert("cfg".into(), serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "10"}})).unwrap());
        materialize(root.path(), &pod, &refs).unwrap();
        assert_eq!(fs::read_to_string(paths["cfg"].join("a")).unwrap(), "10");
        assert!(!paths["cfg"].join("b").exists());
        // A missing, non-optional ConfigMap is an error naming it.
        let err = materialize(root.path(), &pod, &Referenced::default()).unwrap_err();
        assert_eq!(err, SpecError::ConfigMapNotFound("cfg".into()));
        remove(root.path(), "u1").unwrap();
        assert!(!root.path().join("u1").exists());
    }
}
