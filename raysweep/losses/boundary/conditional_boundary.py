"""Conditional Boundary Loss (survey 2.3.6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._functional import IGNORE_INDEX
from ..base import SegLoss, check_range
from ..maps import label_boundaries
from ..registry import Float, register


@register(
    "conditional_boundary",
    family="boundary",
    contains={"ce"},
    title="Conditional Boundary Loss",
    reference="Wu, Guo, Liu, Lu, Liu & Shen, 'Conditional boundary loss for semantic segmentation', IEEE TIP 2023",
    space={"weight_a2c": Float(0.05, 5.0, log=True), "weight_a2pn": Float(0.05, 5.0, log=True)},
    needs={"features"},
)
class ConditionalBoundaryLoss(SegLoss):
    """``CE + weight_a2c * L_A2C + weight_a2pn * L_A2P&N`` on decoder features at ground-truth boundary pixels.

    For every boundary pixel ``i`` (a pixel with a neighbour of another class, at the feature resolution) its
    ``kernel x kernel`` neighbours are sampled *conditionally on correctness* (CCAS): only neighbours that the current
    prediction classifies correctly are used. With L2-normalised features ``f``:

    * A2C (anchor to centre): ``|f_i - c_i|^2`` with ``c_i`` the normalised mean of its correct same-class
      neighbours -- pulls boundary features to their local class centre (intra-class consistency);
    * A2P&N (anchor to positives and negatives): ``-log(sum_pos e^{f_i.f_j / tau} / sum_{pos, neg} e^{f_i.f_j / tau})``
      over correct same-class (positive) and other-class (negative) neighbours -- inter-class separation.

    At most ``max_points`` boundary pixels are used per call (evenly strided), which bounds the cost.

    Args:
        weight_a2c, weight_a2pn: weights of the two terms.
        kernel: neighbourhood side (odd, 5 in the paper).
        temperature: ``tau`` of A2P&N.
        max_points: cap on the boundary pixels per call.
        ignore_index: label excluded everywhere.

    Extra input ``features`` (B, D, h, w), required: decoder features (``raysweep.models.build_model(...,
    return_features=True)``); the target is resized to ``(h, w)`` by nearest neighbour.
    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, weight_a2c: float = 1.0, weight_a2pn: float = 0.2, kernel: int = 5, temperature: float = 0.1,
                 max_points: int = 4096, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.weight_a2c = check_range("weight_a2c", weight_a2c, 0.0)
        self.weight_a2pn = check_range("weight_a2pn", weight_a2pn, 0.0)
        if not isinstance(kernel, int) or kernel < 3 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd int >= 3, got {kernel!r}")
        self.kernel = kernel
        self.temperature = check_range("temperature", temperature, 0.0, low_open=True)
        if not isinstance(max_points, int) or max_points < 1:
            raise ValueError(f"max_points must be a positive int, got {max_points!r}")
        self.max_points = max_points

    def compute(self, logits, t, features=None, **extra):
        if features is None:
            raise ValueError(
                "conditional_boundary needs decoder features (B, D, h, w): build the model with "
                "raysweep.models.build_model(..., return_features=True) and pass features=..."
            )
        if features.ndim != 4 or features.shape[0] != logits.shape[0]:
            raise ValueError(f"features must be (B, D, h, w) with B={logits.shape[0]}, got {tuple(features.shape)}")
        ce = F.cross_entropy(logits, t.index, ignore_index=t.torch_ignore_index)
        a2c, a2pn = self.boundary_terms(logits, t, features.float())
        return ce + self.weight_a2c * a2c + self.weight_a2pn * a2pn

    def boundary_terms(self, logits, t, features):
        """``(L_A2C, L_A2P&N)``; each 0 with zero gradient when no boundary pixel qualifies."""
        b, d, h, w = features.shape
        r = self.kernel // 2
        zero = features.sum() * 0.0
        with torch.no_grad():
            fill = -1
            lab = F.interpolate(t.index.unsqueeze(1).float(), size=(h, w), mode="nearest").squeeze(1).long()
            valid = lab != t.torch_ignore_index
            lab = lab.masked_fill(~valid, fill)
            # Nearest sampling for prediction and labels alike, so ignored pixels never leak into either.
            pred = F.interpolate(logits.argmax(1, keepdim=True).float(), size=(h, w), mode="nearest").squeeze(1).long()
            correct = (pred == lab) & valid
            edge = label_boundaries(lab.clamp_min(0), valid) > 0
            anchors = torch.nonzero(edge.flatten()).squeeze(1)
            if anchors.numel() == 0:
                return zero, zero
            if anchors.numel() > self.max_points:
                anchors = anchors[torch.linspace(0, anchors.numel() - 1, self.max_points).long()]
            # Neighbour indices into the padded, flattened maps.
            hp, wp = h + 2 * r, w + 2 * r
            bi, rem = anchors // (h * w), anchors % (h * w)
            yi, xi = rem // w, rem % w
            dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
            keep = (dy != 0) | (dx != 0)
            dy, dx = dy[keep].to(anchors.device), dx[keep].to(anchors.device)
            nb = (bi[:, None] * hp + yi[:, None] + r + dy) * wp + xi[:, None] + r + dx  # (N, K^2 - 1)
            lab_p = F.pad(lab, (r, r, r, r), value=fill).flatten()
            cor_p = F.pad(correct, (r, r, r, r), value=False).flatten()
            anchor_lab = lab.flatten()[anchors]
            nb_lab, nb_ok = lab_p[nb], cor_p[nb]
            pos = nb_ok & (nb_lab == anchor_lab[:, None])
            neg = nb_ok & (nb_lab != anchor_lab[:, None]) & (nb_lab >= 0)
        f = F.normalize(features, dim=1)
        f_anchor = f.permute(0, 2, 3, 1).reshape(-1, d)[anchors]  # (N, D)
        f_nb = F.pad(f, (r, r, r, r)).permute(0, 2, 3, 1).reshape(-1, d)[nb]  # (N, K^2 - 1, D)

        has_pos = pos.any(1)
        a2c = zero
        if bool(has_pos.any()):
            centre = (f_nb * pos.unsqueeze(-1)).sum(1) / pos.sum(1, keepdim=True).clamp_min(1)
            a2c = (f_anchor - F.normalize(centre, dim=1)).square().sum(1)[has_pos].mean()
        both = has_pos & neg.any(1)
        a2pn = zero
        if bool(both.any()):
            sim = (f_nb * f_anchor.unsqueeze(1)).sum(-1) / self.temperature  # (N, K^2 - 1)
            neg_inf = torch.finfo(sim.dtype).min
            log_pos = sim.masked_fill(~pos, neg_inf).logsumexp(1)
            log_all = sim.masked_fill(~(pos | neg), neg_inf).logsumexp(1)
            a2pn = (log_all - log_pos)[both].mean()
        return a2c, a2pn
