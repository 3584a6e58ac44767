#!/usr/bin/env bash
# Prints the base image for the Dockerfiles (their BASE_IMAGE build argument), making it
# when needed:
#   1. $BASE_IMAGE, when set (e.g. a python:3.11 of the local registry);
#   2. the Dockerfiles' default (python:3.11-slim), when podman has it or can pull it;
#   3. else a local Debian base: a bookworm root filesystem with Debian's python3.11, built
#      by mmdebstrap from Debian's packages and turned into an image by `podman import`.
# The local base is tagged with its recipe's hash (roomwire/base:bookworm-py3.11-<hash>):
# podman's own storage is the cache, and the root filesystem's tar under the cache folder
# ($ROOMWIRE_CACHE, else $XDG_CACHE_HOME/roomwire, else ~/.cache/roomwire) brings it back
# when podman's storage was reset; a changed recipe is a new tag, built anew. The merged-usr
# hook lays out /usr as Debian does without the usrmerge package (which brings perl).
# Progress goes to stderr; stdout is the image name alone.
set -euo pipefail
say() { echo "image-base: $*" >&2; }
podman=(podman --runtime runc)

if [[ -n ${BASE_IMAGE:-} ]]; then
    echo "$BASE_IMAGE"
    exit 0
fi

upstream=python:3.11-slim
if [[ ${ROOMWIRE_BASE:-} != local ]]; then
    if "${podman[@]}" image exists "$upstream"; then
        echo "$upstream"
        exit 0
    fi
    if timeout 120 "${podman[@]}" pull -q "docker.io/library/$upstream" >/dev/null 2>&1; then
        echo "$upstream"
        exit 0
    fi
    say "cannot pull $upstream: using a local Debian base"
fi

# The recipe: what the Dockerfiles need of a base (python, pip to build the wheels in the
# build stage, useradd), nothing else; no documentation, manual pages or translations.
suite=bookworm
packages=python3.11,python-is-python3,python3-pip,passwd,ca-certificates
recipe=(
    --variant=essential
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --include="$packages"
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
)
changes=(
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change 'CMD ["python3"]'
)
key=$(printf '%s\n' "$suite" "${recipe[@]}" "${changes[@]}" | sha256sum | cut -c1-12)
image=localhost/roomwire/base:$suite-py3.11-$key
if "${podman[@]}" image exists "$image"; then
    echo "$image"
    exit 0
fi

cache=${ROOMWIRE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomwire}
tar=$cache/images/base-$suite-py3.11-$key.tar
if [[ ! -s $tar ]]; then
    mkdir -p "$(dirname "$tar")"
    say "building a $suite root filesystem with mmdebstrap ($packages)"
    t0=$SECONDS
    # No mirror given: mmdebstrap uses Debian's default mirror with updates and security.
    log=$cache/images/mmdebstrap.log
    if ! mmdebstrap --quiet --format=tar "${recipe[@]}" "$suite" "$tar.part" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$tar.part"
        say "mmdebstrap failed (log: $log)"
        exit 1
    fi
    mv "$tar.part" "$tar"
    say "root filesystem built in $((SECONDS - t0)) s: $(du -h "$tar" | cut -f1 | tail -1)"
fi
say "importing $image"
"${podman[@]}" import -q "${changes[@]}" "$tar" "$image" >/dev/null
echo "$image"
