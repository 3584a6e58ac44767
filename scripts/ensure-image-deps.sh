#!/usr/bin/env bash
# Installs what `make images` (and RUNTIME=podman pods) need, when missing: Debian's podman
# with runc (the default crun refuses hosts with a hybrid cgroup v1 layout) and mmdebstrap,
# which builds the local Debian base when no base image can be pulled.
set -euo pipefail
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
((${#need[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "missing: ${need[*]} (install them with apt-get, or run as root)" >&2
    exit 1
fi
echo "installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
