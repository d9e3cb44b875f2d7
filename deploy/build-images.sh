#!/usr/bin/env bash
# Build the project's images with Podman/Buildah, offline from any container registry:
#   deploy/build-images.sh            # base (once, cached) + wheels (when the pins change) + images
# 1. localhost/debian-min:bookworm    debootstrap --variant=minbase from the apt mirror already configured
#                                     (or $DEBIAN_MIRROR), imported once; kept until removed.
# 2. localhost/python:3.11-bookworm   Debian's Python 3.11 on it (deploy/Containerfile.python-base)
#    localhost/neural-search-redis    Debian's redis-server (deploy/Containerfile.redis)
# 3. .wheels/                         every wheel the images install, made here with the host's pip
#                                     configuration (`pip wheel`); the builds install with --no-index.
# 4. neural-search-service:VERSION, neural-search-jobs:VERSION from docker/Dockerfile.*, BASE_IMAGE
#    pointing at step 2. Where a registry exists: BASE_IMAGE=python:3.11.11-slim-bookworm.
# Environment: BASE_IMAGE, DEBIAN_MIRROR, PYTHON (host python with pip; default python3), SKIP_JOBS=1.
#   deploy/build-images.sh --print-tags   # the project image tags it makes, one a line; builds nothing
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
IMAGES=(service jobs)
if [ "${1:-}" = --print-tags ]; then
    printf "neural-search-%s:$VERSION\n" "${IMAGES[@]}"
    exit 0
fi
DEBIAN_BASE=localhost/debian-min:bookworm
PYTHON_BASE=localhost/python:3.11-bookworm
REDIS_IMAGE=localhost/neural-search-redis:7.0-bookworm
BASE_IMAGE=${BASE_IMAGE:-$PYTHON_BASE}
PYTHON=${PYTHON:-python3}
WHEELS=.wheels
export BUILDAH_FORMAT=docker  # keeps HEALTHCHECK in the image config (OCI has no such field)

stamp() { date +%s; }
took() { echo "build-images: $1 took $(( $(stamp) - $2 )) s"; }

bash deploy/podman-host.sh

apt_mirror() {  # the Debian mirror apt already uses: a deb822 URIs line or a one-line "deb URL bookworm main"
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' | grep . \
        || awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list
}

if ! podman image exists "$DEBIAN_BASE"; then
    t=$(stamp)
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    mirror=$(apt_mirror)
    echo "build-images: debootstrap bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
    # Slim like the registry's -slim images: no docs, man pages or translations, now or in later installs.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
        'path-include /usr/share/locale/locale.alias' > "$rootfs/etc/dpkg/dpkg.cfg.d/90-slim"
    find "$rootfs"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    tar -C "$rootfs" -c . | podman import --message "debootstrap minbase bookworm" - "$DEBIAN_BASE" >/dev/null
    rm -rf "$rootfs"
    took "debian base" "$t"
fi

if [ "$BASE_IMAGE" = "$PYTHON_BASE" ]; then
    t=$(stamp)
    podman build -q -f deploy/Containerfile.python-base --build-arg DEBIAN_BASE="$DEBIAN_BASE" -t "$PYTHON_BASE" deploy >/dev/null
    took "python base" "$t"
fi
t=$(stamp)
podman build -q -f deploy/Containerfile.redis --build-arg DEBIAN_BASE="$DEBIAN_BASE" -t "$REDIS_IMAGE" deploy >/dev/null
took "redis image" "$t"

# Wheels: refreshed only when the pins change. The project's own wheel is dropped (the build installs the source).
# setuptools/wheel: pip builds the project in the image. async-timeout: redis wants it on Python < 3.11.3, and
# Debian's is 3.11.2 (the host's pip resolves markers for the host's Python).
REQUIREMENTS=("torch==2.13.0" "setuptools>=68" wheel "async-timeout>=4.0.3" ".[train,dist,multilingual]")
pins=$(cat pyproject.toml docker/constraints.txt <(echo "${REQUIREMENTS[*]}") | sha256sum | cut -c1-16)
if [ "$(cat "$WHEELS/.pins" 2>/dev/null)" != "$pins" ]; then
    t=$(stamp)
    mkdir -p "$WHEELS"
    "$PYTHON" -m pip wheel -q --disable-pip-version-check -w "$WHEELS" --find-links "$WHEELS" \
        -c docker/constraints.txt "${REQUIREMENTS[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
    rm -f "$WHEELS"/neural_search-*.whl
    echo "$pins" > "$WHEELS/.pins"
    took "wheels ($(du -sh "$WHEELS" | cut -f1))" "$t"
fi

build() {  # build NAME DOCKERFILE
    t=$(stamp)
    podman build -f "$2" --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg PIP_NO_INDEX=1 \
        -t "neural-search-$1:$VERSION" . | grep --line-buffered -E '^\[?[0-9/]*\]? ?STEP|image ok'
    took "neural-search-$1:$VERSION" "$t"
}
for image in "${IMAGES[@]}"; do
    [ "$image" = jobs ] && [ "${SKIP_JOBS:-0}" = 1 ] && continue
    build "$image" "docker/Dockerfile.$image"
done

podman image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' \
    | grep -E "neural-search|debian-min|python:3.11-bookworm" | sed 's/^/build-images: size /'
