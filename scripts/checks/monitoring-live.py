#!/usr/bin/env python3
"""Runs a real Prometheus against live kcache processes and evaluates every query the
dashboard and the alerts ship, failing on a metric or label the code does not export
or a query that returns nothing when it should.

What runs, all on 127.0.0.1 and stopped at the end (or when the time is up):
  - three kcache-node processes in one static cluster (replication factor 2, a small
    memory limit and a short default TTL, so evictions and expirations happen),
  - kcache-local's API (`up --no-operator`) with the CRD, and the kcache-operator
    binary against it with leader election, reconciling one CacheCluster,
  - Prometheus, scraping them every second with the labels the Prometheus Operator
    gives targets (namespace, service, pod, container, endpoint) and loading the
    chart's alert rules,
  - `kcache bench`: 6 MB of writes (so the nodes evict), then cache-aside reads and
    writes through every node, and a few CLI calls, one of them refused.

    monitoring-live.py WORK_DIR TARGET_DIR

TARGET_DIR has kcache-node, kcache, kcache-operator and kcache-local.
"""

import contextlib
import json
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kcache-operator"
DASHBOARD = CHART / "dashboards" / "kcache.json"
NAMESPACE, CLUSTER = "cache", "sessions"
OPERATOR_NAMESPACE, OPERATOR_SERVICE = "kcache-system", "kcache-kcache-operator-metrics"
# $__rate_interval as Grafana would choose it for a 1s scrape over a short range.
RATE_INTERVAL = "30s"
# Queries allowed to return nothing on a healthy run, and why. Their metric and label
# names are still checked against the source.
EMPTY_WHEN_HEALTHY = {
    "kcache_operator_reconcile_errors_total": "a series per kind of error appears with the first such error",
}
# Labels Prometheus (and the Prometheus Operator) attach to every scraped series.
TARGET_LABELS = {"namespace", "service", "pod", "container", "endpoint", "job", "instance"}
DEADLINE = time.monotonic() + 240


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_for(what, probe, seconds=60):
    end = min(time.monotonic() + seconds, DEADLINE)
    last = None
    while time.monotonic() < end:
        try:
            value = probe()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - anything means "not yet"
            last = error
        time.sleep(0.5)
    raise CheckFailed(f"timed out waiting for {what} (last error: {last})")


class Processes:
    """Every process this check starts; all are stopped on exit, each by its own id."""

    def __init__(self, logs):
        self.logs, self.started = logs, []

    def start(self, name, args):
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.started.append((name, process))
        return process

    def stop(self):
        for _, process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self.started):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def tail(self, name, lines=30):
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""


def source_metrics():
    """Metric names and label names the node and the operator register, and the gRPC
    code names the node labels requests with, from the source."""
    names, labels = {"up"}, set()
    codes = set(re.findall(r'=> "([A-Za-z]+)"', (ROOT / "node/src/metrics.rs").read_text()))
    # Every source file of the node that registers metrics (security, anti-entropy and
    # the rest keep theirs beside their code), and the operator's.
    sources = [(p, "kcache_") for p in sorted((ROOT / "node/src").rglob("*.rs")) if "prometheus::" in p.read_text()]
    sources.append((ROOT / "operator/src/metrics.rs", "kcache_operator_"))
    for path, prefix in sources:
        text = path.read_text()
        names |= {prefix + n for n in re.findall(r'(?:new|counter|gauge)\(\s*"([a-z_]+)"', text)}
        for group in re.findall(r'&\[\s*("[a-z_]+"(?:\s*,\s*"[a-z_]+")*)\s*\]', text):
            labels |= set(re.findall(r'"([a-z_]+)"', group))
    expect(len(codes) == 17, f"node/src/metrics.rs labels {len(codes)} gRPC codes, not 17")
    return names, labels, codes


def exported_name(series_name, names):
    """The registered name behind a series name (histograms add _bucket, _count, _sum)."""
    if series_name in names:
        return series_name
    base = re.sub(r"_(bucket|count|sum)$", "", series_name)
    return base if base in names else None


def selectors(expr):
    """(metric, matchers) of every vector selector in a PromQL expression of ours."""
    found = []
    for match in re.finditer(r"\b(kcache_[a-z0-9_]+|up)\b(\{[^}]*\})?", expr):
        found.append((match.group(1), match.group(2) or ""))
    return found


def grouping_labels(expr):
    return {l.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for l in group.split(",") if l.strip()}


def matcher_labels(matchers):
    return set(re.findall(r'([a-z_]+)\s*(?:=~|!~|!=|=)\s*"', matchers))


def threshold_free(expr):
    """The expression left of its last top-level comparison: what the alert compares."""
    depth, cut = 0, None
    for i, char in enumerate(expr):
        depth += {"(": 1, ")": -1, "{": 1, "}": -1, "[": 1, "]": -1}.get(char, 0)
        if depth == 0 and re.match(r"\s(>|<|==|!=|>=|<=)\s", expr[i : i + 4]):
            cut = i
    return expr[:cut].strip() if cut is not None else expr


class Prometheus:
    def __init__(self, url):
        self.url = url

    def query(self, expr):
        data = urllib.parse.urlencode({"query": expr})
        body = json.loads(http_get(f"{self.url}/api/v1/query?{data}"))
        expect(body["status"] == "success", f"query failed: {expr}: {body}")
        return body["data"]["result"]

    def series_labels(self, selector):
        data = urllib.parse.urlencode({"match[]": selector, "start": time.time() - 600})
        body = json.loads(http_get(f"{self.url}/api/v1/series?{data}"))
        return set().union(*[set(s) for s in body["data"]]) - {"__name__"}

    def label_values(self, label, selector):
        data = urllib.parse.urlencode({"match[]": selector})
        return json.loads(http_get(f"{self.url}/api/v1/label/{label}/values?{data}"))["data"]


CODE_MATCHER = re.compile(r',\s*code=~"([A-Za-z|]+)"')


def check_query(prom, names, source, expr, legend, where):
    """Names and labels exist, and the query returns data (unless allowed empty).

    A selector that picks gRPC codes (code=~"A|B") matches nothing until such a code
    is answered: its code names are checked against the node's, and the data check
    runs without that matcher."""
    source_labels, codes = source
    for picked in CODE_MATCHER.findall(expr):
        unknown = set(picked.split("|")) - codes
        expect(not unknown, f"{where}: the node never labels a request with code {sorted(unknown)}")
    expr = CODE_MATCHER.sub("", expr)
    used = selectors(expr)
    expect(used, f"{where}: no kcache metric in {expr}")
    allowed_empty = [m for m, _ in used if exported_name(m, names) in EMPTY_WHEN_HEALTHY]
    series_labels = set()
    for metric, matchers in used:
        expect(exported_name(metric, names), f"{where}: {metric} is not a metric node/ or operator/ registers")
        if metric in allowed_empty:
            unknown = matcher_labels(matchers) - source_labels - TARGET_LABELS
            expect(not unknown, f"{where}: {metric} has no labels {unknown}")
            continue
        labels = prom.series_labels(metric + matchers)
        expect(labels, f"{where}: no series match {metric}{matchers}")
        series_labels |= labels
        unknown = matcher_labels(matchers) - labels
        expect(not unknown, f"{where}: {metric} has no labels {sorted(unknown)}")
    wanted = grouping_labels(expr) | set(re.findall(r"\{\{(\w+)\}\}", legend or "")) - {"le"}
    known = series_labels | (source_labels if allowed_empty else set())
    expect(not (wanted - known - {"le"}), f"{where}: groups or labels by {sorted(wanted - known)}, which {expr} lacks")
    result = prom.query(expr)
    if allowed_empty:
        return "allowed empty" if not result else len(result)
    expect(result, f"{where}: returned nothing: {expr}")
    return len(result)


def check_dashboard(prom, names, source):
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    expect({"namespace", "cluster"} <= set(variables), f"dashboard variables: {sorted(variables)}")
    namespaces = prom.label_values("namespace", "kcache_members")
    expect(NAMESPACE in namespaces, f"$namespace offers {namespaces}, not {NAMESPACE}")
    services = prom.label_values("service", f'kcache_members{{namespace=~"{NAMESPACE}"}}')
    regex = variables["cluster"]["regex"].strip("/")
    clusters = [m.group(1) for s in services if (m := re.fullmatch(regex, s))]
    expect(clusters == [CLUSTER], f"$cluster offers {clusters} (from {services}), not [{CLUSTER}]")
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$namespace", NAMESPACE)
                .replace("$cluster", CLUSTER)
            )
            expect("$" not in expr, f"panel {panel['title']!r}: unknown variable in {expr}")
            outcome = check_query(prom, names, source, expr, target.get("legendFormat"), f"panel {panel['title']!r}")
            print(f"  panel {panel['title']!r} {target['refId']}: {outcome} series")
            checked += 1
    return checked


def rendered_rules():
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render({"prometheusRule": {"enabled": True}}, name="kcache", namespace=OPERATOR_NAMESPACE)
    return yaml.safe_load(manifests["kcache-operator/templates/prometheusrule.yaml"])["spec"]["groups"]


def check_alerts(prom, names, source, groups):
    # Prometheus itself loaded and evaluated every rule without an error.
    body = json.loads(http_get(f"{prom.url}/api/v1/rules"))
    loaded = [r for g in body["data"]["groups"] for r in g["rules"]]
    expect(len(loaded) == sum(len(g["rules"]) for g in groups), f"Prometheus loaded {len(loaded)} rules")
    unhealthy = [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    expect(not unhealthy, f"rules Prometheus could not evaluate: {unhealthy}")
    for group in groups:
        for rule in group["rules"]:
            inner = threshold_free(rule["expr"])
            outcome = check_query(prom, names, source, inner, None, f"alert {rule['alert']}")
            state = next(r["state"] for r in loaded if r["name"] == rule["alert"])
            print(f"  alert {rule['alert']}: what it compares has {outcome} series; state {state}")
    return loaded


def run(work, bins):
    logs = work / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        # Three nodes, one static cluster.
        grpc = [free_port() for _ in range(3)]
        admin = [free_port() for _ in range(3)]
        peers = ",".join(f"{CLUSTER}-{i}=127.0.0.1:{grpc[i]}" for i in range(3))
        for i in range(3):
            procs.start(f"node-{i}", [
                str(bins / "kcache-node"), "--node-id", f"{CLUSTER}-{i}",
                "--grpc-addr", f"127.0.0.1:{grpc[i]}", "--admin-addr", f"127.0.0.1:{admin[i]}",
                "--advertise-addr", f"127.0.0.1:{grpc[i]}",
                "--discovery", "static", "--peers", peers, "--replication-factor", "2",
                "--max-memory", "1MiB", "--default-ttl", "2s",
            ])
        for i in range(3):
            wait_for(f"node {i} ready", lambda i=i: http_get(f"http://127.0.0.1:{admin[i]}/readyz"))

        # The API (kcache-local), the CRD, and the operator binary with leader election.
        kubeconfig = work / "kubeconfig"
        procs.start("kcache-local", [str(bins / "kcache-local"), "up", "--no-operator", "--kubeconfig", str(kubeconfig),
                                     "--state-dir", str(work / "pods")])
        kubectl = ["kubectl", "--kubeconfig", str(kubeconfig)]
        wait_for("the local API", lambda: subprocess.run(kubectl + ["get", "namespaces"], capture_output=True).returncode == 0)
        subprocess.run(kubectl + ["apply", "-f", str(ROOT / "crds" / "cachecluster.yaml")], check=True, capture_output=True)
        operator_port = free_port()
        procs.start("operator", [
            str(bins / "kcache-operator"), "run", "--kubeconfig", str(kubeconfig),
            "--metrics-addr", f"127.0.0.1:{operator_port}", "--leader-election", "true",
            "--lease-namespace", "default", "--identity", "kcache-operator-0",
        ])
        operator_metrics = f"http://127.0.0.1:{operator_port}/metrics"
        wait_for("the operator to lead", lambda: "kcache_operator_leader 1" in http_get(operator_metrics))
        cluster = {"apiVersion": "kcache.io/v1alpha1", "kind": "CacheCluster",
                   "metadata": {"name": "live", "namespace": "default"}, "spec": {"replicas": 1}}
        subprocess.run(kubectl + ["apply", "-f", "-"], input=json.dumps(cluster), text=True, check=True, capture_output=True)
        wait_for("a successful reconciliation",
                 lambda: re.search(r'kcache_operator_reconciliations_total\{result="success"\} [1-9]', http_get(operator_metrics)))

        # Prometheus with the chart's rules, labelling targets as the Prometheus Operator does.
        groups = rendered_rules()
        (work / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        node_targets = [{"targets": [f"127.0.0.1:{admin[i]}"],
                         "labels": {"namespace": NAMESPACE, "service": f"{CLUSTER}-headless", "pod": f"{CLUSTER}-{i}",
                                    "container": "node", "endpoint": "admin"}} for i in range(3)]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(work / "rules.yaml")],
            "scrape_configs": [
                {"job_name": f"{CLUSTER}-headless", "static_configs": node_targets},
                {"job_name": OPERATOR_SERVICE, "static_configs": [{
                    "targets": [f"127.0.0.1:{operator_port}"],
                    "labels": {"namespace": OPERATOR_NAMESPACE, "service": OPERATOR_SERVICE,
                               "pod": "kcache-operator-0", "container": "operator", "endpoint": "metrics"}}]},
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom_port = free_port()
        procs.start("prometheus", ["prometheus", f"--config.file={work / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"])
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        wait_for("Prometheus to scrape all 4 targets",
                 lambda: len([r for r in prom.query("up") if r["value"][1] == "1"]) == 4)

        # A short workload through every node, and one refused request.
        servers = ",".join(f"127.0.0.1:{p}" for p in grpc)
        # 6 MB of writes into three 1 MiB nodes: evictions whatever the machine's speed.
        load = subprocess.run([str(bins / "kcache"), "bench", "--servers", servers, "--workload", "load",
                               "--keys", "6000", "--value-size", "1000", "--connections", "6"],
                              capture_output=True, text=True, timeout=60)
        expect(load.returncode == 0, f"kcache bench --workload load failed: {load.stdout}{load.stderr}")
        bench = subprocess.run([str(bins / "kcache"), "bench", "--servers", servers, "--workload", "cache-aside",
                                "--keys", "20000", "--value-size", "400", "--connections", "6", "--depth", "4",
                                "--duration", "3s", "--rate", "3000"],
                               capture_output=True, text=True, timeout=60)
        expect(bench.returncode == 0, f"kcache bench failed: {bench.stdout}{bench.stderr}")
        cli = [str(bins / "kcache"), "--addr", f"127.0.0.1:{grpc[0]}"]
        subprocess.run(cli + ["set", "greeting", "hello"], check=True, capture_output=True)
        subprocess.run(cli + ["get", "greeting"], check=True, capture_output=True)
        subprocess.run(cli + ["set", "short-lived", "v", "--ttl", "1s"], check=True, capture_output=True)
        time.sleep(1.5)
        expired = subprocess.run(cli + ["get", "short-lived"], capture_output=True)
        expect(expired.returncode == 1, f"a key past its TTL was still found (exit {expired.returncode})")
        refused = subprocess.run(cli + ["set", "k" * 300, "v"], capture_output=True, text=True)
        expect(refused.returncode == 3, f"a 300-byte key was not refused (exit {refused.returncode})")
        # Let a few scrapes and rule evaluations see the workload.
        wait_for("the workload in Prometheus",
                 lambda: prom.query('kcache_requests_total{code="InvalidArgument"}'))
        time.sleep(3)
        moved = {}
        for counter in ("kcache_hits_total", "kcache_misses_total", "kcache_evictions_total",
                        "kcache_expirations_total", "kcache_forwarded_requests_total"):
            result = prom.query(f"sum({counter})")
            moved[counter] = float(result[0]["value"][1]) if result else 0.0
        expect(all(moved.values()), f"the workload left counters at 0: {moved}")
        print("workload: " + ", ".join(f"{k} {v:.0f}" for k, v in moved.items()))

        names, *source = source_metrics()
        panels = check_dashboard(prom, names, source)
        print(f"dashboard: all {panels} panel queries use exported metrics and labels and return data")
        rules = check_alerts(prom, names, source, groups)
        print(f"alerts: Prometheus evaluates all {len(rules)} rules without error; each one's metrics, labels "
              f"and compared expression are live")
    except CheckFailed:
        for name, _ in procs.started:
            print(f"--- last lines of {name}.log\n{procs.tail(name)}")
        raise
    finally:
        procs.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        run(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
    except CheckFailed as failure:
        print(f"FAILED: {failure}")
        sys.exit(1)
