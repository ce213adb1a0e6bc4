//! What a container becomes here: a local program (through the image table), its
//! environment (downward API, ConfigMap and Secret references), and the pod network
//! emulated by giving each pod its own loopback address.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client, ResourceExt};

/// Images and the local programs that stand for them: a container with no `command`
/// runs the program of its image's repository (any tag), looked up in the kubelet's
/// binary folder (the cargo target folder the `kcache-local` binary sits in).
pub const IMAGE_TABLE: &[(&str, &str)] = &[
    ("ghcr.io/kcache/kcache-node", "kcache-node"),
    ("ghcr.io/kcache/kcache-operator", "kcache-operator"),
];

/// The program and arguments of `container`: its `command` (a bare name is looked up in
/// `bin_dir`, then PATH) or its image's program from [`IMAGE_TABLE`], then its `args`,
/// each with `$(VAR)` references expanded from `env` as the kubelet does.
pub fn program(
    container: &Container,
    bin_dir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(PathBuf, Vec<String>), String> {
    let image = container.image.clone().unwrap_or_default();
    let mut words: Vec<String> = match &container.command {
        Some(command) if !command.is_empty() => command.clone(),
        _ => {
            let repository = image_repository(&image);
            let program = IMAGE_TABLE
                .iter()
                .find(|(repo, _)| *repo == repository)
                .map(|(_, program)| program.to_string())
                .ok_or_else(|| {
                    format!(
                        "image {image:?} has no local program (known images: {})",
                        IMAGE_TABLE
                            .iter()
                            .map(|(i, _)| *i)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            vec![program]
        }
    };
    words.extend(container.args.iter().flatten().cloned());
    let mut words = words.into_iter().map(|w| expand(&w, env));
    let first = words.next().unwrap_or_default();
    let path = if first.contains('/') {
        PathBuf::from(&first)
    } else if bin_dir.join(&first).is_file() {
        bin_dir.join(&first)
    } else {
        which(&first).ok_or_else(|| {
            format!(
                "executable {first:?} not found in {} or PATH (build it: cargo build -p kcache-node)",
                bin_dir.display()
            )
        })?
    };
    Ok((path, words.collect()))
}

/// `registry/repo:tag@digest` → `registry/repo`.
fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Expands `$(NAME)` from `env`; `$$(NAME)` is a literal `$(NAME)`; unknown names stay as
/// written — the kubelet's rules.
pub fn expand(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix("$(") {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.get(name) {
                        Some(value) => out.push_str(value),
                        None => out.push_str(&tail[..end + 3]),
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The pod network, emulated: a pod's processes share no network namespace with the
/// host here, so "every interface" (`0.0.0.0`) in an address a container is told to
/// listen on becomes the pod's own loopback address. Applied to args and env values.
pub fn pod_network(value: &str, pod_ip: &str) -> String {
    const ANY: &str = "0.0.0.0";
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find(ANY) {
        let before = rest[..at].chars().last();
        let after = rest[at + ANY.len()..].chars().next();
        // Only a whole host: `0.0.0.0`, `0.0.0.0:7000`, `--addr=0.0.0.0:7000`,
        // `http://0.0.0.0:80` — not `10.0.0.0/8` or `100.0.0.0`.
        let host_start = before.is_none_or(|c| matches!(c, '=' | '/' | ' ' | ','));
        let host_end = after.is_none_or(|c| matches!(c, ':' | '/' | ' ' | ','));
        out.push_str(&rest[..at]);
        out.push_str(if host_start && host_end { pod_ip } else { ANY });
        rest = &rest[at + ANY.len()..];
    }
    out.push_str(rest);
    out
}

/// The container's environment: `env` (values, downward-API `fieldRef` and
/// `resourceFieldRef`, ConfigMap and Secret keys) after `envFrom`, as the kubelet builds it.
pub async fn environment(
    client: &Client,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
) -> Result<BTreeMap<String, String>, String> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let mut env = BTreeMap::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(cm) = &from.config_map_ref {
            let optional = cm.optional == Some(true);
            if let Some(data) = config_map(client, &ns, &cm.name, optional).await? {
                for (k, v) in data {
                    env.insert(format!("{prefix}{k}"), v);
                }
            }
        }
        if let Some(secret) = &from.secret_ref {
            let optional = secret.optional == Some(true);
            if let Some(data) = secret_data(client, &ns, &secret.name, optional).await? {
                for (k, v) in data {
                    env.insert(format!("{prefix}{k}"), v);
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or_default(), &env),
            Some(source) => {
                if let Some(field) = &source.field_ref {
                    field_value(pod, &field.field_path, pod_ip)?
                } else if let Some(resource) = &source.resource_field_ref {
                    resource_value(container, &resource.resource)?
                } else if let Some(key) = &source.config_map_key_ref {
                    let optional = key.optional == Some(true);
                    match config_map(client, &ns, &key.name, optional).await? {
                        Some(data) => match data.get(&key.key) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in ConfigMap {ns}/{}",
                                    key.key, key.name
                                ));
                            }
                        },
                        None => continue,
                    }
                } else if let Some(key) = &source.secret_key_ref {
                    let optional = key.optional == Some(true);
                    match secret_data(client, &ns, &key.name, optional).await? {
                        Some(data) => match data.get(&key.key) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {ns}/{}",
                                    key.key, key.name
                                ));
                            }
                        },
                        None => continue,
                    }
                } else {
                    return Err(format!("env {}: unsupported valueFrom", var.name));
                }
            }
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

/// A downward-API field of the pod.
fn field_value(pod: &Pod, path: &str, pod_ip: &str) -> Result<String, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let quoted = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_string(),
        _ => {
            if let Some(key) = quoted("metadata.labels") {
                pod.labels().get(&key).cloned().unwrap_or_default()
            } else if let Some(key) = quoted("metadata.annotations") {
                pod.annotations().get(&key).cloned().unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef.fieldPath {path:?}"));
            }
        }
    })
}

/// `limits.memory`, `requests.cpu`, ... in the units the kubelet reports (bytes, whole
/// cores rounded up); an unset limit reports the node's capacity, as the kubelet does.
fn resource_value(container: &Container, resource: &str) -> Result<String, String> {
    let resources = container.resources.clone().unwrap_or_default();
    let (map, name) = match resource.split_once('.') {
        Some(("limits", name)) => (resources.limits, name),
        Some(("requests", name)) => (resources.requests, name),
        _ => {
            return Err(format!(
                "unsupported resourceFieldRef.resource {resource:?}"
            ));
        }
    };
    let quantity = map.and_then(|m| m.get(name).map(|q| q.0.clone()));
    Ok(match (name, quantity) {
        ("memory", Some(q)) => quantity_bytes(&q)
            .ok_or_else(|| format!("bad memory quantity {q:?}"))?
            .to_string(),
        ("memory", None) => super::node::MEMORY_BYTES.to_string(),
        ("cpu", Some(q)) => {
            let millis = q
                .strip_suffix('m')
                .map(|m| m.parse::<u64>().ok())
                .unwrap_or_else(|| q.parse::<f64>().ok().map(|c| (c * 1000.0) as u64))
                .ok_or_else(|| format!("bad cpu quantity {q:?}"))?;
            millis.div_ceil(1000).to_string()
        }
        ("cpu", None) => super::node::CPUS.to_string(),
        (other, _) => return Err(format!("unsupported resource {other:?}")),
    })
}

/// Bytes in a memory quantity (`256Mi`, `1G`, `1048576`).
pub fn quantity_bytes(q: &str) -> Option<u64> {
    const SUFFIXES: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = q.strip_suffix(suffix) {
            return number.parse::<u64>().ok()?.checked_mul(*factor);
        }
    }
    q.parse().ok()
}

async fn config_map(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, String>>, String> {
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
    {
        Ok(Some(cm)) => Ok(Some(cm.data.unwrap_or_default())),
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(format!("configmap {ns}/{name} not found")),
        Err(e) => Err(format!("configmap {ns}/{name}: {e}")),
    }
}

async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, String>>, String> {
    match Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
    {
        Ok(Some(secret)) => {
            let mut data: BTreeMap<String, String> = secret.string_data.unwrap_or_default();
            for (k, v) in secret.data.unwrap_or_default() {
                data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            Ok(Some(data))
        }
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(format!("secret {ns}/{name} not found")),
        Err(e) => Err(format!("secret {ns}/{name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_references_expand_like_the_kubelet() {
        let env = BTreeMap::from([("POD_NAME".to_string(), "demo-0".to_string())]);
        assert_eq!(expand("--node-id=$(POD_NAME)", &env), "--node-id=demo-0");
        assert_eq!(expand("$(MISSING)-x", &env), "$(MISSING)-x");
        assert_eq!(expand("$$(POD_NAME) $5", &env), "$(POD_NAME) $5");
        assert_eq!(expand("$(unclosed", &env), "$(unclosed");
    }

    #[test]
    fn images_map_to_local_programs_by_repository() {
        assert_eq!(
            image_repository("ghcr.io/kcache/kcache-node:0.1.0"),
            "ghcr.io/kcache/kcache-node"
        );
        assert_eq!(image_repository("localhost:5000/x"), "localhost:5000/x");
        assert_eq!(image_repository("a/b@sha256:00"), "a/b");
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "image": "example.com/unknown:1"
        }))
        .unwrap();
        let err = program(&container, Path::new("/nonexistent"), &BTreeMap::new()).unwrap_err();
        assert!(err.contains("example.com/unknown:1"), "{err}");
    }

    #[test]
    fn only_a_whole_any_address_becomes_the_pod_address() {
        let ip = "127.0.0.10";
        assert_eq!(
            pod_network("--grpc-addr=0.0.0.0:7000", ip),
            "--grpc-addr=127.0.0.10:7000"
        );
        assert_eq!(pod_network("0.0.0.0", ip), ip);
        assert_eq!(
            pod_network("http://0.0.0.0:80/x", ip),
            "http://127.0.0.10:80/x"
        );
        assert_eq!(pod_network("10.0.0.0/8", ip), "10.0.0.0/8");
        assert_eq!(pod_network("100.0.0.0", ip), "100.0.0.0");
    }

    #[test]
    fn quantities_are_bytes() {
        assert_eq!(quantity_bytes("256Mi"), Some(256 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("12"), Some(12));
        assert_eq!(quantity_bytes("x"), None);
    }
}
