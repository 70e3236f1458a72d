# raysweep: every target sets itself up. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.raysweep-installed
PYTEST_ARGS ?=
# OpenMP threads that spin while waiting make torch ~10x slower on a busy 2-core machine; passive waiting fixes it.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install run quick example-3d test bench docs docs-blocks readme schema bundle install-offline plan clean

# (Re)install when pyproject.toml changes. `pip install -e .[test]` brings torch, Ray, Optuna, smp and the test-only
# oracles (MONAI, kornia, medpy).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## The main job: the default sweep on the embedded synthetic data, then the report (reports/default.html).
run: $(STAMP)
	$(BIN)/raysweep run

## The same design made smaller (configs/quick.yaml: 3 replicates of 100 steps), a first look in under half an hour.
quick: $(STAMP)
	$(BIN)/raysweep run --config configs/quick.yaml

## The 3-D worked example (README, "3-D"): a toy nnU-Net dataset of volumes, then a MONAI 3-D U-Net sweep on patches.
TOY3D := data/Dataset901_Toy3D
example-3d: $(STAMP)
	test -f $(TOY3D)/dataset.json || $(BIN)/python -c "from raysweep.data.examples import write_nnunet_example as w; \
		w('$(TOY3D)', num_training=12, num_test=12, size=64, depth=32)"
	$(BIN)/raysweep run --config configs/nnunet-3d-example.yaml --out results/nnunet-3d -o reports/nnunet-3d.html

## The test suite (what .ci/run calls).
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## Benchmarks (docs/benchmarks.md); BENCH_ARGS=--quick for a short run. Tables also land in benchmarks/results/.
## benchmarks.losses includes its 3-D rows (2x4x64^3 against MONAI's 3-D losses: about 3 min on a busy 2-core
## CPU); `python -m benchmarks.losses --dims 3` runs them alone.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m benchmarks.losses $(BENCH_ARGS) --out benchmarks/results/losses.md
	$(BIN)/python -m benchmarks.maps $(BENCH_ARGS) --out benchmarks/results/maps.md
	$(BIN)/python -m benchmarks.loss_step $(BENCH_ARGS) --out benchmarks/results/loss_step.md
	$(BIN)/python -m benchmarks.data $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.train $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.pack $(BENCH_ARGS)

## The documentation site (mkdocs.yml, pages in docs/) into site/; --strict: a broken link, anchor or API reference
## fails. The docs extra (mkdocs-material, mkdocstrings) is installed into the venv the first time.
DOCS_STAMP := $(VENV)/.raysweep-docs-installed
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict -d site

## Regenerate the docs' generated blocks from the code: the loss catalogue and the Fidelity table (docs/losses.md),
## the results schema (docs/results.md).
docs-blocks: $(STAMP)
	$(BIN)/raysweep losses --update-readme docs

readme: docs-blocks  # the target's old name

## Regenerate the config JSON Schemas (docs/schema/) from the config models; editors complete the YAML with them.
schema: $(STAMP)
	$(BIN)/raysweep schema -o docs/schema/sweep-config.schema.json
	$(BIN)/raysweep schema --trial -o docs/schema/trial-config.schema.json

## Offline install (docs/cluster.md, "Offline install and GPU planning"): the wheels a target image lacks, for its
## Python and platform(s) (comma-separated tags); TARGET_PACKAGES = its `pip freeze`; SLIM_RAY=1 repacks Ray without
## jars, rllib and dashboard source maps and writes bundle.tar.xz. install-offline runs on the target, without an index.
PY ?= 3.11
PLATFORM ?= manylinux_2_28_x86_64
TARGET_PACKAGES ?=
SLIM_RAY ?=
BUNDLE ?= bundle
bundle: $(STAMP)
	$(BIN)/python scripts/bundle.py build --python $(PY) --platform $(PLATFORM) \
		$(if $(TARGET_PACKAGES),--target-packages $(TARGET_PACKAGES)) $(if $(SLIM_RAY),--slim-ray --xz)

install-offline:
	$(PYTHON) scripts/bundle.py install $(BUNDLE) --python $(PYTHON)

## Expected trials, steps and GPU-hours of a sweep: make plan CONFIG=configs/synapse.yaml PLAN_ARGS='--gpus 1'.
CONFIG ?= configs/default.yaml
PLAN_ARGS ?=
plan: $(STAMP)
	$(BIN)/raysweep plan --config $(CONFIG) $(PLAN_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache site
