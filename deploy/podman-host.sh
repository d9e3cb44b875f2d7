#!/usr/bin/env bash
# Make this machine able to build and run the images with Podman (idempotent; needs root).
# Installs podman, buildah, debootstrap and runc from the configured Debian mirror, and writes the
# container-engine settings that work on hosts where crun cannot set rlimits or use hybrid cgroups:
# runtime runc, cgroupfs, explicit default ulimits, file event log (no systemd/journald needed).
set -euo pipefail

need=()
for tool in podman buildah debootstrap runc; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "podman-host: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap runc >/dev/null
fi

conf_dir=/etc/containers/containers.conf.d
conf=$conf_dir/50-neural-search.conf
wanted='# Written by deploy/podman-host.sh (neural-search): settings that work without systemd or crun.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
if [ "$(cat "$conf" 2>/dev/null)" != "$wanted" ]; then
    mkdir -p "$conf_dir"
    printf '%s\n' "$wanted" > "$conf"
    echo "podman-host: wrote $conf"
fi

# podman-compose comes from PyPI (Debian's 1.0.3 ignores depends_on conditions): its own venv, in the cache.
tools=${NEURAL_SEARCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/neural-search}/podman-compose
if [ ! -x "$tools/bin/podman-compose" ]; then
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install -q "podman-compose==${PODMAN_COMPOSE_VERSION:-1.5.0}"
fi
