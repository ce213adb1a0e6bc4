//! URL paths of the API, parsed into what they address.

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`: the resource list.
    GroupVersion(String, String),
    /// `/openapi/v3`.
    OpenApiRoot,
    /// `/openapi/v3/<api/v1 | apis/group/version>`.
    OpenApi(String),
    /// A resource, collection or object.
    Resource(Target),
}

/// A resource path: `…/[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// API group, empty for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// `status`, `scale`, ...
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix.
    pub watch_prefix: bool,
}

/// Parses a path; `None` when it addresses nothing the API serves.
pub fn parse(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Some(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => Some(Route::Health),
        ["api"] => Some(Route::CoreVersions),
        ["api", version] => Some(Route::GroupVersion(String::new(), version.to_string())),
        ["api", version, rest @ ..] => target("", version, rest).map(Route::Resource),
        ["apis"] => Some(Route::Groups),
        ["apis", group] => Some(Route::Group(group.to_string())),
        ["apis", group, version] => {
            Some(Route::GroupVersion(group.to_string(), version.to_string()))
        }
        ["apis", group, version, rest @ ..] => target(group, version, rest).map(Route::Resource),
        ["openapi", "v3"] => Some(Route::OpenApiRoot),
        ["openapi", "v3", rest @ ..] => Some(Route::OpenApi(rest.join("/"))),
        _ => None,
    }
}

fn target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let (watch_prefix, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let mut target = Target {
        group: group.into(),
        version: version.into(),
        watch_prefix,
        ..Default::default()
    };
    let tail = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            target.namespace = Some(ns.to_string());
            target.plural = plural.to_string();
            tail
        }
        [plural, tail @ ..] => {
            target.plural = plural.to_string();
            tail
        }
        [] => return None,
    };
    match tail {
        [] => {}
        [name] => target.name = Some(name.to_string()),
        [name, sub] => {
            target.name = Some(name.to_string());
            target.subresource = Some(sub.to_string());
        }
        _ => return None,
    }
    Some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(route: Option<Route>) -> Target {
        match route {
            Some(Route::Resource(t)) => t,
            other => panic!("not a resource: {other:?}"),
        }
    }

    #[test]
    fn namespaced_object_paths_split_into_parts() {
        let target = t(parse(
            "/apis/kcache.io/v1alpha1/namespaces/ns/cacheclusters/demo/scale",
        ));
        assert_eq!(target.group, "kcache.io");
        assert_eq!(target.namespace.as_deref(), Some("ns"));
        assert_eq!(target.plural, "cacheclusters");
        assert_eq!(target.name.as_deref(), Some("demo"));
        assert_eq!(target.subresource.as_deref(), Some("scale"));
    }

    #[test]
    fn a_namespace_and_its_status_are_cluster_scoped_paths() {
        let target = t(parse("/api/v1/namespaces/ns"));
        assert_eq!(
            (
                target.plural.as_str(),
                target.name.as_deref(),
                target.namespace
            ),
            ("namespaces", Some("ns"), None)
        );
        let target = t(parse("/api/v1/namespaces/ns/status"));
        assert_eq!(target.subresource.as_deref(), Some("status"));
    }

    #[test]
    fn discovery_paths_are_recognised() {
        assert_eq!(parse("/api"), Some(Route::CoreVersions));
        assert_eq!(
            parse("/apis/apps/v1"),
            Some(Route::GroupVersion("apps".into(), "v1".into()))
        );
        assert_eq!(parse("/nope"), None);
    }
}
