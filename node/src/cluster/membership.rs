//! Membership sources (`--discovery`): none (this node alone), static (`--peers`),
//! kubernetes (EndpointSlices; see `kubernetes.rs`). Each yields a watch channel of
//! views that the cluster places keys on.

use std::sync::Arc;

use kcache_client::placement::{Member, View};
use tokio::sync::watch;

/// Parses `--peers id=host:port,id=host:port`.
pub fn parse_peers(spec: &str) -> Result<Vec<Member>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (id, address) = entry
                .split_once('=')
                .ok_or_else(|| format!("--peers entry {entry:?} is not id=host:port"))?;
            let (id, address) = (id.trim(), address.trim());
            if id.is_empty() || !address.contains(':') {
                return Err(format!("--peers entry {entry:?} is not id=host:port"));
            }
            Ok(Member {
                id: id.to_owned(),
                address: address.to_owned(),
            })
        })
        .collect()
}

/// A fixed member list, changeable in-process (tests drive scale-up and scale-down
/// through the sender).
pub fn fixed(members: Vec<Member>) -> (watch::Sender<Arc<View>>, watch::Receiver<Arc<View>>) {
    watch::channel(Arc::new(View::new(members)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_into_members() {
        let members = parse_peers("a=127.0.0.1:7000, b=10.0.0.2:7000,").unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].id, "b");
        assert_eq!(members[1].address, "10.0.0.2:7000");
    }

    #[test]
    fn malformed_peers_name_the_entry() {
        let err = parse_peers("a=127.0.0.1:7000,oops").unwrap_err();
        assert!(err.contains("\"oops\""), "{err}");
        assert!(parse_peers("=1.2.3.4:5").is_err());
        assert!(parse_peers("a=nohostport").is_err());
    }
}
