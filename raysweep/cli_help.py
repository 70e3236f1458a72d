"""The long ``--help`` texts (epilogs) of the command line, apart so that :mod:`raysweep.cli` reads as its
parser. Plain strings: importing this costs nothing."""

COMPARE_NUMBERS = """\
Each sweep's cell (dataset/arch) is ranked as its report ranks it: confirmation runs only, the mean primary
metric over each loss's ranked runs, best first. Only cells ranked in both sweeps, and in them only losses
ranked in both, are compared. Per cell:

  Losses            losses ranked in both sweeps (the others are listed, not compared)
  Kendall tau-b     rank correlation of the two sweeps' mean primary metrics (scipy.stats.kendalltau, tau-b:
                    ties counted): +1 same order, -1 reversed order, about 0 unrelated
  p(tau)            p-value of the test tau = 0 (few losses: weak evidence either way)
  Top-3 overlap     k/3: how many of A's 3 best losses are among B's 3 best
  Winners agree     yes when both sweeps have the same best loss
  B's winner in A's top group
                    yes when A's own data cannot separate B's winner from A's best (A's pairwise test, see
                    Test A, Holm-corrected, alpha 0.05); "-" when A has no per-case scores
  A's winner in B's top group
                    the same the other way round; two "yes" mean differing winners do not contradict each other
  Claims replicated / Claims open / Claims contradicted
                    a sweep's claims are the pairs of losses its own report declares different (Holm-corrected
                    over all pairs of its ranked losses, alpha 0.05). Over the pairs of losses ranked in both,
                    each pair claimed by either sweep is replicated (the other claims it the same way), open (the
                    other declares no difference) or contradicted (the other claims the opposite direction; each
                    is listed below the table, e.g. "A: Dice > Focal, B: Focal > Dice"); "-" when a sweep is
                    not tested
  Test A / Test B   the test each sweep's claims come from: the replicate-aware t-test, the Wilcoxon signed-rank
                    test on cases only (one replicate per loss: tuning and training variance not in the test), or
                    "not tested" (no paired per-case scores)

Writes a self-contained HTML page (default compare.html in the current folder) and prints the table.

Exit status: 0 on success; 2 on an error (a folder without results, no cell ranked in both);
3 with --fail-on-contradiction when some compared cell has a contradicted claim (the output is printed
first, then one line on stderr naming the cells and the count).
"""


EXPORT_HELP = """\
What is exported: the confirmed configuration of a loss in one cell (dataset/arch) of a sweep, i.e. the params of
its ranked confirmation runs (the runs the report ranks), with the companion term and its tuned companion_weight
when the sweep's pairing added one (objective: loss + companion_weight * companion).

Defaults: --cell, the sweep's only cell (several: an error lists them); --loss, the cell's winner as the report
ranks it; --replicate, the loss's replicate with the best mean primary metric (the output says which).

--to python prints the build_loss(...) code (or writes it to -o FILE).
--to nnunet writes nnUNetTrainer_raysweep_<loss>.py (to -o FOLDER or FILE.py; default the current folder): an
nnU-Net v2 trainer whose _build_loss returns the loss behind nnU-Net's deep-supervision wrapper (nnU-Net's
weights), with nnU-Net's target (B, 1, [D,] H, W) and ignore label mapped to raysweep's (B, [D,] H, W) int64 and
255. It trains the 2d configuration with every loss, and the 3-D ones (3d_fullres, 3d_lowres, 3d_cascade_fullres)
when the loss and its companion take 3-D input (a 2-D-only loss stops there with an error naming why). Losses that
need decoder features or auxiliary logits are refused. Put it where nnU-Net finds trainers, then train:

  cp nnUNetTrainer_raysweep_<loss>.py \\
    "$(python -c "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))")/training/nnUNetTrainer/"
  nnUNetv2_train DATASET 2d FOLD -tr nnUNetTrainer_raysweep_<loss>
  nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainer_raysweep_<loss>    # a loss that takes 3-D input

Exit status 2 on an error (no results, an unknown cell/loss/replicate, no confirmation runs, a refused loss).
"""


MERGE_HELP = """\
For a sweep too long for one sitting or one machine: run it in parts, one cell each, with the same config, then
merge them. For example:

  raysweep run --config configs/default.yaml --arch cnn --out results/default-cnn
  raysweep run --config configs/default.yaml --arch transformer --out results/default-transformer
  raysweep merge results/default-cnn results/default-transformer --out results/default

The merged results/ holds one Parquet file per table and a sweep.json whose config has every part's cells, whose
wall_s is the parts' time added up and whose `parts` lists each part (its sweep_id, cells and times). A cell's
seeds do not depend on which other cells run beside it, so the merge scores what one whole run scores.

Exit status 2 on an error (fewer than two parts, a part without results, configs that differ in anything but the
cells, a cell or trial in two parts, a non-empty --out/results); nothing is written then.
"""
