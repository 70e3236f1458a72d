"""Data-loading and evaluation throughput against the training step of the default model.

For each dataset (synthetic; Synapse and Cityscapes on generated fixtures of the real sizes: 512 x 512 float32
npz slices, 2048 x 1024 PNG pairs; nnunet on a generated nnU-Net raw dataset of 224 x 224 x 16 CT NIfTI volumes,
trained as 224 x 224 slices) this measures, in one process (= one DataLoader worker):

* samples/s with the default training augmentation, without and with the boundary losses' per-class signed
  distance maps (the most expensive per-sample maps a loss asks for; computed from the augmented mask, as in a
  DataLoader worker);
* the training step (forward + backward + AdamW step) of smp ``Unet("resnet18")`` at the same input size, as
  samples/s on this machine, and the number of loader workers that would keep up with it;
* evaluation: the metric time per evaluated case (per-volume Dice + HD95 for the 3-D datasets, confusion matrix for
  Cityscapes), in training steps;
* the data check ``raysweep run`` does before Ray starts (:mod:`raysweep.data.check`: every case decoded and
  checked) on a generated nnU-Net dataset of 224 x 224 x 16 CT NIfTI volumes: cases/s on a first run with one
  reading thread and with the default pool, and on a second run over unchanged files (cached by fingerprint).

Run ``python -m benchmarks.data`` (about 1.5 minutes on 2 CPU cores; ``--medpy`` adds medpy's time for the same
Synapse volume, ~1.5 minutes more) or ``python -m benchmarks.data --quick`` (under a minute);
``python -m benchmarks.data --check-only`` measures the data check alone (``--check-cases N``, default 48). The step
time here is the CPU's; on a GPU the step is 20-100x faster, so read the "workers to keep up" column with the
device's step rate in mind (``--step-rate synapse=800`` replaces a measured rate, in samples/s). :func:`measure`
returns the figures that ``main`` prints.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from raysweep.data import DATASETS, build_dataset
from raysweep.data.examples import write_nnunet_example
from raysweep.losses.maps import DistanceMaps
from raysweep.metrics import Evaluator, case_scores, confusion_matrix


# -- fixtures of realistic size -----------------------------------------------------------------------------------


def organ_labels(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Eight ellipsoid 'organs' of Synapse-like sizes in an array of ``shape`` (2-D or 3-D), uint8 labels."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij", sparse=True)
    label = np.zeros(shape, np.uint8)
    # (centre y, centre x, radius y, radius x) per organ; aorta and gallbladder small, liver large
    organs = [(0.05, 0.0, 0.05, 0.05), (-0.05, -0.35, 0.07, 0.06), (0.25, 0.35, 0.12, 0.08), (0.25, -0.35, 0.12, 0.08),
              (-0.15, -0.40, 0.35, 0.30), (0.05, 0.15, 0.05, 0.20), (-0.1, 0.5, 0.15, 0.12), (-0.35, 0.25, 0.18, 0.2)]
    for k, (cy, cx, ry, rx) in enumerate(organs, start=1):
        cy, cx = cy + rng.uniform(-0.03, 0.03), cx + rng.uniform(-0.03, 0.03)
        r = ((grids[-2] - cy) / ry) ** 2 + ((grids[-1] - cx) / rx) ** 2
        if len(shape) == 3:
            r = r + (grids[0] / rng.uniform(0.6, 1.0)) ** 2
        label[r < 1] = k
    return label


def make_synapse(root: Path, n_slices: int, rng: np.random.Generator) -> None:
    (root / "train_npz").mkdir(parents=True)
    for z in range(n_slices):
        label = organ_labels(rng, (512, 512)).astype(np.float32)
        image = np.clip(0.3 + 0.05 * label + rng.normal(0, 0.05, label.shape), 0, 1).astype(np.float32)
        np.savez(root / "train_npz" / f"case0005_slice{z:03d}.npz", image=image, label=label)  # uncompressed


def make_cityscapes(root: Path, n_images: int, rng: np.random.Generator) -> None:
    from PIL import Image

    image_dir, label_dir = root / "leftImg8bit" / "train" / "aachen", root / "gtFine" / "train" / "aachen"
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    yy, xx = np.mgrid[0:1024, 0:2048]
    for i in range(n_images):
        # Smooth gradients + texture + noise: compresses to ~3-4 MB, close to real leftImg8bit PNGs (~2-3 MB).
        base = np.stack([(xx / 8 + i * 10) % 256, (yy / 4) % 256, (xx + yy) / 12 % 256], -1)
        image = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        label = ((yy // 64 + xx // 128 + i) % 34).astype(np.uint8)
        stem = f"aachen_{i:06d}_000019"
        Image.fromarray(image).save(image_dir / f"{stem}_leftImg8bit.png")
        Image.fromarray(label).save(label_dir / f"{stem}_gtFine_labelIds.png")


# -- measurements -------------------------------------------------------------------------------------------------


def loader_rate(ds, n: int) -> float:
    """Samples/s of ``ds[i]`` in this process (one worker's throughput), after one warm-up item."""
    ds[0]
    start = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - start)


def step_rate(in_channels: int, num_classes: int, size: tuple[int, int], batch: int, steps: int) -> float:
    """Training samples/s of smp Unet(resnet18) (fwd + bwd + AdamW step) on CPU at ``size``."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=in_channels, classes=num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, in_channels, *size)
    y = torch.randint(0, num_classes, (batch, *size))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def eval_time_volume(shape: tuple[int, int, int], rng: np.random.Generator, medpy: bool) -> tuple[float, float | None]:
    """Seconds for Dice + HD95 of the 8 organs on one (D, H, W) volume (ours, and medpy's hd95 loop if asked)."""
    label = organ_labels(rng, shape)
    pred = np.roll(label, 2, axis=-1)
    pred[ndimage.binary_dilation(rng.uniform(size=shape) < 1e-4, iterations=2)] = 3  # scattered false positives
    start = time.perf_counter()
    case_scores(pred, label, 9, spacing=(3.0, 0.75, 0.75), classes=range(1, 9))
    ours = time.perf_counter() - start
    ref = None
    if medpy:
        from medpy.metric import binary

        start = time.perf_counter()
        for c in range(1, 9):
            binary.dc(pred == c, label == c)
            binary.hd95(pred == c, label == c, voxelspacing=(3.0, 0.75, 0.75))
        ref = time.perf_counter() - start
    return ours, ref


def check_rates(n_cases: int, workers: int | None = None) -> dict[str, float]:
    """The data check's cost on ``n_cases`` generated 224 x 224 x 16 CT NIfTI volumes (nnU-Net v2 raw layout, every
    case in a split): ``{"cases", "mb", "serial", "first", "cached", "workers"}``, the rates in cases/s (``serial``:
    a first run with one reading thread; ``first``: with ``workers`` threads, default the check's own; ``cached``:
    the run after ``first``, files unchanged). Each first run starts from an empty cache folder."""
    from raysweep.data.check import check_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = write_nnunet_example(tmp / "nnunet", num_training=n_cases, num_test=0, size=224, depth=16,
                                    channels=("CT",))
        mb = sum(p.stat().st_size for p in root.rglob("*.nii.gz")) / 1e6
        out = {"cases": n_cases, "mb": mb, "workers": workers or min(8, os.cpu_count() or 1)}
        for key, threads, cache in (("serial", 1, "a"), ("first", workers, "b"), ("cached", workers, "b")):
            start = time.perf_counter()
            report = check_dataset("nnunet", root, {"val_cases": 1, "test_cases": 1}, workers=threads,
                                   cache=tmp / cache)
            seconds = time.perf_counter() - start
            assert not report["errors"] and report["cases"] == n_cases, report["errors"][:3]
            assert report["cached"] == (n_cases if key == "cached" else 0)
            out[key] = n_cases / seconds
    return out


def measure(q: bool, given: dict[str, float], medpy: bool) -> tuple[list[tuple], list[tuple]]:
    """Loader, step and evaluation figures (``q``: quick sizes; ``given``: step rates per dataset instead of measured
    ones; ``medpy``: also medpy's HD95 loop). Returns ``rows`` ``(dataset, input, loader/s, +maps/s, batch,
    step samples/s, workers plain, workers +maps)`` and ``evals`` ``(dataset, what, seconds)``."""
    rng = np.random.default_rng(0)
    rows = []
    evals = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_synapse(tmp / "synapse", 8 if q else 24, rng)
        make_cityscapes(tmp / "cityscapes", 3 if q else 8, rng)
        os.environ["RAYSWEEP_CACHE"] = str(tmp / "cache")  # the nnunet CT statistics: not in the user's cache
        write_nnunet_example(tmp / "nnunet", num_training=4 if q else 8, num_test=0, size=224, depth=16,
                             channels=("CT",))
        configs = [
            # name, dataset kwargs, network input size, batch for the step
            ("synthetic", dict(name="synthetic", split="train", seed=0), (64, 64), 16),
            # one case / a few images only: nothing held out for selection
            ("synapse", dict(name="synapse", split="train", root=tmp / "synapse", seed=0, val_cases=0), (224, 224),
             8),
            ("cityscapes", dict(name="cityscapes", split="train", root=tmp / "cityscapes", seed=0, holdout_cities=0),
             (512, 512), 2),
            # NIfTI volumes held in memory after the build (read, checked and normalised once): slices cost a copy
            ("nnunet", dict(name="nnunet", split="train", root=tmp / "nnunet", seed=0, val_cases=1, test_cases=1,
                            image_size=224), (224, 224), 8),
        ]
        for name, kwargs, size, batch in configs:
            ds = build_dataset(**kwargs)
            info = ds.info  # nnunet: the classes of the files (DATASETS["nnunet"] has none)
            n = {"synthetic": 400, "synapse": 60, "cityscapes": 12, "nnunet": 60}[name] // (4 if q else 1)
            plain = loader_rate(ds, n)
            ds.target_maps = DistanceMaps(info.num_classes)  # the most expensive per-sample maps
            maps = loader_rate(ds, n)
            steps = {"synthetic": 10, "synapse": 4, "cityscapes": 2, "nnunet": 4}[name] // (2 if q else 1)
            train_rate = given.get(name) or step_rate(info.in_channels, info.num_classes, size, batch, max(steps, 1))
            rows.append((name, f"{size[0]}x{size[1]}", plain, maps, batch, train_rate, train_rate / plain,
                         train_rate / maps))

        # evaluation cost per case, in training steps of the same dataset
        synth = build_dataset("synthetic", split="test", seed=0, num_volumes=2)
        vol = next(synth.volumes())
        ev = Evaluator.for_dataset(DATASETS["synthetic"])
        start = time.perf_counter()
        ev.add(vol.case, np.roll(vol.label, 1, axis=-1), vol.label, spacing=vol.spacing)
        evals.append(("synthetic", "volume 16x64x64, 8 classes, Dice+HD95", time.perf_counter() - start))
        shape = (40, 512, 512) if q else (148, 512, 512)
        ours, ref = eval_time_volume(shape, rng, medpy)
        evals.append(("synapse", f"volume {shape[0]}x512x512, 8 organs, Dice+HD95", ours))
        if ref is not None:
            evals.append(("synapse", "  same with medpy dc + hd95 (TransUNet's code)", ref))
        label = rng.integers(0, 19, (512, 1024))
        pred = np.where(rng.uniform(size=label.shape) < 0.8, label, rng.integers(0, 19, label.shape))
        start = time.perf_counter()
        for _ in range(10):
            confusion_matrix(pred, label, 19)
        evals.append(("cityscapes", "image 512x1024, confusion matrix", (time.perf_counter() - start) / 10))
    return rows, evals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps (about 1 minute)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the step (default: all)")
    parser.add_argument("--step-rate", nargs="*", default=[], metavar="DATASET=RATE",
                        help="training samples/s to compare against instead of the measured CPU step, per dataset "
                             "(e.g. a GPU's: synapse=800 cityscapes=120)")
    parser.add_argument("--medpy", action="store_true", help="also time medpy's hd95 loop on the Synapse volume")
    parser.add_argument("--check-only", action="store_true", help="measure only the data check")
    parser.add_argument("--check-cases", type=int, default=None, metavar="N",
                        help="cases of the data check's dataset (default 48; 12 with --quick)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_check = args.check_cases or (12 if args.quick else 48)
    if args.check_only:
        print_check(check_rates(n_check))
        return
    try:
        given = {k: float(v) for k, v in (pair.split("=", 1) for pair in args.step_rate)}
    except ValueError:
        parser.error(f"--step-rate takes DATASET=RATE pairs, e.g. synapse=800; got {args.step_rate}")
    rows, evals = measure(args.quick, given, args.medpy)
    step_s = {r[0]: r[4] / r[5] for r in rows}  # seconds per training step
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; loader = one process (one worker); "
          f"step = smp Unet(resnet18) fwd+bwd+AdamW, measured on CPU{' unless given' if given else ''}\n")
    print(f"{'dataset':<11} {'input':>8} {'loader/s':>9} {'+maps/s':>8} {'batch':>5} {'step/s (samples)':>17} "
          f"{'workers to keep up (plain / +maps)':>35}")
    for name, size, plain, maps, batch, rate, workers, workers_maps in rows:
        print(f"{name:<11} {size:>8} {plain:>9.1f} {maps:>8.1f} {batch:>5d} {rate:>17.1f} "
              f"{workers:>26.2f} / {workers_maps:>6.2f}")
    print(f"\n{'dataset':<11} {'evaluation':<48} {'seconds':>8} {'= steps':>8}")
    for name, what, seconds in evals:
        print(f"{name:<11} {what:<48} {seconds:>8.3f} {seconds / step_s[name]:>8.2f}")
    print()
    print_check(check_rates(n_check))


def print_check(r: dict[str, float]) -> None:
    """The table of :func:`check_rates`."""
    print(f"data check (raysweep run, before Ray): nnunet, {r['cases']} cases of 224x224x16 CT NIfTI "
          f"({r['mb']:.0f} MB .nii.gz), {os.cpu_count()} CPUs")
    print(f"{'run':<40} {'cases/s':>8} {'s per 1000 cases':>17}")
    for key, what in (("serial", "first run, 1 thread"), ("first", f"first run, {r['workers']} threads (default)"),
                      ("cached", "second run, files unchanged (cached)")):
        print(f"{what:<40} {r[key]:>8.1f} {1000 / r[key]:>17.2f}")


if __name__ == "__main__":
    main()
