"""The offline install bundle: the wheels a target image lacks, for its Python and platform (``make bundle``).

GPU nodes are often air-gapped. On a machine with the package index:

    make bundle PY=3.11 PLATFORM=manylinux_2_28_x86_64 [TARGET_PACKAGES=target.txt] [SLIM_RAY=1]

resolves raysweep's dependencies (``pyproject.toml``'s ``[project] dependencies``) for that interpreter and platform
(``pip install --dry-run --report`` with ``--python-version``/``--platform``, wheels only), downloads the wheels the
target lacks into ``bundle/`` and builds raysweep's own wheel there. ``TARGET_PACKAGES`` is the target's
``pip freeze`` (``name==version`` lines; bare names also count as installed): those pins constrain the resolution, so
the bundle fits what the image already has, and their wheels are left out (torch, on a CUDA image, is the gigabytes
saved). ``PLATFORM`` may list several tags, comma-separated; torch's and Ray's Linux wheels are
``manylinux_2_28_x86_64``, so ``manylinux2014_x86_64`` alone finds no torch.

``SLIM_RAY=1`` repacks Ray's wheel without ``ray/jars/`` (Java workers only), ``ray/rllib/`` and the dashboard's
``*.js.map`` source maps (RECORD rewritten: a valid wheel, same name and version), stored uncompressed, and packs the
bundle as ``bundle.tar.xz`` (xz then compresses Ray's tree as a whole). ``bundle/MANIFEST.txt`` lists every wheel,
what was left out because the target has it, and what was slimmed. On the target:

    make install-offline BUNDLE=bundle          # or BUNDLE=bundle.tar.xz; pip install --no-index --find-links
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What SLIM_RAY leaves out of Ray's wheel (paths inside the wheel, fnmatch patterns).
RAY_SLIM = ("ray/jars/*", "ray/rllib/*", "ray/dashboard/*.js.map")


def canonical(name: str) -> str:
    """PEP 503 normalised project name (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dependencies(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The ``[project] dependencies`` requirement strings of ``pyproject``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    return list(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"])


def read_target(path: Path | None) -> dict[str, str | None]:
    """A target's installed packages (``pip freeze`` or bare names; comments, ``-e`` and URL lines skipped):
    ``{canonical name: version or None}``."""
    out: dict[str, str | None] = {}
    if path is None:
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-") or " @ " in line:
            continue
        name, _, version = line.partition("==")
        name = re.split(r"[\s\[<>=!~;]", name.strip(), maxsplit=1)[0]
        out[canonical(name)] = version.strip() or None
    return out


def missing(resolved: list[tuple[str, str]], target: dict[str, str | None]) -> list[tuple[str, str]]:
    """The resolved ``(name, version)`` pairs the target lacks: absent there, or there at another version."""
    return [(n, v) for n, v in resolved
            if canonical(n) not in target or target[canonical(n)] not in (None, v)]


_LEGACY = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}


def expand_platforms(platforms: list[str]) -> list[str]:
    """A target's platform tags with every older manylinux tag it also runs (pip takes ``--platform`` tags
    literally): ``manylinux_2_28_x86_64`` -> ``manylinux_2_28_x86_64, manylinux_2_27_x86_64, ...,
    manylinux2014_x86_64, ..., manylinux1_x86_64``. Other tags are kept as given."""
    out: list[str] = []
    for tag in platforms:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag)
        legacy = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)", tag)
        if m or legacy:
            glibc, arch = (int(m[1]), m[2]) if m else (_LEGACY[legacy[1]], legacy[2])
            tags = [f"manylinux_2_{v}_{arch}" for v in range(glibc, 4, -1)]
            tags += [f"{name}_{arch}" for name, v in _LEGACY.items() if v <= glibc]
        else:
            tags = [tag]
        out += [t for t in tags if t not in out]
    return out


def _pip_target_args(python: str, platforms: list[str]) -> list[str]:
    args = ["--python-version", python, "--only-binary=:all:"]
    for p in expand_platforms(platforms):
        args += ["--platform", p]
    return args


def resolve(requirements: list[str], python: str, platforms: list[str], constraints: Path | None
            ) -> list[tuple[str, str]]:
    """Resolve ``requirements`` for the target interpreter and platform without installing: ``(name, version)``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), "--target", str(Path(tmp) / "t"), *_pip_target_args(python, platforms), *requirements]
        if constraints is not None:
            cmd += ["--constraint", str(constraints)]
        subprocess.run(cmd, check=True)
        data = json.loads(report.read_text())
    return [(i["metadata"]["name"], i["metadata"]["version"]) for i in data["install"]]


def download(pins: list[tuple[str, str]], out: Path, python: str, platforms: list[str]) -> None:
    if pins:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(out),
                        *_pip_target_args(python, platforms), *[f"{n}=={v}" for n, v in pins]], check=True)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def slim_wheel(src: Path, dst: Path, patterns: tuple[str, ...] = RAY_SLIM, stored: bool = False) -> dict:
    """Copy wheel ``src`` to ``dst`` without the members matching ``patterns``; the ``*.dist-info/RECORD`` is
    rewritten to list exactly the files kept (their hashes and sizes), so pip installs and verifies it.

    Args:
        stored: write members uncompressed (a later xz pass then compresses the whole tree far better).

    Returns:
        ``{"removed": n files, "removed_bytes": uncompressed bytes, "kept": n files, "size_before", "size_after"}``.
    """
    removed, removed_bytes, rows = 0, 0, []
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", method) as zout:
        record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        for info in zin.infolist():
            if info.filename == record:
                continue
            if any(fnmatch(info.filename, p) for p in patterns):
                removed += 1
                removed_bytes += info.file_size
                continue
            data = zin.read(info)
            info.compress_type = method
            zout.writestr(info, data)
            if not info.is_dir():
                rows.append((info.filename, _record_hash(data), str(len(data))))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerows(rows)
        writer.writerow((record, "", ""))
        zout.writestr(zin.getinfo(record), text.getvalue().encode(), compress_type=method)
    return {"removed": removed, "removed_bytes": removed_bytes, "kept": len(rows),
            "size_before": src.stat().st_size, "size_after": dst.stat().st_size}


def build_own_wheel(out: Path) -> Path:
    before = set(out.glob("raysweep-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(out), str(ROOT)], check=True)
    return (set(out.glob("raysweep-*.whl")) - before or set(out.glob("raysweep-*.whl"))).pop()


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def make_bundle(out: Path, python: str, platforms: list[str], target_file: Path | None, slim_ray: bool,
                xz: bool) -> list[str]:
    """Build the bundle in ``out``; returns the MANIFEST lines (also written to ``out/MANIFEST.txt``)."""
    out.mkdir(parents=True, exist_ok=True)
    target = read_target(target_file)
    constraints = None
    if target:
        constraints = out / ".target-constraints.txt"
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in target.items() if v))
    resolved = resolve(dependencies(), python, platforms, constraints)
    wanted = missing(resolved, target)
    download(wanted, out, python, platforms)
    own = build_own_wheel(out)
    lines = [f"raysweep offline bundle for Python {python}, platform(s) {', '.join(platforms)}",
             f"install: make install-offline BUNDLE=<this folder>  (pip install --no-index --find-links)",
             f"resolved {len(resolved)} packages; {len(wanted)} downloaded, "
             f"{len(resolved) - len(wanted)} left out because the target has them"
             + (f" ({target_file})" if target_file else ""), ""]
    lines += [f"left out (installed on the target): {n}=={v}" for n, v in resolved if (n, v) not in wanted]
    if slim_ray:
        for whl in sorted(out.glob("ray-*.whl")):
            slim = whl.with_suffix(".slim")
            s = slim_wheel(whl, slim, stored=xz)
            slim.replace(whl)
            lines.append(f"SLIMMED {whl.name}: removed {s['removed']} files ({_mb(s['removed_bytes'])} unpacked) "
                         f"matching {', '.join(RAY_SLIM)}: Java workers, RLlib and the dashboard's source maps are "
                         f"not used by raysweep; RECORD rewritten; wheel {_mb(s['size_before'])} -> "
                         f"{_mb(s['size_after'])}{' (stored uncompressed for xz)' if xz else ''}")
    else:
        lines.append("nothing slimmed (SLIM_RAY=1 leaves Ray's jars, rllib and dashboard *.js.map out)")
    lines.append("")
    total = 0
    for whl in sorted(out.glob("*.whl")):
        total += whl.stat().st_size
        lines.append(f"{whl.name}  {_mb(whl.stat().st_size)}{'  (raysweep itself)' if whl == own else ''}")
    lines.append(f"total: {_mb(total)} in {len(list(out.glob('*.whl')))} wheels")
    (out / "MANIFEST.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if constraints is not None:
        constraints.unlink()
    if xz:
        packed = out.with_name(out.name + ".tar.xz")
        with tarfile.open(packed, "w:xz", preset=6) as tar:
            tar.add(out, arcname=out.name)
        print(f"{packed}: {_mb(packed.stat().st_size)}")
    return lines


def install(bundle: Path, python: str, extra: list[str]) -> None:
    """``pip install --no-index --find-links`` raysweep from a bundle folder or its ``.tar.xz``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = bundle
        if bundle.is_file():
            with tarfile.open(bundle) as tar:
                tar.extractall(tmp, filter="data")
            folder = next(p for p in Path(tmp).iterdir() if p.is_dir())
        if not folder.is_dir():
            raise SystemExit(f"bundle {bundle} not found (make bundle writes bundle/ and, with SLIM_RAY=1, "
                             "bundle.tar.xz)")
        subprocess.run([python, "-m", "pip", "install", "--no-index", "--find-links", str(folder), *extra,
                        "raysweep"], check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="collect the wheels a target lacks")
    b.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}", help="e.g. 3.11")
    b.add_argument("--platform", default="manylinux_2_28_x86_64", help="wheel platform tag(s), comma-separated")
    b.add_argument("--target-packages", type=Path, help="the target's `pip freeze` (what it already has)")
    b.add_argument("--out", type=Path, default=ROOT / "bundle")
    b.add_argument("--slim-ray", action="store_true", help="repack Ray without jars, rllib, dashboard *.js.map")
    b.add_argument("--xz", action="store_true", help="also write <out>.tar.xz")
    i = sub.add_parser("install", help="install raysweep from a bundle, offline")
    i.add_argument("bundle", type=Path)
    i.add_argument("--python", default=sys.executable, help="the interpreter to install into")
    i.add_argument("pip_args", nargs="*", help="extra pip install arguments (after --)")
    args = p.parse_args(argv)
    if args.cmd == "build":
        if args.target_packages is not None and not args.target_packages.is_file():
            raise SystemExit(f"TARGET_PACKAGES {args.target_packages} not found (the target's `pip freeze`)")
        lines = make_bundle(args.out, args.python, [s for s in args.platform.split(",") if s], args.target_packages,
                            args.slim_ray, args.xz)
        print("\n".join(lines))
    else:
        install(args.bundle, args.python, args.pip_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
