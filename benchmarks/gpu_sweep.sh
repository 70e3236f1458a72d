#!/usr/bin/env bash
# The end-to-end GPU sweep benchmark (python -m benchmarks.gpu_sweep) on a machine without a package index: installs
# the carried wheels into $SITE, then runs every part under a hard timeout and writes $OUT/gpu_sweep.json and
# $OUT/gpu_sweep.log.
#
#   bash benchmarks/gpu_sweep.sh [benchmarks.gpu_sweep args, e.g. --smoke or --parts concurrency,sweep_default]
#
# Wheels come from $WHL (a folder of .whl files, as for gpu_session.sh) and from $BUNDLE, what `make bundle` writes:
# the bundle/ folder or bundle.tar.xz (Ray slimmed with SLIM_RAY=1, optuna, pyarrow and the rest the image lacks);
# by default bundle.tar.xz, else bundle/, where present. Installed with --no-deps into $SITE, which goes first on
# PYTHONPATH, so only wheels this interpreter can use are installed, never raysweep's own (the working tree is what
# runs) and never one of a package the image already has, in any version (its torch, CUDA and numpy stay as they are;
# REPLACE_INSTALLED=1 installs a carried wheel over the image's other version).
#
# The whole launcher fits $GS_LIMIT seconds (590: the device runs one command for at most 600 s): the script gets
# what the installation left, less a margin, as its hard timeout, and a budget 30 s under that (at most 540 s, the
# script's own default) so that its last part is stopped and its JSON and summary written before the kill.
#
# Environment: OUT (/tmp/gpu_sweep_out), PYTHON (python3), SITE (/tmp/site), WHL (.whl), BUNDLE (see above),
# GS_LIMIT (590), GS_BUDGET (540 at most), SKIP_INSTALL=1 (a machine where $SITE is already filled),
# REPLACE_INSTALLED=1.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_sweep_out}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
WHL=${WHL:-.whl}
if [ -z "${BUNDLE:-}" ]; then
  if [ -f bundle.tar.xz ]; then BUNDLE=bundle.tar.xz; elif [ -d bundle ]; then BUNDLE=bundle; else BUNDLE=; fi
fi
LIMIT=${GS_LIMIT:-590}
mkdir -p "$OUT" "$SITE"
export OMP_WAIT_POLICY=PASSIVE
export PYTHONUNBUFFERED=1
export RAY_USAGE_STATS_ENABLED=0
unset RAY_ADDRESS
{
  echo "== $(date -u +%FT%TZ) gpu_sweep.sh: wheels from ${WHL} and ${BUNDLE:-no bundle} into $SITE"
  if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    WHEELS=()
    [ -d "$WHL" ] && WHEELS+=("$WHL"/*.whl)
    if [ -n "$BUNDLE" ] && [ -f "$BUNDLE" ]; then
      # a .tar.xz of the bundle folder: unpacked next to $SITE (xz makes Ray's wheel small enough to carry)
      "$PY" - "$BUNDLE" "$SITE.bundle" <<'EOF' && WHEELS+=("$SITE.bundle"/*/*.whl)
import sys
import tarfile

with tarfile.open(sys.argv[1]) as tar:
    try:
        tar.extractall(sys.argv[2], filter="data")
    except TypeError:  # Python without extraction filters (< 3.11.4): a bundle we built ourselves
        tar.extractall(sys.argv[2])
EOF
    elif [ -n "$BUNDLE" ] && [ -d "$BUNDLE" ]; then
      WHEELS+=("$BUNDLE"/*.whl)
    fi
    # Which of them to install: compatible tags (pip's own packaging), not raysweep, not a package the image has;
    # the first of a name wins ($WHL before the bundle). PYTHONPATH empty: what the image itself has.
    PYTHONPATH= "$PY" - "${WHEELS[@]}" > "$OUT/wheels.txt" <<'EOF'
import importlib.metadata as md
import os
import sys
from pathlib import Path

from pip._vendor.packaging.tags import sys_tags
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

supported = set(sys_tags())
have = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}
replace = os.environ.get("REPLACE_INSTALLED") == "1"
chosen = {}
for path in sys.argv[1:]:
    if not Path(path).is_file():
        continue
    name, version, _, tags = parse_wheel_filename(Path(path).name)
    why = ("the working tree runs" if name == "raysweep" else
           "not for this Python/platform" if not tags & supported else
           "installed already" if have.get(name) == str(version) else
           f"the image has {name} {have[name]}" if name in have and not replace else
           "another wheel of it first" if name in chosen else None)
    if why:
        print(f"   skip {Path(path).name}: {why}", file=sys.stderr)
        continue
    if name in have:
        print(f"   {Path(path).name} goes before the image's {name} {have[name]}", file=sys.stderr)
    chosen[name] = path
print("\n".join(chosen.values()))
EOF
    mapfile -t CHOSEN < "$OUT/wheels.txt"
    echo "== installing ${#CHOSEN[@]} of ${#WHEELS[@]} wheels"
    if [ ${#CHOSEN[@]} -gt 0 ] && ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "${CHOSEN[@]}"; then
      echo "pip install failed; extracting the wheels with zipfile instead (keeping executable bits: Ray's raylet)"
      "$PY" - "$SITE" "${CHOSEN[@]}" <<'EOF'
import os
import sys
import zipfile

site = sys.argv[1]
for w in sys.argv[2:]:
    with zipfile.ZipFile(w) as z:
        for info in z.infolist():
            path = z.extract(info, site)
            mode = info.external_attr >> 16
            if mode & 0o111:
                os.chmod(path, mode & 0o777)
    print("extracted", w)
EOF
    fi
    rm -rf "$SITE.bundle"
  fi
  export PYTHONPATH="$SITE:$PWD"
  "$PY" - <<'EOF'
import importlib
import sys

for name in ("raysweep.trial.loop", "raysweep.trial.pack", "raysweep.models", "raysweep.losses", "raysweep.data",
             "segmentation_models_pytorch", "albumentations", "edt", "pandas", "pyarrow", "optuna", "ray.tune"):
    try:
        importlib.import_module(name)
        print(f"import {name}: ok")
    except Exception as exc:  # noqa: BLE001 - the script records what is missing part by part
        print(f"import {name}: FAILED {type(exc).__name__}: {exc}")
print("python", sys.version.split()[0])
EOF
  nvidia-smi 2>&1 | head -20
  TIMEOUT=$((LIMIT - SECONDS - 5))
  BUDGET=$((TIMEOUT - 30))
  [ "$BUDGET" -gt "${GS_BUDGET:-540}" ] && BUDGET=${GS_BUDGET:-540}
  [ "$BUDGET" -lt 60 ] && { BUDGET=60; TIMEOUT=90; echo "== the installation left under 90 s; running 60 s anyway"; }
  echo "== $(date -u +%FT%TZ) install took ${SECONDS}s; script budget ${BUDGET}s, hard timeout ${TIMEOUT}s"
  timeout -k 10 "$TIMEOUT" "$PY" -m benchmarks.gpu_sweep --budget "$BUDGET" --out "$OUT/gpu_sweep.json" "$@"
  echo "benchmarks.gpu_sweep exit code $? after ${SECONDS}s in all"
  ls -la "$OUT"
} 2>&1 | tee "$OUT/gpu_sweep.log"
