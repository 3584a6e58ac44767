#!/usr/bin/env bash
# Builds rnacos (a Nacos-protocol server in Rust: the 1.x HTTP open API and the 2.x gRPC
# protocol) from crates.io at the version pinned in versions.env, into a cache outside the
# repository keyed by version, and reuses it when present. Tests and the local cluster run
# it in place of a Nacos server (see docs/nacos.md).
# Prints the folder holding the binary on its last line of stdout; with `--exec ARGS...`
# it runs rnacos instead (how the local cluster's node agent runs image rnacos).
#
# RNACOS_BIN: when set to an executable, its folder is used and nothing is built.
# ROOMWIRE_CACHE: cache root (default: $XDG_CACHE_HOME/roomwire or ~/.cache/roomwire).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ "${1:-}" == "--exec" ]]; then
    shift
    dir="$("$here/build-rnacos.sh" | tail -n 1)"
    exec "$dir/rnacos" "$@"
fi
# shellcheck source=versions.env
source "$here/versions.env"

if [[ -n "${RNACOS_BIN:-}" ]]; then
    [[ -x "$RNACOS_BIN" ]] || { echo "error: RNACOS_BIN=$RNACOS_BIN is not executable" >&2; exit 1; }
    dirname "$RNACOS_BIN"
    exit 0
fi

cache="${ROOMWIRE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomwire}"
bindir="$cache/bin/rnacos-$RNACOS_VERSION"
if [[ -x "$bindir/rnacos" ]]; then
    echo "$bindir"
    exit 0
fi

command -v cargo >/dev/null || { echo "error: cargo (Rust) is needed to build rnacos $RNACOS_VERSION" >&2; exit 1; }
export CARGO_HOME="$cache/cargo"
export CARGO_TARGET_DIR="$cache/src/rnacos-$RNACOS_VERSION-target"
# Cargo's toolchain resolution (rustup) still needs its own home when CARGO_HOME moves.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
mkdir -p "$bindir" "$CARGO_HOME"
# One lock for concurrent callers (tests on several workers, a cluster starting).
exec 9>"$bindir/.lock"
flock 9
if [[ -x "$bindir/rnacos" ]]; then
    echo "$bindir"
    exit 0
fi
echo "building rnacos $RNACOS_VERSION into $bindir (a cold build takes several minutes)" >&2
start=$SECONDS
root="$cache/src/rnacos-$RNACOS_VERSION-root"
cargo install rnacos --locked --version "=$RNACOS_VERSION" --root "$root" >&2
mv "$root/bin/rnacos" "$bindir/rnacos.tmp"
mv "$bindir/rnacos.tmp" "$bindir/rnacos"
# The build folder (over a GiB) serves no one once the binary is cached.
rm -rf "$CARGO_TARGET_DIR" "$root"
echo "built in $((SECONDS - start)) s" >&2
echo "$((SECONDS - start))" > "$bindir/.build-seconds"
echo "$bindir"
