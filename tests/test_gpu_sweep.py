"""benchmarks.gpu_sweep's smoke runs: the parts of the prepared GPU benchmark run on the CPU at tiny sizes and record
their figures, so that the run on the GPU (one try, minutes of device time) does not fail on a code path.

The first test keeps to about half a minute on 2 cores: the CNN only (the Transformer adds the same code paths with
another model) and none of the compile part (a cold inductor cache takes minutes on this CPU); the second runs the
Synapse-shaped sweeps in about a minute. The full smoke run, ``python -m benchmarks.gpu_sweep --smoke`` (about 4
minutes), covers the rest by hand."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_smoke_run_records_every_ray_free_part(tmp_path):
    out = tmp_path / "gpu_sweep.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_sweep", "--smoke", "--parts", "env,concurrency,packing,loader",
           "--archs", "cnn", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == {} and result["meta"]["smoke"] is True
    parts = result["parts"]
    assert list(parts) == ["env", "concurrency", "packing", "loader"]
    assert all(p["status"] == "ok" and p["skipped"] == [] for p in parts.values()), parts

    assert parts["env"]["torch"] and parts["env"]["cpu_count"] >= 1 and "ray" in parts["env"]["packages"]

    archs = result["meta"]["recipe"]["archs"]
    assert archs == {"cnn": {"arch": "Unet", "encoder": "resnet34"}}  # configs/synapse.yaml's CNN
    for arch in archs:
        runs = parts["concurrency"][arch]["runs"]
        assert [r["n"] for r in runs] == [1, 2] and [r["completed"] for r in runs] == [1, 2]
        for r in runs:
            assert len(r["per_process_steps_per_s"]) == r["n"] and all(map(positive, r["per_process_steps_per_s"]))
            assert positive(r["aggregate_steps_per_s"]) and positive(r["aggregate_vs_n1"])

    packing = parts["packing"]
    assert packing["ks"] == [1, 2] and packing["losses"] == ["dice", "ce"]
    for arch in archs:
        runs = packing[arch]["runs"]
        assert [r["k"] for r in runs] == [1, 2] and [r["losses"] for r in runs] == [["dice"], ["dice", "ce"]]
        for r, alone in zip(runs, parts["concurrency"][arch]["runs"]):
            assert r["status"] == "completed" and r["members_completed"] == r["k"]
            assert [m["status"] for m in r["members"]] == ["completed"] * r["k"]
            assert r["timed_steps"] == alone["timed_steps_per_process"]  # the same steps as the K trials alone
            assert positive(r["member_steps_per_s"]) and positive(r["vs_concurrent"]) and positive(r["peak_memory_mb"])

    loader = parts["loader"]
    assert loader["loss"] == "boundary" and loader["maps"] is not None
    assert [r["num_workers"] for r in loader["runs"]] == [0, 2]
    assert all(positive(r["items_per_s"]) and r["timed_batches"] >= 2 for r in loader["runs"])


def test_smoke_run_of_the_synapse_shaped_sweeps(tmp_path):
    """The sweep part's code path (a sweep in a child process with its own Ray, its Parquet rows read back), alone
    and packed, in about a minute; sweep_default differs only in its config."""
    pytest.importorskip("ray")
    out = tmp_path / "gpu_sweep.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_sweep", "--smoke", "--parts", "sweep_synapse_shaped", "--out",
           str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    part = result["parts"]["sweep_synapse_shaped"]
    assert result["errors"] == {} and part["status"] == "ok" and part["skipped"] == []
    for label in ("gpus_0.25", "gpus_0.25_pack4"):
        run = part[label]
        assert run["finished"] and run["planned"] == {"tune": 2, "confirm": 2}
        assert run["rows"] == 4 and run["rows_by_stage"] == {"tune": 2, "confirm": 2}, run
        assert run["rows_by_status"] == {"completed": 4} and positive(run["trials_per_hour"])
        assert {t["loss"] for t in run["trials"]} == {"dice", "ce"} and run["gpu_timeline"] is None
    # packed: the two losses of a stage start together, as one Ray trial
    starts = {}
    for t in part["gpus_0.25_pack4"]["trials"]:
        starts.setdefault(t["stage"], set()).add(t["start_s"])
    assert all(len(s) == 1 for s in starts.values()), starts
