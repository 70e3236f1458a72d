"""Every loss on a device against the CPU: value and gradient in fp32, and finiteness under bf16 / fp16 autocast.

    python -m benchmarks.precision [--loss NAME ...] [--device cuda|cpu] [--out FILE.json]

Input: (B=2, C=4, 64x64) logits and a target of a few discs per image (:func:`benchmarks._common.blob_batch`); the per-class signed distance maps precomputed; ``aux_logits`` and
``features`` random (:func:`benchmarks._common.fake_extras`, the tests' small features). Per loss: the CPU fp32
value, then on ``--device`` the value and gradient in fp32 and under ``torch.autocast`` with bf16 and fp16 logits
(maps stay float32), each compared with the CPU's (absolute and relative value difference, largest gradient
difference absolute and relative to the largest CPU gradient, finiteness). :func:`agreement` is the measurement (also
:mod:`benchmarks.gpu_session`'s).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from raysweep.losses import LOSSES, build_loss
from raysweep.losses.maps import batch_signed_distance

from ._common import blob_batch, ensure_inversenet, fake_extras, jsonable

SIZE = (2, 4, 64, 64)


def value_and_grad(name, logits, target, extras, device, amp_dtype=None):
    """``(value, grad of the logits, value dtype)`` of loss ``name`` on ``device`` (CPU float32 tensors back)."""
    torch.manual_seed(0)
    loss = build_loss(name).to(device)
    x = logits.detach().to(device)
    ex = {}
    for k, v in extras.items():
        v = v.to(device)
        if amp_dtype is not None and k != "dist_map":
            v = v.to(amp_dtype)  # model outputs are half precision under autocast; maps stay float32
        ex[k] = v
    if amp_dtype is not None:
        x = x.to(amp_dtype)
    x.requires_grad_(True)
    ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with ctx:
        v = loss(x, target.to(device), **ex)
    v.backward()
    grad = x.grad.detach().float().cpu() if x.grad is not None else torch.zeros(logits.shape)
    return v.detach().float().cpu(), grad, str(v.dtype)


def compare(ref_v, ref_g, v, g) -> dict:
    scale = float(ref_g.abs().max())
    return {"value": float(v), "value_abs_diff": abs(float(v) - float(ref_v)),
            "value_rel_diff": abs(float(v) - float(ref_v)) / max(abs(float(ref_v)), 1e-12),
            "grad_max_abs_diff": float((g - ref_g).abs().max()),
            "grad_rel_diff": float((g - ref_g).abs().max()) / max(scale, 1e-30),
            "value_finite": bool(torch.isfinite(v)), "grad_finite": bool(torch.isfinite(g).all())}


def agreement(names, device, stop=lambda: False, log=print) -> dict:
    """``{loss: {cpu_value, cpu_grad_finite, fp32, bf16, fp16}}`` (each a :func:`compare` dict, or ``error``) for
    each loss of ``names`` on ``device``; ``{"skipped": "time budget"}`` once ``stop()`` is true."""
    logits, target = blob_batch(*SIZE, seed=0)
    dmap = batch_signed_distance(target, SIZE[1])
    out = {}
    for name in names:
        if stop():
            out[name] = {"skipped": "time budget"}
            continue
        row = out.setdefault(name, {})
        try:
            ex = fake_extras(name, logits, dmap, features="small")
            ref_v, ref_g, _ = value_and_grad(name, logits, target, ex, torch.device("cpu"))
            row["cpu_value"] = float(ref_v)
            row["cpu_grad_finite"] = bool(torch.isfinite(ref_g).all())
            v, g, _ = value_and_grad(name, logits, target, ex, device)
            row["fp32"] = compare(ref_v, ref_g, v, g)
            for label, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
                try:
                    v, g, vdt = value_and_grad(name, logits, target, ex, device, amp_dtype=dt)
                    row[label] = compare(ref_v, ref_g, v, g)
                    row[label]["out_dtype"] = vdt
                except Exception as exc:  # noqa: BLE001
                    row[label] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:400]
        f = row.get("fp32", {})
        log(f"agree {name:<22} cpu={row.get('cpu_value', float('nan')):.6g} dv={f.get('value_abs_diff', float('nan')):.2e}"
            f" dg_rel={f.get('grad_rel_diff', float('nan')):.2e} bf16_finite={row.get('bf16', {}).get('grad_finite')}"
            f" fp16_finite={row.get('fp16', {}).get('grad_finite')} {row.get('error', '')}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", action="append", help="only these losses (repeatable)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    names = args.loss or sorted(LOSSES, key=lambda n: (LOSSES[n].family, n))
    unknown = [n for n in names if n not in LOSSES]
    if unknown:
        parser.error(f"unknown loss(es) {unknown}; known: {sorted(LOSSES)}")
    if "inverseform" in names:
        ensure_inversenet()
    rows = agreement(names, torch.device(args.device))
    if args.out:
        Path(args.out).write_text(json.dumps(jsonable({"size": list(SIZE), "device": args.device, "losses": rows}),
                                             indent=1))
    bad = [n for n, r in rows.items() if "error" in r or not all(r.get(k, {}).get("grad_finite") for k in
                                                                  ("fp32", "bf16", "fp16"))]
    print(f"{len(rows) - len(bad)}/{len(rows)} losses finite in fp32, bf16 and fp16" +
          (f"; not: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
