"""Where every artifact of a run lives: one class, :class:`Layout`, asked by the workflow.

Plain run (no ``sweep``, ``cv.n_repeats: 1``, no ``cv.outer_splits``): everything under
``runs/<exp>/`` (``data/``, ``splits.parquet``, ``fold_<k>/``, ``kfold_results.feather``).
The other layouts only add levels:

- **sweep**: each variant's own outputs (train, results) under ``runs/<exp>/<variant>/``; the
  upstream stages under ``runs/<exp>/shared/<stage>_<key>/``, keyed by the config they depend
  on (:func:`fvc.sweep.stage_keys`), so variants with equal keys share one job;
- **repeats** (``cv.n_repeats`` > 1): per-fold paths and splits gain ``repeat_<r>/``;
- **nested** (``cv.outer_splits`` N >= 2): the run above stays as it is (the plain sweep that
  selects and refits the model to deploy), and the usable videos are split once more into N
  outer folds (``<load root>/outer_splits.parquet``). Each outer fold ``o`` holds a complete
  cross-validation of the layout above on its training part, rooted at ``runs/<exp>/outer_<o>/``
  (inner splits, augmentation, trained folds, results), the selected variant's refit
  (``[<variant>/]final/``) and the scored outer test part; loading and decoding stay shared at
  the run level (no decode per outer fold). :meth:`Layout.inner` is that layout.

Patterns carry Snakemake wildcards (``{variant}``, ``{load_key}``, ``{decode_key}``,
``{augment_key}``, ``{outer}``, ``{repeat}``, ``{fold}``); :meth:`Layout.fill` turns a pattern
into the concrete path of one variant. Stage names: ``load`` (metadata), ``decode`` (clips),
``split`` (folds), ``augment``, ``variant`` (train and results).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fvc import sweep

#: Stages whose folder is the run's (loading and decoding are shared by the outer folds).
RUN_STAGES = ("load", "decode")
#: Stages whose folder is the scope's: the run, or one outer fold of a nested run.
SCOPE_STAGES = ("split", "augment", "variant")
#: The stage key a shared stage's folder is named by (split shares decode's key).
KEY_OF_STAGE = {"load": "load", "decode": "decode", "split": "decode", "augment": "augment"}


def write_record(layout: Layout, path: str) -> None:
    """Write ``layout``'s record (:meth:`Layout.record`) to ``path`` unless it holds it."""
    from fvc.io import write_json

    record = layout.record()
    try:
        if json.loads(Path(path).read_text()) == record:
            return
    except (OSError, ValueError):
        pass
    write_json(path, record)


def alternatives(values: Any) -> str:
    """A regex that matches exactly one of ``values`` (a wildcard constraint)."""
    return "|".join(re.escape(str(v)) for v in values)


@dataclass(frozen=True)
class Layout:
    """Every path of one run. Build it with :meth:`from_variants`."""

    run: str  # runs/<experiment>
    keys: Mapping[str, Mapping[str, str]]  # variant -> stage -> key, base first
    trained_by: Mapping[str, str]  # variant -> the variant whose trained folds it uses
    n_splits: int
    n_repeats: int = 1
    outer_splits: int = 0
    sweep: bool = False
    inner: bool = False  # the layout of the outer folds' inner cross-validations
    demo_dir: str = "runs/demo_data"
    _first_of_key: dict[str, dict[str, str]] = field(default_factory=dict, compare=False)

    @classmethod
    def from_variants(
        cls,
        experiment: str,
        variants: Mapping[str, Mapping[str, Any]],
        cv: Mapping[str, Any],
        *,
        sweep_on: bool,
        base_dir: str = "runs",
    ) -> Layout:
        """The layout of resolved variant configs (:func:`fvc.sweep.variant_configs`)."""
        from fvc.config import without_operational

        keys = {n: sweep.stage_keys(without_operational(c)) for n, c in variants.items()}
        return cls(
            run=f"{base_dir}/{experiment}",
            keys=keys,
            trained_by=sweep.trained_by(keys),
            n_splits=int(cv["n_splits"]),
            n_repeats=int(cv["n_repeats"]),
            outer_splits=int(cv.get("outer_splits") or 0),
            sweep=sweep_on,
        )

    def __post_init__(self) -> None:
        first = {
            stage: {keys[stage]: name for name, keys in reversed(list(self.keys.items()))}
            for stage in sweep.STAGES
        }
        object.__setattr__(self, "_first_of_key", first)

    # ------------------------------------------------------------------ what exists

    @property
    def variants(self) -> list[str]:
        return list(self.keys)

    @property
    def nested(self) -> bool:
        return self.outer_splits >= 2

    @property
    def folds(self) -> list[int]:
        return list(range(self.n_splits))

    @property
    def repeats(self) -> list[int]:
        return list(range(self.n_repeats))

    @property
    def outer_folds(self) -> list[int]:
        return list(range(self.outer_splits)) if self.nested else []

    def fold_ids(self) -> list[tuple[int, int]]:
        """(repeat, fold) of every train job of one variant (in one scope), repeat-major."""
        return [(r, k) for r in self.repeats for k in self.folds]

    def variant_of_key(self, stage: str, key: str) -> str:
        """The first variant whose ``stage`` key is ``key`` (they share that stage's config)."""
        return self._first_of_key[stage][key]

    def representatives(self, stage: str) -> list[str]:
        """One variant per distinct ``stage`` key (the first with it), in variant order."""
        return list(dict.fromkeys(self.variant_of_key(stage, k[stage]) for k in self.keys.values()))

    def trained_variants(self) -> list[str]:
        return sorted(set(self.trained_by.values()))

    def wildcard_constraints(self) -> dict[str, str]:
        """Constraints of every wildcard the patterns use."""
        return {
            "fold": r"\d+",
            "repeat": r"\d+",
            "outer": r"\d+",
            "variant": alternatives(self.keys),
            **{
                f"{stage}_key": alternatives(self._first_of_key[stage])
                for stage in ("load", "decode", "augment")
            },
        }

    # ------------------------------------------------------------------ patterns

    def inner_layout(self) -> Layout:
        """The same run's inner cross-validations of a nested run (scope ``outer_{outer}``)."""
        return dataclasses.replace(self, inner=True)

    @property
    def scope(self) -> str:
        """The folder of one cross-validation: the run, or ``outer_{outer}`` in it (inner)."""
        return f"{self.run}/outer_{{outer}}" if self.inner else self.run

    def root(self, stage: str, constrain: bool = False) -> str:
        """Folder (a pattern) of one stage's artifacts; ``runs/<exp>`` for a plain run.

        ``constrain`` restricts the variant wildcard to the variants that train (the train
        rule's outputs: a variant identical to an earlier one reuses that one's folds).
        """
        base = self.run if stage in RUN_STAGES else self.scope
        if stage not in RUN_STAGES and stage not in SCOPE_STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if not self.sweep:
            return base
        if stage == "variant":
            if constrain:
                return f"{base}/{{variant,{alternatives(self.trained_variants())}}}"
            return f"{base}/{{variant}}"
        key = KEY_OF_STAGE[stage]
        return f"{base}/shared/{key}_{{{key}_key}}"

    @property
    def repeat_dir(self) -> str:
        """The repeat level of per-fold paths: none with a single repeat."""
        return "repeat_{repeat}/" if self.n_repeats > 1 else ""

    def path(self, stage: str, rel: str) -> str:
        """Pattern of a per-stage artifact ``rel`` (``data/clips.npy``, ``logs/x.log``)."""
        return f"{self.root(stage)}/{rel}"

    def split_path(self, rel: str) -> str:
        """Pattern of a per-repeat split artifact (``splits.parquet``, ...)."""
        return f"{self.root('split')}/{self.repeat_dir}{rel}"

    def fold_path(self, stage: str, rel: str) -> str:
        """Pattern of a file in a fold's folder: ``<root>/[repeat_<r>/]fold_<k>/<rel>``."""
        return f"{self.root(stage)}/{self.repeat_dir}fold_{{fold}}/{rel}"

    def fold_file(self, stage: str, folder: str, ext: str = "") -> str:
        """Pattern of a per-fold log, benchmark or folder: ``<root>/<folder>/[repeat_<r>/]
        fold_<k><ext>`` (``logs/train/fold_0.log``, ``checkpoints/fold_0``)."""
        return f"{self.root(stage)}/{folder}/{self.repeat_dir}fold_{{fold}}{ext}"

    def train_output(self, rel: str) -> str:
        """Output pattern of the train rule: only variants that train can match it."""
        return f"{self.root('variant', constrain=True)}/{self.repeat_dir}fold_{{fold}}/{rel}"

    def cache_dir(self, stage: str, root: str | None = None) -> str:
        """State a stage keeps between runs (not an output: Snakemake deletes a rule's
        outputs before it runs, and the rerun needs the previous result to reuse it):
        ``<root>/cache/<stage>``, where ``<root>`` is the folder of the stage whose artifacts
        the cache belongs to (``decode``: one cache per decode key), or the run (None)."""
        return f"{self.root(root) if root else self.run}/cache/{stage}"

    def outer_split_path(self, rel: str) -> str:
        """Pattern of the outer split (``outer_splits.parquet``): one per load key (the
        variants of a nested run share one)."""
        return self.path("load", rel)

    def final_path(self, rel: str) -> str:
        """The final model's files: ``runs/<exp>/final/`` (the ``refit`` target)."""
        return f"{self.run}/final/{rel}"

    def outer_path(self, rel: str) -> str:
        """Pattern of an outer fold's own file: ``runs/<exp>/outer_{outer}/<rel>``."""
        return f"{self.run}/outer_{{outer}}/{rel}"

    def outer_refit_path(self, rel: str) -> str:
        """Pattern of a variant's refit on an outer training part:
        ``runs/<exp>/outer_{outer}/[<variant>/]final/<rel>``."""
        return self.inner_layout().path("variant", f"final/{rel}")

    def predict_path(self, rel: str) -> str:
        """Predict sets live at ``runs/<exp>/predict/`` with or without a sweep."""
        return f"{self.run}/predict/{rel}"

    # ------------------------------------------------------------------ concrete paths

    def fill(self, pattern: str, variant: str, /, **wildcards: Any) -> str:
        """Concrete ``pattern`` for ``variant``; other wildcards (fold, repeat, outer) given."""
        keys = {f"{s}_key": k for s, k in self.keys[variant].items()}
        return pattern.format(**{**wildcards, **keys, "variant": variant})

    def fold_outputs(self, variant: str, name: str, outer: int | None = None) -> list[str]:
        """Train output ``name`` of every (repeat, fold) of ``variant`` (from the variant that
        trained it), repeat-major; ``outer`` in a nested run."""
        pattern = self.fold_path("variant", name)
        trained = self.trained_by[variant]
        return [
            self.fill(pattern, trained, repeat=r, fold=k, outer=outer) for r, k in self.fold_ids()
        ]

    def variant_path(self, variant: str, rel: str, outer: int | None = None) -> str:
        """Concrete per-variant artifact (``runs/<exp>/<rel>`` in a plain run)."""
        return self.fill(self.path("variant", rel), variant, outer=outer)

    # ------------------------------------------------------------------ the deployed models

    def ensemble_outputs(self, name: str) -> list[str]:
        """Train output ``name`` of the models that score new videos (the ``predict`` rule and
        ``fvc predict``): the base variant's folds of repeat 0, from the plain run."""
        return self.fold_outputs(sweep.BASE, name)[: self.n_splits]

    def base_path(self, stage: str, rel: str) -> str:
        """The base variant's artifact ``rel`` of ``stage`` in the plain run."""
        return self.fill(self.path(stage, rel), sweep.BASE)

    # ------------------------------------------------------------------ the record of a run

    RECORD: ClassVar[str] = "layout.json"

    def record(self) -> dict[str, Any]:
        """What :meth:`from_record` needs to rebuild this layout: written to
        ``runs/<exp>/layout.json`` when the workflow starts, read by ``fvc predict``."""
        return {
            "run": self.run,
            "keys": {v: dict(k) for v, k in self.keys.items()},
            "trained_by": dict(self.trained_by),
            "n_splits": self.n_splits,
            "n_repeats": self.n_repeats,
            "outer_splits": self.outer_splits,
            "sweep": self.sweep,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Layout:
        return cls(**{k: record[k] for k in cls.record_keys()})

    @staticmethod
    def record_keys() -> tuple[str, ...]:
        return ("run", "keys", "trained_by", "n_splits", "n_repeats", "outer_splits", "sweep")

    def relative(self, path: str) -> str:
        """``path`` (a concrete path of this layout) relative to the run folder."""
        prefix = f"{self.run}/"
        if not path.startswith(prefix):
            raise ValueError(f"{path} is not under {self.run}")
        return path[len(prefix) :]

    def split_files(self, variant: str, outer: int | None = None) -> list[str]:
        """``splits.parquet`` of every repeat of ``variant``, in repeat order."""
        pattern = self.split_path("splits.parquet")
        return [self.fill(pattern, variant, repeat=r, outer=outer) for r in self.repeats]
