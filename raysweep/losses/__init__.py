"""raysweep's loss library: the survey's 25 segmentation losses (and two baselines) as ``torch.nn.Module``s.

Usage::

    from raysweep.losses import LOSSES, build_loss
    spec = LOSSES["tversky"]                           # LossSpec: family, defaults, search space, extra inputs
    loss = build_loss("tversky", alpha=0.3, beta=0.7)  # unknown names or hyperparameters -> ValueError
    value = loss(logits, target)                       # logits (B, C, H, W) float; target (B, H, W) int64 -> 0-dim

Conventions shared by every loss (details in :mod:`raysweep.losses._functional`):
    * softmax is applied inside; pass raw logits;
    * ``ignore_index`` (default 255) pixels take no part in any numerator, denominator or mean; a batch that is
      entirely ignored gives 0 with zero gradient;
    * region losses use soft counts with ``smooth`` (1e-5) in numerator and denominator, average over classes with
      the background included, and sum over the whole batch unless ``per_image=True``;
    * computed in float32 even under autocast;
    * losses with learnable parameters (``t_loss``) must have ``loss.parameters()`` in the optimiser.
"""

from . import boundary as _boundary  # noqa: F401  (imports register the losses)
from . import combination as _combination  # noqa: F401
from . import pixel as _pixel  # noqa: F401
from . import region as _region  # noqa: F401
from ._functional import IGNORE_INDEX
from .base import SegLoss
from ..vocab import FAMILIES
from .registry import (COMPANION_TERMS, EXTRA_INPUTS, LOSSES, Categorical, Float, Int, LossSpec, Preparation,
                       build_loss)

__all__ = [
    "COMPANION_TERMS",
    "EXTRA_INPUTS",
    "FAMILIES",
    "IGNORE_INDEX",
    "LOSSES",
    "Categorical",
    "Float",
    "Int",
    "LossSpec",
    "Preparation",
    "SegLoss",
    "build_loss",
]
