"""Helpers for the sweep tests that run Ray in subprocesses: a tiny sweep config, its environment, and finding and
killing exactly the processes a test started (by pid, via /proc; never by name, so other Ray instances on the
machine, such as a benchmark or another test's session, are left alone)."""

from __future__ import annotations

import copy
import os
import signal
import time
from pathlib import Path

TINY_SWEEP = {
    "name": "tiny",
    "datasets": {"synthetic": {"options": {"image_size": 32, "depth": 4, "num_volumes": 3},
                               # 6 ranking volumes: the fewest with which Wilcoxon can separate 2 losses
                               "select_options": {"num_volumes": 1}, "eval_options": {"num_volumes": 6}}},
    "architectures": {"cnn": {"arch": "Unet", "encoder": "resnet18",
                              "options": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}}},
    "losses": ["tversky", "focal"],
    "tuning": {"trials_per_group": 2, "seed": 0, "grace_period": 1, "reduction_factor": 2},
    "confirmation": {"seeds": 1},
    "resources": {"cpus_per_trial": 1},
    "trial": {"train": {"steps": 4, "batch_size": 2}, "eval": {"every": 2, "overlays": 0}},
}


def tiny_sweep(**changes) -> dict:
    """A copy of :data:`TINY_SWEEP` with top-level keys replaced."""
    cfg = copy.deepcopy(TINY_SWEEP)
    cfg.update(copy.deepcopy(changes))
    return cfg


def sweep_env(**extra: str) -> dict[str, str]:
    """The environment for a sweep subprocess: no token auth, no usage stats, no inherited RAY_ADDRESS."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", OMP_WAIT_POLICY="PASSIVE",
               PYTHONUNBUFFERED="1", **extra)
    return env


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we may see."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        table[int(entry.name)] = (ppid, cmd)
    return table


def descendants(pid: int) -> list[int]:
    """Pids of every living descendant of ``pid`` (children, grandchildren, ...)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def pids_matching(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (use a unique path, e.g. a test's temporary folder)."""
    return [p for p, (_, cmd) in _proc_table().items() if text in cmd and p != os.getpid()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def kill_pids(pids, grace: float = 5.0) -> list[int]:
    """Wait up to ``grace`` s for ``pids`` to exit, SIGKILL the rest; return the pids that had to be killed."""
    deadline = time.time() + grace
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    killed = []
    for p in pids:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
                killed.append(p)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in killed):
        time.sleep(0.2)
    return killed


def kill_tree(proc) -> list[int]:
    """SIGKILL a ``subprocess.Popen`` and then every process it had started that does not exit by itself (a Ray
    driver's gcs_server, raylet, workers and agents). Returns the pids killed after the driver."""
    tree = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return kill_pids(tree)
