#!/usr/bin/env bash
# Builds helm (the Helm 3 command, Go module helm.sh/helm/v3) from the Go module proxy at the
# version pinned in versions.env, into a cache outside the repository keyed by version, and
# reuses it when present. The Helm chart's tests and docs/helm.md use it.
# Prints the folder holding the binary on its last line of stdout; with `--exec ARGS...` it
# runs helm instead.
#
# HELM_BIN: when set to an executable, its folder is used and nothing is built.
# ROOMWIRE_CACHE: cache root (default: $XDG_CACHE_HOME/roomwire or ~/.cache/roomwire).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ "${1:-}" == "--exec" ]]; then
    shift
    dir="$("$here/build-helm.sh" | tail -n 1)"
    exec "$dir/helm" "$@"
fi
# shellcheck source=versions.env
source "$here/versions.env"

if [[ -n "${HELM_BIN:-}" ]]; then
    [[ -x "$HELM_BIN" ]] || { echo "error: HELM_BIN=$HELM_BIN is not executable" >&2; exit 1; }
    dirname "$HELM_BIN"
    exit 0
fi

cache="${ROOMWIRE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomwire}"
bindir="$cache/bin/helm-$HELM_VERSION"
if [[ -x "$bindir/helm" ]]; then
    echo "$bindir"
    exit 0
fi

command -v go >/dev/null || { echo "error: Go (>= 1.25) is needed to build helm $HELM_VERSION" >&2; exit 1; }
export GOMODCACHE="$cache/gomod"
export GOCACHE="$cache/gocache"
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
mkdir -p "$bindir" "$cache/src"
echo "building helm $HELM_VERSION into $bindir (a cold build takes minutes)" >&2
start=$SECONDS

# A wrapper module requiring helm, so helm's own go.mod (and its go.sum) pins the dependencies.
src="$cache/src/helm-$HELM_VERSION"
mkdir -p "$src"
cat > "$src/tools.go" <<'GO'
//go:build tools

// Package tools pins the upstream command that cluster/build-helm.sh builds.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
rm -f "$src/go.mod" "$src/go.sum"
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
(cd "$src" && go mod init roomwire.local/helm >/dev/null 2>&1 \
    && go get "helm.sh/helm/v3@$HELM_VERSION" >&2 \
    && go mod tidy >&2 \
    && go build -trimpath -ldflags "$ldflags" -o "$bindir/helm.tmp" helm.sh/helm/v3/cmd/helm >&2)
mv "$bindir/helm.tmp" "$bindir/helm"
echo "helm built in $((SECONDS - start)) s" >&2
echo "$((SECONDS - start))" > "$bindir/.build-seconds"
echo "$bindir"
