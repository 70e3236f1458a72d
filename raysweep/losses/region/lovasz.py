"""Lovász-Softmax loss (survey 2.2.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._functional import IGNORE_INDEX
from ..base import SegLoss, check_bool, check_choice
from ..registry import Categorical, register


def lovasz_softmax_flat(probs: torch.Tensor, labels: torch.Tensor, classes: str = "present") -> torch.Tensor:
    """Lovász-Softmax of flat valid pixels: ``probs (P, C)`` float32, ``labels (P,)`` int64 -> 0-dim.

    All classes are handled at once: the errors ``|fg_c - p_c|`` of every class are sorted in one call and the
    Lovász extension's gradient (Berman et al., eq. 9) is computed with cumulative sums along the sorted axis.
    """
    n_pix, n_cls = probs.shape
    if n_pix == 0:
        return probs.sum() * 0.0
    fg = F.one_hot(labels, n_cls).T.to(probs.dtype)  # (C, P)
    errors = (fg - probs.T).abs()
    errors_sorted, perm = errors.sort(dim=1, descending=True)
    fg_sorted = fg.gather(1, perm)
    gts = fg_sorted.sum(1, keepdim=True)
    intersection = gts - fg_sorted.cumsum(1)
    union = gts + (1.0 - fg_sorted).cumsum(1)
    jaccard = 1.0 - intersection / union
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    per_class = (errors_sorted * grad).sum(1)
    if classes == "present":
        present = gts.squeeze(1) > 0
        return per_class[present].mean() if bool(present.any()) else probs.sum() * 0.0
    return per_class.mean()


@register(
    "lovasz",
    family="region",
    title="Lovász-Softmax loss",
    reference="Berman, Rannen Triki & Blaschko, 'The Lovász-Softmax loss', CVPR 2018",
    space={"per_image": Categorical((False, True)), "classes": Categorical(("present", "all"))},
)
class LovaszSoftmaxLoss(SegLoss):
    """Lovász-Softmax: the convex Lovász extension of the Jaccard loss on softmax probabilities.

    Args:
        per_image: compute the loss per image and average (Berman's ``per_image=True``) instead of over the batch.
        classes: ``'present'`` averages over classes present in the target (Berman's and smp's default),
            ``'all'`` over every class (absent classes then penalise false positives).
        ignore_index: pixels with this label are dropped before sorting.

    With the defaults it equals smp's ``LovaszLoss(mode='multiclass', per_image=False)``; with every setting, Berman's
    ``lovasz_softmax(softmax(logits), target, classes, per_image, ignore)`` (bermanmaxim/LovaszSoftmax@7d48792).
    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, per_image: bool = False, classes: str = "present", ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.per_image = check_bool("per_image", per_image)
        self.classes = check_choice("classes", classes, ("present", "all"))

    def compute(self, logits, t, **extra):
        probs = logits.softmax(1)
        valid, labels = t.valid, t.labels

        def flat(p, lab, v):
            return lovasz_softmax_flat(p.movedim(0, -1)[v], lab[v], self.classes)  # (C, *spatial) -> (N, C)

        if self.per_image:
            losses = [flat(probs[i], labels[i], valid[i]) for i in range(probs.shape[0]) if bool(valid[i].any())]
            return torch.stack(losses).mean()
        return flat(probs.movedim(1, 0).flatten(1), labels.flatten(), valid.flatten())
