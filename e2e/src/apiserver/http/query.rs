//! Query strings, decoded as form-urlencoded: they may start with `?&` or end in a bare
//! `?` (kube builds them so), and `+` is a space.

/// Decoded query parameters.
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses the raw query (without the leading `?`, though one more is tolerated).
    pub fn parse(raw: Option<&str>) -> Self {
        let raw = raw.unwrap_or_default().trim_start_matches('?');
        Self(
            form_urlencoded::parse(raw.as_bytes())
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The value of `key`, if present and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Whether `key` is `true` (or `1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_ampersands_and_plus_signs_decode_like_the_real_server() {
        let q = Query::parse(Some("&labelSelector=a+in+(x,y)&watch=true&"));
        assert_eq!(q.get("labelSelector"), Some("a in (x,y)"));
        assert!(q.flag("watch"));
        assert_eq!(Query::parse(Some("")).get("x"), None);
    }
}
