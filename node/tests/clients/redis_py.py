"""redis-py (plain client, one connection pool per node) against kcache's Redis ports.

    redis_py.py write HOST:PORT...   writes 3,000 keys round robin over the nodes
    redis_py.py check HOST:PORT...   reads them all back through every node
    redis_py.py cluster HOST:PORT... reads rc:0..299 with RedisCluster seeded by the first
    redis_py.py scale HOST:PORT      RedisCluster writes 3,000 keys, then, for each line
                                     read from stdin, reads them all back with the same
                                     client and writes and reads 300 more

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


def scale(host, port):
    """One RedisCluster client through a scale event the test drives: any error a
    command raises (after the client's own MOVED and TRYAGAIN retries) ends the script."""
    rc = redis.RedisCluster(host=host, port=int(port), decode_responses=True)
    written = sum(1 for i in range(KEYS) if rc.set(f"pyc:{i}", f"value-{i}") is True)
    print(f"written {written}", flush=True)
    for n, _ in enumerate(sys.stdin):
        found = sum(1 for i in range(KEYS) if rc.get(f"pyc:{i}") == f"value-{i}")
        more = [f"pyc:{n}:{i}" for i in range(300)]
        fresh = sum(1 for key in more if rc.set(key, key) is True)
        fresh = sum(1 for key in more if rc.get(key) == key) if fresh == len(more) else 0
        print(f"found {found} of {KEYS}, wrote and read {fresh} of 300", flush=True)


def main():
    phase, addrs = sys.argv[1], sys.argv[2:]
    if phase == "scale":
        scale(*addrs[0].rsplit(":", 1))
        return
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
