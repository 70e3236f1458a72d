"""The power limit of a ranking design: can the configured number of ranking cases ever separate two losses?

The report declares two losses different when the Wilcoxon signed-rank test on their paired per-case scores, with
Holm's correction over all ``k (k - 1) / 2`` pairs of a cell's ``k`` losses, gives p < alpha. With ``n`` cases the
smallest p-value the two-sided test can produce is the one for ``n`` differences that all have the same sign
(exact: ``2 / 2**n``; scipy switches to the normal approximation past 50 cases), and Holm multiplies the smallest
p-value of the family by the number of comparisons. If that product is not below alpha, no difference can ever be
declared, whatever the data say: the design cannot separate losses, and the sweep refuses it before any trial runs
(``raysweep.config``). The report states the same limit next to its verdicts.

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

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        """One line for the report and the refusal message."""
        base = (f"With {self.n_cases} ranking cases and {self.n_losses} losses ({self.comparisons} pairwise "
                f"comparisons, Holm), the smallest adjusted p-value any pair can reach is {self.min_p_adjusted:.3g}")
        if self.declarable:
            return f"{base} (< alpha {self.alpha:g}): differences can be declared."
        return (f"{base} (>= alpha {self.alpha:g}): no difference can ever be declared; at least "
                f"{self.cases_needed} cases are needed.")


def power_limit(n_cases: int, n_losses: int, alpha: float = 0.05) -> PowerLimit:
    """The :class:`PowerLimit` of a cell with ``n_cases`` ranking cases and ``n_losses`` losses."""
    p_adj = smallest_adjusted_p(n_cases, n_losses)
    return PowerLimit(n_cases=n_cases, n_losses=n_losses, comparisons=comparisons(n_losses), alpha=alpha,
                      min_p=smallest_p(n_cases), min_p_adjusted=p_adj, declarable=p_adj < alpha,
                      cases_needed=cases_needed(n_losses, alpha))


__all__ = ["PowerLimit", "cases_needed", "comparisons", "power_limit", "smallest_adjusted_p", "smallest_p"]
