#!/usr/bin/env bash
# Untrack / re-track models/ around a device call (git index + .git/info/exclude; files stay on disk).
# See gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
marker=.git/gpu-slim
case "${1:-status}" in
  slim)
    [ -e "$marker" ] && { echo "already slim (run: bash gpu/tree.sh restore)"; exit 0; }
    git diff --cached --quiet || { echo "refusing: staged changes would be mixed with the untracking" >&2; exit 2; }
    git rm -r -q --cached models/
    printf '/models/\n' >> .git/info/exclude   # untracked-not-ignored files would still travel
    date -u +%FT%TZ > "$marker"
    echo "slim: models/ untracked for the device call; do not commit until: bash gpu/tree.sh restore";;
  restore)
    [ -e "$marker" ] || { echo "not slim"; exit 0; }
    sed -i '\|^/models/$|d' .git/info/exclude
    git reset -q -- models/
    rm -f "$marker"
    echo "restored: models/ tracked again";;
  status)
    if [ -e "$marker" ]; then echo "slim since $(cat "$marker")"; else echo "normal"; fi
    git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | awk '{printf "tracked files: %.1f MiB\n", $1/1048576}';;
  *) echo "usage: bash gpu/tree.sh slim|restore|status" >&2; exit 2;;
esac
