"""The container build (deploy/build-images.sh) and the compose stack that runs its images.

Fast checks: the images the build script produces are the ones docker-compose.yml and the k8s
manifests run; the builds take their wheels from the git-ignored .wheels/ folder; ports and volumes.
Slow check: scripts/compose-smoke.sh builds the images and runs the stack with Podman (root, minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

BUILD = REPO / "deploy" / "build-images.sh"
SMOKE = REPO / "scripts" / "compose-smoke.sh"


def built_tags() -> set[str]:
    out = subprocess.run(["bash", str(BUILD), "--print-tags"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def k8s_images() -> set[str]:
    images = set()
    for path in [*(REPO / "k8s").glob("*.yaml"), *(REPO / "k8s" / "ray").glob("*.yaml")]:
        images |= set(re.findall(r"^\s*image:\s*(\S+)\s*$", path.read_text(), flags=re.M))
    return images


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_build_script_tags_the_project_version():
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), flags=re.M).group(1)
    assert built_tags() == {f"neural-search-service:{version}", f"neural-search-jobs:{version}"}


def test_k8s_runs_exactly_the_images_the_build_script_makes():
    ours = {image for image in k8s_images() if image.startswith("neural-search-")}
    assert ours == built_tags()  # every project image referenced is built, and every built one is used
    kust = yaml.safe_load((REPO / "k8s" / "kustomization.yaml").read_text())
    assert {f"{i['name']}:{i['newTag']}" for i in kust["images"]} == built_tags()


def test_compose_runs_the_built_images_on_a_free_overridable_port(compose):
    services = compose["services"]
    assert {services["search"]["image"], services["indexer"]["image"]} == built_tags()
    (port,) = services["search"]["ports"]
    host, published, target = re.fullmatch(r"([\d.]+):(.+):(\d+)", port).groups()
    assert host == "127.0.0.1" and target == "8000"
    assert re.fullmatch(r"\$\{SEARCH_PORT:-(\d+)\}", published) and "8000" not in published
    assert "ports" not in services["redis"], "the host's Redis owns 6379: the stack's Redis stays unpublished"
    assert services["redis"]["image"].startswith("${REDIS_IMAGE:-")


def test_models_and_indexes_are_volumes_not_image_content(compose):
    for name in ("Dockerfile.service", "Dockerfile.jobs"):
        text = (REPO / "docker" / name).read_text()
        assert not re.search(r"^COPY .*\bmodels\b", text, flags=re.M), f"{name} bakes the models in"
        assert "SEARCH_MODELS_DIR=/models" in text and "SEARCH_INDEX_ROOT=/indexes" in text
    for service in ("search", "indexer"):
        assert any(v.endswith(":/models:ro") for v in compose["services"][service]["volumes"])
        assert compose["services"][service]["environment"]["SEARCH_MODELS_DIR"] == "/models"


def test_builds_install_from_the_mounted_wheel_folder_which_git_ignores():
    for name in ("Dockerfile.service", "Dockerfile.jobs"):
        text = (REPO / "docker" / name).read_text()
        assert "--mount=type=bind,source=.wheels,target=/wheels" in text
        assert "COPY .wheels" not in text and "ARG BASE_IMAGE=" in text
    if shutil.which("git") and (REPO / ".git").exists():
        probe = subprocess.run(["git", "check-ignore", "-q", ".wheels/torch-2.13.0-cp311-none-any.whl"], cwd=REPO)
        assert probe.returncode == 0, ".wheels/ must be git-ignored"
        kept = subprocess.run(["git", "check-ignore", "-q", ".wheels/README.md"], cwd=REPO)
        assert kept.returncode == 1, ".wheels/README.md keeps the folder in the build context"
    assert not re.search(r"https?://(?!127\.0\.0\.1)", BUILD.read_text() + SMOKE.read_text()), "a host name in the scripts"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("apt-get") is None or os.geteuid() != 0, reason="needs root on Debian (apt, podman)")
def test_compose_smoke_builds_runs_swaps_and_leaves_nothing():
    done = subprocess.run(["bash", str(SMOKE)], capture_output=True, text=True, timeout=1800)
    print(done.stdout[-4000:], done.stderr[-4000:])
    assert done.returncode == 0
    assert "smoke: all checks held" in done.stdout and "smoke: nothing left running" in done.stdout


def test_installed_packages_carry_their_data_files():
    """The images install a wheel, not the checkout: files the service reads must be package data."""
    import tomllib
    from fnmatch import fnmatch

    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, folder in (("service", "static"), ("eval", "regressions")):
        files = [p.relative_to(REPO / package).as_posix() for p in (REPO / package / folder).iterdir() if p.is_file()]
        assert files and all(any(fnmatch(f, g) for g in package_data[package]) for f in files), f"{package}/{folder}"
