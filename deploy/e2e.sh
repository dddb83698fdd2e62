#!/usr/bin/env bash
# End-to-end check with a real Prometheus. It starts the exporter's demo on
# a free loopback port and checks its /metrics as Prometheus expects it
# (promtool check metrics, gzip, HEAD). Then deploy/live-check.sh scrapes
# the demo with the shipped config and rules and checks every dashboard
# query and rule through Prometheus's HTTP API.
#
# Usage: deploy/e2e.sh [path to the comfycontrol-exporter binary]
# Without an argument it builds the debug binary with cargo.
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

binary=${1:-}
if [[ -z $binary ]]; then
    cargo build --quiet --locked
    binary=target/debug/comfycontrol-exporter
fi

workdir=$(mktemp -d)
demo_pid=
cleanup() {
    if [[ -n $demo_pid ]]; then
        kill "$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
    fi
    rm -rf -- "$workdir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
address="127.0.0.1:$port"
"$binary" demo --web.listen-address "$address" >"$workdir/demo.out" 2>"$workdir/demo.log" &
demo_pid=$!

for _ in $(seq 1 100); do
    if curl -fsS "http://$address/-/ready" >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
curl -fsS "http://$address/-/ready" >/dev/null || {
    echo "the demo did not become ready on $address; its log:" >&2
    cat "$workdir/demo.log" >&2
    exit 1
}
echo "demo ready on $address (pid $demo_pid)"

fail() {
    echo "FAILED: $*" >&2
    exit 1
}

echo "promtool check metrics"
curl -fsS "http://$address/metrics" >"$workdir/metrics.txt"
promtool check metrics <"$workdir/metrics.txt" || fail "promtool check metrics reported problems"

echo "gzip when accepted"
curl -fsS -H 'Accept-Encoding: gzip' -D "$workdir/gzip.headers" -o "$workdir/metrics.gz" "http://$address/metrics"
grep -qi '^content-encoding: gzip' "$workdir/gzip.headers" || fail "no Content-Encoding: gzip"
gzip -dc "$workdir/metrics.gz" | grep -q '^comfycontrol_up ' || fail "gzip body does not decompress to metrics"

echo "Content-Type and HEAD"
curl -fsS -I "http://$address/metrics" >"$workdir/head.headers"
grep -qi '^content-type: text/plain; version=0.0.4' "$workdir/head.headers" || fail "wrong Content-Type"
grep -qi '^content-length: [1-9]' "$workdir/head.headers" || fail "HEAD has no Content-Length"

# Every dashboard panel must return data, so wait until the simulated
# workload has failed, queued and finished workflows.
echo "waiting for the demo's first failure, queue wait and run duration"
has_data() {
    curl -fsS "http://$address/metrics" >"$workdir/metrics.txt" || return 1
    grep -q '^comfycontrol_workflow_failures_total{' "$workdir/metrics.txt" &&
        grep -Eq '^comfycontrol_workflow_queue_wait_seconds_count [1-9]' "$workdir/metrics.txt" &&
        grep -Eq '^comfycontrol_workflow_run_duration_seconds_count\{status="completed"\} [1-9]' "$workdir/metrics.txt"
}
waited=0
until has_data; do
    ((waited < 180)) || fail "the demo showed no failure, queue wait or run duration within 180 s"
    sleep 2
    waited=$((waited + 2))
done
echo "demo data after ${waited} s"

bash deploy/live-check.sh "$address" --require-data --settle 30 || {
    echo "demo log (last 30 lines):" >&2
    tail -n 30 "$workdir/demo.log" >&2
    exit 1
}
echo "end-to-end check passed"
