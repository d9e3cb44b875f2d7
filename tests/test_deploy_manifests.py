"""Deployment files: Kubernetes manifests against the Kubernetes schemas, the compose file, the Dockerfiles.

There is no Docker engine or cluster here: manifests are validated with ``kubernetes-validate``
(it ships the schemas), the RayJob's pod templates as core ``PodTemplate`` objects, the compose
file and Dockerfiles are parsed and their structure checked.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="needs the dev extra (kubernetes-validate)")

K8S = REPO / "k8s"
K8S_VERSIONS = ("1.29.0", "1.37.0")  # oldest and newest cluster versions we claim to support


def manifests(folder: Path = K8S) -> list[tuple[str, dict]]:
    out = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def by_kind(kind: str, name: str | None = None) -> list[dict]:
    return [d for _, d in manifests() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def pod_specs() -> list[dict]:
    specs = [d["spec"]["template"]["spec"] for d in by_kind("Deployment") + by_kind("Job")]
    ray = rayjob()["spec"]["rayClusterSpec"]
    specs += [ray["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in ray["workerGroupSpecs"]]
    return specs


def rayjob() -> dict:
    return yaml.safe_load((K8S / "ray" / "rayjob.yaml").read_text())


# ---- Kubernetes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_passes_strict_schema_validation(version):
    docs = manifests()
    assert len(docs) >= 10
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"k8s/{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")


def test_validation_is_not_vacuous():
    deployment = copy.deepcopy(by_kind("Deployment", "search")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(by_kind("Deployment", "search")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_the_required_objects_exist():
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in manifests()}
    for wanted in [("Deployment", "search"), ("Service", "search"), ("HorizontalPodAutoscaler", "search"),
                   ("ConfigMap", "search-config"), ("Secret", "search-api-keys"), ("PersistentVolumeClaim", "search-indexes"),
                   ("Deployment", "redis"), ("Service", "redis"), ("Job", "indexer")]:
        assert wanted in kinds, f"missing {wanted}"


def test_search_probes_use_the_service_endpoints(client):
    container = by_kind("Deployment", "search")[0]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    for probe in ("readinessProbe", "livenessProbe"):  # the paths answer 200 on a loaded service
        assert client.get(container[probe]["httpGet"]["path"]).status_code == 200


def test_references_between_objects_resolve():
    names = {(d["kind"], d["metadata"]["name"]) for _, d in manifests()}
    for spec in pod_specs():
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert ("ConfigMap", src["configMapRef"]["name"]) in names
                if "secretRef" in src:
                    assert ("Secret", src["secretRef"]["name"]) in names
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])}
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names
    hpa = by_kind("HorizontalPodAutoscaler", "search")[0]["spec"]
    assert ("Deployment", hpa["scaleTargetRef"]["name"]) in names and hpa["minReplicas"] >= 2
    for service in by_kind("Service"):
        selector = service["spec"]["selector"]
        targets = [d for d in by_kind("Deployment") if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"service {service['metadata']['name']} selects {len(targets)} deployments"


def test_pods_run_as_non_root_with_pinned_images_and_memory_limits():
    for spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        for c in spec["containers"] + spec.get("initContainers", []):
            assert re.search(r":\d+\.\d+\.\d+(-[a-z0-9]+)?$", c["image"]), f"unpinned image {c['image']}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert "memory" in c["resources"]["limits"]


def test_secret_holds_digests_and_the_config_turns_production_checks_on():
    secret = by_kind("Secret", "search-api-keys")[0]["stringData"]
    assert set(secret) == {"SEARCH_API_KEY_HASHES", "SEARCH_ADMIN_KEY_HASHES"}
    assert by_kind("ConfigMap", "search-config")[0]["data"]["SEARCH_ENV"] == "production"


def test_kustomization_lists_every_manifest_and_renders():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    ray_kust = yaml.safe_load((K8S / "ray" / "kustomization.yaml").read_text())
    assert ray_kust["resources"] == ["rayjob.yaml"]
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: the render check needs 'kubectl kustomize'")
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(docs) == len(manifests())
    assert all(d["metadata"].get("namespace") == "neural-search" for d in docs if d["kind"] != "Namespace")


def test_rayjob_pod_templates_validate_and_entrypoint_is_our_cli():
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for i, template in enumerate(templates):
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": template}
        kubernetes_validate.validate(pod_template, K8S_VERSIONS[-1], strict=True)
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:4] == ["python", "-m", "indexer", "build-distributed"]
    assert argv[argv.index("--ray-address") + 1] == "auto"
    from indexer.__main__ import main

    with pytest.raises(SystemExit) as exit_:  # the real parser accepts the arguments (--help stops after parsing)
        main(argv[3:] + ["--help"])
    assert exit_.value.code == 0
    ray = pytest.importorskip("ray")
    assert cluster["rayVersion"] == ray.__version__, "the RayJob's rayVersion must match the Ray in the jobs image"


# ---- docker compose ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_service_waits_for_healthy_redis_and_a_finished_indexer(compose):
    services = compose["services"]
    assert set(services) == {"redis", "indexer", "search"}
    depends = services["search"]["depends_on"]
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["indexer"]["condition"] == "service_completed_successfully"
    assert services["redis"]["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    assert "/readyz" in " ".join(services["search"]["healthcheck"]["test"])
    assert services["indexer"]["restart"] == "no"
    assert services["search"]["environment"]["SEARCH_REDIS_URL"].startswith("redis://redis:6379")


def test_compose_shares_one_index_volume(compose):
    def mounts(service: str) -> dict[str, str]:
        out = {}
        for v in compose["services"][service]["volumes"]:
            src, dst, *mode = v.split(":")
            out[src] = dst + (":" + mode[0] if mode else "")
        return out

    assert "indexes" in compose["volumes"]
    assert mounts("indexer")["indexes"] == "/indexes"
    assert mounts("search")["indexes"] == "/indexes:ro"
    for service in ("indexer", "search"):
        env = compose["services"][service]["environment"]
        assert env["SEARCH_INDEX_ROOT"] == "/indexes"
        for src in mounts(service):
            assert not src.startswith("/"), f"absolute host path {src} in docker-compose.yml"


def test_compose_builds_from_our_dockerfiles(compose):
    for service in ("indexer", "search"):
        build = compose["services"][service]["build"]
        assert (REPO / build["context"] / build["dockerfile"]).is_file()
        assert not compose["services"][service]["image"].endswith(":latest")


# ---- Dockerfiles -------------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        lines.append((word.upper(), rest.strip()))
        buf = ""
    return lines


def final_stage(path: Path) -> list[tuple[str, str]]:
    ins = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


@pytest.mark.parametrize("name", ["Dockerfile.service", "Dockerfile.jobs"])
def test_dockerfile_is_pinned_non_root_and_health_checked(name):
    path = REPO / "docker" / name
    ins = instructions(path)
    defaults = dict(args.split("=", 1) for word, args in ins if word == "ARG" and "=" in args)
    for word, args in ins:
        if word == "FROM":  # a build argument counts with its default: the registry image
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), args.split()[0])
            assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), f"unpinned base image {image}"
    stage = final_stage(path)
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    health = [args for word, args in stage if word == "HEALTHCHECK"]
    assert health and "CMD" in health[0] and not health[0].startswith("NONE")
    runs = " ".join(args for word, args in ins if word == "RUN")
    assert '"torch==2.13.0"' in runs, "torch must stay pinned"


def test_dockerfile_copies_only_paths_that_exist():
    for name in ("Dockerfile.service", "Dockerfile.jobs"):
        for word, args in instructions(REPO / "docker" / name):
            if word == "COPY" and "--from=" not in args:
                sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
                for src in sources:
                    assert (REPO / src).exists(), f"{name}: COPY {src} does not exist"


def test_service_image_has_no_training_dependencies():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    heavy = {re.split(r"[<>=\[ ]", d)[0].lower() for extra in ("train", "dist", "report") for d in pyproject["project"]["optional-dependencies"][extra]}
    core = {re.split(r"[<>=\[ ]", d)[0].lower() for d in pyproject["project"]["dependencies"]}
    assert not heavy & core, f"training/batch packages in the core dependencies: {heavy & core}"
    runs = " ".join(args for word, args in instructions(REPO / "docker" / "Dockerfile.service") if word == "RUN")
    installs = re.findall(r"pip install ([^&]+)", runs)
    assert installs and all("[" not in spec for spec in installs), f"the service image installs extras: {installs}"
    assert not any(pkg in runs for pkg in heavy)
    copies = " ".join(args for word, args in final_stage(REPO / "docker" / "Dockerfile.service") if word == "COPY")
    assert "training" not in copies and "tests" not in copies


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "indexes", "runs", "checkpoints"} <= ignored


def test_images_install_pinned_versions():
    lines = [x for x in (REPO / "docker" / "constraints.txt").read_text().splitlines() if x and not x.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", x) for x in lines)
    pinned = dict(x.split("==") for x in lines)
    assert pinned["pyserini"] == "1.6.0" and "torch" not in pinned  # torch is pinned on its own line
    for name in ("Dockerfile.service", "Dockerfile.jobs"):
        runs = " ".join(args for word, args in instructions(REPO / "docker" / name) if word == "RUN")
        assert re.findall(r"pip install -c constraints\.txt", runs), f"{name} installs without the constraints"
