//! Node processes in network namespaces of their own, joined by veth pairs to a bridge,
//! so a test can cut one off from its peers with packet filters while its clients
//! still reach it: a network partition, which one loopback cannot make (every
//! connection there comes from 127.0.0.1, so no filter tells peers from clients).
//!
//! Everything lives inside a private network and mount namespace the test binary
//! re-runs itself in ([`isolated`]), so nothing touches the machine's own network and
//! nothing outlives the test: the namespaces go when their last process does.
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), `ip` and `iptables`, as CI has.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Command, Stdio};

use super::process::{Process, Spec};

/// Set in the re-run test binary: this process is in its own namespaces.
const INSIDE: &str = "KCACHE_TEST_NETNS";
/// The bridge's network; member `i` is `.{i+1}`, the test process (the clients) `.254`.
const NETWORK: &str = "10.77.0";

/// Runs the test `name` of this binary again inside a new network and mount
/// namespace and returns `false`, or returns `true` when this process is that re-run
/// (the caller then does the work). The child's output passes through; its failure
/// fails the caller.
pub fn isolated(name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .args(["sh", "-c"])
        // `ip netns add` mounts each namespace under /run/netns: a tmpfs there keeps
        // those mounts, and their names, inside this mount namespace.
        .arg(r#"mkdir -p /run/netns && mount -t tmpfs kcache-test /run/netns && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(INSIDE, "1")
        .status()
        .expect("unshare (util-linux) runs");
    assert!(
        status.success(),
        "{name}, re-run in its own network namespace: {status} (its output is above; \
         it needs root, `ip` and `iptables`, as scripts/test.sh provides)"
    );
    false
}

/// Runs a command to completion, failing the test with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The namespace of member `i`.
fn namespace(i: usize) -> String {
    format!("kcache-{i}")
}

/// A bridge with `count` member namespaces on it, each with a veth pair; returns the
/// members' specs (gRPC on :7000, admin on :9000) and their `--peers` list.
pub fn network(count: usize) -> (Vec<Spec>, String) {
    run("ip", &["link", "set", "lo", "up"]);
    run("ip", &["link", "add", "kbr", "type", "bridge"]);
    run(
        "ip",
        &["addr", "add", &format!("{NETWORK}.254/24"), "dev", "kbr"],
    );
    run("ip", &["link", "set", "kbr", "up"]);
    let mut specs = Vec::new();
    for i in 0..count {
        let (ns, host, inner) = (namespace(i), format!("kh{i}"), format!("kn{i}"));
        let ip = format!("{NETWORK}.{}", i + 1);
        run("ip", &["netns", "add", &ns]);
        run(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &inner],
        );
        run("ip", &["link", "set", &host, "master", "kbr", "up"]);
        run("ip", &["link", "set", &inner, "netns", &ns]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &format!("{ip}/24"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        specs.push(Spec {
            id: format!("kcache-{i}"),
            ip,
            grpc: 7000,
            admin: 9000,
        });
    }
    let peers = specs
        .iter()
        .map(|s| format!("{}={}", s.id, s.grpc_addr()))
        .collect::<Vec<_>>()
        .join(",");
    (specs, peers)
}

/// Starts member `i` of [`network`] in its namespace, R=2, static membership.
pub fn spawn(i: usize, spec: &Spec, peers: &str, extra: &[&str]) -> Process {
    let child = Command::new("ip")
        .args(["netns", "exec", &namespace(i)])
        .arg(env!("CARGO_BIN_EXE_kcache-node"))
        .args(["--node-id", &spec.id])
        .args(["--grpc-addr", &spec.grpc_addr()])
        .args(["--admin-addr", &format!("{}:{}", spec.ip, spec.admin)])
        .args(["--discovery", "static", "--peers", peers])
        .args(["--replication-factor", "2", "--log", "warn"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Process(child)
}

/// Member `i` drops every packet to and from the members at `others` (their
/// addresses); the test process, a client, still reaches it and it still answers.
pub fn cut_off(i: usize, others: &[&str]) {
    let ns = namespace(i);
    for other in others {
        for (chain, side) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            run(
                "ip",
                &[
                    "netns", "exec", &ns, "iptables", "-A", chain, side, other, "-j", "DROP",
                ],
            );
        }
    }
}

/// Member `i` passes every packet again.
pub fn heal(i: usize) {
    run("ip", &["netns", "exec", &namespace(i), "iptables", "-F"]);
}
