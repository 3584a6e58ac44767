#!/usr/bin/env bash
# Installs the system packages the tests and benchmarks run for real, when missing.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing: ${need[*]} (install them with apt-get, or run as root)" >&2
        exit 1
    fi
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
