#!/usr/bin/env python3
"""Installs the chart with real Helm (helm-python-sdk) into kcache-local's cluster on
the real control plane (`kcache-local up --real`: kube-apiserver with RBAC, and
kube-controller-manager's Deployment, ReplicaSet, StatefulSet and garbage collector
controllers) and checks what a user would: two operator replicas come up from the chart's Deployment
under the chart's ServiceAccount and RBAC alone (the e2e kubelet runs pods as processes
with their ServiceAccount's token), one of them leads, the CacheCluster the release
creates reaches Available with every node ready, another replica takes the Lease when
the leader's pod is deleted, and `helm uninstall` leaves nothing
behind but the CRD (the garbage collector takes what the operator made). It also asks
the API server (SubjectAccessReview, through `kubectl auth can-i --as`) that the
operator's ServiceAccount may do what it needs and nothing it should not.

Runs inside a network namespace whose lo carries the pod network (scripts/netns.sh):

    chart-install.py WORK_DIR TARGET_DIR POD_NETWORK
"""

import json
import pathlib
import subprocess
import sys
import time

import helm_python as helm

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kcache-operator"
RELEASE, NAMESPACE = "kcache", "kcache-system"
OPERATOR = f"{RELEASE}-kcache-operator"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{OPERATOR}"
VALUES = {
    "replicaCount": 2,
    # The e2e kubelet reports every pod as qosClass BestEffort, and a real kube-apiserver
    # refuses a pod status whose QoS class differs from the one it computed from the
    # resources: without requests and limits (null drops the defaults) the pods can turn Ready.
    "resources": None,
    "cacheClusters": [{"name": "demo", "namespace": "default", "spec": {"replicas": 3}}],
}
# (verb, resource, namespace or None for all, allowed?)
ACCESS = [
    ("list", "cacheclusters.kcache.io", None, True),
    ("watch", "cacheclusters.kcache.io", None, True),
    ("patch", "cacheclusters.kcache.io/status", "default", True),
    ("patch", "statefulsets.apps", "default", True),
    ("create", "serviceaccounts", "default", True),
    ("create", "rolebindings.rbac.authorization.k8s.io", "default", True),
    ("delete", "poddisruptionbudgets.policy", "default", True),
    ("list", "endpointslices.discovery.k8s.io", "default", True),
    ("create", "events.events.k8s.io", "default", True),
    ("get", f"leases.coordination.k8s.io/{OPERATOR}", NAMESPACE, True),
    ("patch", f"leases.coordination.k8s.io/{OPERATOR}", NAMESPACE, True),
    ("update", "cacheclusters.kcache.io", "default", False),
    ("delete", "statefulsets.apps", "default", False),
    ("delete", "services", "default", False),
    ("create", "secrets", "default", True),
    ("get", "secrets", "default", False),
    ("list", "secrets", None, False),
    ("create", "pods", "default", False),
    ("get", "leases.coordination.k8s.io/someone-elses", NAMESPACE, False),
    ("create", "leases.coordination.k8s.io", NAMESPACE, False),
    ("patch", "leases.coordination.k8s.io/kcache-kcache-operator", "default", False),
    ("create", "clusterroles.rbac.authorization.k8s.io", None, False),
    ("escalate", "roles.rbac.authorization.k8s.io", "default", False),
    ("bind", "roles.rbac.authorization.k8s.io", "default", False),
    ("impersonate", "serviceaccounts", "default", False),
]
DEADLINE = time.monotonic() + 420


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def wait_for(what, probe, seconds=120):
    end = min(time.monotonic() + seconds, DEADLINE)
    last = None
    while time.monotonic() < end:
        try:
            value = probe()
            if value:
                return value
            last = value
        except (subprocess.CalledProcessError, json.JSONDecodeError, KeyError) as error:
            last = error
        time.sleep(1)
    raise CheckFailed(f"timed out waiting for {what} (last: {last})")


class Kubectl:
    def __init__(self, kubeconfig):
        self.base = ["kubectl", "--kubeconfig", str(kubeconfig)]

    def run(self, *args, check=True):
        return subprocess.run(self.base + list(args), capture_output=True, text=True, check=check, timeout=30)

    def json(self, *args):
        return json.loads(self.run(*args, "-o", "json").stdout)


def ready(pod):
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def check_access(kubectl):
    wrong = []
    for verb, resource, namespace, allowed in ACCESS:
        where = ["-n", namespace] if namespace else ["--all-namespaces"]
        target = [resource.removesuffix("/status"), "--subresource=status"] if resource.endswith("/status") else [resource]
        answer = kubectl.run("auth", "can-i", verb, *target, *where, "--as", SERVICE_ACCOUNT, check=False)
        if (answer.stdout.strip() == "yes") != allowed:
            wrong.append(f"{verb} {resource} in {namespace or 'all namespaces'}: {answer.stdout.strip()} {answer.stderr.strip()}")
    expect(not wrong, "the operator's RBAC is not what it needs and no more:\n  " + "\n  ".join(wrong))
    print(f"rbac: the API server answers all {len(ACCESS)} can-i questions for {SERVICE_ACCOUNT} as expected "
          f"({sum(a[3] for a in ACCESS)} allowed, {sum(not a[3] for a in ACCESS)} refused)")


def leftovers(kubectl):
    kinds = "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,statefulsets,poddisruptionbudgets,leases,configmaps"
    found = []
    for selector in (f"app.kubernetes.io/instance={RELEASE}", "app.kubernetes.io/instance=demo"):
        items = kubectl.json("get", kinds, "--all-namespaces", "-l", selector)["items"]
        found += [f"{i['kind']} {i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in items]
    for kind in ("clusterroles", "clusterrolebindings"):
        found += [f"{kind} {i['metadata']['name']}" for i in kubectl.json("get", kind, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]]
    found += [f"cachecluster {i['metadata']['namespace']}/{i['metadata']['name']}" for i in kubectl.json("get", "cacheclusters", "--all-namespaces")["items"]]
    return found


def run(work, bins, pod_network):
    log = open(work / "kcache-local.log", "w")
    kubeconfig = work / "kubeconfig"
    args = [str(bins / "kcache-local"), "up", "--real", "--pod-network", pod_network, "--no-operator",
            "--kubeconfig", str(kubeconfig), "--state-dir", str(work / "pods")]
    local = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    kubectl = Kubectl(kubeconfig)
    try:
        wait_for("the local control plane", lambda: kubectl.run("get", "namespaces", check=False).returncode == 0, 90)
        print("cluster: kcache-local up --real (kube-apiserver with RBAC, kube-controller-manager)")

        with helm.Config(namespace=NAMESPACE, kubeconfig_path=str(kubeconfig)) as config:
            release = config.install(str(CHART), RELEASE, VALUES, create_namespace=True, timeout=60)
        expect(release.get("status") == "deployed", f"helm install: {release.get('status')}")
        print(f"helm install: release {RELEASE} revision {release.get('revision')} deployed")

        def operators_ready():
            pods = kubectl.json("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=kcache-operator")["items"]
            return len(pods) == 2 and all(ready(p) for p in pods) and pods

        pods = wait_for("two ready operator pods", operators_ready)
        for pod in pods:
            expect(pod["spec"]["serviceAccountName"] == OPERATOR, f"{pod['metadata']['name']} runs as {pod['spec']['serviceAccountName']}")
        holder = wait_for("a leader", lambda: kubectl.json("get", "lease", OPERATOR, "-n", NAMESPACE)["spec"].get("holderIdentity"))
        expect(holder in [p["metadata"]["name"] for p in pods], f"the Lease is held by {holder}, not an operator pod")
        print(f"operator: 2 replicas ready under ServiceAccount {OPERATOR}; {holder} leads")

        def available():
            cluster = kubectl.json("get", "cachecluster", "demo", "-n", "default")
            status = cluster.get("status", {})
            conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
            return (conditions.get("Available") == "True" and status.get("readyReplicas") == 3) and status

        status = wait_for("CacheCluster demo to be Available with 3 ready nodes", available, 180)
        failures = kubectl.json("get", "events", "-n", "default", "--field-selector", "reason=ReconcileFailed")["items"]
        expect(not failures, f"the operator failed reconciles: {[e.get('message') or e.get('note') for e in failures]}")
        print(f"cachecluster: demo {status.get('phase')}, {status['readyReplicas']}/3 ready, no ReconcileFailed events")

        check_access(kubectl)

        # Two replicas are safe and useful: when the leader goes, another replica leads
        # (the standby, or the ReplicaSet's replacement if it asks first).
        started = time.monotonic()
        kubectl.run("delete", "pod", holder, "-n", NAMESPACE, "--wait=false")

        def new_leader():
            now = kubectl.json("get", "lease", OPERATOR, "-n", NAMESPACE)["spec"].get("holderIdentity")
            live = [p["metadata"]["name"] for p in kubectl.json("get", "pods", "-n", NAMESPACE)["items"]
                    if p["metadata"]["name"] != holder and not p["metadata"].get("deletionTimestamp")]
            return now in live and now

        successor = wait_for("another replica to take the Lease", new_leader, 60)
        print(f"failover: {holder} deleted, {successor} leads {time.monotonic() - started:.0f}s later")

        with helm.Config(namespace=NAMESPACE, kubeconfig_path=str(kubeconfig)) as config:
            config.uninstall(RELEASE)
        left = wait_for("helm uninstall to leave nothing but the CRD", lambda: not leftovers(kubectl) or None, 120)
        expect(left, "unreachable")
        crd = kubectl.run("get", "crd", "cacheclusters.kcache.io", check=False)
        expect(crd.returncode == 0, "helm uninstall removed the CRD; Helm keeps crds/ on purpose")
        print("helm uninstall: the release's objects, the CacheCluster and all it owned are gone; the CRD stays")
    except CheckFailed:
        log.flush()
        state = kubectl.run("get", "cacheclusters,statefulsets,pods,events", "--all-namespaces", "-o", "wide", check=False)
        print(f"--- the cluster\n{state.stdout}{state.stderr}")
        for pod_log in sorted((work / "pods").glob("**/*.log")):
            print(f"--- last lines of {pod_log.relative_to(work)}\n" + "\n".join(pod_log.read_text().splitlines()[-8:]))
        print("--- last lines of kcache-local.log\n" + "\n".join((work / "kcache-local.log").read_text().splitlines()[-40:]))
        raise
    finally:
        local.terminate()
        try:
            local.wait(timeout=60)
        except subprocess.TimeoutExpired:
            local.kill()
            local.wait()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    try:
        run(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3])
    except CheckFailed as failure:
        print(f"FAILED: {failure}")
        sys.exit(1)
