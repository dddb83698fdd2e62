#!/usr/bin/env python3
"""Parse every YAML and JSON file under dashboards/ and deploy/ and check
that the files agree with each other.

Checks beyond parsing:
- Grafana dashboards: unique panel ids, panels inside the 24-column grid and
  not overlapping, every query on the ${datasource} variable and filtered by
  the job and instance variables, no undefined variables, and recording-rule
  names that exist in deploy/prometheus/rules.
- The scrape job is named comfycontrol-exporter everywhere the
  ComfyControlExporterDown alert depends on it.
- Paths that the compose file and the kustomization refer to exist.

Prints one line per checked file and exits with status 1 on any problem.
Needs PyYAML.
"""

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
JOB_NAME = "comfycontrol-exporter"
DATASOURCE_UID = "${datasource}"
REQUIRED_VARIABLES = ("datasource", "job", "instance")
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
FILTER_MATCHERS = ('job=~"$job"', 'instance=~"$instance"')

problems = []


def problem(path, message):
    problems.append(f"{path.relative_to(ROOT)}: {message}")


def load_yaml(path):
    """Return the documents of a YAML file, or None after reporting why it failed."""
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except yaml.YAMLError as error:
        problem(path, f"invalid YAML: {error}")
        return None


def load_json(path):
    """Return a JSON file's value, or None after reporting why it failed."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        problem(path, f"invalid JSON: {error}")
        return None


def recorded_names():
    """Return the names of the recording rules in deploy/prometheus/rules."""
    names = set()
    for path in sorted((ROOT / "deploy/prometheus/rules").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


def dashboard_panels(dashboard):
    """Yield every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def check_grid(path, panels):
    """Report panels outside the 24-column grid or overlapping another."""
    cells = {}
    for panel in panels:
        grid = panel.get("gridPos")
        if grid is None:
            problem(path, f"panel {panel.get('title')!r} has no gridPos")
            continue

        if grid["x"] < 0 or grid["x"] + grid["w"] > 24:
            problem(path, f"panel {panel.get('title')!r} is outside the 24-column grid")

        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel.get("title"))
                if other != panel.get("title"):
                    problem(path, f"panels {other!r} and {panel.get('title')!r} overlap at x={x}, y={y}")
                    return


def check_expr(path, where, expr, variables, recorded):
    """Report undefined variables, missing filters and unknown recorded names."""
    used = set(re.findall(r"\$\{?(\w+)", expr))
    for name in sorted(used - variables - GRAFANA_BUILTINS):
        problem(path, f"{where}: undefined variable ${name} in {expr!r}")

    for matcher in FILTER_MATCHERS:
        if matcher not in expr and not expr.startswith("ALERTS{"):
            problem(path, f"{where}: query lacks the filter {matcher}: {expr!r}")

    for name in re.findall(r"\b(instance:[a-z0-9_:]+)", expr):
        if name not in recorded:
            problem(path, f"{where}: {name} is not a recording rule in deploy/prometheus/rules")


def check_dashboard(path, dashboard, recorded):
    """Check one Grafana dashboard's JSON model and return the number of queries checked."""
    variables = {variable["name"] for variable in dashboard.get("templating", {}).get("list", [])}
    for name in REQUIRED_VARIABLES:
        if name not in variables:
            problem(path, f"missing the template variable {name!r}")

    panels = [panel for panel in dashboard_panels(dashboard)]
    ids = [panel.get("id") for panel in panels]
    duplicates = sorted({panel_id for panel_id in ids if ids.count(panel_id) > 1})
    if duplicates:
        problem(path, f"duplicate panel ids {duplicates}")

    check_grid(path, panels)

    queries = 0
    for panel in panels:
        if panel.get("type") == "row":
            continue

        where = f"panel {panel.get('title')!r}"
        if panel.get("datasource", {}).get("uid") != DATASOURCE_UID:
            problem(path, f"{where}: data source is not {DATASOURCE_UID}")

        targets = panel.get("targets", [])
        if not targets:
            problem(path, f"{where}: has no query")

        ref_ids = [target.get("refId") for target in targets]
        if len(set(ref_ids)) != len(ref_ids):
            problem(path, f"{where}: duplicate refId in {ref_ids}")

        for target in targets:
            if target.get("datasource", {}).get("uid") != DATASOURCE_UID:
                problem(path, f"{where}: query {target.get('refId')} does not use {DATASOURCE_UID}")
            check_expr(path, where, target.get("expr", ""), variables, recorded)
            queries += 1

    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            check_expr(path, f"annotation {annotation['name']!r}", annotation["expr"], variables, recorded)
            queries += 1

    return queries


def check_job_names(documents):
    """Check that every place the job label comes from names the same job."""
    for name in ("prometheus.yml", "prometheus.compose.yml"):
        path = ROOT / "deploy/prometheus" / name
        jobs = [job["job_name"] for job in documents[path][0]["scrape_configs"]]
        if jobs != [JOB_NAME]:
            problem(path, f"scrape jobs are {jobs}, expected [{JOB_NAME!r}]")

    path = ROOT / "deploy/kubernetes/service.yaml"
    if documents[path][0]["metadata"]["name"] != JOB_NAME:
        problem(path, f"the Service must be named {JOB_NAME}, which becomes the job label")

    path = ROOT / "deploy/prometheus/rules/comfycontrol-alerts.rules.yml"
    rules = [rule for group in documents[path][0]["groups"] for rule in group["rules"]]
    down = [rule for rule in rules if rule.get("alert") == "ComfyControlExporterDown"]
    if not down or f'job="{JOB_NAME}"' not in down[0]["expr"]:
        problem(path, f'ComfyControlExporterDown must select job="{JOB_NAME}"')


def check_compose_paths(documents):
    """Check that the host paths the compose file mounts or builds from exist."""
    path = ROOT / "deploy/docker/compose.yaml"
    base = path.parent
    compose = documents[path][0]

    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (base / source).exists():
                problem(path, f"service {name}: mounted path {source} does not exist")

        build = service.get("build")
        if build and not (base / build["context"] / build["dockerfile"]).exists():
            problem(path, f"service {name}: Dockerfile {build['dockerfile']} not found")

        config_flags = [arg for arg in service.get("command", []) if str(arg).startswith("--config.file=")]
        for flag in config_flags:
            config = flag.split("=", 1)[1].replace("/etc/prometheus/", "")
            if not (ROOT / "deploy/prometheus" / config).exists():
                problem(path, f"service {name}: {flag} has no file in deploy/prometheus")


def check_kustomization(documents):
    """Check that the kustomization's resources exist."""
    path = ROOT / "deploy/kubernetes/kustomization.yaml"
    for resource in documents[path][0]["resources"]:
        if not (path.parent / resource).exists():
            problem(path, f"resource {resource} does not exist")


def main():
    files = sorted(
        path
        for directory in ("dashboards", "deploy")
        for path in (ROOT / directory).rglob("*")
        if path.suffix in {".yml", ".yaml", ".json"} and path.is_file()
    )

    recorded = recorded_names()
    documents = {}
    for path in files:
        if path.suffix == ".json":
            dashboard = load_json(path)
            if dashboard is not None:
                queries = check_dashboard(path, dashboard, recorded)
                print(f"  parsed {path.relative_to(ROOT)}: {queries} queries checked")
        else:
            docs = load_yaml(path)
            if docs is not None:
                documents[path] = docs
                print(f"  parsed {path.relative_to(ROOT)}: {len(docs)} document(s)")

    if not problems:
        check_job_names(documents)
        check_compose_paths(documents)
        check_kustomization(documents)
        print(f"  checked job name {JOB_NAME!r}, compose paths and kustomization resources")

    for line in problems:
        print(f"FAIL {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
