#!/usr/bin/env bash
# Here, before a device call: bash gpu/dryrun.sh JOB [ARGS]   (or a job file: bash gpu/dryrun.sh path/to/job.sh)
# Runs gpu/jobs/JOB.sh with a stand-in python3 that executes nothing: every `python3 -m training ...` command the
# job would run has its arguments parsed by the real parser (a typo or a doubled option fails here, not after a
# machine start), every other python3 call is only listed. Checks the job's control flow and command lines, not
# its data or its GPU work (DRYRUN_WIDTH=2000 prints whole command lines). Exit 1 if any command line fails to parse. (2026-12-04: a job's helper passed
# --variants twice and four training runs stopped at once on the GPU.)
set -uo pipefail
cd "$(dirname "$0")/.."
job=${1:?usage: bash gpu/dryrun.sh JOB|FILE.sh [ARGS]}; shift
script=gpu/jobs/$job.sh; case "$job" in *.sh) script=$(realpath "$job") ;; esac
[ -f "$script" ] || { echo "no $script" >&2; exit 2; }
real=$(command -v python3); [ -x .venv/bin/python ] && real=$PWD/.venv/bin/python
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/work" "$tmp/out"; : > "$tmp/calls"
cat > "$tmp/bin/python3" <<STANDIN
#!/usr/bin/env bash
echo "python3 \$*" >> "$tmp/calls"
if [ "\${1:-}" = "-m" ] && [ "\${2:-}" = "training" ]; then
  shift 2
  if ! PYTHONPATH="$PWD" "$real" -c 'import sys; from training.__main__ import parse; m, a = parse(sys.argv[1:]); sys.exit(0 if m else a)' "\$@" 2> "$tmp/err"; then
    { echo "FAILS TO PARSE: python3 -m training \$*"; sed 's/^/    /' "$tmp/err"; } >> "$tmp/failures"
  fi
fi
[ "\${1:-}" = "-" ] && cat > /dev/null   # a script on stdin: read, not run
exit 0
STANDIN
chmod +x "$tmp/bin/python3"
PATH="$tmp/bin:$PATH" GPU_WORK="$tmp/work" OUT="$tmp/out" GPU_KEEP="$tmp/keep" MINILM="${MINILM:-$tmp/minilm}" \
  CODE_COMMIT=dryrun DEADLINE_S="${DEADLINE_S:-3600}" timeout "${DRYRUN_S:-300}" bash "$script" "$@" > "$tmp/log" 2>&1
echo "job $job (dry run): exit $?, $(wc -l < "$tmp/calls" 2>/dev/null || echo 0) python3 calls; training commands:"
grep -E "^python3 -m training " "$tmp/calls" 2>/dev/null | cut -c1-"${DRYRUN_WIDTH:-160}" | sed 's/^/  /'
if [ -s "$tmp/failures" ]; then cat "$tmp/failures"; exit 1; fi
echo "every training command line parses"
