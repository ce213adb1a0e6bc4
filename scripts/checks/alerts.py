#!/usr/bin/env python3
"""Checks the kcache alert rules with promtool (see alerts.sh).

    alerts.py WORK_DIR OPERATOR_BINARY
"""

import pathlib
import re
import subprocess
import sys

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kcache-operator"
TESTS = CHART / "tests"
EXAMPLE = ROOT / "examples" / "cachecluster-production.yaml"
# The chart's default selector, and the operator's for the example's cluster.
CHART_SELECTOR = 'container="node", endpoint="admin"'
CLUSTER_SELECTOR = 'namespace="cache", service="sessions-headless"'


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def chart_groups():
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render({"prometheusRule": {"enabled": True}}, name="kcache", namespace="kcache-system")
    rule = yaml.safe_load(manifests["kcache-operator/templates/prometheusrule.yaml"])
    return rule["spec"]["groups"]


def operator_groups(operator):
    out = subprocess.run([operator, "render", "-f", str(EXAMPLE)], capture_output=True, text=True, check=True)
    rules = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PrometheusRule"]
    expect(len(rules) == 1, f"the operator rendered {len(rules)} PrometheusRules for {EXAMPLE.name}, not 1")
    return rules[0]["spec"]["groups"]


def promtool(*args):
    result = subprocess.run(["promtool", *args], capture_output=True, text=True)
    expect(result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def write_rules(directory, groups):
    directory.mkdir()
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return directory / "rules.yaml"


def run_tests(directory, test_file):
    target = directory / test_file
    target.write_text((TESTS / test_file).read_text())
    output = promtool("test", "rules", str(target))
    expect("SUCCESS" in output, f"promtool test rules {test_file}: {output}")


def coverage(alerts, test_files):
    """Every alert has a case where it fires and one where it stays quiet."""
    fires, quiet = set(), set()
    for name in test_files:
        for test in yaml.safe_load((TESTS / name).read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    expect(not (set(alerts) - fires), f"alerts with no test where they fire: {sorted(set(alerts) - fires)}")
    expect(not (set(alerts) - quiet), f"alerts with no test where they stay quiet: {sorted(set(alerts) - quiet)}")
    expect(not ((fires | quiet) - set(alerts)), f"tests of alerts that do not exist: {sorted((fires | quiet) - set(alerts))}")


def main(work, operator):
    work = pathlib.Path(work)
    chart = chart_groups()
    names = [g["name"] for g in chart]
    expect(names == ["kcache-nodes", "kcache-operator"], f"the chart's rule groups are {names}")
    node_rules, operator_rules = chart[0]["rules"], chart[1]["rules"]
    cluster = operator_groups(operator)
    expect(len(cluster) == 1, f"the operator's PrometheusRule has {len(cluster)} groups")

    # The same node alerts, but for the selector.
    unscoped = lambda rules, selector: [{**r, "expr": r["expr"].replace(selector, "S")} for r in rules]
    expect(
        unscoped(node_rules, CHART_SELECTOR) == unscoped(cluster[0]["rules"], CLUSTER_SELECTOR),
        "the chart's node alerts and the operator's per-cluster alerts differ beyond their selector",
    )
    for rule in node_rules + operator_rules:
        runbook = rule["annotations"].get("runbook_url", "")
        anchor = runbook.rpartition("#")[2]
        headings = re.findall(r"^## (\w+)$", (ROOT / "docs" / "runbooks.md").read_text(), re.M)
        expect(anchor == rule["alert"].lower() and rule["alert"] in headings,
               f"{rule['alert']}: no runbook section '## {rule['alert']}' in docs/runbooks.md for {runbook!r}")

    chart_file = write_rules(work / "chart", chart)
    out = promtool("check", "rules", str(chart_file))
    print(f"promtool check rules (chart): {out.strip().splitlines()[-1].strip()}")
    cluster_file = write_rules(work / "cluster", cluster)
    out = promtool("check", "rules", str(cluster_file))
    print(f"promtool check rules (operator, {EXAMPLE.name}): {out.strip().splitlines()[-1].strip()}")
    print(f"same rules: the chart's {len(node_rules)} node alerts are the operator's, but for the selector")

    all_alerts = [r["alert"] for r in node_rules + operator_rules]
    coverage(all_alerts, ["nodes.test.yaml", "operator.test.yaml"])
    run_tests(work / "chart", "nodes.test.yaml")
    run_tests(work / "chart", "operator.test.yaml")
    run_tests(work / "cluster", "nodes.test.yaml")
    cases = sum(len(yaml.safe_load((TESTS / f).read_text())["tests"]) for f in ("nodes.test.yaml", "operator.test.yaml"))
    print(f"promtool test rules: {cases} cases pass on the chart's rules, the node ones on the operator's too; "
          f"each of the {len(all_alerts)} alerts fires in one and stays quiet in another: {', '.join(all_alerts)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:])
    except CheckFailed as failure:
        print(f"FAILED: {failure}")
        sys.exit(1)
