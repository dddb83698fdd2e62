#!/usr/bin/env python3
"""Run every dashboard query and check every rule through a running
Prometheus's HTTP API.

For each Grafana dashboard under dashboards/, the script substitutes the
template variables (job and instance select all, $__rate_interval and
$__interval become --rate-interval, $__range becomes --range), turns
label_values() variable queries into PromQL, and runs each query as an
instant query. It then checks that every rule group of
deploy/prometheus/rules is loaded with all its rules healthy, and that
every metric name the queries and rules use has series in Prometheus.

Exits with status 1 when a query fails, a rule is missing or unhealthy, or
a metric name has no series. With --require-data it also fails on a query
that returns no series, neither now nor over the last --lookback seconds,
unless the query selects only ALERTS. Uses the Python standard library and
PyYAML.
"""

import argparse
import datetime
import json
import pathlib
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent

# Names that need not have series: ALERTS exists only while an alert is
# pending or firing.
OPTIONAL_METRICS = {"ALERTS"}

# PromQL words that the metric-name pattern would otherwise take for names.
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "sum", "min", "max", "avg", "count",
    "topk", "bottomk", "rate", "increase", "histogram_quantile", "time",
    "round", "group", "inf", "nan",
}


def api_get(base_url, path, params=None):
    """Return the data of a Prometheus API response, raising RuntimeError on an error status."""
    url = f"{base_url}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        body = json.load(error)
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]


def substitute(expr, variables, args):
    """Return expr with Grafana's variables replaced by concrete values."""
    expr = expr.replace("$__rate_interval", args.rate_interval)
    expr = expr.replace("$__interval", args.rate_interval)
    expr = expr.replace("$__range", args.range)

    def replace_variable(match):
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise ValueError(f"undefined variable ${name}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace_variable, expr)


def variable_query_to_promql(query):
    """Return the PromQL that a label_values() variable query stands for."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    if match:
        return f"group by ({match.group(2)}) ({match.group(1)})"

    match = re.fullmatch(r"\s*label_values\(\s*(\w+)\s*\)\s*", query)
    if match:
        return f'group by ({match.group(1)}) ({{{match.group(1)}!=""}})'

    return query


def dashboard_queries(dashboard):
    """Yield (where, expr) for every query of a dashboard's JSON model."""
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            if isinstance(query, dict):
                query = query.get("query", "")
            yield f"variable {variable['name']}", variable_query_to_promql(query)

    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]

    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))

    for panel in panels:
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]


def metric_names(expr):
    """Return the metric names an expression selects."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_groupings)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_matchers))
    return {name for name in names if name not in PROMQL_WORDS and not re.fullmatch(r"[0-9e]+", name)}


def recent_series(args, expr):
    """Return how many series a query returned over the last --lookback seconds."""
    end = time.time()
    params = {"query": expr, "start": end - args.lookback, "end": end, "step": 5}
    try:
        return len(api_get(args.prometheus, "/api/v1/query_range", params)["result"])
    except RuntimeError:
        # The instant query of the same expression succeeded, so a failed
        # range query only means that no earlier series were found.
        return 0


def check_queries(args, report):
    """Run every dashboard query and return the metric names the queries use."""
    names = set()
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        variables = {}
        for variable in dashboard.get("templating", {}).get("list", []):
            variables[variable["name"]] = variable.get("allValue") or ".+"

        for where, raw_expr in dashboard_queries(dashboard):
            try:
                expr = substitute(raw_expr, variables, args)
            except ValueError as error:
                report.fail(f"{path.name} {where}: {error}")
                continue

            names |= metric_names(expr)
            try:
                result = api_get(args.prometheus, "/api/v1/query", {"query": expr})["result"]
            except RuntimeError as error:
                report.fail(f"{path.name} {where}: query failed: {error}\n    {expr}")
                continue

            if result:
                report.ok(f"{path.name} {where}: {len(result)} series")
                continue

            # A gauge such as the queue positions can be empty at one instant
            # and still be right, so look back over a range before failing.
            recent = recent_series(args, expr)
            if recent:
                report.ok(f"{path.name} {where}: no series now, {recent} in the last {args.lookback:g} s")
            elif args.require_data and not metric_names(expr) <= OPTIONAL_METRICS:
                report.fail(f"{path.name} {where}: no series in the last {args.lookback:g} s\n    {expr}")
            else:
                report.note(f"{path.name} {where}: no series in the last {args.lookback:g} s")
    return names


def check_rules(args, report):
    """Check that every rule group is loaded and healthy, and return the metric names the rules use."""
    loaded = {group["name"]: group for group in api_get(args.prometheus, "/api/v1/rules")["groups"]}

    names = set()
    for path in sorted((ROOT / "deploy/prometheus/rules").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                names |= metric_names(rule["expr"])

            found = loaded.get(group["name"])
            if found is None:
                report.fail(f"rule group {group['name']!r} is not loaded")
                continue

            expected = [rule.get("alert") or rule.get("record") for rule in group["rules"]]
            got = [rule["name"] for rule in found["rules"]]
            if got != expected:
                report.fail(f"rule group {group['name']!r} has rules {got}, expected {expected}")

            for rule in found["rules"]:
                if rule.get("health") != "ok":
                    report.fail(f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
                elif rule["type"] == "alerting":
                    report.ok(f"alert {rule['name']}: {rule['state']}")
                else:
                    report.ok(f"recording rule {rule['name']}: healthy")
    return names


def check_names(args, names, report):
    """Check that every metric name used has series in Prometheus."""
    known = set(api_get(args.prometheus, "/api/v1/label/__name__/values"))
    for name in sorted(names - OPTIONAL_METRICS):
        if name in known:
            report.ok(f"metric {name}: present")
        else:
            report.fail(f"metric {name}: no series in Prometheus")


def parse_timestamp(text):
    """Return a Prometheus API timestamp (RFC 3339, nanoseconds) as Unix seconds."""
    seconds, _, fraction = text.rstrip("Z").partition(".")
    whole = datetime.datetime.fromisoformat(seconds).replace(tzinfo=datetime.timezone.utc)
    return whole.timestamp() + float(f"0.{fraction or 0}")


def scraped_twice(args):
    """Return whether the exporter's job has two samples, as rates need."""
    query = 'min(count_over_time(up{job="comfycontrol-exporter"}[5m])) >= 2'
    return bool(api_get(args.prometheus, "/api/v1/query", {"query": query})["result"])


def unevaluated_group(args, since):
    """Return the name of a rule group not evaluated after `since`, or None."""
    groups = api_get(args.prometheus, "/api/v1/rules")["groups"]
    if not groups:
        return "(no rule group loaded yet)"
    for group in groups:
        if parse_timestamp(group["lastEvaluation"]) <= since:
            return group["name"]
    return None


def wait_until_ready(args):
    """Poll Prometheus until the exporter has been scraped twice and every rule
    group has been evaluated after that. Return False after --wait seconds."""
    deadline = time.monotonic() + args.wait
    scraped_at = None
    missing = f"an answer from {args.prometheus}"
    while time.monotonic() < deadline:
        try:
            if scraped_at is None and scraped_twice(args):
                scraped_at = time.time()
            if scraped_at is None:
                missing = "two scrapes of job comfycontrol-exporter"
            else:
                group = unevaluated_group(args, scraped_at)
                if group is None:
                    return True
                missing = f"an evaluation of rule group {group!r} after the second scrape"
        except (OSError, RuntimeError) as error:
            missing = f"an answer from {args.prometheus} (last error: {error})"
        time.sleep(1)

    print(f"timed out after {args.wait:g} s waiting for {missing}")
    return False


class Report:
    """Collects the outcome of each check and prints it as it goes."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.failures = 0
        self.passed = 0

    def ok(self, message):
        self.passed += 1
        if self.verbose:
            print(f"  ok    {message}")

    def note(self, message):
        self.passed += 1
        print(f"  empty {message}")

    def fail(self, message):
        self.failures += 1
        print(f"  FAIL  {message}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="base URL of Prometheus")
    parser.add_argument("--rate-interval", default="1m", help="value of $__rate_interval and $__interval")
    parser.add_argument("--range", default="1h", help="value of $__range")
    parser.add_argument(
        "--require-data",
        action="store_true",
        help="fail on queries that returned no series over the last --lookback seconds",
    )
    parser.add_argument(
        "--lookback",
        type=float,
        default=300,
        metavar="SECONDS",
        help="range searched for series when an instant query returns none",
    )
    parser.add_argument("--verbose", action="store_true", help="print passed checks too")
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to this long for two scrapes of the exporter and a rule evaluation after them",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="once ready, let Prometheus scrape this long before checking, so that "
        "series present only at times, such as queue positions, fall within --lookback",
    )
    args = parser.parse_args()
    args.prometheus = args.prometheus.rstrip("/")

    if args.wait > 0 and not wait_until_ready(args):
        return 1
    if args.settle > 0:
        print(f"letting Prometheus scrape for {args.settle:g} s")
        time.sleep(args.settle)

    report = Report(args.verbose)
    names = check_queries(args, report)
    names |= check_rules(args, report)
    check_names(args, names, report)

    print(f"{report.passed} passed, {report.failures} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
