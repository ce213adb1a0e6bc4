//! The kubeconfig for the local control plane: plain http, no credentials.

use std::path::Path;

use serde_json::json;

/// Name of the cluster, user and context in the written kubeconfig.
pub const CONTEXT: &str = "kcache-local";

/// The kubeconfig YAML for an API server at `server` (`http://127.0.0.1:PORT`).
pub fn render(server: &str) -> Result<String, serde_yaml::Error> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": CONTEXT, "user": {}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
        "current-context": CONTEXT,
        "preferences": {},
    });
    serde_yaml::to_string(&config)
}

/// Writes the kubeconfig to `path`, creating parent directories.
pub fn write(path: &Path, server: &str) -> Result<(), crate::Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, render(server)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_points_the_current_context_at_the_server() {
        let yaml = render("http://127.0.0.1:1234").unwrap();
        let value: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(value["current-context"].as_str(), Some(CONTEXT));
        assert_eq!(
            value["clusters"][0]["cluster"]["server"].as_str(),
            Some("http://127.0.0.1:1234")
        );
    }
}
