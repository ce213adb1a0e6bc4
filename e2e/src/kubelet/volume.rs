//! A pod's volumes, without containers. `secret`, `configMap` and `emptyDir` volumes
//! are materialized in the pod's folder, `<pod dir>/volumes/kubernetes.io~<kind>/<volume>`
//! (the real kubelet's `/var/lib/kubelet/pods/<uid>/volumes/…`), honouring `items`
//! (`key` → `path`); file modes are not applied.
//!
//! Processes share the host's file system, so a container cannot see a folder at its
//! `volumeMounts[].mountPath`. Instead the mount path is rewritten: wherever a mount
//! path stands as a whole path prefix in the container's command, args or env values
//! (`--tls-cert-file=/etc/kcache/tls/tls.crt`), it becomes the materialized folder. That
//! needs no privileges (no mount namespace, no bind mounts), so `scripts/demo.sh` still
//! needs nothing but cargo; a program that builds a mount path by itself (from a
//! constant, or from pieces of a value) does not find its files.
//!
//! Updates are written as the kubelet's AtomicWriter writes them: the files go to a new
//! hidden folder `..<timestamp>`, a `..data_tmp` symlink to it is renamed over `..data`,
//! and each visible name is a symlink into `..data`. A reader sees the old set or the new
//! one, never half of each. The real kubelet notices a changed Secret within its sync
//! period plus the cache TTL (about a minute); this one watches the pod namespace's
//! Secrets and ConfigMaps and re-syncs on every change (and every
//! [`crate::controllers::RESYNC`] as a fallback), so an update reaches the files within
//! a second or so.
//!
//! A volume whose Secret or ConfigMap does not exist (and is not `optional`) keeps the
//! pod from starting, as the real kubelet's `MountVolume.SetUp failed`; once set up, a
//! volume whose source disappears keeps its last files.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::{Api, Client, ResourceExt};

/// The hidden folder name the visible files point through.
pub const DATA_DIR: &str = "..data";
/// The symlink renamed over [`DATA_DIR`] to swap an update in.
const DATA_DIR_TMP: &str = "..data_tmp";

/// A pod's volumes: each volume's name and the folder that holds its files.
pub type Volumes = BTreeMap<String, PathBuf>;

/// The file contents of a volume, by path relative to its folder.
type Payload = BTreeMap<String, Vec<u8>>;

/// The folder of a volume.
fn volume_dir(pod_dir: &Path, kind: &str, name: &str) -> PathBuf {
    pod_dir
        .join("volumes")
        .join(format!("kubernetes.io~{kind}"))
        .join(name)
}

/// Whether the pod has a volume whose files come from the API (and so can change).
pub fn has_api_sources(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.secret.is_some() || v.config_map.is_some())
}

/// Sets up (or brings up to date) every volume of `pod` under `pod_dir`; the
/// `secret`/`configMap` ones are rewritten only where their contents changed. Volumes
/// of other kinds (e.g. the projected service account token a real API server adds:
/// pods get a kubeconfig instead) are left out. An error says which volume could not
/// be set up, and why, in the kubelet's words.
pub async fn set_up(client: &Client, pod: &Pod, pod_dir: &Path) -> Result<Volumes, String> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let mut volumes = Volumes::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let failed = |why: String| {
            format!(
                "MountVolume.SetUp failed for volume {:?}: {why}",
                volume.name
            )
        };
        let Some((kind, payload)) = payload(client, &ns, volume).await.map_err(failed)? else {
            if volume.empty_dir.is_some() {
                let dir = volume_dir(pod_dir, "empty-dir", &volume.name);
                std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
                volumes.insert(volume.name.clone(), dir);
            } else {
                tracing::debug!(pod = %pod.name_any(), volume = %volume.name, "volume kind not emulated; not mounted");
            }
            continue;
        };
        let dir = volume_dir(pod_dir, kind, &volume.name);
        if write_atomic(&dir, &payload).map_err(|e| failed(e.to_string()))? {
            tracing::info!(pod = %pod.name_any(), volume = %volume.name, files = payload.len(), "volume written");
        }
        volumes.insert(volume.name.clone(), dir);
    }
    Ok(volumes)
}

/// The kind and files of a `secret` or `configMap` volume (an absent optional source
/// gives no files); `None` for other kinds.
async fn payload(
    client: &Client,
    ns: &str,
    volume: &Volume,
) -> Result<Option<(&'static str, Payload)>, String> {
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let optional = source.optional == Some(true);
        let data = match Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&name)
            .await
        {
            Ok(Some(secret)) => {
                let mut data: Payload = secret
                    .string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            }
            Ok(None) if optional => Payload::new(),
            Ok(None) => return Err(format!("secret {ns:?}/{name:?} not found")),
            Err(e) => return Err(format!("secret {ns:?}/{name:?}: {e}")),
        };
        let files = project(data, source.items.as_deref(), optional)
            .map_err(|e| format!("secret {ns:?}/{name:?}: {e}"))?;
        return Ok(Some(("secret", files)));
    }
    if let Some(source) = &volume.config_map {
        let name = source.name.clone();
        let optional = source.optional == Some(true);
        let data = match Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(&name)
            .await
        {
            Ok(Some(cm)) => {
                let mut data: Payload = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            }
            Ok(None) if optional => Payload::new(),
            Ok(None) => return Err(format!("configmap {ns:?}/{name:?} not found")),
            Err(e) => return Err(format!("configmap {ns:?}/{name:?}: {e}")),
        };
        let files = project(data, source.items.as_deref(), optional)
            .map_err(|e| format!("configmap {ns:?}/{name:?}: {e}"))?;
        return Ok(Some(("configmap", files)));
    }
    Ok(None)
}

/// The files of a volume from its source's keys: every key under its own name, or with
/// `items` only those keys, each at its `path` (a missing key is an error unless the
/// volume is optional).
fn project(data: Payload, items: Option<&[KeyToPath]>, optional: bool) -> Result<Payload, String> {
    let Some(items) = items else {
        for key in data.keys() {
            check_path(key)?;
        }
        return Ok(data);
    };
    let mut files = Payload::new();
    for item in items {
        check_path(&item.path)?;
        match data.get(&item.key) {
            Some(bytes) => {
                files.insert(item.path.clone(), bytes.clone());
            }
            None if optional => {}
            None => return Err(format!("couldn't find key {}", item.key)),
        }
    }
    Ok(files)
}

/// A file path inside a volume: relative, without `..`, and not a hidden name the
/// writer uses itself.
fn check_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.starts_with("..")
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid path {path:?} (must be relative, without '..')"
        ))
    }
}

/// Writes `payload` into `dir` as the kubelet's AtomicWriter does, unless `dir`
/// already holds exactly that; returns whether it wrote.
pub fn write_atomic(dir: &Path, payload: &Payload) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    if current(dir).as_ref() == Some(payload) {
        return Ok(false);
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let generation = format!(
        "..{}.{:09}_{}",
        stamp.as_secs(),
        stamp.subsec_nanos(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let new = dir.join(&generation);
    for (path, bytes) in payload {
        let file = new.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
    }
    std::fs::create_dir_all(&new)?;
    let old = std::fs::read_link(dir.join(DATA_DIR)).ok();
    let tmp = dir.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&generation, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA_DIR))?;
    // The visible names: one symlink per top-level entry, into ..data.
    let top: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|p| Path::new(p).components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::read_link(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            std::fs::remove_file(dir.join(&name))?;
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

/// The files behind `..data` now, if any.
fn current(dir: &Path) -> Option<Payload> {
    fn walk(root: &Path, at: &Path, out: &mut Payload) -> std::io::Result<()> {
        for entry in std::fs::read_dir(at)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.insert(rel.to_string_lossy().into_owned(), std::fs::read(&path)?);
            }
        }
        Ok(())
    }
    let data = dir.join(DATA_DIR);
    std::fs::read_link(&data).ok()?;
    let mut out = Payload::new();
    walk(&data, &data, &mut out).ok()?;
    Some(out)
}

/// A container's mounts: mount path → the folder (or `subPath` inside it) it stands
/// for, longest mount path first so a nested mount wins.
pub fn mounts(container: &Container, volumes: &Volumes) -> Vec<(String, PathBuf)> {
    let mut mounts: Vec<(String, PathBuf)> = container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let dir = volumes.get(&m.name)?;
            let dir = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => dir.join(sub),
                _ => dir.clone(),
            };
            Some((m.mount_path.trim_end_matches('/').to_owned(), dir))
        })
        .filter(|(path, _)| !path.is_empty())
        .collect();
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    mounts
}

/// `value` with every mount path that stands as a whole path prefix (at the start or
/// after `=`, `:`, `,` or a space, and followed by `/`, one of those or the end)
/// replaced by its folder.
pub fn rewrite(value: &str, mounts: &[(String, PathBuf)]) -> String {
    const BEFORE: &[char] = &['=', ':', ',', ' '];
    let mut out = String::with_capacity(value.len());
    let mut at = 0;
    'scan: while at < value.len() {
        let starts_path = at == 0 || value[..at].ends_with(BEFORE);
        if starts_path {
            for (path, dir) in mounts {
                if let Some(rest) = value[at..].strip_prefix(path.as_str())
                    && rest
                        .chars()
                        .next()
                        .is_none_or(|c| c == '/' || BEFORE.contains(&c))
                {
                    out.push_str(&dir.to_string_lossy());
                    at += path.len();
                    continue 'scan;
                }
            }
        }
        let c = value[at..].chars().next().unwrap_or_default();
        out.push(c);
        at += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str)]) -> Payload {
        files
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn an_update_swaps_the_data_link_and_drops_removed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("tls");
        assert!(write_atomic(&vol, &payload(&[("tls.crt", "a"), ("ca.crt", "ca")])).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("tls.crt")).unwrap(), "a");
        let first = std::fs::read_link(vol.join(DATA_DIR)).unwrap();
        assert_eq!(
            std::fs::read_link(vol.join("tls.crt")).unwrap(),
            Path::new("..data/tls.crt")
        );
        // The same contents: nothing written.
        assert!(!write_atomic(&vol, &payload(&[("tls.crt", "a"), ("ca.crt", "ca")])).unwrap());
        assert!(write_atomic(&vol, &payload(&[("tls.crt", "b")])).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("tls.crt")).unwrap(), "b");
        assert!(!vol.join("ca.crt").exists());
        assert!(std::fs::symlink_metadata(vol.join("ca.crt")).is_err());
        assert!(!vol.join(first).exists(), "the old generation is removed");
        let hidden: Vec<String> = std::fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".."))
            .collect();
        assert_eq!(hidden.len(), 2, "..data and one generation: {hidden:?}");
    }

    #[test]
    fn items_pick_keys_and_place_them_at_their_paths() {
        let data = payload(&[("token", "t"), ("other", "o")]);
        let item = |key: &str, path: &str| KeyToPath {
            key: key.into(),
            path: path.into(),
            mode: None,
        };
        let files = project(data.clone(), Some(&[item("token", "auth/token")]), false).unwrap();
        assert_eq!(files, payload(&[("auth/token", "t")]));
        let err = project(data.clone(), Some(&[item("missing", "x")]), false).unwrap_err();
        assert!(err.contains("couldn't find key missing"), "{err}");
        assert_eq!(
            project(data.clone(), Some(&[item("missing", "x")]), true).unwrap(),
            Payload::new()
        );
        assert!(project(data, Some(&[item("token", "../escape")]), false).is_err());

        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("auth/token")).unwrap(),
            "t"
        );
    }

    #[test]
    fn only_whole_mount_paths_are_rewritten() {
        let mounts = vec![
            ("/etc/kcache/tls/ca".to_owned(), PathBuf::from("/v/ca")),
            ("/etc/kcache/tls".to_owned(), PathBuf::from("/v/tls")),
        ];
        let mut sorted = mounts.clone();
        sorted.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let r = |s: &str| rewrite(s, &sorted);
        assert_eq!(
            r("--tls-cert-file=/etc/kcache/tls/tls.crt"),
            "--tls-cert-file=/v/tls/tls.crt"
        );
        assert_eq!(r("/etc/kcache/tls/ca/ca.crt"), "/v/ca/ca.crt");
        assert_eq!(r("/etc/kcache/tls"), "/v/tls");
        assert_eq!(
            r("a:/etc/kcache/tls,/etc/kcache/tls/x"),
            "a:/v/tls,/v/tls/x"
        );
        assert_eq!(r("/etc/kcache/tlsx/y"), "/etc/kcache/tlsx/y");
        assert_eq!(r("/x/etc/kcache/tls/y"), "/x/etc/kcache/tls/y");
        assert_eq!(r("résumé /etc/kcache/tls"), "résumé /v/tls");
    }
}
