#!/usr/bin/env bash
# Installs the system packages the tests and benchmarks run for real, when missing.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
# promtool (checks and unit-tests deploy/prometheus/) comes with Debian's prometheus.
promtool=0
command -v promtool >/dev/null || promtool=1
if ((${#need[@]} + promtool)); then
    if [[ $(id -u) -ne 0 ]]; then
        ((promtool)) && need+=(prometheus)
        echo "missing: ${need[*]} (install them with apt-get, or run as root)" >&2
        exit 1
    fi
    apt-get update -qq
fi
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ((promtool)); then
    # Only promtool is wanted: no recommended exporters, and no server left running
    # where installing the package starts its service.
    echo "installing prometheus (for promtool)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus >/dev/null
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/prometheus ]]; then
        /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    fi
fi
