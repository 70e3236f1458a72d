"""The registry, build_loss, input validation, the catalogue and the `raysweep losses` command."""

import json
from pathlib import Path

import pytest
import torch

from conftest import extras_for, make_batch
from raysweep import catalogue, cli
from raysweep.losses import FAMILIES, EXTRA_INPUTS, LOSSES, Categorical, Float, Int, LossSpec, build_loss

# Every loss test may build "inverseform", which needs an InverseNet in the cache.
pytestmark = pytest.mark.usefixtures("inversenet_cache")

SURVEY = {
    "pixel": {"ce", "wce", "topk", "focal", "dmce"},
    "region": {"dice", "log_cosh_dice", "gwdl", "jaccard", "lovasz", "tversky", "focal_tversky", "sens_spec", "rmi",
               "t_loss"},
    "boundary": {"boundary", "hausdorff", "boundary_aware", "active_boundary", "inverseform", "conditional_boundary",
                 "boundary_dou", "region_wise"},
    "combination": {"combo", "exp_log", "unified_focal"},
}
def test_registry_has_all_25_survey_losses_and_two_baselines():
    for family, names in SURVEY.items():
        for name in names:
            assert LOSSES[name].family == family and LOSSES[name].in_survey, name
    assert not LOSSES["generalized_dice"].in_survey and not LOSSES["dice_ce"].in_survey
    assert set(LOSSES) == set().union(*SURVEY.values()) | {"generalized_dice", "dice_ce"}
    # The survey folds weighted CE into CE: 26 registry names for its 25 losses.
    assert sum(s.in_survey for s in LOSSES.values()) == 26


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_spec_is_coherent(name):
    spec = LOSSES[name]
    assert isinstance(spec, LossSpec) and spec.name == name and spec.family in FAMILIES
    assert spec.title and spec.reference and spec.summary
    assert spec.needs <= set(EXTRA_INPUTS)
    for key, dim in spec.space.items():
        assert isinstance(dim, (Float, Int, Categorical))
        assert dim.contains(spec.defaults[key]), (key, spec.defaults[key], dim)
    # The defaults build a working module, and every corner of the space is accepted.
    assert isinstance(build_loss(name), torch.nn.Module)
    for key, dim in spec.space.items():
        for value in (dim.choices if isinstance(dim, Categorical) else (dim.low, dim.high)):
            build_loss(name, **{key: value})
    json.dumps(spec.to_dict())


def test_log_scale_where_the_literature_uses_it():
    assert LOSSES["topk"].space["k"].log
    assert LOSSES["dice"].space["smooth"].log
    assert not LOSSES["tversky"].space["alpha"].log


def test_build_loss_rejects_unknown_names_and_hyperparameters():
    with pytest.raises(ValueError, match="unknown loss 'dicee'.*did you mean 'dice'"):
        build_loss("dicee")
    with pytest.raises(ValueError, match="no hyperparameter.*gamma.*valid ones: alpha, beta"):
        build_loss("tversky", gamma=2.0)


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("tversky", {"alpha": -0.1}, "alpha must be a number in"),
        ("tversky", {"alpha": 0.0, "beta": 0.0}, "cannot both be 0"),
        ("topk", {"k": 0}, "k must be a number in \\(0, 100\\]"),
        ("focal", {"gamma": float("nan")}, "gamma"),
        ("dice", {"per_image": "yes"}, "per_image must be True or False"),
        ("wce", {"weighting": "magic"}, "weighting must be one of"),
        ("wce", {"class_weights": [1.0, -1.0]}, "class_weights"),
        ("gwdl", {"cost_matrix": [[0, 1], [1, 0], [1, 1]]}, "square"),
        ("gwdl", {"cost_matrix": [[1, 1], [1, 0]]}, "zero diagonal"),
        ("rmi", {"radius": 0}, "radius"),
        ("unified_focal", {"gamma": 1.5}, "gamma"),
        ("t_loss", {"nu": 0.0}, "nu"),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(name, kw, match):
    with pytest.raises(ValueError, match=match):
        build_loss(name, **kw)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda l, t: (l[:, :, 0], t), "logits must be \\(B, C, H, W\\)"),
        (lambda l, t: (l, t.float()), "int64"),
        (lambda l, t: (l, t.unsqueeze(1)), "squeeze the channel"),
        (lambda l, t: (l, t[:, :-1]), "does not match"),
        (lambda l, t: (l, t.masked_fill(t == 1, 7)), "labels \\[7\\] outside \\[0, 3\\]"),
        (lambda l, t: (l, t.masked_fill(t == 1, -1)), "labels \\[-1\\]"),
        (lambda l, t: (l.masked_fill(t.unsqueeze(1) == 2, float("nan")), t), "NaN or inf"),
        (lambda l, t: (l.long(), t), "floating-point"),
        # further shapes, dtypes and values
        (lambda l, t: (l.unsqueeze(2), t), "2-D and 3-D inputs cannot be mixed|takes 2-D input only"),
        (lambda l, t: (l[:, :, None, None], t), "logits must be \\(B, C, H, W\\) or \\(B, C, D, H, W\\), got shape "
                                                "\\(2, 4, 1, 1, 12, 12\\)"),
        (lambda l, t: (l, t[:1]), "target shape \\(1, 12, 12\\) does not match logits"),
        (lambda l, t: (l, t.int()), "int64 class indices, got torch.int32"),
        (lambda l, t: (l, t.masked_fill(t == 255, 0).to(torch.uint8)), "int64 class indices, got torch.uint8"),
        (lambda l, t: (l, t.masked_fill(t == 1, 4)), "labels \\[4\\] outside \\[0, 3\\] for 4 classes"),
        (lambda l, t: (l, t.masked_fill(t == 1, 254)), "labels \\[254\\] outside .* ignore_index=255"),
        (lambda l, t: (l.masked_fill(t.unsqueeze(1) == 2, float("inf")), t), "NaN or inf"),
        (lambda l, t: (l.masked_fill(t.unsqueeze(1) == 2, -float("inf")), t), "NaN or inf"),
        (lambda l, t: (l > 0, t), "floating-point"),
        (lambda l, t: (l.numpy(), t), "must be torch tensors"),
    ],
)
def test_bad_inputs_raise_clear_errors(mutate, match):
    logits, target = make_batch()
    for name in LOSSES:
        with pytest.raises(ValueError, match=match):
            build_loss(name)(*mutate(logits, target), **extras_for(name, logits))


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("wce", {"class_weights": [1.0, 2.0]}, "class_weights has 2 entries but the logits have 4 classes"),
        ("wce", {"class_frequencies": [1.0, 2.0, 3.0, 4.0, 5.0]}, "class_frequencies has 5 entries"),
        ("exp_log", {"class_frequencies": [1.0, 2.0]}, "class_frequencies has 2 entries"),
        ("focal", {"alpha": [0.5, 0.5]}, "alpha has 2 entries but the logits have 4 classes"),
        ("gwdl", {"cost_matrix": [[0, 1], [1, 0]]}, "cost_matrix is \\(2, 2\\) but the logits have 4 classes"),
        ("unified_focal", {"background_index": 7}, "background_index=7 but the logits have 4 classes"),
        ("boundary_aware", {"num_bins": 3}, "aux_logits has shape \\(2, 5, 12, 12\\), expected \\(2, 3, 12, 12\\)"),
    ],
)
def test_per_class_parameters_must_match_the_channels(name, kw, match):
    logits, target = make_batch()  # 4 classes; the extras are built for the loss's default parameters
    with pytest.raises(ValueError, match=match):
        build_loss(name, **kw)(logits, target, **extras_for(name, logits))


def _needed_extras(name, logits, target):
    """Every extra input ``name`` uses, valid: precomputed distance maps plus the model outputs of extras_for."""
    from raysweep.losses.maps import batch_signed_distance

    out = extras_for(name, logits)
    if "dist_map" in LOSSES[name].needs:
        out["dist_map"] = batch_signed_distance(target, logits.shape[1])
    return out


_WITH_EXTRAS = sorted((n, key) for n, s in LOSSES.items() for key in s.needs)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda v: v[:1], "logits' batch size B=2"),
        (lambda v: v[:, 0], "expected a 4-D"),
        (lambda v: v.unsqueeze(0), "expected a 4-D"),
        (lambda v: v.tolist(), "must be a torch tensor"),
        (lambda v: v.long(), "must be a floating-point tensor"),
        (lambda v: v.index_fill(2, torch.tensor([0]), float("nan")), "contains NaN or inf"),
        (lambda v: v.index_fill(3, torch.tensor([1]), float("inf")), "contains NaN or inf"),
    ],
)
def test_bad_extra_inputs_raise_clear_errors(mutate, match):
    """Every loss that needs an extra input (dist_map, features, aux_logits) rejects a broken one by name."""
    assert {key for _, key in _WITH_EXTRAS} == {"dist_map", "features", "aux_logits"}
    logits, target = make_batch()
    for name, key in _WITH_EXTRAS:
        extras = _needed_extras(name, logits, target)
        assert torch.isfinite(build_loss(name)(logits, target, **extras)), name  # the valid extras pass
        extras[key] = mutate(extras[key])
        with pytest.raises(ValueError, match=f"{key}.*{match}"):
            build_loss(name)(logits, target, **extras)


def test_full_shape_of_extra_inputs_is_checked_by_the_losses_that_need_them():
    logits, target = make_batch()
    for name in sorted(n for n, s in LOSSES.items() if "dist_map" in s.needs):
        extras = _needed_extras(name, logits, target)
        extras["dist_map"] = extras["dist_map"][:, :3]  # one class short
        with pytest.raises(ValueError, match="dist_map has shape \\(2, 3, 12, 12\\), expected \\(2, 4, 12, 12\\)"):
            build_loss(name)(logits, target, **extras)


def test_unknown_extra_input_is_rejected_and_known_ones_pass_through():
    logits, target = make_batch()
    with pytest.raises(ValueError, match="unknown extra input"):
        build_loss("dice")(logits, target, dist_mpa=torch.zeros_like(logits))
    # A loss that needs no maps accepts them, so a trainer can pass the same extras to every loss.
    assert torch.isfinite(build_loss("dice")(logits, target, dist_map=torch.zeros_like(logits)))


def test_ignore_index_none_and_custom():
    logits, target = make_batch(ignore_frac=0)
    a = build_loss("dice", ignore_index=None)(logits, target)
    b = build_loss("dice")(logits, target)
    assert torch.allclose(a, b)
    t = target.clone()
    t[:, :3] = -100
    assert torch.isfinite(build_loss("ce", ignore_index=-100)(logits, t))
    with pytest.raises(ValueError, match="outside"):
        build_loss("ce")(logits, t)


ROOT = Path(__file__).resolve().parent.parent


def test_docs_catalogue_fidelity_and_schema_are_generated_from_the_code():
    """Each generated block lives in exactly one page under docs/ and equals what the code generates now; the
    README's copies, while it still has them, too."""
    blocks = catalogue.generated_blocks()
    found = catalogue.find_blocks(ROOT / "docs")
    for name, body in blocks.items():
        assert len(found[name]) == 1, f"block {name!r} must be in exactly one docs page, found in {found[name]}"
        page, block = found[name][0]
        assert block == body.strip(), f"{page.name}: block {name!r} is stale: run `make docs-blocks`"
    for name, occurrences in catalogue.find_blocks(ROOT / "README.md").items():
        for _, block in occurrences:
            assert block == blocks[name].strip(), f"README.md: block {name!r} is stale: run `make docs-blocks`"


def test_update_blocks_rewrites_only_stale_blocks_and_refuses_a_missing_one(tmp_path, capsys):
    pages = tmp_path / "docs"
    pages.mkdir()
    for name in ("losses.md", "results.md", "index.md"):
        (pages / name).write_text((ROOT / "docs" / name).read_text())
    losses = (pages / "losses.md").read_text()
    stale = losses.replace("| `tversky` | region |", "| `tversky` | pixel |")
    assert stale != losses
    (pages / "losses.md").write_text(stale)
    results = (pages / "results.md").read_bytes()
    assert catalogue.update_blocks(pages) == [pages / "losses.md"]
    assert (pages / "losses.md").read_text() == losses  # the stale row is regenerated, the rest kept
    assert (pages / "results.md").read_bytes() == results  # up to date: not rewritten
    assert catalogue.update_blocks(pages) == []
    # The CLI takes a folder (or one file); a set of files without one of the blocks is refused, nothing written.
    assert cli.main(["losses", "--update-readme", str(pages)]) == 0
    assert "already up to date" in capsys.readouterr().out
    (pages / "results.md").write_text("# Results\n")
    (pages / "losses.md").write_text(stale)
    with pytest.raises(ValueError, match="no block schema"):
        catalogue.update_blocks(pages)
    assert (pages / "losses.md").read_text() == stale
    # Markers written by the target's old name still match: only the body between them is replaced.
    old = pages / "old.md"
    old.write_text("<!-- schema:begin (generated by `make readme` from x; do not edit) -->\nold\n<!-- schema:end -->\n")
    catalogue.update_blocks(pages)
    assert old.read_text().startswith("<!-- schema:begin (generated by `make readme` from x; do not edit) -->\n\n")
    assert catalogue.find_blocks(old)["schema"][0][1] == catalogue.generated_blocks()["schema"].strip()


def test_cli_losses_text_and_json(capsys):
    assert cli.main(["losses"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LOSSES)
    assert cli.main(["losses", "--json", "--family", "region"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in data} == {n for n, s in LOSSES.items() if s.family == "region"}
    tv = next(d for d in data if d["name"] == "tversky")
    assert tv["defaults"]["alpha"] == 0.3 and tv["space"]["alpha"] == {"type": "float", "low": 0.05, "high": 1.0,
                                                                        "log": False}


def test_cli_reports_user_errors_without_traceback(capsys):
    assert cli.main(["losses", "--update-readme", "/nonexistent/README.md"]) == 2
    assert "error" in capsys.readouterr().err


def test_the_inverseform_preparation_makes_its_net_once_per_output_folder(tmp_path):
    """LossSpec.prepare: only the InverseForm loss has a step to run before a sweep's trials; it trains the net on
    the dataset's training masks once, keeps it in the output folder, and returns what the loss is built with."""
    from raysweep.data import build_dataset
    from raysweep.losses import Preparation

    assert {name for name, spec in LOSSES.items() if spec.prepare is not None} == {"inverseform"}
    built = []

    def train_split():
        built.append(1)
        return build_dataset("synthetic", "train", image_size=32, depth=4, num_volumes=2)

    step = Preparation(dataset="synthetic", train_split=train_split, out_dir=tmp_path, seed=0, progress=False)
    out = LOSSES["inverseform"].prepare(step)
    assert out == {"inversenet": str(tmp_path / "inversenet" / "synthetic.pt")} and Path(out["inversenet"]).is_file()
    logits, target = torch.randn(2, 4, 32, 32), torch.randint(0, 4, (2, 32, 32))
    assert torch.isfinite(build_loss("inverseform", **out)(logits, target))
    assert LOSSES["inverseform"].prepare(step) == out and built == [1]  # found again: the split is not even built
