"""The boundary losses of group boundary_b against their authors' released code, on ``tests/fidelity_inputs.py``.

The authors' code was run outside the project by ``docs/fidelity/harness/boundary_b_*.py`` (which import it from a
checkout given on the command line); the values it printed are recorded below as data, one block per repository with
its commit, the file and function run, and the shims applied. raysweep's value on the same inputs must agree within
``RTOL`` (relative). The inputs have no ignored pixel and every class present in every image: the setting where
raysweep (which excludes ignored pixels and treats absent classes its own way) and the authors' code (no ignore label)
should agree. Where raysweep deliberately differs, the test checks the difference itself.

Boundary-aware (Hayder et al.) has no released code: it is compared with the paper's equation computed here in NumPy
(brute-force distances). The table that summarises this file is ``docs/fidelity/boundary_b.md``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fidelity_inputs import CASES, fidelity_inputs
from raysweep.losses import build_loss

RTOL = 1e-4


def rel(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / max(abs(theirs), 1e-12)


def case_inputs(name: str):
    """The recorded inputs by name (``small_absent``: "small" with class 3 relabelled 0, as the BDoU harness)."""
    if name == "small_absent":
        logits, target = fidelity_inputs(**CASES["small"])
        target[target == 3] = 0
        return torch.from_numpy(logits).float(), torch.from_numpy(target)
    logits, target = fidelity_inputs(**CASES[name])
    return torch.from_numpy(logits).float(), torch.from_numpy(target)


def np_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_cross_entropy(logits: np.ndarray, target: np.ndarray) -> float:
    logp = np.log(np_softmax(logits))
    return float(-np.take_along_axis(logp, target[:, None], 1).mean())


# ---- boundary: LIVIAETS/boundary-loss@171c32d88a4ce59af8be46fb88b96d3637b9515b, run by
# docs/fidelity/harness/boundary_b_boundary.py. scheduler.py::StealWeight(to_steal=0.01) and
# AddWeightLoss(to_add=[0, 0.01]) stepped once per finished epoch from the initial weights [1, 0.01] (main.py).
# Rows: (epoch, schedule, region weight, boundary weight).
BOUNDARY_SCHEDULE = [
    (0, 'rebalance', 1.0, 0.01),
    (1, 'rebalance', 0.99, 0.02),
    (10, 'rebalance', 0.8999999999999999, 0.10999999999999999),
    (89, 'rebalance', 0.10999999999999924, 0.9000000000000006),
    (90, 'rebalance', 0.1, 0.9100000000000006),
    (121, 'rebalance', 0.1, 1.2200000000000009),
    (200, 'rebalance', 0.1, 2.010000000000001),
    (0, 'increase', 1.0, 0.01),
    (1, 'increase', 1.0, 0.02),
    (10, 'increase', 1.0, 0.10999999999999999),
    (89, 'increase', 1.0, 0.9000000000000006),
    (90, 'increase', 1.0, 0.9100000000000006),
    (121, 'increase', 1.0, 1.2200000000000009),
    (200, 'increase', 1.0, 2.010000000000001),
]
# losses.py::SurfaceLoss on utils.py::one_hot2dist maps, GeneralizedDice, DiceLoss (idc = all classes, as acdc.make),
# and the total w_R * GDL + w_B * SurfaceLoss with the StealWeight weights at that epoch. Shims: np.bool = bool;
# skimage.io stubbed (imsave only). Rows: (term, case, epoch, value).
BOUNDARY = [
    ('surface', 'small', None, 0.11512838304042816),
    ('gdl', 'small', None, 0.4231131672859192),
    ('dice', 'small', None, 0.4139094948768616),
    ('total', 'small', 0, 0.42426446080207825),
    ('total', 'small', 1, 0.42118459939956665),
    ('total', 'small', 10, 0.39346593618392944),
    ('total', 'small', 89, 0.15015798807144165),
    ('total', 'small', 90, 0.14707815647125244),
    ('total', 'small', 121, 0.18276795744895935),
    ('total', 'small', 200, 0.2737193703651428),
    ('surface', 'binary', None, -0.22811034321784973),
    ('gdl', 'binary', None, 0.23124518990516663),
    ('dice', 'binary', None, 0.2296188622713089),
    ('total', 'binary', 0, 0.22896409034729004),
    ('total', 'binary', 1, 0.224370539188385),
    ('total', 'binary', 10, 0.18302851915359497),
    ('total', 'binary', 89, -0.17986233532428741),
    ('total', 'binary', 90, -0.18445590138435364),
    ('total', 'binary', 121, -0.2551701068878174),
    ('total', 'binary', 200, -0.4353772699832916),
    ('surface', 'wide', None, 0.14285291731357574),
    ('gdl', 'wide', None, 0.4853432774543762),
    ('dice', 'wide', None, 0.469883531332016),
    ('total', 'wide', 0, 0.4867717921733856),
    ('total', 'wide', 1, 0.4833469092845917),
    ('total', 'wide', 10, 0.45252275466918945),
    ('total', 'wide', 89, 0.18195538222789764),
    ('total', 'wide', 90, 0.1785304993391037),
    ('total', 'wide', 121, 0.2228149026632309),
    ('total', 'wide', 200, 0.335668683052063),
]

# ---- boundary_dou: sunfan-bvb/BoundaryDoULoss@9f1185c5719526f10103f54152a148389d27d5b1, TransUNet/utils.py,
# BoundaryDoULoss(n_classes)(logits, target), run by docs/fidelity/harness/boundary_b_bdou.py. Shims: Tensor.cuda
# returns self; skimage.segmentation stubbed (used by another class of that file). Rows: (loss, case, hp, value).
BOUNDARY_DOU = [
    ('boundary_dou', 'small', {}, 0.330598920583725),
    ('boundary_dou', 'binary', {}, 0.23402878642082214),
    ('boundary_dou', 'wide', {}, 0.37378695607185364),
    ('boundary_dou', 'small_absent', {}, 0.5685995817184448),
]

# ---- region_wise: jmlipman/RegionWiseLoss@9c5b66da05d2ffc82f8d5b5c8ce6bca6a56cf270,
# nnUNet/training/loss_functions/rwexp_loss.py, RWLoss()(logits, target[:, None]) (rows 'region_wise') and their
# BoundaryLoss baseline (rows 'rw_boundary', not followed: see RegionWiseLoss's docstring), run by
# docs/fidelity/harness/boundary_b_region_wise.py. Shims: the nnunet.* imports stubbed (softmax_helper = softmax over
# dim 1, as nnU-Net's); nibabel stubbed (imported, unused); np.bool = bool. Rows: (loss, case, hp, value).
REGION_WISE = [
    ('region_wise', 'small', {'map': 'rrw'}, 0.040836695581674576),
    ('rw_boundary', 'small', {}, -0.03299928456544876),
    ('region_wise', 'binary', {'map': 'rrw'}, -0.012719889171421528),
    ('rw_boundary', 'binary', {}, -0.6139534115791321),
    ('region_wise', 'wide', {'map': 'rrw'}, 0.05064772069454193),
    ('rw_boundary', 'wide', {}, 0.03508120775222778),
]

# ---- hausdorff: Karimi & Salcudean released no code. PatRyg99/HausdorffLoss@96266b5743d32222b809e5b4c31065bda013e3a6,
# hausdorff_loss.py, HausdorffDTLoss(alpha) / HausdorffERLoss(alpha, erosions=10) per class channel
# (softmax[:, k:k+1] against (target == k)[:, None]), averaged over the foreground classes (or all), run by
# docs/fidelity/harness/boundary_b_hausdorff.py. Shim: the module's scipy convolve returns an ndarray subclass with
# .ptp() (removed from ndarray in NumPy 2). Rows: (loss, case, raysweep hp, value).
HAUSDORFF = [
    ('hausdorff', 'small', {'variant': 'dt', 'alpha': 2.0, 'include_background': False}, 0.47318317492802936),
    ('hausdorff', 'small', {'variant': 'dt', 'alpha': 2.0, 'include_background': True}, 0.4750012755393982),
    ('hausdorff', 'small', {'variant': 'dt', 'alpha': 1.5, 'include_background': False}, 0.3446197311083476),
    ('hausdorff', 'small', {'variant': 'dt', 'alpha': 1.5, 'include_background': True}, 0.3481713980436325),
    ('hausdorff', 'small', {'variant': 'erosion', 'alpha': 2.0, 'include_background': False}, 0.00396052577222387),
    ('hausdorff', 'small', {'variant': 'erosion', 'alpha': 2.0, 'include_background': True}, 0.004357865429483354),
    ('hausdorff', 'small', {'variant': 'erosion', 'alpha': 1.5, 'include_background': False}, 0.0037698399585982165),
    ('hausdorff', 'small', {'variant': 'erosion', 'alpha': 1.5, 'include_background': True}, 0.004214851069264114),
    ('hausdorff', 'binary', {'variant': 'dt', 'alpha': 2.0, 'include_background': False}, 0.4656999409198761),
    ('hausdorff', 'binary', {'variant': 'dt', 'alpha': 2.0, 'include_background': True}, 0.4656999409198761),
    ('hausdorff', 'binary', {'variant': 'dt', 'alpha': 1.5, 'include_background': False}, 0.36737126111984253),
    ('hausdorff', 'binary', {'variant': 'dt', 'alpha': 1.5, 'include_background': True}, 0.36737126111984253),
    ('hausdorff', 'binary', {'variant': 'erosion', 'alpha': 2.0, 'include_background': False}, 0.008848169818520546),
    ('hausdorff', 'binary', {'variant': 'erosion', 'alpha': 2.0, 'include_background': True}, 0.008848170284181833),
    ('hausdorff', 'binary', {'variant': 'erosion', 'alpha': 1.5, 'include_background': False}, 0.00827611144632101),
    ('hausdorff', 'binary', {'variant': 'erosion', 'alpha': 1.5, 'include_background': True}, 0.008276112843304873),
    ('hausdorff', 'wide', {'variant': 'dt', 'alpha': 2.0, 'include_background': False}, 0.5665538311004639),
    ('hausdorff', 'wide', {'variant': 'dt', 'alpha': 2.0, 'include_background': True}, 0.5430767774581909),
    ('hausdorff', 'wide', {'variant': 'dt', 'alpha': 1.5, 'include_background': False}, 0.3715893477201462),
    ('hausdorff', 'wide', {'variant': 'dt', 'alpha': 1.5, 'include_background': True}, 0.36114087104797366),
    ('hausdorff', 'wide', {'variant': 'erosion', 'alpha': 2.0, 'include_background': False}, 0.0041926533449441195),
    ('hausdorff', 'wide', {'variant': 'erosion', 'alpha': 2.0, 'include_background': True}, 0.003929350757971406),
    ('hausdorff', 'wide', {'variant': 'erosion', 'alpha': 1.5, 'include_background': False}, 0.0040019675507210195),
    ('hausdorff', 'wide', {'variant': 'erosion', 'alpha': 1.5, 'include_background': True}, 0.003776802122592926),
]

# ---- inverseform: Qualcomm-AI-research/InverseForm@d5fec5b065c9a3c7afab48db84071fc3537bad7a, models/loss/utils.py,
# JointEdgeSegLoss.bce2d (edge BCE) and InverseTransform2D (InverseForm term) on raysweep's edge maps given as edge
# logits, with the seeded InverseNet weights of seeded_inversenet_state (their checkpoint is not downloadable), run by
# docs/fidelity/harness/boundary_b_inverseform.py. 'inverse_form_fixed': their first line
# ``inputs = F.log_softmax(inputs)`` (identically 0 on one channel) replaced by the sigmoid; 'inverse_form_released':
# the line as released, on the prediction and on a prediction shifted by 5 pixels (the same value: no dependence on
# the prediction). Shims: Tensor.cuda / Module.cuda return self; runx.logx stubbed. Rows: (loss, case, term, value).
INVERSEFORM = [
    ('inverseform', 'small', 'edge_bce', 0.20255610346794128),
    ('inverseform', 'small', 'inverse_form_fixed', 0.1049351692199707),
    ('inverseform', 'small', 'inverse_form_released', 0.1520795226097107),
    ('inverseform', 'small', 'inverse_form_released_shifted_prediction', 0.1520795226097107),
    ('inverseform', 'binary', 'edge_bce', 0.25912755727767944),
    ('inverseform', 'binary', 'inverse_form_fixed', 0.10941584408283234),
    ('inverseform', 'binary', 'inverse_form_released', 0.14589092135429382),
    ('inverseform', 'binary', 'inverse_form_released_shifted_prediction', 0.14589092135429382),
    ('inverseform', 'wide', 'edge_bce', 0.19890505075454712),
    ('inverseform', 'wide', 'inverse_form_fixed', 0.10347722470760345),
    ('inverseform', 'wide', 'inverse_form_released', 0.15582682192325592),
    ('inverseform', 'wide', 'inverse_form_released_shifted_prediction', 0.15582682192325592),
]


# ---------------------------------------------------------------------------------------------------- boundary


@pytest.mark.parametrize("epoch, schedule, w_region, w_boundary", BOUNDARY_SCHEDULE)
def test_boundary_schedule_is_their_scheduler(epoch, schedule, w_region, w_boundary):
    loss = build_loss("boundary", schedule=schedule)
    loss.set_epoch(epoch)
    assert loss.weights() == pytest.approx((w_region, w_boundary), rel=1e-9)


@pytest.mark.parametrize("term, case, epoch, theirs", BOUNDARY)
def test_boundary_matches_liviaets(term, case, epoch, theirs):
    from raysweep.losses._functional import check_inputs

    logits, target = case_inputs(case)
    if term == "total":
        loss = build_loss("boundary")
        loss.set_epoch(epoch)
        ours = loss(logits, target)
    elif term == "surface":
        loss = build_loss("boundary")
        ours = loss.boundary_term(logits, check_inputs(logits, target, 255))
        assert rel(float(build_loss("region_wise", map="signed_distance")(logits, target)), theirs) < RTOL
    else:  # the region term the boundary loss builds (per image, smooth 1e-10)
        region = "generalized_dice" if term == "gdl" else "dice"
        ours = build_loss("boundary", region=region).region_loss(logits, target)
    assert rel(float(ours), theirs) < RTOL


# ---------------------------------------------------------------------------------------------------- boundary_dou


@pytest.mark.parametrize("loss_name, case, hp, theirs", BOUNDARY_DOU)
def test_boundary_dou_matches_authors(loss_name, case, hp, theirs):
    logits, target = case_inputs(case)
    ours = float(build_loss(loss_name, **hp)(logits, target))
    if case == "small_absent":
        # Deliberate difference: their absent class 3 scores the constant 1; ours scores z / (z + 1), z = sum p_3^2.
        z = float(logits.softmax(1)[:, 3].square().sum())
        theirs = theirs - (1.0 - z / (z + 1.0)) / logits.shape[1]
    assert rel(ours, theirs) < RTOL


# ---------------------------------------------------------------------------------------------------- region_wise


@pytest.mark.parametrize("loss_name, case, hp, theirs", [r for r in REGION_WISE if r[0] == "region_wise"])
def test_region_wise_matches_authors(loss_name, case, hp, theirs):
    logits, target = case_inputs(case)
    assert rel(float(build_loss(loss_name, **hp)(logits, target)), theirs) < RTOL


# ---------------------------------------------------------------------------------------------------- hausdorff


@pytest.mark.parametrize("loss_name, case, hp, theirs", HAUSDORFF)
def test_hausdorff_matches_patryg99(loss_name, case, hp, theirs):
    logits, target = case_inputs(case)
    assert rel(float(build_loss(loss_name, **hp)(logits, target)), theirs) < RTOL


# ---------------------------------------------------------------------------------------------------- inverseform


def seeded_inversenet_state(seed: int = 0, tile: int = 224) -> dict:
    """The weights of docs/fidelity/harness/boundary_b_inverseform.py (their MLP, uniform +-1/sqrt(fan_in))."""
    rs = np.random.RandomState(seed)
    state = {}
    for i, (fan_in, fan_out) in zip((0, 2, 4), ((tile * tile * 2, 1000), (1000, 32), (32, 4))):
        bound = 1.0 / np.sqrt(fan_in)
        w = np.empty((fan_out, fan_in), np.float32)
        for r in range(0, fan_out, 64):
            w[r:r + 64] = (rs.random_sample((min(64, fan_out - r), fan_in)) * 2 - 1) * bound
        state[f"fc.{i}.weight"] = torch.from_numpy(w)
        state[f"fc.{i}.bias"] = torch.from_numpy(((rs.random_sample(fan_out) * 2 - 1) * bound).astype(np.float32))
    return state


@pytest.fixture(scope="module")
def seeded_official_net():
    from raysweep.losses.boundary.inverseform import OfficialInverseNet

    net = OfficialInverseNet(tile=224)
    net.load_state_dict(seeded_inversenet_state())
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def test_inverseform_released_term_is_constant():
    """The recorded released values do not depend on the prediction (the bug the fix removes)."""
    released = {(c, t): v for _, c, t, v in INVERSEFORM if t.startswith("inverse_form_released")}
    for case in CASES:
        assert released[case, "inverse_form_released"] == released[case, "inverse_form_released_shifted_prediction"]


@pytest.mark.parametrize("case", list(CASES))
def test_inverseform_matches_authors_with_the_line_fixed(case, seeded_official_net, monkeypatch):
    import raysweep.losses.boundary.inverseform as inv
    from raysweep.losses._functional import check_inputs, onehot

    monkeypatch.setattr(inv, "load_inversenet", lambda name: seeded_official_net)
    theirs = {t: v for _, c, t, v in INVERSEFORM if c == case}
    logits, target = case_inputs(case)
    loss = build_loss("inverseform", beta=0.3, gamma=0.3, grid=(3, 6))  # their edge and InverseForm weights, tiles
    t = check_inputs(logits, target, 255)
    with torch.no_grad():
        l_if = loss.inverse_form(inv.soft_edges(logits.softmax(1)), inv.soft_edges(onehot(t)))
    assert rel(float(l_if), theirs["inverse_form_fixed"]) < RTOL
    ce = np_cross_entropy(logits.numpy().astype(np.float64), target.numpy())
    expected = ce + 0.3 * theirs["edge_bce"] + 0.3 * theirs["inverse_form_fixed"]
    assert rel(float(loss(logits, target)), expected) < RTOL


# ---------------------------------------------------------------------------------------------------- boundary_aware


def hayder_reference(logits, target, aux, truncation, num_bins):
    """Hayder et al.'s loss from the paper, per pixel: ``D(p) = min(ceil(min_q d(p, q)), R)`` with ``Q`` the pixels of
    other classes (raysweep's reading, see BoundaryAwareLoss), ``K`` uniform bins over ``[1, R]``, one binary
    cross-entropy per bin averaged over the bins and pixels; plus the segmentation cross-entropy."""
    b, _, h, w = logits.shape
    yy, xx = np.mgrid[:h, :w]
    coords = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    bins = np.zeros((b, h * w), np.int64)
    for i in range(b):
        lab = target[i].ravel()
        for k in np.unique(lab):
            inside, outside = lab == k, lab != k
            if outside.any():
                d = np.sqrt(((coords[inside, None, :] - coords[None, outside, :]) ** 2).sum(-1)).min(1)
                dist = np.minimum(np.ceil(d), truncation)
            else:  # the class fills the image: no boundary, the last bin
                dist = np.full(inside.sum(), truncation)
            bins[i, inside] = np.minimum(np.floor((dist - 1) / (truncation - 1) * num_bins), num_bins - 1)
    x = aux.reshape(b, num_bins, h * w)
    y = (bins[:, None, :] == np.arange(num_bins)[None, :, None]).astype(np.float64)
    bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    return np_cross_entropy(logits, target) + bce.mean()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("truncation, num_bins", [(10.0, 5), (4.0, 3), (6.5, 4)])
def test_boundary_aware_matches_paper_equation(case, truncation, num_bins):
    logits, target = fidelity_inputs(**CASES[case])
    b, _, h, w = logits.shape
    aux = np.random.RandomState(100).standard_normal((b, num_bins, h, w)) * 2.0
    expected = hayder_reference(logits, target, aux, truncation, num_bins)
    loss = build_loss("boundary_aware", truncation=truncation, num_bins=num_bins, weight=1.0)
    ours = loss(torch.from_numpy(logits).float(), torch.from_numpy(target),
                aux_logits=torch.from_numpy(aux).float())
    assert rel(float(ours), expected) < RTOL
