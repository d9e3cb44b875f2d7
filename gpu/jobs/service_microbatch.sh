#!/usr/bin/env bash
# The whole service on the GPU (uvicorn, BM25 through Pyserini and Java, docstore, the cross-encoder in bf16
# with its micro-batcher): benchmarks.service_microbatch, one request at a time vs 8 client threads (was
# scripts/device_service_env.sh unpack/env + the benchmark, two calls on a warm machine). Pack (here):
#   bash gpu/service_env.sh $INDEX_ROOT                   # stages "service" (~60 MB: two calls)
#   MINILM=0 bash gpu/pack.sh models/ce-minilm && bash gpu/tree.sh slim
#   the staging calls it printed, then: command "bash gpu/run.sh service_microbatch", carry [".gpu"]
# Args: benchmark options (default --requests 128 --rounds 3).   $OUT: bench.log
set -uo pipefail
bash gpu/need.sh service "$GPU_WORK" || exit 3
S=$GPU_WORK/service
[ -f models/ce-minilm/2_Dense/model.safetensors ] || { echo "missing models/ce-minilm (pack: MINILM=0 bash gpu/pack.sh models/ce-minilm)" >&2; exit 3; }
python3 -m pip install -q --no-index --no-deps --no-compile --target "$S/site" "$S"/whl/*.whl || exit 4
python3 - "$S" <<'PY' || exit 5
import os, sys, zipfile
s = sys.argv[1]
classes = os.path.join(s, "classes")
jar = os.path.join(s, "site/pyserini/resources/jars/anserini-stripped-fatjar.jar")  # pipeline.runtime.java globs anserini-*-fatjar.jar
os.makedirs(os.path.dirname(jar), exist_ok=True)
with zipfile.ZipFile(jar, "w", zipfile.ZIP_STORED) as z:
    for root, _, files in sorted(os.walk(classes)):
        if root != classes:  # directory entries: Anserini lists resource folders through them
            z.write(root, os.path.relpath(root, classes) + "/")
        for f in sorted(files):
            z.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), classes))
print("jar", jar, os.path.getsize(jar) // 2**20, "MiB")
PY
export PYTHONPATH="$S/site:$PYTHONPATH" SEARCH_INDEX_ROOT=$S/indexes SEARCH_DATA_DIR=$S/data
python3 -c "
from pipeline.runtime.java import start_jvm; start_jvm()
from pyserini.search.lucene import LuceneSearcher
import glob; s = LuceneSearcher(glob.glob('$S/indexes/scifact/lucene/current/lucene')[0])
print('bm25 ok:', [h.docid for h in s.search('cancer cells', 3)])
import service.app; print('service imports ok')" || exit 6
args=("$@"); [ $# -gt 0 ] || args=(--requests 128 --rounds 3)
timeout 450 python3 -m benchmarks.service_microbatch --dataset "$S/data/scifact" "${args[@]}" 2>&1 | tee "$OUT/bench.log" | tail -30
