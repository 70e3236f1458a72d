"""The power limit of a ranking design: can the configured number of ranking cases ever separate two losses?

The report declares two losses different when the Wilcoxon signed-rank test on their paired per-case scores, with
Holm's correction over all ``k (k - 1) / 2`` pairs of a cell's ``k`` losses, gives p < alpha. With ``n`` cases the
smallest p-value the two-sided test can produce is the one for ``n`` differences that all have the same sign
(exact: ``2 / 2**n``; scipy switches to the normal approximation past 50 cases), and Holm multiplies the smallest
p-value of the family by the number of comparisons. If that product is not below alpha, no difference can ever be
declared, whatever the data say: the design cannot separate losses, and the sweep refuses it before any trial runs
(``raysweep.config``). The report states the same limit next to its verdicts.

With replicates (``tuning.replicates`` R >= 2) the report's test is the replicate-aware t-test
(:mod:`raysweep.report.paired`), whose error term holds each loss's replicate spread. Its limit is stated before the
run too (:func:`replicate_sd_multiple`, in ``sweep.json``, the report and ``raysweep plan``): the smallest mean
difference a pair needs to be claimed, in units of the losses' replicate standard deviation ``sigma``. For two losses
with ``R`` replicates each and variance ``sigma^2``, the difference of their means has standard error
``sigma sqrt(2 / R)`` on ``2 (R - 1)`` degrees of freedom (the case term left out: it only adds), and Holm's most
lenient step tests the best pair at ``alpha / m``, so a claim needs at least ``t_{1 - alpha / (2 m), 2 (R - 1)}
sqrt(2 / R)`` standard deviations. The moderation of the variances adds degrees of freedom the data decide, so the
real threshold is usually lower: the statement is the design's guaranteed side.

Only numpy and scipy: the config validation and the report both import it.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

#: Cases never needed beyond this many (the normal approximation's smallest p-value falls fast).
_MAX_CASES = 10_000


@functools.lru_cache(maxsize=None)
def smallest_p(n_cases: int) -> float:
    """The smallest two-sided p-value of the Wilcoxon signed-rank test on ``n_cases`` paired differences.

    Computed by scipy with the report's settings (``zero_method="zsplit"``, scipy's choice of exact or normal
    method), on ``n_cases`` distinct differences of one sign: the most extreme data possible. 1.0 below 2 cases.
    """
    if n_cases < 2:
        return 1.0
    import numpy as np
    from scipy import stats

    return float(stats.wilcoxon(np.arange(1, n_cases + 1, dtype=float), zero_method="zsplit").pvalue)


def comparisons(n_losses: int) -> int:
    """Pairwise comparisons among ``n_losses`` losses (the size of Holm's family)."""
    return n_losses * (n_losses - 1) // 2


def smallest_adjusted_p(n_cases: int, n_losses: int) -> float:
    """The smallest Holm-adjusted p-value any pair of ``n_losses`` losses can reach on ``n_cases`` cases."""
    return min(1.0, comparisons(n_losses) * smallest_p(n_cases)) if n_losses >= 2 else 1.0


def replicate_sd_multiple(replicates: int, n_losses: int, alpha: float) -> float | None:
    """The smallest mean difference of two losses the replicate-aware test can claim, in replicate standard
    deviations (module docstring); None with fewer than 2 replicates or 2 losses (no such test)."""
    if replicates < 2 or n_losses < 2:
        return None
    import math

    from scipy import stats

    m = comparisons(n_losses)
    return float(stats.t.isf(alpha / (2 * m), 2 * (replicates - 1)) * math.sqrt(2 / replicates))


def cases_needed(n_losses: int, alpha: float) -> int:
    """The fewest ranking cases with which a difference among ``n_losses`` losses can be declared at ``alpha``."""
    if n_losses < 2:
        return 0
    n = 2
    while smallest_adjusted_p(n, n_losses) >= alpha:
        n += 1
        if n > _MAX_CASES:  # pragma: no cover - alpha absurdly small
            raise ValueError(f"no number of cases up to {_MAX_CASES} can reach alpha={alpha}")
    return n


@dataclass(frozen=True)
class PowerLimit:
    """The design limit of one cell: ``declarable`` is False when no difference can ever be declared."""

    n_cases: int
    n_losses: int
    comparisons: int
    alpha: float
    min_p: float
    min_p_adjusted: float
    declarable: bool
    cases_needed: int
    replicates: int = 1
    replicate_sd_multiple: float | None = None  # see replicate_sd_multiple(); None with one replicate

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        """One line for the report and the refusal message."""
        base = (f"With {self.n_cases} ranking cases and {self.n_losses} losses ({self.comparisons} pairwise "
                f"comparisons, Holm), the smallest adjusted p-value any pair can reach is {self.min_p_adjusted:.3g}")
        if self.declarable:
            more = ""
            if self.replicate_sd_multiple is not None:
                more = (f" With {self.replicates} replicates per loss, a pair can be claimed only when its mean "
                        f"difference exceeds {self.replicate_sd_multiple:.2g} replicate standard deviations (t at "
                        f"alpha / {2 * self.comparisons} on {2 * (self.replicates - 1)} degrees of freedom, x sqrt(2 / "
                        f"{self.replicates}); the moderated variances usually lower it).")
            return f"{base} (< alpha {self.alpha:g}): differences can be declared.{more}"
        return (f"{base} (>= alpha {self.alpha:g}): no difference can ever be declared; at least "
                f"{self.cases_needed} cases are needed.")


def power_limit(n_cases: int, n_losses: int, alpha: float = 0.05, replicates: int = 1) -> PowerLimit:
    """The :class:`PowerLimit` of a cell with ``n_cases`` ranking cases, ``n_losses`` losses and ``replicates``
    replicates per loss."""
    p_adj = smallest_adjusted_p(n_cases, n_losses)
    return PowerLimit(n_cases=n_cases, n_losses=n_losses, comparisons=comparisons(n_losses), alpha=alpha,
                      min_p=smallest_p(n_cases), min_p_adjusted=p_adj, declarable=p_adj < alpha,
                      cases_needed=cases_needed(n_losses, alpha), replicates=replicates,
                      replicate_sd_multiple=replicate_sd_multiple(replicates, n_losses, alpha))


__all__ = ["PowerLimit", "cases_needed", "comparisons", "power_limit", "replicate_sd_multiple", "smallest_adjusted_p",
           "smallest_p"]
