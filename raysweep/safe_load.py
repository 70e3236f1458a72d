"""Loading tensors from files that may come from anyone: checkpoints, encoder weights, InverseNets.

One leaf module (it imports torch only), so that every layer, the losses included, loads files the same safe way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_tensors(path: str | Path, what: str = "weights file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, numbers, strings and plain containers only.

    A file that holds any other pickled object (a class, a function: what a malicious pickle uses to run code) is
    refused before anything in it runs: ValueError naming the file (``what`` says which kind, e.g. "checkpoint"),
    instead of torch's message, which does not name it and suggests ``weights_only=False``. A file that is not a
    torch file at all (truncated, another format) is a ValueError naming it too. Missing files raise
    FileNotFoundError.
    """
    import pickle
    import zipfile

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if lines and lines[0].startswith("Weights only load failed"):
            detail = next((x for x in lines if "GLOBAL" in x or "Unsupported" in x), lines[-1])
            raise ValueError(
                f"{path}: refused to load this {what}: it holds pickled Python objects other than tensors and plain "
                f"containers ({detail}). raysweep loads weights with torch.load(weights_only=True) and never runs "
                "code from a file; if you trust where it came from, re-save it as a plain state dict "
                "(torch.save(model.state_dict(), path)) or as .safetensors") from None
        raise ValueError(f"{path}: not a torch {what} ({lines[0] if lines else type(exc).__name__}); it is corrupt, "
                         "truncated or another format") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: cannot read this {what} ({type(exc).__name__}: {str(exc)[:300]}); it is corrupt, "
                         "truncated or another format") from None
