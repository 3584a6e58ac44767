#!/usr/bin/env bash
# `make images`: builds the signaling and operator images with podman, tagged with the
# project's version (pyproject.toml), and prints their sizes.
#   roomwire/signaling:<version>  from Dockerfile.workload
#   roomwire/operator:<version>   from Dockerfile.operator
#   roomwire/edge:<version>       from Dockerfile.edge (only when named: `... edge`)
# Installs podman, runc and mmdebstrap when missing (scripts/ensure-image-deps.sh); the base
# image comes from scripts/image-base.sh ($BASE_IMAGE, else python:3.11-slim when it can be
# pulled, else a local Debian base). Podman runs with runc: the default crun refuses hosts
# with a hybrid cgroup v1 layout. Layers are cached by podman: an unchanged tree rebuilds in
# seconds. Arguments: which images (workload, operator; default both).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-image-deps.sh

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
[[ -n $version ]] || { echo "build-images: no version in pyproject.toml" >&2; exit 1; }
base=$(bash scripts/image-base.sh)
# podman's default rlimits ask for more than a host without CAP_SYS_RESOURCE may grant.
nofile=$(ulimit -Hn)
[[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
nproc=$(ulimit -Hu)
[[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768

build=(
    podman --runtime runc build
    --format docker                   # keeps HEALTHCHECK (the OCI format has none)
    --network host                    # the build stage installs from the package index
    --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc"
    --build-arg "BASE_IMAGE=$base"
    --label "org.opencontainers.image.version=$version"
    --label "org.opencontainers.image.source=roomwire"
)
# pip in the build stage trusts what pip here trusts (a site's own certificate authority,
# an index of its own): the host's CA bundle is mounted for the RUN steps only, never
# copied into an image.
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [[ -s $ca ]]; then
    build+=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro"
        --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
    [[ -n ${!var:-} ]] && build+=(--build-arg "$var=${!var}")
done

targets=("$@")
((${#targets[@]})) || targets=(workload operator)
tags=()
for target in "${targets[@]}"; do
    case $target in
        workload) tag=roomwire/signaling:$version ;;
        operator) tag=roomwire/operator:$version ;;
        edge) tag=roomwire/edge:$version ;;  # the room edge (docs/edge.md); not a default
        *) echo "build-images: unknown image $target (workload, operator, edge)" >&2; exit 2 ;;
    esac
    echo "building $tag from Dockerfile.$target on $base" >&2
    t0=$SECONDS
    previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    "${build[@]}" -f "Dockerfile.$target" -t "$tag" . >&2
    # The build it replaces goes, with the layers only it had (not the layer cache, which
    # the new build shares); podman keeps it while a container runs it.
    if [[ -n $previous && $previous != "$(podman image inspect --format '{{.Id}}' "$tag")" ]]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
    echo "built $tag in $((SECONDS - t0)) s" >&2
    tags+=("localhost/$tag")
done
for tag in "${tags[@]}"; do
    podman image inspect --format "{{index .RepoTags 0}}  {{.Size}} bytes  user {{.Config.User}}  entrypoint {{.Config.Entrypoint}} {{.Config.Cmd}}" "$tag"
done
podman images --filter reference='roomwire/*' --format '{{.Repository}}:{{.Tag}}  {{.Size}}'
