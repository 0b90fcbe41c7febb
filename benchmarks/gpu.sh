#!/usr/bin/env bash
# benchmarks/gpu.sh: the one GPU run of issue 11 item 5 (see benchmarks/gpu.py and
# benchmarks/README.md, "GPU (H200), when lent"). Self-contained: no downloads, no install
# needed (the repo's src/ goes on PYTHONPATH), time-boxed: gpu.py starts no row after BUDGET
# seconds and `timeout` stops everything after LIMIT seconds; the JSON is rewritten after every
# row, so a stopped run still leaves what it measured.
#
#   benchmarks/gpu.sh                      # writes $OUT/gpu.json and $OUT/gpu.log (or runs/gpu/)
#   COMPILE=1 BUDGET=300 benchmarks/gpu.sh # also the torch.compile rows (minutes of compiling)
#   benchmarks/gpu.sh --variations 4       # extra arguments go to gpu.py
set -u
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-runs/gpu}"  # $OUT on the device machine; runs/ is git-ignored
BUDGET="${BUDGET:-360}"   # no new row after this (seconds since gpu.py started)
LIMIT="${LIMIT:-470}"     # hard stop for the whole script, under the 8 minutes asked for
mkdir -p "$OUTDIR"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TRANSFORMERS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

{
  echo "== $(date -u +%FT%TZ) $(hostname) repo $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv \
    || echo "nvidia-smi: not found"
  echo "python: $PY"
  "$PY" - <<'PYEOF'
import importlib, sys
try:
    import torch
except ImportError as err:
    sys.exit(f"torch is not importable: {err}")
print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device 0: {torch.cuda.get_device_name(0)}")
for name in ("numpy", "transformers", "safetensors", "soundfile"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')}")
    except ImportError as err:
        print(f"{name}: MISSING ({err}); the rows that need it are skipped")
import stage
print(f"stage from {stage.__file__}")
PYEOF
} 2>&1 | tee "$OUTDIR/gpu.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "environment check failed; see above" | tee -a "$OUTDIR/gpu.log"; exit 2; }

extra=()
[ "${COMPILE:-0}" = 1 ] && extra+=(--compile)
timeout -k 10 "$LIMIT" "$PY" benchmarks/gpu.py --device cuda --budget "$BUDGET" --out "$OUTDIR/gpu.json" ${extra[@]+"${extra[@]}"} "$@" \
  2>&1 | tee -a "$OUTDIR/gpu.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 124 ] && echo "stopped by the ${LIMIT} s limit; $OUTDIR/gpu.json holds the rows finished" | tee -a "$OUTDIR/gpu.log"
exit "$rc"
