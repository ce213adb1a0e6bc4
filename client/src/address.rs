//! Turns the address forms users type into the URI tonic dials.

use crate::Error;

/// Normalises `host:port`, `http://host:port` or `dns:///host:port` to
/// `http://host:port`. A port is required: gRPC's implicit 443 for `dns:` names would
/// surprise anyone whose nodes listen on 7000.
pub(crate) fn endpoint_uri(addr: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Error::InvalidAddress {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    let host_port = if let Some(rest) = addr.strip_prefix("http://") {
        rest
    } else if let Some(rest) = addr.strip_prefix("dns:///") {
        rest
    } else if addr.starts_with("https://") {
        return Err(invalid("TLS is not supported; use http:// or host:port"));
    } else if addr.contains("://") {
        return Err(invalid(
            "expected host:port, http://host:port or dns:///host:port",
        ));
    } else {
        addr
    };
    let host_port = host_port.strip_suffix('/').unwrap_or(host_port);
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return Err(invalid("missing port, as in 127.0.0.1:7000"));
    };
    if host.is_empty() || host.contains('/') {
        return Err(invalid("expected host:port"));
    }
    if port.parse::<u16>().is_err() {
        return Err(invalid("the port must be a number from 0 to 65535"));
    }
    Ok(format!("http://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_documented_forms() {
        for addr in ["node:7000", "http://node:7000", "dns:///node:7000"] {
            assert_eq!(endpoint_uri(addr).expect(addr), "http://node:7000");
        }
    }

    #[test]
    fn accepts_bracketed_ipv6() {
        assert_eq!(
            endpoint_uri("[::1]:7000").expect("ipv6"),
            "http://[::1]:7000"
        );
    }

    #[test]
    fn rejects_missing_port_tls_and_unknown_schemes() {
        for addr in [
            "node",
            "https://node:7000",
            "unix:///tmp/s",
            "node:http",
            ":7000",
        ] {
            assert!(
                matches!(endpoint_uri(addr), Err(Error::InvalidAddress { .. })),
                "{addr}"
            );
        }
    }
}
