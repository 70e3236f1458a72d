"""The one hold-out rule (raysweep.data.holdout) that Synapse's ``val_cases`` and Cityscapes' ``holdout_cities`` use:
the seeded draw, named items, and the messages for values that do not fit the data. The datasets' own tests check
their wiring (which items are candidates, which are refused and why, the splits built from the result)."""

import numpy as np
import pytest

from raysweep.data.holdout import HoldOut

HOLD = HoldOut("toy", "held", "case", "cases", 2, "[a, b]")
ITEMS = ["c05", "c06", "c07", "c09", "c10", "c21"]


def seeded(items, seed):
    """The documented order, written out independently: default_rng(seed) permutes the sorted ids."""
    ordered = sorted(items)
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def drawn(pool, k, seed):
    """The documented draw of ``k`` from ``pool``: the first ``k`` of its seeded order, sorted."""
    return sorted(seeded(pool, seed)[:k])


def _draw(chosen, candidates=ITEMS, seed=0, **kw):
    kw.setdefault("refuse", lambda c: None if c in ITEMS else "is not a training case here")
    return HOLD.draw(chosen, candidates, seed, where="in /data", **kw)


def test_a_count_is_the_seeded_draw_reproducible_and_changing_with_the_seed():
    picks = {seed: _draw(2, seed=seed) for seed in range(6)}
    assert all(picks[seed] == drawn(ITEMS, 2, seed) for seed in picks)
    assert picks[3] == _draw(2, seed=3) and picks[1] != picks[0] and len({tuple(p) for p in picks.values()}) > 2
    assert _draw(2, candidates=list(reversed(ITEMS))) == picks[0]  # the listing's order does not matter
    assert _draw(0) == [] and _draw(5) == drawn(ITEMS, 5, 0)


def test_named_items_are_held_out_as_given_sorted():
    assert _draw(["c21", "c05"]) == ["c05", "c21"]


def test_a_narrowed_pool_follows_the_order_of_all_items():
    """The first k of the wide order that the pool keeps: what a narrow pool trains on is never held out by a wider
    one drawn with the same seed."""
    for seed in range(10):
        wide = _draw(2, seed=seed)
        for pool in (ITEMS[:4], ITEMS[2:], ["c05", "c09", "c21"]):
            narrow = _draw(2, candidates=pool, seed=seed, order=ITEMS)
            assert narrow == sorted([c for c in seeded(ITEMS, seed) if c in pool][:2])
            assert not (set(pool) - set(narrow)) & set(wide), (seed, pool)


@pytest.mark.parametrize(
    "chosen,kw,match",
    [
        (["c99", "c05", "t01"], {"refuse": lambda c: {"c99": "is not a training case here", "t01": "is a test case"}
                                 .get(c)},
         r"^toy: option held names c99, which is not a training case here, t01, which is a test case; choose whole "
         r"training cases to hold out among: c05, c06, c07, c09, c10, c21$"),
        (["c05", "c21"], {"candidates": ITEMS[:3], "narrowed_by": "subset"},
         r"^toy: option held names c21, which option subset leaves out; add them to subset or remove them from held$"),
        (["c21"], {"candidates": ITEMS[:3]}, r"^toy: option held names c21, which cannot be held out; choose among: "
                                             r"c05, c06, c07$"),
        (ITEMS, {}, r"^toy: option held holds out all 6 training cases in /data, leaving none to train on; name fewer "
                    r"cases$"),
        (6, {}, r"^toy: option held is 6, but there are only 6 training cases in /data \(c05, c06, c07, c09, c10, "
                r"\.\.\. \(1 more\)\); hold out at most 5 \(0 for none\) so that some remain to train on$"),
        (60, {"candidates": ITEMS[:1]}, r"^toy: option held is 60, but there is only 1 training case in /data \(c05\); "
                                        r"hold out at most 0"),
        (3, {"candidates": ITEMS[:3], "narrowed_by": "subset"}, r"hold out at most 2 \(0 for none\), or widen subset, "
                                                                r"so that some remain"),
        (4, {"candidates": ITEMS[:3], "trained": ITEMS}, r"^toy: option held is 4, but only 3 of the 6 training cases "
                                                         r"in /data may be held out \(c05, c06, c07\); hold out at "
                                                         r"most 3$"),
    ],
)
def test_values_that_do_not_fit_the_data(chosen, kw, match):
    with pytest.raises(ValueError, match=match):
        _draw(chosen, **kw)


def test_trained_items_beyond_the_candidates_stay_in_training():
    """Items that are trained on but never held out (a test case in a train list) count as training left over."""
    assert _draw(3, candidates=ITEMS[:3], trained=ITEMS) == ITEMS[:3]
    assert _draw(ITEMS[:3], candidates=ITEMS[:3], trained=ITEMS) == ITEMS[:3]


def test_an_empty_held_out_split_names_the_option_and_its_default():
    assert str(HOLD.empty("val")) == ("toy: the val split is empty because option held is 0 (nothing held out); set "
                                      "held to how many training cases to hold out (default 2) or to a list of "
                                      "them, e.g. [a, b]")
