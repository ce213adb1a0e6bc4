//! `kcache-operator render`: the objects the operator would apply for the
//! CacheClusters in a manifest, as YAML, without a cluster. Built by the same
//! functions the reconciler uses, so what it prints is what gets applied (less the
//! owner references, which need the uid the API server assigns).

use kcache_crd::CacheCluster;
use kube::Resource;
use serde::Deserialize;
use serde_json::Value;

use crate::Error;
use crate::build::{BuildOptions, Cluster, Desired, peer_token};

/// Renders every CacheCluster in `manifest` (one or more YAML documents) as the
/// YAML documents of its objects, separated by `---`.
pub fn render(manifest: &str, options: &BuildOptions) -> Result<String, Error> {
    let mut documents = Vec::new();
    for cluster in parse(manifest)? {
        let resolved = Cluster::new(&cluster, options).map_err(|problems| Error::InvalidSpec {
            name: cluster.metadata.name.clone().unwrap_or_default(),
            problems: problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        if cluster.spec.auth.is_some() {
            // The reconciler generates the peer token once; a rendered one would be
            // a new token on every render (and in version control).
            documents.push(format!(
                "# not rendered: the Secret {name} the nodes mount (the operator generates \
                 it); create it once with\n# kubectl create secret generic {name} \
                 --from-literal={key}=$(openssl rand -hex 32)\n",
                name = peer_token::secret_name(&resolved.name),
                key = peer_token::KEY,
            ));
        }
        for object in Desired::build(&resolved).to_json() {
            documents
                .push(serde_yaml::to_string(&object).map_err(|e| Error::Manifest(e.to_string()))?);
        }
    }
    Ok(documents.join("---\n"))
}

/// The CacheClusters of a manifest; anything else in it is an error, since the
/// caller asked to render CacheClusters.
pub fn parse(manifest: &str) -> Result<Vec<CacheCluster>, Error> {
    let mut clusters = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(manifest).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| Error::Manifest(format!("document {}: {e}", index + 1)))?;
        if value.is_null() {
            continue;
        }
        let (api_version, kind) = (&value["apiVersion"], &value["kind"]);
        if api_version != CacheCluster::api_version(&()).as_ref()
            || kind != CacheCluster::kind(&()).as_ref()
        {
            return Err(Error::Manifest(format!(
                "document {}: expected apiVersion kcache.io/v1alpha1 and kind CacheCluster, found {api_version} {kind}",
                index + 1
            )));
        }
        let cluster: CacheCluster = serde_json::from_value(value)
            .map_err(|e| Error::Manifest(format!("document {}: {e}", index + 1)))?;
        if cluster
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(Error::Manifest(format!(
                "document {}: metadata.name is required",
                index + 1
            )));
        }
        clusters.push(cluster);
    }
    Ok(clusters)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = include_str!("../../examples/cachecluster-minimal.yaml");
    const PRODUCTION: &str = include_str!("../../examples/cachecluster-production.yaml");

    fn kinds(rendered: &str) -> Vec<String> {
        serde_yaml::Deserializer::from_str(rendered)
            .map(|doc| {
                Value::deserialize(doc).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn the_peer_token_is_not_rendered_but_how_to_create_it_is() {
        const SECURE: &str = include_str!("../../examples/cachecluster-secure.yaml");
        let rendered = render(SECURE, &BuildOptions::default()).unwrap();
        assert!(!rendered.contains("kind: Secret"), "{rendered}");
        assert!(
            rendered.starts_with(
                "# not rendered: the Secret secure-peer-token the nodes mount (the operator \
                 generates it); create it once with\n# kubectl create secret generic \
                 secure-peer-token --from-literal=token=$(openssl rand -hex 32)\n---\n"
            ),
            "{rendered}"
        );
        assert!(rendered.contains("--peer-token-file=/etc/kcache/peer-auth/token"));
        // The comment is no document of its own: YAML readers skip it.
        assert_eq!(kinds(&rendered)[0], "ServiceAccount");
    }

    #[test]
    fn the_minimal_example_renders_every_default_object_separated_by_document_markers() {
        let rendered = render(MINIMAL, &BuildOptions::default()).unwrap();
        assert_eq!(rendered.matches("\n---\n").count(), 6);
        assert_eq!(
            kinds(&rendered),
            [
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Service",
                "Service",
                "StatefulSet",
                "PodDisruptionBudget"
            ]
        );
        assert!(rendered.contains("namespace: default"));
        // No uid without a cluster, so no owner references.
        assert!(!rendered.contains("ownerReferences"));
    }

    #[test]
    fn the_production_example_renders_monitoring_and_network_policy_too() {
        let rendered = render(PRODUCTION, &BuildOptions::default()).unwrap();
        let kinds = kinds(&rendered);
        for kind in [
            "NetworkPolicy",
            "ServiceMonitor",
            "PrometheusRule",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
        }
        assert!(rendered.contains("--replication-factor=2"));
        assert!(rendered.contains("--max-memory=3GiB"));
        assert!(rendered.contains("namespace: cache"));
    }

    #[test]
    fn several_clusters_in_one_file_render_one_after_the_other() {
        let two = format!(
            "{MINIMAL}---\n{}",
            MINIMAL.replace("name: demo", "name: other")
        );
        let rendered = render(&two, &BuildOptions::default()).unwrap();
        assert_eq!(kinds(&rendered).len(), 14);
        assert!(rendered.contains("name: other-headless"));
    }

    #[test]
    fn a_document_that_is_not_a_cachecluster_is_refused_with_its_position() {
        let manifest =
            format!("{MINIMAL}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n");
        let error = render(&manifest, &BuildOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("document 2: expected apiVersion kcache.io/v1alpha1"),
            "{error}"
        );
    }

    #[test]
    fn a_spec_that_cannot_work_is_refused_naming_the_field() {
        let manifest = MINIMAL.replace("replicas: 3", "replicas: 1\n  replicationFactor: 2");
        let error = render(&manifest, &BuildOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("CacheCluster demo: spec.replicationFactor: 2 exceeds replicas (1)"),
            "{error}"
        );
    }

    #[test]
    fn a_misspelled_field_type_is_refused_with_the_serde_message() {
        let manifest = MINIMAL.replace("replicas: 3", "replicas: three");
        let error = render(&manifest, &BuildOptions::default())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("document 1: "), "{error}");
    }
}
