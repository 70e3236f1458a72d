"""One tiny sweep with its studies in the journal file and its runs on a real MLflow server, shared by
test_optuna_storage.py and test_mlflow_tracking.py (one Ray sweep for both), and the servers they start: each on
127.0.0.1 at a free port, in a subprocess stopped by pid."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sweep_helpers import kill_tree, sweep_env, tiny_sweep

BIN = Path(sys.executable).parent
#: The shared sweep: tversky has a space (an Optuna sampler's study), ce has none (its one trial is recorded).
CONFIG = tiny_sweep(losses=["tversky", "ce"])
_CACHE: dict = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Server:
    """A server subprocess on 127.0.0.1:<free port>; :meth:`wait` polls ``path`` until it answers 200."""

    def __init__(self, args: list[str], log: Path, port: int):
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=sweep_env())

    def wait(self, path: str, timeout: float = 120) -> "Server":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"{self.url}{path} did not answer in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        kill_tree(self.proc)


def mlflow_server(folder: Path) -> Server:
    """``mlflow server`` with a SQLite backend store and a local artifact root under ``folder``."""
    port = free_port()
    return Server([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                   "--default-artifact-root", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1"], folder / "mlflow.log", port).wait("/health")


def dashboard(storage: Path, log: Path) -> Server:
    """``optuna-dashboard`` on ``storage`` (a journal file)."""
    port = free_port()
    return Server([str(BIN / "optuna-dashboard"), str(storage), "--host", "127.0.0.1", "--port", str(port)],
                  log, port).wait("/api/studies")


def tracked_sweep(tmp_path_factory, request) -> dict:
    """Run (once per test session) the tiny sweep through ``raysweep run``, tracked on a fresh MLflow server;
    returns ``{"out", "mlflow", "report", "config"}``. The server stops at the end of the session."""
    if "sweep" in _CACHE:
        return _CACHE["sweep"]
    import yaml

    from raysweep.cli import main

    root = tmp_path_factory.mktemp("tracked")
    server = mlflow_server(root)
    request.addfinalizer(server.stop)
    config = {**CONFIG, "tracking": {"mlflow": {"tracking_uri": server.url, "experiment": "tiny-tracked"}}}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    out, report = root / "out", root / "report.html"
    assert main(["run", "--config", str(path), "--out", str(out), "--report", str(report),
                 "--skip-data-check"]) == 0
    _CACHE["sweep"] = {"out": out, "mlflow": server, "report": report, "config": path}
    return _CACHE["sweep"]
