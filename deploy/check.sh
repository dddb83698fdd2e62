#!/usr/bin/env bash
# Checks the monitoring files under dashboards/ and deploy/ without running
# the exporter:
#   - promtool check rules, check config and test rules.
#   - Every YAML and JSON file parses, and the dashboard, compose file and
#     kustomization agree with the rules (deploy/tools/validate_files.py).
#   - deploy/kubernetes/prometheusrule.yaml matches the rule files.
#   - kubectl kustomize builds deploy/kubernetes (skipped without kubectl).
#   - systemd-analyze verify accepts the unit (skipped without systemd).
# Installs promtool (Debian package prometheus) and PyYAML (python3-yaml)
# with apt-get when they are missing and the script runs as root.
# Stops with a non-zero exit status at the first failed check.
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

step() {
    printf '\n==> %s\n' "$*"
}

# Installs the named Debian packages, or fails with what to install.
apt_install() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "missing $*: install the Debian packages $* and run again" >&2
        exit 1
    fi
    echo "installing $* with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

step "tools"
if ! command -v promtool >/dev/null; then
    apt_install prometheus
fi
promtool --version | head -n 1

# python3-yaml installs into Debian's interpreter, which need not be the
# first python3 on PATH.
python=python3
if ! "$python" -c 'import yaml' 2>/dev/null; then
    python=/usr/bin/python3
    if ! "$python" -c 'import yaml' 2>/dev/null; then
        apt_install python3-yaml
    fi
fi
echo "python: $python (PyYAML $("$python" -c 'import yaml; print(yaml.__version__)'))"

step "promtool check rules"
promtool check rules deploy/prometheus/rules/*.rules.yml

step "promtool check config"
for config in deploy/prometheus/prometheus*.yml; do
    promtool check config "$config"
done

step "promtool test rules"
promtool test rules deploy/prometheus/tests/*.test.yml

step "parse YAML and JSON, compare the files with each other"
"$python" deploy/tools/validate_files.py

step "PrometheusRule generated from the rule files"
"$python" deploy/tools/generate_prometheusrule.py --check

step "kustomize build"
if command -v kubectl >/dev/null; then
    resources=$(kubectl kustomize deploy/kubernetes | grep -c '^kind:')
    echo "kubectl kustomize deploy/kubernetes: $resources resources"
else
    echo "SKIPPED: kubectl not installed"
fi

step "systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
    # verify fails on a missing ExecStart binary, and only warns (exit 0) on
    # unknown keys or bad values, so it runs on a copy that starts
    # /usr/bin/true and any output counts as a failure.
    unit_dir=$(mktemp -d)
    trap 'rm -rf -- "$unit_dir"' EXIT
    unit=comfycontrol-exporter.service
    sed 's#^ExecStart=/usr/local/bin/comfycontrol-exporter#ExecStart=/usr/bin/true#' \
        "deploy/systemd/$unit" >"$unit_dir/$unit"
    output=$(cd "$unit_dir" && systemd-analyze verify "./$unit" 2>&1) || true
    if [[ -n $output ]]; then
        echo "$output"
        echo "FAIL: systemd-analyze verify reported problems in deploy/systemd/$unit" >&2
        exit 1
    fi
    echo "deploy/systemd/$unit: no problems"
else
    echo "SKIPPED: systemd-analyze not installed"
fi

step "all checks passed"
