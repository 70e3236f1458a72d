"""Shared fixtures. Tests run on CPU with small tensors; torch uses two threads (the CI machine has two cores)."""

import pytest
import torch

torch.set_num_threads(2)


def make_batch(b=2, c=4, h=12, w=12, seed=0, ignore_frac=0.1, ignore_index=255, scale=2.0):
    """Random logits ``(B, C, H, W)`` and a target ``(B, H, W)`` with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * scale
    target = torch.randint(0, c, (b, h, w), generator=g)
    if ignore_frac:
        target[torch.rand(b, h, w, generator=g) < ignore_frac] = ignore_index
    return logits, target


@pytest.fixture
def batch():
    return make_batch()
