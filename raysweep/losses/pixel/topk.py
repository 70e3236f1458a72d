"""TopK loss: cross-entropy of the hardest pixels (survey 2.1.2)."""

from __future__ import annotations

from .._functional import IGNORE_INDEX, pixel_nll
from ..base import SegLoss, check_range
from ..registry import Float, register


@register(
    "topk",
    family="pixel",
    contains={"ce"},
    title="TopK loss",
    reference="Wu, Shen & van den Hengel, 'Bridging category-level and instance-level semantic image segmentation', "
    "arXiv 2016; k=10% as in nnU-Net",
    space={"k": Float(2.0, 50.0, log=True)},
)
class TopKLoss(SegLoss):
    """Mean cross-entropy of the ``k`` percent valid pixels with the highest cross-entropy in the batch.

    The number kept is ``max(1, int(N * k / 100))`` for ``N`` valid pixels, truncated as in nnU-Net's ``TopKLoss``
    (MIC-DKFZ/nnUNet, ``nnunetv2/training/loss/robust_ce_loss.py``), which this loss matches on images without
    ignored pixels (``tests/test_fidelity_pixel_combo.py``).

    Args:
        k: percentage of valid pixels kept, in (0, 100]; at least one pixel is kept. ``k=100`` is plain CE.
        ignore_index: label excluded; ignored pixels are never selected and do not count in the k% base
            (nnU-Net counts them in the base).

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, k: float = 10.0, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.k = check_range("k", k, 0.0, 100.0, low_open=True)

    def compute(self, logits, t, **extra):
        # int(), not ceil(): nnU-Net's TopKLoss truncates (int(N * k / 100)), and the registry cites it; at least one
        # pixel is kept so that a small k on a small crop still has a loss.
        # A dense target (no ignored pixel) knows its count on the host: no sync, no masking.
        n_valid = t.valid.numel() if t.dense else int(t.valid.sum())
        n_keep = max(1, int(n_valid * self.k / 100.0))
        values = pixel_nll(logits, t)
        if not t.dense:
            values = values.masked_fill(~t.valid, -1.0)  # ignored pixels get -1 (< any CE): never in the top values
        return values.flatten().topk(n_keep, sorted=False).values.mean()
