"""Holding out whole training items (Synapse cases, Cityscapes cities) as a dataset's selection split: one rule and
one set of messages for every dataset that draws its selection cases from its training data.

A dataset describes its hold-out once (:class:`HoldOut`: its name, the option, the words for its items) and asks
:meth:`HoldOut.draw` which items to hold out. The option's value (checked by
:func:`~raysweep.data.base.option_holdout`) is either

* a list of names: held out as given (returned sorted), once each passes the dataset's refusal reasons (a test case,
  a file that is not training data) and lies in the candidate pool; or
* a count ``k >= 0``: the first ``k`` candidates in :func:`~raysweep.data.base.seeded_order` of ``split_seed``
  (returned sorted); 0 holds out nothing.

Either way at least one training item must remain to train on. Messages name the option, the value and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .base import first_items, seeded_order

__all__ = ["HoldOut"]


@dataclass(frozen=True)
class HoldOut:
    """How one dataset holds out training items for selection.

    Attributes:
        dataset: the dataset's registry name, e.g. ``"synapse"`` (messages start with it).
        option: the dataset option that says what to hold out, e.g. ``"val_cases"``.
        noun: one held-out item, e.g. ``"case"``; ``nouns`` the plural (``"cases"``).
        default: the option's default count (named in the message for an empty held-out split).
        example: a list value for messages, e.g. ``"[case0005, case0006]"``.
    """

    dataset: str
    option: str
    noun: str
    nouns: str
    default: int
    example: str

    def empty(self, split: str) -> ValueError:
        """The error for the held-out ``split`` asked for while the option is 0 (nothing held out)."""
        return ValueError(f"{self.dataset}: the {split} split is empty because option {self.option} is 0 (nothing "
                          f"held out); set {self.option} to how many training {self.nouns} to hold out (default "
                          f"{self.default}) or to a list of them, e.g. {self.example}")

    def draw(self, chosen: int | list[str], candidates: Sequence[str], seed: int, *, where: str,
             refuse: Callable[[str], str | None], order: Sequence[str] | None = None,
             trained: Sequence[str] | None = None, narrowed_by: str | None = None) -> list[str]:
        """The held-out items, sorted; ``[]`` when ``chosen`` is 0.

        Args:
            chosen: the option's checked value: a count ``k >= 0`` or a list of names.
            candidates: the items that may be held out.
            seed: ``split_seed``; a count takes the first ``k`` candidates in ``seeded_order(order, seed)``.
            where: where the training items come from, for messages (``"in <folder>"``, ``"under <folder>"``).
            refuse: why a named item cannot be held out (``"is a test case (the ranking split)"``), or None.
            order: the items whose seeded order the draw follows (default ``candidates``). Give the widest set when
                an option narrows the candidates (Cityscapes' ``cities``): an item trained on under a narrow pool is
                then never held out under a wider one (see :func:`~raysweep.data.base.seeded_order`).
            trained: the training items of which at least one must remain (default ``candidates``); wider than
                ``candidates`` when some training items are never held out (a standard test case in a train list).
            narrowed_by: the option that narrowed the candidates, if any (named in the messages as the fix).

        Raises:
            ValueError: a refused or non-candidate name, nothing left to train on, or ``k`` above the candidates.
        """
        pool = list(candidates)
        kept = list(pool if trained is None else trained)
        if isinstance(chosen, list):
            bad = [(c, why) for c in chosen if (why := refuse(c)) is not None]
            if bad:
                raise ValueError(f"{self.dataset}: option {self.option} names "
                                 f"{', '.join(f'{c}, which {why}' for c, why in bad)}; choose whole training "
                                 f"{self.nouns} to hold out among: {first_items(pool, 20)}")
            outside = [c for c in chosen if c not in pool]
            if outside:
                fix = (f"which option {narrowed_by} leaves out; add them to {narrowed_by} or remove them from "
                       f"{self.option}" if narrowed_by else
                       f"which cannot be held out; choose among: {first_items(pool, 20)}")
                raise ValueError(f"{self.dataset}: option {self.option} names {', '.join(outside)}, {fix}")
            if len(chosen) >= len(kept):
                raise ValueError(f"{self.dataset}: option {self.option} holds out all {len(kept)} training "
                                 f"{self.nouns} {where}, leaving none to train on; name fewer {self.nouns}")
            return sorted(chosen)
        if chosen == 0:
            return []
        if chosen >= len(kept):
            n = len(kept)
            widen = f", or widen {narrowed_by}," if narrowed_by else ""
            raise ValueError(f"{self.dataset}: option {self.option} is {chosen}, but there {'is' if n == 1 else 'are'} "
                             f"only {n} training {self.noun if n == 1 else self.nouns} {where} ({first_items(kept)}); "
                             f"hold out at most {n - 1} (0 for none){widen} so that some remain to train on")
        if chosen > len(pool):
            raise ValueError(f"{self.dataset}: option {self.option} is {chosen}, but only {len(pool)} of the "
                             f"{len(kept)} training {self.nouns} {where} may be held out ({first_items(pool)}); hold "
                             f"out at most {len(pool)}")
        keep = set(pool)
        return sorted([c for c in seeded_order(pool if order is None else order, seed) if c in keep][:chosen])
