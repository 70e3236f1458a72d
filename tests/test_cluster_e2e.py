"""The documented cluster commands, end to end on this machine (issue 5, acceptance): `ray up` of a local-provider
config derived from cluster/local.yaml whose head is 127.0.0.1, `ray submit ... raysweep/run.py -- --config <tiny>
--out <dir>`, the Parquet results checked, `ray down`.

How: a private sshd on 127.0.0.1:22 (Ray's launcher has no SSH port
setting) with a throwaway host key and client key; the client key's public half appended to ~/.ssh/authorized_keys
and a marked block appended to ~/.bashrc (the venv first on PATH, RAY_AUTH_MODE=disabled, RAY_ADDRESS of the test
head), both restored byte for byte afterwards, sshd stopped by its pid file.

Two deliberate differences from a real cluster, so that the test never touches another Ray instance on the machine
(a benchmark, another test's `ray.init`):
- `ray stop` (the first head start command, and what `ray down` runs) kills every Ray process of the machine. In the
  test's remote shell `ray` is a shell function that turns `ray stop` into stopping only the test head's processes
  (those whose command line holds its temporary folder); every other `ray` command goes to the venv's `ray`.
- The head runs with its own `--temp-dir`, so it does not record itself in /tmp/ray/ray_current_cluster (where any
  `ray.init()` on the machine would find and join it). The submitted run.py finds it through RAY_ADDRESS instead.

Needs the Debian packages openssh-server and rsync; installs them when missing and possible (root with apt-get),
otherwise skips. Deselect with `-m "not cluster"`.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from sweep_helpers import descendants, kill_pids, pids_matching, sweep_env, tiny_sweep

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TINY = tiny_sweep(name="cluster", tuning={"trials_per_group": 1, "seed": 0, "grace_period": 1, "reduction_factor": 2})


pytestmark = pytest.mark.cluster


def _have_tools() -> bool:
    return all(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in ("sshd", "ssh", "ssh-keygen", "rsync"))


def _ensure_tools() -> str | None:
    """None when sshd, ssh and rsync are there (installing openssh-server and rsync if possible), else why not."""
    if _have_tools():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "needs openssh-server and rsync (apt-get install openssh-server rsync); not root or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssh-server", "rsync"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"could not install openssh-server and rsync: {exc}"
        if r.returncode != 0:
            return f"could not install openssh-server and rsync: {' '.join(cmd)}: {r.stderr.strip()[-300:]}"
    return None if _have_tools() else "openssh-server and rsync installed but sshd/rsync not found"


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Restore:
    """Remembers files (content or absence) and puts them back."""

    def __init__(self):
        self.saved: dict[Path, bytes | None] = {}

    def keep(self, path: Path) -> None:
        if path not in self.saved:
            self.saved[path] = path.read_bytes() if path.exists() else None

    def restore(self) -> None:
        for path, data in self.saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)


def _ray_cli(args: list[str], env: dict, log: Path, timeout: float) -> subprocess.CompletedProcess:
    r = subprocess.run([str(VENV_BIN / "ray"), *args], capture_output=True, text=True, env=env, timeout=timeout,
                       cwd=REPO)
    with log.open("a") as f:
        f.write(f"\n$ ray {' '.join(args)}  (rc {r.returncode})\n{r.stdout}\n{r.stderr}\n")
    return r


def test_ray_up_submit_down_on_loopback(tmp_path):
    import yaml

    from raysweep.results import read_results, read_sweep_meta

    why = _ensure_tools()
    if why:
        pytest.skip(why)
    if not _port_free(22):
        pytest.skip("127.0.0.1:22 is taken: Ray's launcher only speaks SSH on port 22")
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"

    home = Path.home()
    tag = uuid.uuid4().hex[:8]
    user = getpass.getuser()
    # Short: the head's Unix sockets live under it (108-byte limit).
    work = Path(tempfile.mkdtemp(prefix=f"rsc-{tag}-", dir="/tmp"))
    ray_tmp = work / "r"
    cluster_name = f"raysweep-test-{tag}"
    head_port = _free_port()
    log = tmp_path / "cluster.log"
    env = sweep_env()
    restore = _Restore()
    for name in (".bashrc", ".ssh/authorized_keys", "run.py", "ray_bootstrap_config.yaml", "ray_bootstrap_key.pem"):
        restore.keep(home / name)
    state_file = Path(tempfile.gettempdir()) / "ray" / f"cluster-{cluster_name}.state"  # the local provider's
    control_dir = Path("/tmp") / (f"ray_ssh_{hashlib.sha1(user.encode()).hexdigest()[:10]}/"
                                  f"{hashlib.sha1(cluster_name.encode()).hexdigest()[:10]}")
    ssh_dir_existed = (home / ".ssh").exists()
    sshd_started = False
    t0 = time.time()
    try:
        # 1. Keys and a private sshd on 127.0.0.1:22.
        for key in ("host_key", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"raysweep-test-{tag}",
                            "-f", str(work / key)], check=True, capture_output=True)
        (work / "sshd_config").write_text(textwrap.dedent(f"""\
            Port 22
            ListenAddress 127.0.0.1
            HostKey {work}/host_key
            PidFile {work}/sshd.pid
            PubkeyAuthentication yes
            AuthorizedKeysFile .ssh/authorized_keys
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            PermitRootLogin prohibit-password
            """))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sshd, "-f", str(work / "sshd_config"), "-E", str(work / "sshd.log")],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"sshd did not start: {r.stderr}"
        sshd_started = True
        (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
        with (home / ".ssh" / "authorized_keys").open("a") as f:
            f.write("\n" + (work / "id_ed25519.pub").read_text())
        stop_script = work / "stop_head.py"
        stop_script.write_text(textwrap.dedent(f"""\
            import sys
            sys.path.insert(0, {str(REPO / "tests")!r})
            from sweep_helpers import descendants, kill_pids, pids_matching
            import os, signal
            pids = pids_matching({str(ray_tmp)!r})
            tree = pids + [c for p in pids for c in descendants(p)]
            for p in pids:
                try:
                    os.kill(p, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            kill_pids(tree, grace=10)
            print(f"stopped {{len(tree)}} processes of the test head")
            """))
        with (home / ".bashrc").open("a") as f:
            f.write(textwrap.dedent(f"""
                # >>> raysweep cluster test {tag} (removed by tests/test_cluster_e2e.py)
                export PATH={VENV_BIN}:$PATH
                export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 OMP_WAIT_POLICY=PASSIVE
                export RAY_ADDRESS=127.0.0.1:{head_port}
                ray() {{
                    if [ "$1" = stop ]; then {VENV_BIN}/python {stop_script}; else command {VENV_BIN}/ray "$@"; fi
                }}
                # <<< raysweep cluster test {tag}
                """))

        # 2. The cluster config: cluster/local.yaml with this machine as the head and no workers.
        cfg = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
        cfg.update(
            cluster_name=cluster_name,
            min_workers=0, max_workers=0,
            provider={"type": "local", "head_ip": "127.0.0.1", "worker_ips": []},
            auth={"ssh_user": user, "ssh_private_key": str(work / "id_ed25519")},
            file_mounts={},  # the head is this checkout: raysweep is installed in the venv (editable)
            setup_commands=[],
            head_start_ray_commands=[
                "ray stop",
                f"RAY_AUTH_MODE=disabled {VENV_BIN}/ray start --head --port={head_port} --num-cpus=2 "
                f"--include-dashboard=false --node-ip-address=127.0.0.1 --temp-dir={ray_tmp} "
                "--autoscaling-config=~/ray_bootstrap_config.yaml",
            ],
            worker_start_ray_commands=[],
        )
        cluster_yaml = work / "cluster.yaml"
        cluster_yaml.write_text(yaml.safe_dump(cfg))
        sweep_yaml = work / "tiny.yaml"
        sweep_yaml.write_text(yaml.safe_dump(TINY))
        out = work / "out"

        # 3. The documented commands.
        r = _ray_cli(["up", str(cluster_yaml), "-y", "--no-config-cache"], env, log, timeout=300)
        assert r.returncode == 0, log.read_text()[-5000:]
        assert pids_matching(str(ray_tmp)), "ray up returned but no head process runs"
        t_up = time.time() - t0
        r = _ray_cli(["submit", str(cluster_yaml), str(REPO / "raysweep" / "run.py"), "--",
                      "--config", str(sweep_yaml), "--out", str(out), "-o", str(out / "report.html")], env, log,
                     timeout=480)
        assert r.returncode == 0, log.read_text()[-5000:]
        assert "sweep finished" in r.stdout, log.read_text()[-5000:]
        t_submit = time.time() - t0

        # 4. The results: every planned trial once, in the documented tables, run on the test head.
        meta = read_sweep_meta(out / "results")
        tables = read_results(out / "results")
        trials = tables["trials"]
        planned = meta["planned"]
        assert planned == {"tune": 2, "confirm": 2}
        assert len(trials) == planned["tune"] + planned["confirm"] and trials.trial_id.is_unique
        assert set(trials.status) <= {"completed", "stopped"}
        assert (trials[trials.stage == "confirm"].steps_done == 4).all()
        assert set(tables["cases"].trial_id) == set(trials.trial_id)  # tune: selection cases; confirm: ranking
        assert meta["ended_at"] and meta["hardware"]["cpus"] == 2
        # The driver joined the test head (not a private instance): its log is in the head's session folder.
        assert list(ray_tmp.glob("session_*/logs/python-core-driver-*")), sorted(ray_tmp.rglob("*.log"))[:20]
        assert (out / "report.html").exists()

        r = _ray_cli(["down", str(cluster_yaml), "-y"], env, log, timeout=120)
        assert r.returncode == 0, log.read_text()[-5000:]
        deadline = time.time() + 20
        while time.time() < deadline and pids_matching(str(ray_tmp)):
            time.sleep(0.5)
        assert not pids_matching(str(ray_tmp)), "ray down left head processes running"
        print(f"\nray up {t_up:.0f} s, submit done at {t_submit:.0f} s, down at {time.time() - t0:.0f} s")
    finally:
        # Leave nothing behind: head processes, the ssh master connection, sshd, files in $HOME, temp files.
        left = pids_matching(str(ray_tmp))
        kill_pids(left + [c for p in left for c in descendants(p)], grace=0)
        for sock in control_dir.glob("*") if control_dir.is_dir() else []:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", f"{user}@127.0.0.1"],
                           capture_output=True, timeout=10)
        kill_pids(pids_matching(str(control_dir)), grace=2)
        shutil.rmtree(control_dir, ignore_errors=True)
        try:
            control_dir.parent.rmdir()  # only if empty: other clusters' connections live there too
        except OSError:
            pass
        if sshd_started and (work / "sshd.pid").exists():
            pid = int((work / "sshd.pid").read_text().split()[0])
            kill_pids([pid] + descendants(pid), grace=0)
        restore.restore()
        if not ssh_dir_existed:
            shutil.rmtree(home / ".ssh", ignore_errors=True)
        state_file.unlink(missing_ok=True)
        state_file.with_suffix(".lock").unlink(missing_ok=True)
        for cached in Path(tempfile.gettempdir()).glob("ray-config-*"):  # the launcher's config cache
            try:
                if cluster_name in cached.read_text(errors="replace"):
                    cached.unlink()
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
