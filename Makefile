# Two entry points: `make run` (demo workflow end to end) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
SNAKEMAKE_ARGS ?=
# Three pytest workers on two cores (the SLURM tests mostly wait on the cluster), whole test
# files each, longest files first (tests/conftest.py: SLOWEST_FIRST).
PYTEST_ARGS ?= -n 3 --dist loadfile --no-loadscope-reorder

.PHONY: venv run test lint format bench clean

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

test: venv
	$(MAKE) lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt Snakefile workflow/rules

bench: venv
	$(BIN)/python bench/gc_overhead.py
	$(BIN)/python bench/preprocess_scaling.py
	$(BIN)/python bench/preprocess_incremental.py
	$(BIN)/python bench/job_startup.py
	$(BIN)/python bench/dataset_scan.py
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf runs .snakemake report.html
