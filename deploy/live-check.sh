#!/usr/bin/env bash
# Starts a throwaway Prometheus on 127.0.0.1 that scrapes one exporter with
# the shipped deploy/prometheus/prometheus.yml and its rules. Once it has scraped the exporter and
# evaluated every rule group, deploy/tools/check_live.py checks the dashboard
# queries and rules against it.
#
# Usage: deploy/live-check.sh HOST:PORT [check_live.py flags]
# Example, with the exporter's demo running on the same machine:
#   deploy/live-check.sh 127.0.0.1:9786 --require-data
#
# Needs the prometheus binary (Debian package prometheus) and python3 with
# PyYAML. Prometheus listens on a free loopback port and its data lives in
# a temporary directory that is removed on exit.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 HOST:PORT [check_live.py flags]" >&2
    exit 2
fi
target=$1
shift

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
workdir=$(mktemp -d)
prometheus_pid=

cleanup() {
    if [[ -n $prometheus_pid ]]; then
        kill "$prometheus_pid" 2>/dev/null || true
        wait "$prometheus_pid" 2>/dev/null || true
    fi
    rm -rf -- "$workdir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"

# The shipped scrape config, with its rule files found from here, the given
# target, and a short scrape and evaluation interval so that rates and
# recording rules have values within seconds.
/usr/bin/python3 - "$repo/deploy/prometheus" "$target" >"$workdir/prometheus.yml" <<'PYTHON'
import sys
import yaml

directory, target = sys.argv[1], sys.argv[2]
with open(f"{directory}/prometheus.yml") as file:
    config = yaml.safe_load(file)
config["global"]["scrape_interval"] = "2s"
config["global"]["evaluation_interval"] = "2s"
config["rule_files"] = [f"{directory}/{pattern}" for pattern in config["rule_files"]]
for job in config["scrape_configs"]:
    for static in job["static_configs"]:
        static["targets"] = [target]
yaml.safe_dump(config, sys.stdout)
PYTHON

promtool check config "$workdir/prometheus.yml" >/dev/null
prometheus \
    --config.file="$workdir/prometheus.yml" \
    --storage.tsdb.path="$workdir/data" \
    --web.listen-address="127.0.0.1:$port" \
    >"$workdir/prometheus.log" 2>&1 &
prometheus_pid=$!
echo "prometheus $(prometheus --version 2>&1 | head -n 1 | awk '{print $3}') on $url, pid $prometheus_pid, scraping $target"

# check_live.py waits up to 60 s for the first scrapes and rule evaluations.
if ! python3 "$repo/deploy/tools/check_live.py" --prometheus "$url" --wait 60 "$@"; then
    echo "Prometheus log:" >&2
    tail -n 20 "$workdir/prometheus.log" >&2
    exit 1
fi
