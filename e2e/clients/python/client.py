"""A gRPC client no one at kcache wrote: grpcio with the README's settings (its dns
resolver and the round_robin policy), pointed at a CacheCluster's headless Service
through a given DNS server (a ``dns://<server>/<name>:<port>`` target). It sends
Topology calls (each answered by the node that receives it), then one Get, as raw
message bytes (no generated code), and prints what the key held."""

import argparse
import sys

import grpc


def get_request(key: bytes) -> bytes:
    """kcache.v1.GetRequest{key}: field 1, length-delimited."""
    return b"\x0a" + bytes([len(key)]) + key


def get_value(msg: bytes):
    """found (field 1) and value (field 2) of kcache.v1.GetResponse."""
    found, value, i = False, b"", 0
    while i < len(msg):
        tag = msg[i]
        i += 1
        if tag == 0x08:
            found = msg[i] == 1
            i += 1
        elif tag == 0x12:
            n = msg[i]
            value = msg[i + 1 : i + 1 + n]
            i += 1 + n
        else:
            break  # version and ttl are not needed
    return found, value


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--key", default="hello")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    channel = grpc.insecure_channel(
        args.target, options=[("grpc.lb_policy_name", "round_robin")]
    )
    topology = channel.unary_unary("/kcache.v1.Cache/Topology")
    get = channel.unary_unary("/kcache.v1.Cache/Get")
    for _ in range(args.calls):
        topology(b"", timeout=5, wait_for_ready=True)
    found, value = get_value(get(get_request(args.key.encode()), timeout=5))
    if not found:
        print(f"key not found: {args.key}", file=sys.stderr)
        return 1
    print(f"value {value.decode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
