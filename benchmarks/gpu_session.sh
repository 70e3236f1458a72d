#!/usr/bin/env bash
# One GPU session (python -m benchmarks.gpu_session) on a machine without internet: installs the carried wheels (.whl/,
# ignored by git) into $SITE, then runs every part with a time budget and writes $OUT/gpu_session.json and
# $OUT/gpu_session.log.
#
#   bash benchmarks/gpu_session.sh [benchmarks.gpu_session args, e.g. --smoke or --parts training,fractional]
#
# Environment: OUT (default /tmp/gpu_session_out), PYTHON (python3), SITE (/tmp/site), WHL (.whl),
# GS_BUDGET (420 s for the script's parts), GS_TIMEOUT (480 s hard kill of the script).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session_out}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
WHL=${WHL:-.whl}
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE
export PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ) install $(ls "$WHL"/*.whl 2>/dev/null | wc -l) wheels from $WHL into $SITE"
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl; then
    echo "pip install failed; extracting the wheels with zipfile instead"
    "$PY" - "$SITE" "$WHL"/*.whl <<'EOF'
import sys, zipfile
site = sys.argv[1]
for w in sys.argv[2:]:
    zipfile.ZipFile(w).extractall(site)
    print("extracted", w)
EOF
  fi
  export PYTHONPATH="$SITE:$PWD"
  "$PY" -c "import raysweep.trial.loop, raysweep.models, raysweep.losses, raysweep.data, segmentation_models_pytorch, albumentations, edt, sys; print('imports ok; ray/optuna imported:', [m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna')])"
  nvidia-smi 2>&1 | head -20
  timeout -k 10 "${GS_TIMEOUT:-480}" "$PY" -m benchmarks.gpu_session --budget "${GS_BUDGET:-420}" --out "$OUT/gpu_session.json" "$@"
  echo "benchmarks.gpu_session exit code $?"
  ls -la "$OUT"
} 2>&1 | tee "$OUT/gpu_session.log"
