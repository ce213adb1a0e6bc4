#!/usr/bin/env python3
"""Turns bench/run.sh's runs.jsonl into results.md, results.json and latency.png.

Every figure is kcache's number next to Redis's and memcached's from the same run, and
their ratios. The PNG needs matplotlib (bench/requirements.txt); without it the table
and JSON are still written.
"""
import argparse
import json
import os
import statistics
import sys


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                runs[r["label"]] = r
    return runs


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("out")
    ap.add_argument("--cores", type=int, default=0)
    ap.add_argument("--memory", type=int, default=64)
    ap.add_argument("--hit-memory", type=int, default=32)
    a = ap.parse_args()
    runs = load(a.runs)

    def ops(label):
        r = runs.get(label)
        return r["ops_per_s"] if r and r.get("ops") else None

    def p99(label):
        r = runs.get(label)
        return r["p99_ms"] if r and r.get("ops") else None

    def p99s(label):
        """The p99 of every round of a repeated run (label, label#2, ...)."""
        return [r["p99_ms"] for l, r in runs.items()
                if (l == label or l.startswith(label + "#")) and r.get("ops")]

    def median_p99(label):
        found = p99s(label)
        return statistics.median(found) if found else None

    def hit(label):
        r = runs.get(label)
        return r.get("hit_ratio") if r else None

    def mib_per_million(system):
        r = runs.get(f"rss/{system}")
        if not r:
            return None
        return (r["rss_after_kib"] - r["rss_before_kib"]) / 1024 * 1_000_000 / r["items"]

    # (figure, what, unit, kcache, redis, memcached, target text, met?)
    rows = []

    def row(fig, what, unit, k, r, m, target, met):
        rows.append({
            "figure": fig, "what": what, "unit": unit, "kcache": k, "redis": r,
            "memcached": m, "vs_redis": ratio(k, r), "vs_memcached": ratio(k, m),
            "target": target, "met": met,
        })

    for op in ("get", "set"):
        k, r, m = ops(f"get/kcache" if op == "get" else "set/kcache"), ops(f"{op}/redis"), ops(f"{op}/memcached")
        row(1, f"{op.upper()} ops/s, 50 conns, no pipelining", "ops/s", k, r, m,
            ">= 1.0x Redis", None if r is None else k >= r)
    r16, m16 = ops("batch/redis"), ops("batch/memcached")
    for name, label in (("MultiGet of 16", "batch/kcache-multi"), ("Pipeline stream, depth 16", "batch/kcache-pipeline")):
        k = ops(label)
        row(2, f"{name} keys/s (others: pipeline depth 16)", "keys/s", k, r16, m16,
            ">= 1.0x pipelined Redis", None if r16 is None or k is None else k >= r16)
    k = median_p99("half/kcache")
    row(3, "GET p99 at half of own peak (median of rounds)", "ms", k, median_p99("half/redis"),
        median_p99("half/memcached"),
        "<= 1 ms", None if k is None else k <= 1.0)
    # The same node through its Redis-protocol port, driven exactly as Redis is.
    for op in ("get", "set"):
        k, r = ops(f"{op}/kcache-resp"), ops(f"{op}/redis")
        row("1r", f"{op.upper()} ops/s via the Redis port, 50 conns", "ops/s", k, r, ops(f"{op}/memcached"),
            ">= 1.0x Redis", None if r is None or k is None else k >= r)
    k = ops("batch/kcache-resp")
    row("2r", "GET keys/s via the Redis port, pipeline depth 16", "keys/s", k, r16, m16,
        ">= 1.0x pipelined Redis", None if r16 is None or k is None else k >= r16)
    k, r = median_p99("half/kcache-resp"), median_p99("half/redis")
    row("3r", "GET p99 at half of own peak via the Redis port (median of rounds)", "ms", k, r,
        median_p99("half/memcached"),
        "<= 1.5x Redis's", None if r is None or k is None else k <= 1.5 * r)
    k, m = mib_per_million("kcache"), mib_per_million("memcached")
    row(4, "RSS growth per 1M items (16 B keys, 100 B values)", "MiB", k, mib_per_million("redis"), m,
        "<= memcached", None if m is None or k is None else k <= m)
    k = hit("hit/kcache")
    lru, lfu, mc = hit("hit/redis-lru"), hit("hit/redis-lfu"), hit("hit/memcached")
    best_redis = max([x for x in (lru, lfu) if x is not None], default=None)
    best = max([x for x in (lru, lfu, mc) if x is not None], default=None)
    row(5, f"hit ratio, Zipf(0.99), {a.hit_memory} MiB each (Redis: best of lru/lfu)", "ratio",
        k, best_redis, mc, ">= best of the others", None if best is None or k is None else k >= best)

    single = {op: ops(f"{op}/kcache") for op in ("get", "set")}
    cluster = []
    for rf in (1, 2):
        for mode in ("rr", "smart"):
            for op in ("get", "set"):
                v = ops(f"cluster/r{rf}/{mode}/{op}")
                cluster.append({"replication": rf, "mode": "round robin" if mode == "rr" else "smart",
                                "op": op.upper(), "ops_per_s": v, "p99_ms": p99(f"cluster/r{rf}/{mode}/{op}"),
                                "vs_one_node": ratio(v, single[op])})

    # CPU per operation: what a GET or SET costs the server and the load generator,
    # far less skewed by other load on the machine than throughput is.
    cpu = []
    for label in ("get", "set", "batch"):
        for system in ("kcache", "kcache-multi", "kcache-pipeline", "kcache-resp", "redis", "memcached"):
            r = runs.get(f"{label}/{system}")
            s = runs.get(f"server-cpu/{label}/{system}")
            if not r or not r.get("ops"):
                continue
            cpu.append({"run": f"{label}/{system}", "ops": r["ops"],
                        "server_us_per_op": s["cpu_s"] / r["ops"] * 1e6 if s else None,
                        "client_us_per_op": r["client_cpu_s"] / r["ops"] * 1e6 if r.get("client_cpu_s") is not None else None})
    # 7: TLS against plaintext, same node, same load, back to back.
    tls = []

    def server_us(label):
        r, s = runs.get(label), runs.get(f"server-cpu/{label}")
        return s["cpu_s"] / r["ops"] * 1e6 if r and r.get("ops") and s else None

    for kind in ("get", "pipeline"):
        base_ops, base_cpu = ops(f"tls/plain/{kind}"), server_us(f"tls/plain/{kind}")
        for mode in ("plain", "tls", "mtls-token"):
            label = f"tls/{mode}/{kind}"
            v, c = ops(label), server_us(label)
            if v is None:
                continue
            tls.append({"workload": kind, "mode": mode, "ops_per_s": v, "p99_ms": p99(label),
                        "server_us_per_op": c, "ops_vs_plaintext": ratio(v, base_ops),
                        "cpu_vs_plaintext": ratio(c, base_cpu)})
    # 8: redis-benchmark on kcache's Redis port and on Redis.
    rbench = []
    for pipeline in (1, 16):
        for test in ("get", "set"):
            k = runs.get(f"redis-benchmark/kcache-resp/{test}/P{pipeline}")
            r = runs.get(f"redis-benchmark/redis/{test}/P{pipeline}")
            if not k or not r:
                continue
            rbench.append({"test": test.upper(), "pipeline": pipeline,
                           "kcache_ops_per_s": k["ops_per_s"], "redis_ops_per_s": r["ops_per_s"],
                           "vs_redis": ratio(k["ops_per_s"], r["ops_per_s"]),
                           "kcache_p99_ms": k["p99_ms"], "redis_p99_ms": r["p99_ms"],
                           "kcache_us_per_op": k["server_us_per_op"], "redis_us_per_op": r["server_us_per_op"]})
    busy = [runs.get(f"load-average/{w}", {}).get("value") for w in ("start", "end")]
    extra = {
        "load_average_start_end": busy,
        "redis_lru_hit_ratio": lru, "redis_lfu_hit_ratio": lfu,
        "p99_at_peak_ms": {s: p99(f"get/{s}") for s in ("kcache", "redis", "memcached")},
    }
    result = {"cores": a.cores, "memory_mib": a.memory, "figures": rows, "cluster": cluster, "cpu": cpu,
              "tls": tls,
              "redis_benchmark": rbench,
              "extra": extra, "runs": list(runs.values())}
    for r in result["runs"]:
        r.pop("servers", None)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)

    def fmt(v, unit):
        if v is None:
            return "-"
        if unit in ("ops/s", "keys/s"):
            return f"{v:,.0f}"
        if unit == "ratio":
            return f"{v:.4f}"
        return f"{v:.2f}"

    def fr(v):
        return "-" if v is None else f"{v:.2f}x"

    lines = [
        f"| # | figure | kcache | Redis | memcached | kcache/Redis | kcache/memcached | target | met |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| {r['figure']} | {r['what']} ({r['unit']}) | {fmt(r['kcache'], r['unit'])} | "
                     f"{fmt(r['redis'], r['unit'])} | {fmt(r['memcached'], r['unit'])} | {fr(r['vs_redis'])} | "
                     f"{fr(r['vs_memcached'])} | {r['target']} | {met} |")
    lines += ["", f"Load average at the start and end of the run: {busy[0]} / {busy[1]} "
              f"({a.cores} cores; servers on core 0, load generator on core 1)."]
    rounds = [f"{system} " + " / ".join(fmt(p, "ms") for p in p99s(f"half/{system}"))
              for system in ("kcache", "kcache-resp", "redis", "memcached") if p99s(f"half/{system}")]
    if rounds:
        lines += ["", "GET p99 at half of peak, ms, each round (figure 3 takes the median): "
                  + "; ".join(rounds) + "."]
    lines += ["", f"Redis allkeys-lru hit ratio {fmt(lru, 'ratio')}, allkeys-lfu {fmt(lfu, 'ratio')}.", "",
              "| 6: 3-node cluster | op | ops/s | p99 ms | vs one node |", "|---|---|---:|---:|---:|"]
    for c in cluster:
        lines.append(f"| R={c['replication']}, {c['mode']} | {c['op']} | {fmt(c['ops_per_s'], 'ops/s')} | "
                     f"{fmt(c['p99_ms'], 'ms')} | {fr(c['vs_one_node'])} |")
    if tls:
        names = {"plain": "plaintext", "tls": "TLS", "mtls-token": "mutual TLS + token"}
        kinds = {"get": "GET, 50 conns", "pipeline": "Pipeline GET, depth 16 (keys/s)"}
        lines += ["", "| 7: TLS | mode | ops/s | p99 ms | vs plaintext | server µs/op | vs plaintext |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for t in tls:
            lines.append(f"| {kinds[t['workload']]} | {names[t['mode']]} | {fmt(t['ops_per_s'], 'ops/s')} | "
                         f"{fmt(t['p99_ms'], 'ms')} | {fr(t['ops_vs_plaintext'])} | "
                         f"{fmt(t['server_us_per_op'], 'us')} | {fr(t['cpu_vs_plaintext'])} |")
    if rbench:
        lines += ["", "| 8: redis-benchmark, 50 conns | pipeline | kcache ops/s | Redis ops/s | kcache/Redis | "
                  "kcache p99 ms | Redis p99 ms | kcache server µs/op | Redis server µs/op |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for b in rbench:
            lines.append(f"| {b['test']} | {b['pipeline']} | {fmt(b['kcache_ops_per_s'], 'ops/s')} | "
                         f"{fmt(b['redis_ops_per_s'], 'ops/s')} | {fr(b['vs_redis'])} | {fmt(b['kcache_p99_ms'], 'ms')} | "
                         f"{fmt(b['redis_p99_ms'], 'ms')} | {fmt(b['kcache_us_per_op'], 'us')} | "
                         f"{fmt(b['redis_us_per_op'], 'us')} |")
    lines += ["", "| CPU per operation | server µs/op | load generator µs/op |", "|---|---:|---:|"]
    for c in cpu:
        lines.append(f"| {c['run']} | {fmt(c['server_us_per_op'], 'us')} | {fmt(c['client_us_per_op'], 'us')} |")
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib not installed: no latency.png", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, prefix, title in ((axes[0], "get", "GET, 50 connections, closed loop (peak)"),
                              (axes[1], "half", "GET at half of each system's peak")):
        for system, color in (("kcache", "tab:blue"), ("kcache-resp", "tab:purple"), ("redis", "tab:red"),
                              ("memcached", "tab:green")):
            r = runs.get(f"{prefix}/{system}")
            if not r or not r.get("ops"):
                continue
            ps = [p["p"] for p in r["percentiles"] if p["p"] < 100]
            ms = [p["ms"] for p in r["percentiles"] if p["p"] < 100]
            xs = [1 / (1 - p / 100) for p in ps]
            ax.plot(xs, ms, marker="o", color=color, label=f"{system} ({r['ops_per_s']:,.0f} ops/s)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([2, 10, 100, 1000, 10000])
        ax.set_xticklabels(["p50", "p90", "p99", "p99.9", "p99.99"])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:g}".lstrip("0.")[:1] in ("2", "5") else ""))
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"kcache vs Redis vs memcached, one machine, {a.cores} cores "
                 "(servers on core 0, load generator on core 1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "latency.png"), dpi=90)


if __name__ == "__main__":
    main()
