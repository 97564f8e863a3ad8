#!/usr/bin/env bash
# The first call of a lease (see benchmarks/NOTES.md, "Next lease"): install with the CUDA
# kernels, print `stylegan-fast info`, run the whole test suite on the GPU (the CUDA kernels'
# and the compiled Triton kernels' check against the reference), then `stylegan-fast tune`
# for stylegan2 at 256^2, which fills the tuning table that the yardstick's training run then
# starts with (the second call: ../shared/yardstick/vs_nvlabs.sh on the same warm machine).
# Benchmarks and sweeps run only when asked for. Every stage has a time budget, a failing
# stage does not stop the next one, and the last thing printed is a summary.
#
#   bash benchmarks/gpu_session.sh                     # install, info, tests, tune (<= 7 min)
#   SKIP_TESTS=1 ...  SKIP_TUNE=1 ...  SKIP_INSTALL=1 ... # leave a stage out (SKIP_INSTALL: a warm machine)
#   TEST_ARGS="tests/ops/test_tuner.py" ...            # another test selection (default: tests/ops, then -m gpu)
#   TUNE_ARGS="--cfg stylegan2 --resolution 1024 --batch 32" ...  # another training setup to tune
#   BENCH_ARGS="--suite train" bash benchmarks/gpu_session.sh    # also a benchmark run
#   BENCH_RUNS="--suite train --providers auto; --suite ops" ...  # several runs (';' between), the time shared equally
#   HOST=1 ...                                         # also the host time per op call (benchmarks.host_overhead)
#   SWEEP=1 SWEEP_ARGS="--only conv" ...                 # also sweep the kernels' launch configs (sweep.json)
#   PROFILE=1 PROFILE_ARGS="--set channels_last=true" ... # also profile each training phase by kernel (profile.json)
#   STYLEGAN_FAST_COMMIT=<hash> bash ...               # .git does not travel: name the commit
#
# Files in $OUT (the device tool brings back 8): stages.txt, setup.log (install, info, and
# with HOST the host time per op call), tests.log, tune.log and tune.json (the tuning table: each
# call's winner, its time and the runners-up), bench.log, sweep.json with SWEEP,
# profile.json with PROFILE, one result <date>_<device>_<suites>.json per benchmark run,
# and report.md. Commit them to benchmarks/results/ (`python -m benchmarks.report` for the
# benchmark JSONs).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Some images have only `python3` (the one holding torch): give it the name the stages use.
if ! command -v python >/dev/null; then
  mkdir -p /tmp/stylegan_fast_bin && ln -sf "$(command -v python3)" /tmp/stylegan_fast_bin/python
  export PATH="/tmp/stylegan_fast_bin:$PATH"
fi
TOTAL_S="${TOTAL_S:-420}"  # call 1 of a 15-minute lease; the device tool kills a command at 600 s
INSTALL_S="${INSTALL_S:-150}"
TESTS_S="${TESTS_S:-150}"
TUNE_S="${TUNE_S:-100}"
TUNE_ARGS="${TUNE_ARGS:---cfg stylegan2 --resolution 256 --batch 32}"
REPORT_S=30  # kept back at the end for the report and the summary
START=$SECONDS
STAGES="$OUT/stages.txt"
: >"$STAGES"

left() { echo $((TOTAL_S - (SECONDS - START))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

# stage NAME SECONDS COMMAND: run the shell command (a function below, or a command line)
# under a time limit; record its status and duration in stages.txt.
stage() {
  local name="$1" limit="$2" command="$3" began=$SECONDS status result="ok"
  if [ "$limit" -le 5 ]; then
    printf '%-8s skipped (no time left)\n' "$name" | tee -a "$STAGES"
    return 1
  fi
  printf '\n==> [%ss] %s (limit %ss)\n' "$((SECONDS - START))" "$name" "$limit"
  timeout --signal=INT --kill-after=15 "$limit" bash -c "$command"
  status=$?
  if [ "$status" -eq 124 ]; then result="TIMEOUT after ${limit}s"; elif [ "$status" -ne 0 ]; then result="FAILED (exit $status)"; fi
  printf '%-8s %-24s %4ss\n' "$name" "$result" "$((SECONDS - began))" | tee -a "$STAGES"
  return "$status"
}

# The CUDA toolkit: the folder holding the real nvcc (the one on PATH may be a wrapper script).
find_cuda_home() {
  local candidate
  for candidate in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-*; do
    if [ -n "$candidate" ] && [ -x "$candidate/bin/nvcc" ] && [ -d "$candidate/include" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

install() {
  CUDA_HOME="$(find_cuda_home)" || { echo "no CUDA toolkit found under /usr/local/cuda*"; return 1; }
  export CUDA_HOME TORCH_CUDA_ARCH_LIST=9.0 STYLEGAN_FAST_CUDA_ARCHS=9.0 STYLEGAN_FAST_BUILD_CUDA=1
  echo "CUDA_HOME=$CUDA_HOME"
  python -m pip install --no-build-isolation --no-deps --no-index -v -e . && return 0
  echo "!! the build with the CUDA kernels failed; installing without them so that the rest can run"
  STYLEGAN_FAST_BUILD_CUDA=0 python -m pip install --no-build-isolation --no-deps --no-index -e .
  return 1
}

info() {
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; fi
  if command -v stylegan-fast >/dev/null; then stylegan-fast info; else python -m stylegan_fast.cli info; fi
}

tests() {
  local extra=()
  python -c 'import pytest_benchmark' 2>/dev/null && extra+=(--benchmark-disable)
  # Compiling the Triton kernels for real dominates: spread the tests over worker processes
  # (pytest-xdist is not on the GPU image: carry its wheels in .whl/, see NOTES.md).
  if ! python -c 'import xdist' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    python -m pip install --quiet --no-index --no-deps .whl/*.whl
  fi
  python -c 'import xdist' 2>/dev/null && extra+=(-n "${TEST_WORKERS:-12}")
  # What only a GPU can show first: every kernel test (tests/ops), then the GPU-marked tests
  # elsewhere; the rest of the suite runs in CI. TEST_ARGS replaces the selection.
  if [ -n "${TEST_ARGS:-}" ]; then
    python -m pytest -q -p no:cacheprovider "${extra[@]}" $TEST_ARGS
  else
    python -m pytest -q -p no:cacheprovider "${extra[@]}" tests/ops
    local status=$?
    python -m pytest -q -p no:cacheprovider "${extra[@]}" -m gpu tests --ignore=tests/ops || status=$?
    return "$status"
  fi
}

tune() {
  # The table goes to the default cache folder, where the yardstick's training run finds it.
  python -m stylegan_fast.cli tune $TUNE_ARGS --json >"$OUT/tune.json" 2>"$OUT/tune.log"
  local status=$?
  tail -n 5 "$OUT/tune.log"
  python -c 'import json, sys
doc = json.load(open(sys.argv[1]))
print(len(doc["entries"]), "calls tuned; winners:", {w: sum(e["winner"] == w for e in doc["entries"]) for w in sorted({e["winner"] for e in doc["entries"]})})' "$OUT/tune.json" 2>/dev/null
  return "$status"
}

export -f find_cuda_home install info tests tune
export OUT TUNE_ARGS TEST_ARGS="${TEST_ARGS:-}"
echo "python $(python --version 2>&1 | cut -d' ' -f2), $(python -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' 2>&1)"

if [ -z "${SKIP_INSTALL:-}" ]; then
  stage install "$(min "$INSTALL_S" "$(($(left) - REPORT_S))")" install 2>&1 | tee "$OUT/setup.log" | tail -n 25
else
  printf '%-8s skipped (SKIP_INSTALL)\n' install | tee -a "$STAGES"
fi
stage info 30 info 2>&1 | tee -a "$OUT/setup.log"
if [ -n "${HOST:-}" ]; then
  stage host 60 "python -m benchmarks.host_overhead --device cuda" 2>&1 | tee -a "$OUT/setup.log"
fi
if [ -z "${SKIP_TESTS:-}" ]; then
  stage tests "$(min "$TESTS_S" "$(($(left) - REPORT_S))")" tests 2>&1 | tee "$OUT/tests.log" | tail -n 40
else
  printf '%-8s skipped (SKIP_TESTS)\n' tests | tee -a "$STAGES"
fi
if [ -z "${SKIP_TUNE:-}" ]; then
  stage tune "$(min "$TUNE_S" "$(($(left) - REPORT_S))")" tune 2>&1 | tail -n 12
  # The table as it stands, also when the stage ran out of time (it is written call by call).
  cp "${STYLEGAN_FAST_CACHE_DIR:-$HOME/.cache/stylegan_fast}"/tuning-*.json "$OUT/tuning-table.json" 2>/dev/null
else
  printf '%-8s skipped (SKIP_TUNE)\n' tune | tee -a "$STAGES"
fi
if [ -n "${SWEEP:-}" ]; then
  stage sweep "$(min "${SWEEP_S:-180}" "$(($(left) - REPORT_S))")" "python -m benchmarks.sweep --out '$OUT/sweep.json' ${SWEEP_ARGS:-}" \
    2>&1 | tee "$OUT/bench.log"
fi
if [ -n "${PROFILE:-}" ]; then
  stage profile "$(min "${PROFILE_S:-150}" "$(($(left) - REPORT_S))")" "python -m benchmarks.profile --out '$OUT/profile.json' ${PROFILE_ARGS:-}" \
    2>&1 | tee -a "$OUT/bench.log"
fi
# The benchmark ends itself in time (--budget); the stage's timeout is a safety net.
RUNS=()
[ -n "${BENCH_RUNS:-${BENCH_ARGS:-}}" ] && IFS=';' read -r -a RUNS <<<"${BENCH_RUNS:-${BENCH_ARGS:-}}"
touch "$OUT/bench.log"
for i in "${!RUNS[@]}"; do
  BENCH_LIMIT=$(( ($(left) - REPORT_S) / (${#RUNS[@]} - i) ))
  stage "bench$((i + 1))" "$BENCH_LIMIT" "python -m benchmarks.run --suite all --out '$OUT' --budget $((BENCH_LIMIT - 25)) ${RUNS[$i]}" \
    2>&1 | tee -a "$OUT/bench.log" | grep -v ': done$' | grep -v '^|' | tail -n 25
done

echo
echo "==================== summary ===================="
cat "$STAGES"
if ls "$OUT"/[0-9]*.json >/dev/null 2>&1; then  # benchmark results are named by their date
  timeout 20 python -m benchmarks.report --results "$OUT" --out "$OUT/report.md" --include-quick >/dev/null 2>&1
  for RESULT in $(ls -tr "$OUT"/[0-9]*.json); do
    timeout 20 python -c 'import json, sys; from benchmarks import report; doc = json.load(open(sys.argv[1])); doc["_file"] = sys.argv[1].rsplit("/", 1)[-1]; print(report.summary(doc))' "$RESULT"
  done
else
  echo "no benchmark result was written"
fi
echo "total ${SECONDS}s"
