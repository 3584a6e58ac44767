#!/usr/bin/env bash
# Builds the pinned control-plane binaries from the Go module proxy into a cache outside the
# repository, keyed by version, and reuses them when present:
#   etcd, kube-apiserver, kube-controller-manager, kubectl
# Prints the folder holding them on its last line of stdout.
#
# KUBEBUILDER_ASSETS (envtest's convention): when set, that folder is used and nothing is built.
# ROOMWIRE_CACHE: cache root (default: $XDG_CACHE_HOME/roomwire or ~/.cache/roomwire).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

want=(etcd kube-apiserver kube-controller-manager kubectl)

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    for b in "${want[@]}"; do
        [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || echo "warning: $KUBEBUILDER_ASSETS/$b missing" >&2
    done
    echo "$KUBEBUILDER_ASSETS"
    exit 0
fi

cache="${ROOMWIRE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomwire}"
bindir="$cache/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"
export GOMODCACHE="$cache/gomod"
export GOCACHE="$cache/gocache"
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local

missing=()
for b in "${want[@]}"; do
    [[ -x "$bindir/$b" ]] || missing+=("$b")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$bindir"
    exit 0
fi

command -v go >/dev/null || { echo "error: Go (>= 1.25) is needed to build ${missing[*]}" >&2; exit 1; }
mkdir -p "$bindir" "$cache/src"
echo "building ${missing[*]} into $bindir (a cold build takes tens of minutes)" >&2
start=$SECONDS

# --- etcd: a three-line wrapper around etcdmain.Main -------------------------------------
if [[ ! -x "$bindir/etcd" ]]; then
    src="$cache/src/etcd-$ETCD_VERSION"
    mkdir -p "$src"
    cat > "$src/main.go" <<'GO'
// Command etcd runs the upstream etcd server; built by roomwire's cluster/build.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    rm -f "$src/go.mod" "$src/go.sum"
    (cd "$src" && go mod init roomwire.local/etcd >/dev/null 2>&1 \
        && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 \
        && go mod tidy >&2 \
        && go build -trimpath -ldflags "-s -w" -o "$bindir/etcd.tmp" . >&2)
    mv "$bindir/etcd.tmp" "$bindir/etcd"
    echo "etcd built after $((SECONDS - start)) s" >&2
fi

# --- Kubernetes: wrapper module with a replace for every staging module -----------------
k8s_missing=()
for b in kube-apiserver kube-controller-manager kubectl; do
    [[ -x "$bindir/$b" ]] || k8s_missing+=("$b")
done
if [[ ${#k8s_missing[@]} -gt 0 ]]; then
    src="$cache/src/kubernetes-$KUBERNETES_VERSION"
    mkdir -p "$src"
    upstream_mod="$(cd "$src" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
        | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')"
    [[ -f "$upstream_mod" ]] || { echo "error: k8s.io/kubernetes@$KUBERNETES_VERSION not served" >&2; exit 1; }
    staging_ver="v0.${KUBERNETES_VERSION#v1.}"
    {
        echo "module roomwire.local/kubernetes"
        echo
        grep -E '^go [0-9]' "$upstream_mod"
        echo
        grep -E '^godebug ' "$upstream_mod" || true
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        echo "replace ("
        sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\t\1 => \1 '"$staging_ver"'#p' "$upstream_mod"
        echo ")"
    } > "$src/go.mod"
    cat > "$src/tools.go" <<'GO'
//go:build tools

// Package tools pins the upstream commands that cluster/build.sh builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
    ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
    ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    (cd "$src" && go mod tidy >&2)
    for b in "${k8s_missing[@]}"; do
        (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$bindir/$b.tmp" "k8s.io/kubernetes/cmd/$b" >&2)
        mv "$bindir/$b.tmp" "$bindir/$b"
        echo "$b built after $((SECONDS - start)) s" >&2
    done
fi

echo "built in $((SECONDS - start)) s" >&2
echo "$((SECONDS - start))" > "$bindir/.build-seconds"
echo "$bindir"
