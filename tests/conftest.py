"""Shared fixtures. Tests run on CPU with small tensors; torch uses two threads (the CI machine has two cores)."""

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


def blob_masks(n=24, size=48, num_classes=4, seed=0):
    """Label maps with a few overlapping discs per image: realistic boundaries for the boundary-family tests."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:size, :size]
    masks = []
    for _ in range(n):
        m = np.zeros((size, size), np.int64)
        for k in range(1, num_classes):
            cy, cx = rng.integers(size // 8, size - size // 8, 2)
            r = rng.integers(size // 10, size // 4)
            m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
        masks.append(m)
    return masks


@pytest.fixture(scope="session")
def inversenet_cache(tmp_path_factory):
    """A private cache with a small InverseNet as 'default', so `build_loss("inverseform")` works in the tests that
    use this fixture (the loss test modules, through ``pytestmark``)."""
    import os

    from raysweep.losses.boundary.inverseform import edge_tiles_from_masks, save_inversenet, train_inversenet

    cache = tmp_path_factory.mktemp("raysweep-cache")
    old = os.environ.get("RAYSWEEP_CACHE")
    os.environ["RAYSWEEP_CACHE"] = str(cache)
    net, summary = train_inversenet(edge_tiles_from_masks(blob_masks(), 4, 32), steps=300, progress=False)
    save_inversenet(net, "default", summary)
    yield cache, summary
    if old is None:
        os.environ.pop("RAYSWEEP_CACHE", None)
    else:
        os.environ["RAYSWEEP_CACHE"] = old


def extras_for(name, logits, seed=0):
    """The extra inputs a loss needs that cannot be derived from the target (model outputs), for 2-D or 3-D
    logits: aux logits at full size, features at half the in-plane size."""
    from raysweep.losses import LOSSES

    spec = LOSSES[name]
    g = torch.Generator().manual_seed(seed)
    b, _, *spatial = logits.shape
    *depth, h, w = spatial
    out = {}
    if "aux_logits" in spec.needs:
        out["aux_logits"] = torch.randn(b, spec.defaults["num_bins"], *spatial, generator=g)
    if "features" in spec.needs:
        out["features"] = torch.randn(b, 8, *depth, max(h // 2, 1), max(w // 2, 1), generator=g)
    return out


def make_batch(b=2, c=4, h=12, w=12, seed=0, ignore_frac=0.1, ignore_index=255, scale=2.0):
    """Random logits ``(B, C, H, W)`` and a target ``(B, H, W)`` with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * scale
    target = torch.randint(0, c, (b, h, w), generator=g)
    if ignore_frac:
        target[torch.rand(b, h, w, generator=g) < ignore_frac] = ignore_index
    return logits, target


def make_volume(b=2, c=4, d=5, h=10, w=10, seed=0, ignore_frac=0.1, scale=2.0):
    """Random logits ``(B, C, D, H, W)`` and a target ``(B, D, H, W)`` with some ignored voxels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, d, h, w, generator=g) * scale
    target = torch.randint(0, c, (b, d, h, w), generator=g)
    if ignore_frac:
        target[torch.rand(b, d, h, w, generator=g) < ignore_frac] = 255
    return logits, target


@pytest.fixture
def batch():
    return make_batch()


@pytest.fixture(scope="session")
def ray_session():
    """The one local Ray instance of the test session (2 CPUs, no dashboard), shared by every Ray test."""
    import os

    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Single-threaded torch for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): at 32 x 32
    the work per op is too small to share between threads, and on a busy 2-core machine a second thread mostly waits
    for a core (measured: trials 3-7x slower with 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
