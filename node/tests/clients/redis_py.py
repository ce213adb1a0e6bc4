"""redis-py (plain client, one connection pool per node) against kcache's Redis ports.

    redis_py.py write HOST:PORT...   writes 3,000 keys round robin over the nodes
    redis_py.py check HOST:PORT...   reads them all back through every node
    redis_py.py cluster HOST:PORT... reads rc:0..299 with RedisCluster seeded by the first

Run by node/tests/redis_clients.rs around a scale event; prints one summary line last.
"""

import sys

import redis

KEYS = 3000


def clients(addrs):
    out = []
    for addr in addrs:
        host, port = addr.rsplit(":", 1)
        out.append(redis.Redis(host=host, port=int(port), protocol=3, decode_responses=True))
    return out


def main():
    phase, addrs = sys.argv[1], sys.argv[2:]
    if phase == "cluster":
        host, port = addrs[0].rsplit(":", 1)
        rc = redis.RedisCluster(host=host, port=int(port), decode_responses=True)
        found = sum(1 for i in range(300) if rc.get(f"rc:{i}") == str(i))
        assert rc.set("py:cluster", "x") is True
        assert rc.mget_nonatomic(["py:cluster", "rc:1"]) == ["x", "1"]
        print(f"cluster {found} of 300")
        return
    nodes = clients(addrs)
    for node in nodes:
        assert node.ping() is True
    if phase == "write":
        pipes = [node.pipeline(transaction=False) for node in nodes]
        for i in range(KEYS):
            pipes[i % len(pipes)].set(f"py:{i}", f"value-{i}", ex=3600)
        written = sum(sum(1 for ok in pipe.execute() if ok) for pipe in pipes)
        first = nodes[0]
        assert first.set("py:nx", "1", nx=True) is True
        assert first.set("py:nx", "2", nx=True) is None
        assert first.getdel("py:nx") == "1"
        assert first.incrby("py:counter", 7) == 7
        assert nodes[-1].get("py:counter") == "7"
        assert 3590 <= first.ttl("py:0") <= 3600
        print(f"written {written}")
    else:
        found = 0
        for n, node in enumerate(nodes):
            keys = [f"py:{i}" for i in range(n, KEYS, len(nodes))]
            values = node.mget(keys)
            found += sum(1 for k, v in zip(keys, values) if v == f"value-{k[3:]}")
        print(f"found {found} of {KEYS}")


if __name__ == "__main__":
    main()
