"""The losses' fast path and deferred input checks (issue 16): a batch with no ignored pixel skips the masking with the
same values and gradients; a trainer can defer the value checks, and a deferred call never synchronises the host;
a standalone call still checks everything; a trial gives identical metrics with checks deferred."""

import pytest
import torch

from raysweep.losses import LOSSES, build_loss
from raysweep.losses._functional import check_inputs, class_frequencies, host_ignored
from raysweep.trial import CombinedObjective, resolve_config, train_trial

from conftest import extras_for, make_batch

#: inverseform needs a trained InverseNet (tests/conftest.py's fixture trains one); its masking is the shared one.
NAMES = sorted(n for n in LOSSES if n != "inverseform")
#: The losses the issue names: their masking was the cost.
FIVE = ["ce", "wce", "dice_ce", "generalized_dice", "gwdl"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(loss, logits, target, extra, **checks):
    """Value and logits gradient of one call (seeded: some losses sample)."""
    x = logits.clone().requires_grad_(True)
    torch.manual_seed(0)
    value = loss(x, target, **checks, **extra)
    value.backward()
    return value.detach(), x.grad


def close(a, b, rtol=1e-6):
    """Equal to ``rtol`` relative to the larger magnitude (float32 rounding of a plain sum against a masked one)."""
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) <= rtol * scale


def dense_batch(b=2, c=4, h=16, w=20, seed=0):
    logits, target = make_batch(b, c, h, w, seed=seed, ignore_frac=0.0)
    return logits, target


# -- identical results ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_fast_path_equals_the_masked_path(name):
    """No ignored pixel: the checked call (dense, learned in its sync), the deferred dense call and the masked path
    forced on the same target agree in value and gradient; with ignored pixels, checked and deferred calls agree
    bitwise."""
    loss = build_loss(name)
    logits, target = dense_batch()
    extra = extras_for(name, logits)
    checked = run(loss, logits, target, extra)
    fast = run(loss, logits, target, extra, validate=False, ignored=False)
    masked = run(loss, logits, target, extra, validate=False, ignored=True)  # the masking, on a target that needs none
    assert torch.equal(checked[0], fast[0]) and torch.equal(checked[1], fast[1])
    assert close(fast[0], masked[0]) and close(fast[1], masked[1]), name

    logits, target = make_batch(2, 4, 16, 20, seed=1, ignore_frac=0.2)
    checked = run(loss, logits, target, extra)
    deferred = run(loss, logits, target, extra, validate=False, ignored=True)
    unknown = run(loss, logits, target, extra, validate=False)
    for other in (deferred, unknown):
        assert torch.equal(checked[0], other[0]) and torch.equal(checked[1], other[1]), name


@pytest.mark.parametrize("name", FIVE)
def test_the_five_are_bitwise_or_within_1e6_and_the_masking_really_is_skipped(name, monkeypatch):
    """For the five losses of the issue at a less tiny size: fast path within 1e-6 of the masked one (bitwise for
    ce, wce, generalized_dice and gwdl), and the dense target is what the checked call builds."""
    loss = build_loss(name)
    logits, target = dense_batch(4, 9, 32, 40, seed=3)
    fast = run(loss, logits, target, {}, validate=False, ignored=False)
    masked = run(loss, logits, target, {}, validate=False, ignored=True)
    if name == "dice_ce":
        assert close(fast[0], masked[0]) and close(fast[1], masked[1])
    else:
        assert torch.equal(fast[0], masked[0]) and close(fast[1], masked[1])
    t = check_inputs(logits, target, 255)
    assert t.dense and t.labels is target
    t = check_inputs(logits, target.masked_fill(target == 1, 255), 255)
    assert not t.dense and int(t.labels.max()) < 9


def test_wce_weightings_and_class_frequencies_without_bincount():
    logits, target = make_batch(2, 5, 16, 16, seed=2, ignore_frac=0.3)
    valid = target != 255
    freq = class_frequencies(target.masked_fill(~valid, 0), valid, 5)
    assert torch.equal(freq, torch.bincount(target[valid], minlength=5).float())
    assert torch.equal(class_frequencies(target.clamp_max(4), None, 5), torch.bincount(target.clamp_max(4).flatten(),
                                                                                        minlength=5).float())
    for weighting in ("inverse", "sqrt_inverse", "median", "log_inverse"):
        loss = build_loss("wce", weighting=weighting)
        a = run(loss, logits, target, {})
        b = run(loss, logits, target, {}, validate=False, ignored=True)
        assert torch.equal(a[0], b[0]) and torch.isfinite(a[0])
    # median of the present classes' frequencies (the lower median, as torch.median): same loss as 'inverse'
    med, inv = build_loss("wce", weighting="median"), build_loss("wce", weighting="inverse")
    assert close(med(logits, target), inv(logits, target))


# -- standalone calls still check everything -----------------------------------------------------------------------


@pytest.mark.parametrize("ignore_frac", [0.0, 0.2])
@pytest.mark.parametrize("name", FIVE + ["dice", "boundary"])
def test_a_standalone_call_still_raises_for_bad_input(name, ignore_frac):
    loss = build_loss(name)
    logits, target = make_batch(2, 4, 16, 16, seed=4, ignore_frac=ignore_frac)
    bad = target.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"labels \[7\] outside \[0, 3\]"):
        loss(logits, bad)
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match=r"labels \[-1\] outside"):
        loss(logits, bad)
    nan = logits.clone()
    nan[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(nan, target)
    if "dist_map" in LOSSES[name].needs:
        dmap = torch.zeros_like(logits)
        dmap[0, 0, 0, 0] = float("inf")
        with pytest.raises(ValueError, match="dist_map contains NaN or inf"):
            loss(logits, target, dist_map=dmap)
    # deferred: the free checks (shapes, dtypes) still raise
    with pytest.raises(ValueError, match="int64"):
        loss(logits, target.int(), validate=False)
    with pytest.raises(ValueError, match="does not match"):
        loss(logits, target[:, :8], validate=False, ignored=False)


def test_an_all_ignored_batch_gives_zero_when_checked():
    logits, target = make_batch(2, 4, 8, 8)
    target[:] = 255
    for name in FIVE:
        value, grad = run(build_loss(name), logits, target, {})
        assert value.item() == 0.0 and not grad.any()


def test_host_ignored():
    _, target = make_batch(2, 4, 8, 8, ignore_frac=0.0)
    assert host_ignored(target, 255, 4) is False
    assert host_ignored(target, None, 4) is False
    some = target.clone()
    some[0, 0, 0] = 255
    assert host_ignored(some, 255, 4) is True
    assert host_ignored(torch.full_like(target, 255), 255, 4) is None  # all ignored: checked in full
    out = some.clone()
    out[1, 1, 1] = 4
    assert host_ignored(out, 255, 4) is None  # out of range: the checked call raises its error
    assert host_ignored(some, None, 4) is None  # 255 is a label out of range when nothing is ignored
    # an ignore_index inside [0, C) (class 0 ignored): some pixels are 0, some not
    assert bool((target == 0).any()) and bool((target != 0).any())
    assert host_ignored(target, 0, 4) is True


# -- no host sync in a deferred call -------------------------------------------------------------------------------


class SyncCounter:
    """Counts the tensor-to-host conversions a call makes on CPU (on CUDA each would be a synchronisation)."""

    METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")

    def __init__(self, monkeypatch):
        self.calls = []
        for method in self.METHODS:
            original = getattr(torch.Tensor, method)

            def spy(tensor, *args, _original=original, _method=method, **kwargs):
                self.calls.append(_method)
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, method, spy)
        for name in ("bincount", "unique", "masked_select"):
            original = getattr(torch, name)

            def spy_fn(*args, _original=original, _name=name, **kwargs):
                self.calls.append(_name)
                return _original(*args, **kwargs)

            monkeypatch.setattr(torch, name, spy_fn)


#: Losses whose computation itself reads values on the host (data-dependent sizes or control flow); the deferred
#: checks remove the checks' sync, not these. (On CUDA, hausdorff also copies its prediction to the host when its
#: distance fields are computed on the CPU, which this CPU count does not see.)
SYNCING = {"active_boundary", "conditional_boundary", "lovasz", "rmi"}
#: Losses that need the valid-pixel count on the host (topk's k %), known without a sync only for a dense target.
SYNCING_MASKED = {"topk"}


@pytest.mark.parametrize("name", NAMES)
def test_a_deferred_call_makes_no_host_sync(name, monkeypatch):
    loss = build_loss(name)
    for ignore_frac, ignored in ((0.0, False), (0.2, True)):
        logits, target = make_batch(2, 4, 16, 16, seed=5, ignore_frac=ignore_frac)
        extra = extras_for(name, logits)
        if "dist_map" in LOSSES[name].needs:
            from raysweep.losses.maps import batch_signed_distance

            extra["dist_map"] = batch_signed_distance(target, 4)  # as the DataLoader workers provide it
        x = logits.clone().requires_grad_(True)
        with monkeypatch.context() as m:
            counter = SyncCounter(m)
            value = loss(x, target, validate=False, ignored=ignored, **extra)
            value.backward()
        if name in SYNCING or (name in SYNCING_MASKED and ignored):
            continue
        assert counter.calls == [], f"{name} synchronised the host: {counter.calls}"
        with monkeypatch.context() as m:
            counter = SyncCounter(m)
            loss(logits, target, **extra)  # the checked call: the checks' sync (two with ignored pixels)
        assert counter.calls.count("tolist") == 1


def test_the_counter_sees_a_sync(monkeypatch):
    counter = SyncCounter(monkeypatch)
    torch.ones(3).sum().item()
    bool(torch.ones(1))
    assert counter.calls == ["item", "__bool__"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync debug mode needs a GPU")
@pytest.mark.parametrize("name", FIVE + ["dice", "focal", "tversky"])
def test_a_deferred_call_makes_no_cuda_sync(name):
    loss = build_loss(name).cuda()
    logits, target = make_batch(2, 4, 32, 32, seed=6, ignore_frac=0.1)
    logits, target = logits.cuda().requires_grad_(True), target.cuda()
    loss(logits, target).backward()  # warm-up: lazy initialisation syncs
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss(logits, target, validate=False, ignored=True).backward()
        loss(logits, target.masked_fill(target == 255, 0), validate=False, ignored=False).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# -- the trainer -----------------------------------------------------------------------------------------------------


def test_objective_deferred_equals_checked_and_falls_back_to_checks():
    terms = resolve_config({"loss": {"name": "dice_ce"}, "companions": [{"name": "wce", "weight": 0.5}]})
    obj = CombinedObjective([terms["loss"], *terms["companions"]], steps=10, steps_per_epoch=5)
    for ignore_frac in (0.0, 0.2):
        logits, target = make_batch(2, 4, 16, 16, seed=7, ignore_frac=ignore_frac)
        checked = obj({"logits": logits}, target, {}, 0)
        with obj.input_checks(False, target):
            deferred = obj({"logits": logits}, target, {}, 0)
        assert torch.equal(checked[0], deferred[0]) and torch.equal(checked[1], deferred[1])
    # a batch the host cannot vouch for is checked in full: the error for a bad label, 0 for an all-ignored batch
    with obj.input_checks(False, target.masked_fill(target == 1, 9)):
        with pytest.raises(ValueError, match="outside"):
            obj({"logits": logits}, target.masked_fill(target == 1, 9), {}, 0)
    empty = torch.full_like(target, 255)
    with obj.input_checks(False, empty):
        total, _ = obj({"logits": logits}, empty, {}, 0)
    assert total.item() == 0.0


TINY = {
    "dataset": {"options": {"image_size": 32, "depth": 4}, "train_options": {"num_volumes": 1},
                "eval_options": {"num_volumes": 1}},
    "model": {"name": "cnn", "encoder": "resnet18"},
    "train": {"steps": 6, "batch_size": 2, "progress": False},
    "eval": {"every": 3, "overlays": 0},
}


def scores(result):
    return {k: v for k, v in result.items() if not k.startswith("time/") and k not in ("steps_per_s", "peak_memory_mb")}


@pytest.mark.parametrize("ignore", [False, True])
def test_a_trial_is_identical_with_checks_deferred(monkeypatch, ignore):
    """train_trial with the losses checked at every step (sync_every 1) and every 4th (deferred in between) gives the
    same metrics; with ``ignore`` a block of every training mask is set to 255 (the masked path)."""
    import raysweep.trial.loop as loop

    if ignore:
        make_loader = loop.make_loader

        def with_ignored(*args, **kwargs):
            for batch in make_loader(*args, **kwargs):
                batch["mask"][:, :4, :6] = 255
                yield batch

        monkeypatch.setattr(loop, "make_loader", with_ignored)
    calls = []
    forward = type(build_loss("dice_ce")).forward

    def spy(self, logits, target, *, validate=True, ignored=None, **extra):
        calls.append((validate, ignored))
        return forward(self, logits, target, validate=validate, ignored=ignored, **extra)

    monkeypatch.setattr(type(build_loss("dice_ce")), "forward", spy)
    config = {**TINY, "loss.name": "dice_ce"}
    every_step = train_trial({**config, "train.sync_every": 1})
    assert calls == [(True, None)] * 6
    calls.clear()
    deferred = train_trial({**config, "train.sync_every": 4})
    assert [v for v, _ in calls] == [True, False, False, False, True, False]
    assert {i for v, i in calls if not v} == {ignore}
    assert every_step["status"] == "completed"
    assert scores(every_step) == scores(deferred)


def test_gwdl_default_costs_take_the_gather_and_equal_the_matrix_product():
    """cost_matrix None (1 - I) computes W_n = 1 - p_true; an explicit 1 - I takes the C x C product: equal."""
    logits, target = make_batch(2, 5, 16, 16, seed=8, ignore_frac=0.1)
    for params in ({}, {"weighting": "GDL"}, {"per_image": True}):
        fast = run(build_loss("gwdl", **params), logits, target, {})
        product = run(build_loss("gwdl", cost_matrix=(1 - torch.eye(5)).tolist(), **params), logits, target, {})
        assert close(fast[0], product[0]) and close(fast[1], product[1], rtol=1e-5)


@pytest.mark.parametrize("ignore_index", [-1, 0, 255, None])
def test_checks_for_every_kind_of_ignore_index(ignore_index):
    """The range check in one sync (ignore_index >= C), two (negative) or on the whole target (inside [0, C))."""
    logits, target = make_batch(2, 4, 8, 8, seed=9, ignore_frac=0.0)
    if ignore_index is not None:
        target[0, :2] = ignore_index
    t = check_inputs(logits, target, ignore_index)
    assert t.dense is (ignore_index is None)
    assert torch.equal(t.valid, target != ignore_index if ignore_index is not None else torch.ones_like(t.valid))
    for bad in (4, -2, 300):
        wrong = target.clone()
        wrong[1, 3, 3] = bad
        with pytest.raises(ValueError, match=rf"labels \[{bad}\] outside"):
            check_inputs(logits, wrong, ignore_index)
