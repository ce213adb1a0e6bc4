#!/usr/bin/env python3
"""Checks the Helm chart charts/kcache-operator with real Helm (helm-python-sdk embeds
Helm's Go SDK): its CRD is crds/cachecluster.yaml byte for byte; `helm lint --strict`
is clean for every Kubernetes version kcache supports; it renders with the defaults
and with every value set, into exactly the objects expected; every rendered object is
valid under kubernetes-validate --strict for those versions (CacheClusters against
the CRD's own schema, ServiceMonitors and PrometheusRules against the
prometheus-operator CRDs the real control plane pins, together with the ones the operator
renders for examples/cachecluster-production.yaml); the ClusterRole holds what the operator grants its nodes and
nothing with "*"; the Deployment configures the operator only through environment
variables its `run` command reads; and values that break values.schema.json (or a
rule of the templates) are refused with a message that names the value.

    chart.py OUT_DIR OPERATOR_BINARY PROMETHEUS_OPERATOR_CRD_DIR

OUT_DIR receives the rendered manifests (one file per object). Exit status 1 on the
first failed check, with what failed.
"""

import copy
import json
import pathlib
import re
import subprocess
import sys

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kcache-operator"
VENV_BIN = pathlib.Path(sys.executable).parent
VERSIONS = ["1.33", "1.34", "1.35", "1.36", "1.37"]
RELEASE, NAMESPACE = "kcache", "kcache-system"

# Every value of values.yaml set to something other than its default (the test below
# fails when values.yaml grows a key this does not set).
ALL_ON = {
    "nameOverride": "kc",
    "fullnameOverride": "kcache-op",
    "replicaCount": 3,
    "image": {
        "repository": "registry.example/kcache-operator",
        "tag": "0.1.0-test",
        "digest": "sha256:" + "ab" * 32,
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "nodeImage": "registry.example/kcache-node:0.1.0",
    "clusterDomain": "cluster.example",
    "leaderElection": {"enabled": True, "leaseName": "kcache-leader"},
    "logging": {"format": "text", "level": "info,kcache_operator=debug"},
    "serviceAccount": {
        "create": True,
        "name": "kcache-operator-sa",
        "annotations": {"example.com/role": "kcache"},
    },
    "rbac": {"create": True},
    "resources": {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    },
    "podLabels": {"team": "platform"},
    "podAnnotations": {"example.com/owner": "platform"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}
                ]
            }
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "kc"}},
        }
    ],
    "priorityClassName": "system-cluster-critical",
    "podDisruptionBudget": {"enabled": True},
    "metrics": {
        "port": 9090,
        "service": {"port": 8443, "annotations": {"example.com/scrape": "true"}},
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
    },
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "prometheus"},
        "nodeSelector": 'container="node", endpoint="admin", job=~".+-headless"',
    },
    "dashboards": {
        "enabled": True,
        "labels": {"grafana_dashboard": "1", "team": "platform"},
        "annotations": {"grafana_folder": "kcache"},
        "namespace": "monitoring",
    },
    "cacheClusters": [
        {"name": "demo", "spec": {"replicas": 3}},
        {
            "name": "sessions",
            "namespace": "cache",
            "labels": {"team": "web"},
            "annotations": {"example.com/owner": "web"},
            "spec": yaml.safe_load((ROOT / "examples" / "cachecluster-production.yaml").read_text())["spec"],
        },
    ],
}

EXPECTED_KINDS = {
    "defaults": sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment", "Lease"]
    ),
    "all-on": sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment", "Lease"]
        + ["PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ConfigMap", "CacheCluster", "CacheCluster"]
    ),
}

# Values the chart must refuse, and a piece of the message that names the culprit.
REFUSED = [
    ({"replicaCount": 0}, "/replicaCount"),
    ({"replicas": 2}, "'replicas' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "/metrics/serviceMonitor/interval"),
    ({"logging": {"format": "xml"}}, "/logging/format"),
    ({"leaderElection": {"enabled": "yes"}}, "/leaderElection/enabled"),
    ({"cacheClusters": [{"spec": {"replicas": 3}}]}, "/cacheClusters/0"),
    ({"cacheClusters": [{"name": "Demo", "spec": {}}]}, "/cacheClusters/0/name"),
    ({"prometheusRule": {"enabled": True, "selector": "x"}}, "'selector' not allowed"),
    ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "replicaCount above 1 needs leaderElection.enabled"),
    ({"replicaCount": 1, "podDisruptionBudget": {"enabled": True}}, "podDisruptionBudget.enabled needs replicaCount"),
    ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
]


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def leaves(tree, prefix=""):
    """Dotted paths of the leaves of a values tree (a list or a map counts as one)."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def check_crd_copy():
    chart_crd = (CHART / "crds" / "cachecluster.yaml").read_bytes()
    expect(
        chart_crd == (ROOT / "crds" / "cachecluster.yaml").read_bytes(),
        "charts/kcache-operator/crds/cachecluster.yaml differs from crds/cachecluster.yaml: "
        "cp crds/cachecluster.yaml charts/kcache-operator/crds/",
    )
    print("crd: the chart's CRD is crds/cachecluster.yaml byte for byte")


def check_lint():
    for name, values in (("defaults", None), ("all-on", ALL_ON)):
        for version in VERSIONS:
            report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}.0")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            expect(not problems, f"helm lint --strict ({name}, {version}): {problems}")
        notes = sorted({m["error"] for m in report["messages"]})
        print(f"lint: helm lint --strict with {name} values clean for {', '.join(VERSIONS)} (info: {notes})")


def render(values):
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [(path, doc) for doc in yaml.safe_load_all(text) if doc]
    return objects, manifests


def check_all_on_sets_every_value():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    def lookup(tree, path):
        for key in path.split("."):
            tree = tree.get(key) if isinstance(tree, dict) else None
        return tree

    # Switches on by default stay on; the sidecar's label keeps its value.
    same = {p for p in leaves(defaults) if lookup(defaults, p) is True} | {"dashboards.labels.grafana_dashboard"}
    missing = sorted(
        p for p in leaves(defaults) if lookup(ALL_ON, p) is None or (lookup(ALL_ON, p) == lookup(defaults, p) and p not in same)
    )
    expect(not missing, f"the all-on values leave these at their defaults: {missing}")
    # A value needs a comment right above it, or above the map it is part of.
    uncommented, ancestors = [], []  # ancestors: (indent, commented) of enclosing keys
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)[A-Za-z][A-Za-z0-9_]*:", line)
        if not match:
            continue
        indent = len(match.group(1))
        ancestors = [a for a in ancestors if a[0] < indent]
        commented = i > 0 and lines[i - 1].lstrip().startswith("#")
        if not line.rstrip().endswith(":") and not commented and not any(c for _, c in ancestors):
            uncommented.append(line.strip())
        ancestors.append((indent, commented))
    expect(not uncommented, f"values.yaml values without a comment above them: {uncommented}")
    print(f"values: the all-on set changes all {len(set(leaves(defaults)))} values; every value has a comment")


def check_rendered(name, objects, out):
    kinds = sorted(doc["kind"] for _, doc in objects)
    expect(kinds == EXPECTED_KINDS[name], f"{name}: rendered {kinds}, expected {EXPECTED_KINDS[name]}")
    for i, (path, doc) in enumerate(objects):
        labels = doc["metadata"].get("labels", {})
        for label in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
            expect(label in labels, f"{name}: {doc['kind']} {doc['metadata']['name']} lacks the label {label}")
        (out / f"{name}-{i:02}-{doc['kind'].lower()}.yaml").write_text(yaml.safe_dump(doc))
    for _, doc in objects:
        if doc["kind"] == "ConfigMap":
            expect(doc["metadata"]["labels"].get("grafana_dashboard") == "1", "the dashboard ConfigMap lacks grafana_dashboard: 1")
            shipped = (CHART / "dashboards" / "kcache.json").read_text()
            expect(doc["data"].get("kcache.json", "").strip() == shipped.strip(), "the dashboard ConfigMap differs from dashboards/kcache.json")
            json.loads(doc["data"]["kcache.json"])
    print(f"render: {name} values give {len(objects)} objects: {', '.join(kinds)}")


def check_monitoring_kinds(out, operator, crd_dir):
    rendered = subprocess.run(
        [operator, "render", "-f", str(ROOT / "examples" / "cachecluster-production.yaml")],
        capture_output=True, text=True, check=True,
    ).stdout
    for i, doc in enumerate(d for d in yaml.safe_load_all(rendered) if d):
        if doc["kind"] in ("ServiceMonitor", "PrometheusRule"):
            (out / f"operator-{i:02}-{doc['kind'].lower()}.yaml").write_text(yaml.safe_dump(doc))
    for kind, crd in (("servicemonitor", "servicemonitors"), ("prometheusrule", "prometheusrules")):
        files = sorted(str(p) for p in out.glob(f"*-{kind}.yaml"))
        expect(len(files) == 2, f"expected a {kind} from the chart and one from the operator, found {files}")
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "validate-custom-resources.py"),
             str(pathlib.Path(crd_dir) / f"monitoring.coreos.com_{crd}.yaml"), *files],
            capture_output=True, text=True,
        )
        expect(result.returncode == 0, f"{kind} fails prometheus-operator's CRD schema:\n{result.stdout}{result.stderr}")
    print("validate: the chart's and the operator's ServiceMonitor and PrometheusRule pass prometheus-operator's CRD schemas")


def check_validate(out):
    files = sorted(str(p) for p in out.glob("*.yaml") if not p.name.startswith("operator-"))
    args = [str(VENV_BIN / "kubernetes-validate"), "--strict"]
    for v in VERSIONS:
        args += ["-k", v]
    report = subprocess.run(args + files, capture_output=True, text=True)
    custom = re.compile(
        r"^WARN .* Couldn't find schema for kind (CacheCluster with api version kcache\.io/v1alpha1|"
        r"(ServiceMonitor|PrometheusRule) with api version monitoring\.coreos\.com/v1) "
    )
    lines = (report.stdout + report.stderr).splitlines()
    unexpected = [l for l in lines if not l.startswith("INFO ") and not custom.match(l)]
    expect(not unexpected and report.returncode == 0, "kubernetes-validate failed:\n" + "\n".join(unexpected or lines))
    passed = sum(l.startswith("INFO ") for l in lines)
    expect(passed > 0, "kubernetes-validate checked nothing")
    print(f"validate: kubernetes-validate --strict ({' '.join(VERSIONS)}): {passed} object checks passed")
    crs = [f for f in files if f.endswith("-cachecluster.yaml")]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "validate-custom-resources.py"), str(ROOT / "crds" / "cachecluster.yaml")]
        + crs,
        capture_output=True,
        text=True,
    )
    expect(result.returncode == 0, f"CacheClusters from the chart fail the CRD schema:\n{result.stdout}{result.stderr}")
    print(f"validate: {len(crs)} CacheClusters from the chart pass the CRD schema")


def rules_of(kind, objects):
    return [r for doc in objects if doc["kind"] == kind for r in doc.get("rules", [])]


def check_rbac(objects, operator):
    granted = []
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        rendered = subprocess.run([operator, "render", "-f", str(example)], capture_output=True, text=True, check=True)
        granted += rules_of("Role", [d for d in yaml.safe_load_all(rendered.stdout) if d])
    expect(granted, "the operator granted its nodes nothing: is rbac.rs still building a Role?")
    held = rules_of("ClusterRole", objects)
    for rule in held + rules_of("Role", objects):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            expect("*" not in rule.get(field, []), f"a chart RBAC rule has * in {field}: {rule}")
    for rule in granted:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    expect(
                        any(
                            group in h["apiGroups"] and resource in h["resources"] and verb in h["verbs"]
                            for h in held
                        ),
                        f"the operator grants {verb} {group}/{resource} to nodes but the ClusterRole lacks it",
                    )
    print(f"rbac: no *; the ClusterRole ({len(held)} rules) holds all {len(granted)} rules the operator grants nodes")


def check_env_contract(objects, operator):
    helptext = subprocess.run([operator, "run", "--help"], capture_output=True, text=True, check=True).stdout
    deployment = next(d for d in objects if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    names = [e["name"] for e in container["env"]]
    unknown = [n for n in names if f"[env: {n}=" not in helptext]
    expect(not unknown, f"the Deployment sets variables `kcache-operator run` does not read: {unknown}")
    expect(container["args"] == ["run"], f"the operator runs {container['args']}, not run")
    probes = {p: container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    expect(probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}, f"probes: {probes}")
    security = container["securityContext"]
    expect(
        security.get("allowPrivilegeEscalation") is False
        and security.get("capabilities", {}).get("drop") == ["ALL"]
        and deployment["spec"]["template"]["spec"]["securityContext"].get("runAsNonRoot") is True
        and deployment["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
        f"the operator's security context is not restricted: {security}",
    )
    print(f"deployment: all {len(names)} env vars are read by `kcache-operator run`; probes {probes}; restricted")


def check_refused():
    for values, needle in REFUSED:
        try:
            with helm.Chart.load(CHART) as chart:
                chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except (helm.HelmValuesError, helm.HelmRenderError) as error:
            expect(needle in str(error), f"values {values} were refused, but the message does not say {needle!r}: {error}")
            continue
        raise CheckFailed(f"values {values} were accepted; they must be refused naming {needle!r}")
    print(f"schema: all {len(REFUSED)} bad value sets refused with a message naming the value")


def main(out, operator, crd_dir):
    out = pathlib.Path(out)
    check_crd_copy()
    check_all_on_sets_every_value()
    check_lint()
    for name, values in (("defaults", None), ("all-on", copy.deepcopy(ALL_ON))):
        objects, _ = render(values)
        check_rendered(name, objects, out)
        docs = [doc for _, doc in objects]
        check_rbac(docs, operator)
        check_env_contract(docs, operator)
    check_validate(out)
    check_monitoring_kinds(out, operator, crd_dir)
    check_refused()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:])
    except CheckFailed as failure:
        print(f"FAILED: {failure}")
        sys.exit(1)
