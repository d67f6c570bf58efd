"""Sweep files: which trials a sweep runs, read and checked before anything starts.

A sweep file (YAML, configs/sweeps/*.yaml or any path) names a base config and the axes to vary:

    name: table3-strategy-steps
    config: demo                     # base preset (a name from configs/ or a YAML path)
    recipe: paper                    # paper | authors-code | custom (README "Recipes"); default: the preset's
    set: {train.max_steps: 500}      # fixed overrides for every trial
    datasets: [mvtec, visa]          # or {label: {data.dataset: ..., data.shards: ..., ...}}
    seeds: [0, 1]
    grid:                            # cartesian product over dotted config keys
      infer.strategy: [z0, zt-1]
      gammas:                        # a linked axis (name without a dot): values set together
        - {infer.gamma_p: 0.2, infer.gamma_l: 0.4}
        - {infer.gamma_p: 0.4, infer.gamma_l: 0.2}
    exclude: [{infer.strategy: zt-1, infer.reverse_steps: 1}]
    space: {train.lr: {loguniform: [1.0e-5, 1.0e-3]}}   # random search: `samples` draws per grid point
    samples: 8

Trials are the product datasets x seeds x grid (minus `exclude`) x random samples. Each trial's
config is validated here, so an unknown key or a bad value stops the sweep before any trial runs.
A trial's id is a digest of its resolved config (without bookkeeping keys such as output folders),
so a resumed sweep recognises finished trials even when the file was edited around them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from decodiff.harness.config import (
    BEHAVIOUR_BEFORE_KEY,
    DATASETS,
    Config,
    ConfigError,
    DataSection,
    build_config,
    load_preset,
    load_yaml,
    one_of,
    parse_override,
    set_dotted,
)

# Keys that change neither the trained weights nor the metrics: left out of trial identities.
BOOKKEEPING = (
    "run.name",
    "run.out_dir",
    "run.cache_dir",
    "run.threads",
    "tracking",
    "train.reuse",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "infer.save_maps",
    "infer.batch_size",
    "infer.reference_cache",
    "vae.micro_batch",
    "data.num_workers",
    "data.shards",
    "data.root",
)  # where the data lies: the data set's label stands for it
LOCATION_KEYS = ("data.shards", "data.root")
# Keys that only change inference: trials that differ only here share one trained model.
INFERENCE = ("infer", "metrics")
METRIC_NAMES = ("image_auroc", "image_auprc", "image_f1max", "pixel_auroc", "pixel_auprc", "pixel_f1max", "pixel_aupro")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


class SweepError(ConfigError):
    """A problem with a sweep file or its trials; one line naming the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    cpus: float = Field(default=1, gt=0)  # CPUs reserved per trial (torch threads follow)
    gpus: float = Field(default=0, ge=0)  # GPUs per trial; fractions share a GPU between trials
    processes: int | None = Field(default=None, ge=1)  # training processes; default: max(1, gpus)

    @property
    def training_processes(self) -> int:
        return self.processes or max(1, int(self.gpus))


class Validation(_Strict):
    holdout: float = Field(default=0.2, gt=0, lt=1)  # share of each category's normal training images
    defects: int = Field(default=2, ge=1)  # synthetic defective copies per held-out image
    seed: int = 0


class Objective(_Strict):
    metric: Annotated[str, one_of(METRIC_NAMES, ", ".join(METRIC_NAMES))] = (
        "image_auroc"  # <level>_<metric> of the mean over categories
    )
    split: Literal["validation", "test"] | None = None  # default: validation when enabled, else test
    mode: Literal["max", "min"] = "max"


class SweepSpec(_Strict):
    name: str | None = None
    description: str = ""
    config: str | None = None
    recipe: Literal["paper", "authors-code", "custom"] | None = None  # None: the base config's (README "Recipes")
    set: dict[str, Any] = {}
    datasets: list[str] | dict[str, dict[str, Any]] | None = None
    seeds: list[int] | None = None
    grid: dict[str, list[Any]] | None = None
    exclude: list[dict[str, Any]] = []
    space: dict[str, dict[str, Any]] | None = None
    samples: int = Field(default=1, ge=1)
    sample_seed: int = 0
    shards_root: str | None = None  # <shards_root>/<dataset label> for data sets without shards
    validation: Validation | None = None
    objective: Objective = Objective()
    resources: Resources = Resources()
    max_concurrent: int | None = Field(default=None, ge=1)
    retries: int = Field(default=2, ge=0)  # extra attempts for a failed trial


@dataclass
class TrialPlan:
    """One trial: its id, what it varies, and its validated config."""

    id: str
    dataset: str  # dataset label (an axis value, or data.dataset)
    overrides: dict[str, Any]  # the values this trial sets on top of the base (dotted keys)
    config: Config
    group: str  # training group: trials with the same group share one trained model

    @property
    def label(self) -> str:
        parts = [f"{k}={_short(v)}" for k, v in self.overrides.items() if k != "data.dataset"]
        return " ".join([self.dataset] + parts)


@dataclass
class SweepPlan:
    name: str
    source: str  # the sweep file
    spec: SweepSpec
    base: dict[str, Any]  # base config data (preset + set + CLI overrides), before trial values
    trials: list[TrialPlan]
    cli_overrides: list[str] = field(default_factory=list)
    axes: list[str] = field(default_factory=list)  # keys that vary, in order

    def groups(self) -> dict[str, list[TrialPlan]]:
        out: dict[str, list[TrialPlan]] = {}
        for t in self.trials:
            out.setdefault(t.group, []).append(t)
        return out

    def recipe(self) -> str:
        """The recipe of the trials (the sweep's; `mixed` where an axis varies it)."""
        names = sorted({t.config.recipe for t in self.trials})
        return names[0] if len(names) == 1 else "mixed (" + ", ".join(names) + ")"

    def trainings(self) -> int:
        """Distinct trainings the sweep needs (vae-recon trains nothing)."""
        return sum(1 for ts in self.groups().values() if ts[0].config.method != "vae-recon")

    def objective_split(self) -> str:
        return self.spec.objective.split or ("validation" if self.spec.validation else "test")


def _short(v: Any) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else str(v)


# ---- reading ------------------------------------------------------------------------------------
def sweep_preset_names() -> list[str]:
    root = resources.files("decodiff.configs") / "sweeps"
    if not root.is_dir():
        return []
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_spec(name_or_path: str) -> tuple[SweepSpec, str, Path | None]:
    """The sweep file by path, or by name from configs/sweeps/; returns (spec, source, folder)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not path.is_file():
            raise SweepError(f"{name_or_path}: sweep file not found")
        text, source, folder = path.read_text(), str(path), path.resolve().parent
    else:
        res = resources.files("decodiff.configs") / "sweeps" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise SweepError(f"{name_or_path}: no such sweep preset (available: {', '.join(sweep_preset_names())})")
        text, source, folder = res.read_text(), f"configs/sweeps/{name_or_path}.yaml", None
    try:
        data = load_yaml(text, source)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    if not isinstance(data, dict):
        raise SweepError(f"{source}: expected a mapping (name, config, grid, ...) at the top level")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SweepError(f"{source}: {_spec_error(exc)}") from None
    if spec.name is None:
        spec.name = Path(source).stem
    return spec, source, folder


def _spec_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        top = err["loc"][0] if len(err["loc"]) == 1 else None
        allowed = sorted(SweepSpec.model_fields) if top else []
        return f"unknown sweep key '{key}'" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    return f"bad sweep value '{key}': {err['msg'].removeprefix('Value error, ')}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"data": {"shards": x}} and {"data.shards": x} both -> {"data.shards": x}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ---- expanding --------------------------------------------------------------------------------
def _dataset_axis(
    spec: SweepSpec, source: str, shards: dict[str, str], base_dataset: str
) -> list[tuple[str, dict[str, Any]]]:
    if spec.datasets is None:  # one data set, the base config's: `--shards` may name it
        unknown = sorted(set(shards) - {base_dataset})
        if unknown:
            raise SweepError(
                f"--shards {unknown[0]}=...: {source} runs one data set, '{base_dataset}' (its config's data.dataset)"
            )
        return [("", {"data.shards": shards[base_dataset]} if shards else {})]
    if not spec.datasets:
        raise SweepError(f"{source}: 'datasets' is empty (list data sets, or leave the key out)")
    entries = {n: {} for n in spec.datasets} if isinstance(spec.datasets, list) else dict(spec.datasets)
    axis = []
    for label, over in entries.items():
        if not isinstance(over, dict):
            raise SweepError(f"{source}: datasets.{label}: expected a mapping of config overrides")
        over = flatten(over)
        if "data.dataset" not in over:
            if label not in DATASETS:
                raise SweepError(
                    f"{source}: datasets.{label}: set data.dataset (one of {', '.join(DATASETS)}) "
                    f"or name the entry after one"
                )
            over = {"data.dataset": label, **over}
        if label in shards:
            over["data.shards"] = shards[label]
        elif (
            spec.shards_root
            and over["data.dataset"] != "demo"
            and not over.get("data.shards")
            and not over.get("data.root")
        ):
            over["data.shards"] = str(Path(spec.shards_root) / label)
        axis.append((label, over))
    unknown = sorted(set(shards) - set(entries))
    if unknown:
        raise SweepError(
            f"--shards {unknown[0]}=...: no data set of that name in {source} (it has {', '.join(entries)})"
        )
    return axis


def _grid_axes(spec: SweepSpec, source: str) -> list[tuple[str, list[dict[str, Any]]]]:
    if spec.grid is None:
        return []
    if not spec.grid:
        raise SweepError(f"{source}: 'grid' is empty (give at least one key with a list of values)")
    axes = []
    for key, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{source}: grid.{key}: expected a non-empty list of values")
        if "." in key:
            axes.append((key, [{key: v} for v in values]))
        else:  # a linked axis: each value is a mapping of dotted keys set together
            if not all(isinstance(v, dict) and v for v in values):
                raise SweepError(
                    f"{source}: grid.{key}: a key without a dot is a linked axis; its values must be "
                    f"mappings of config keys (e.g. {{infer.gamma_p: 0.4, infer.gamma_l: 0.2}})"
                )
            axes.append((key, [flatten(v) for v in values]))
    return axes


def _draw(dist: dict[str, Any], key: str, rng: np.random.Generator, source: str) -> Any:
    if len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        raise SweepError(
            f"{source}: space.{key}: expected one of {', '.join(DISTRIBUTIONS)} (e.g. {{loguniform: [1.0e-5, 1.0e-3]}})"
        )
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SweepError(f"{source}: space.{key}.choice: expected a non-empty list")
        return args[int(rng.integers(len(args)))]
    if not (
        isinstance(args, list)
        and len(args) == 2
        and all(isinstance(a, (int, float)) for a in args)
        and args[0] <= args[1]
    ):
        raise SweepError(f"{source}: space.{key}.{kind}: expected [low, high] with low <= high")
    lo, hi = args
    if kind == "randint":
        return int(rng.integers(int(lo), int(hi) + 1))  # both ends included
    if kind == "loguniform":
        if lo <= 0:
            raise SweepError(f"{source}: space.{key}.loguniform: bounds must be positive")
        value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        value = float(rng.uniform(lo, hi))
    return float(f"{value:.4g}")  # readable trial labels; 4 digits are plenty for a search


def digest(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _without(d: dict[str, Any], dotted: tuple[str, ...]) -> dict[str, Any]:
    d = json.loads(json.dumps(d))
    for key in dotted:
        node, parts = d, key.split(".")
        for p in parts[:-1]:
            node = node.get(p, {})
        node.pop(parts[-1], None)
    return d


def trial_identity(cfg: Config, validation: Validation | None, dataset: str) -> str:
    """What makes two trials the same experiment: the resolved config minus bookkeeping, and the
    data set's label (so that moving the shards does not make a finished trial new)."""
    return "t" + digest(
        {
            "config": _without(cfg.to_dict(), BOOKKEEPING),
            "dataset": dataset,
            "validation": validation.model_dump() if validation else None,
        }
    )


def training_group(cfg: Config, validation: Validation | None, dataset: str) -> str:
    """Trials with the same group differ only at inference time and share one trained model."""
    return "g" + digest(
        {
            "config": _without(cfg.to_dict(), BOOKKEEPING + INFERENCE),
            "dataset": dataset,
            "validation": validation.model_dump() if validation else None,
        }
    )


def _matches(rule: dict[str, Any], dataset: str, over: dict[str, Any]) -> bool:
    for k, v in rule.items():
        have = dataset if k == "dataset" else over.get(k, _MISSING)
        if have != v:
            return False
    return True


_MISSING = object()


def plan_sweep(
    name_or_path: str, overrides: list[str] | tuple[str, ...] = (), shards: dict[str, str] | None = None
) -> SweepPlan:
    """Read a sweep file and expand it into validated trials; raises SweepError (one line)."""
    spec, source, folder = read_spec(name_or_path)
    base: dict[str, Any] = {}
    if spec.config:
        preset = spec.config
        if folder is not None and (folder / preset).is_file():
            preset = str(folder / preset)
        try:
            base = load_preset(preset)
        except ConfigError as exc:
            raise SweepError(f"{source}: config: {str(exc).removeprefix('--config ')}") from None
    if spec.recipe is not None:  # the sweep's recipe over its base preset's; `set` and the CLI may still change it
        base["recipe"] = spec.recipe
    for key, value in flatten(spec.set).items():
        set_dotted(base, key, value)
    cli = [parse_override(o) for o in overrides]
    for key, value in cli:
        set_dotted(base, key, value)
    cli_keys = {k for k, _ in cli}

    ds_axis = _dataset_axis(
        spec,
        source,
        dict(shards or {}),
        str(base.get("data", {}).get("dataset", DataSection.model_fields["dataset"].default)),
    )
    seed_axis = [{}] if spec.seeds is None else [{"run.seed": s} for s in spec.seeds]
    if spec.seeds is not None and not spec.seeds:
        raise SweepError(f"{source}: 'seeds' is empty")
    grid = _grid_axes(spec, source)
    if spec.space is not None and not spec.space:
        raise SweepError(f"{source}: 'space' is empty (give key: {{distribution: [...]}}, or leave it out)")
    if spec.samples > 1 and not spec.space:
        raise SweepError(f"{source}: samples={spec.samples} needs a random 'space' (use 'seeds' to repeat a trial)")
    for rule in spec.exclude:
        if not isinstance(rule, dict) or not rule:
            raise SweepError(f"{source}: exclude: each rule is a mapping of axis keys to values")
    axis_keys = [k for _, vals in grid for v in vals for k in v] + list(spec.space or {})
    for k in (k for r in spec.exclude for k in flatten(r)):
        if k not in ("dataset", "run.seed") and k not in axis_keys:
            raise SweepError(f"{source}: exclude key '{k}' is not a sweep axis")

    trials: dict[str, TrialPlan] = {}
    dropped = 0
    combos = (
        itertools.product(ds_axis, seed_axis, *[vals for _, vals in grid])
        if grid
        else itertools.product(ds_axis, seed_axis)
    )
    for index, combo in enumerate(combos):
        (label, ds_over), seed_over, *points = combo
        fixed: dict[str, Any] = {**ds_over, **seed_over}
        for p in points:
            fixed.update(p)
        for s in range(spec.samples):
            over = dict(fixed)
            if spec.space:
                rng = np.random.default_rng([spec.sample_seed, index, s])
                for key, dist in spec.space.items():
                    if not isinstance(dist, dict):
                        raise SweepError(f"{source}: space.{key}: expected {{distribution: [args]}}")
                    over[key] = _draw(dist, key, rng, source)
            if any(_matches(flatten(r), label, over) for r in spec.exclude):
                dropped += 1
                continue
            data = json.loads(json.dumps(base))
            for key, value in over.items():
                set_dotted(data, key, value)
            for key, value in cli:  # command-line overrides win over every axis
                set_dotted(data, key, value)
            try:
                cfg = build_config(None, (), base=data)
            except ConfigError as exc:
                where = (
                    ", ".join(f"{k}={_short(v)}" for k, v in over.items() if k in str(exc))
                    or ", ".join(f"{k}={_short(v)}" for k, v in over.items())
                    or "the base config"
                )
                raise SweepError(f"{source}: trial {where}: {exc}") from None
            shown = {k: v for k, v in over.items() if k not in cli_keys and k not in LOCATION_KEYS}
            ds_label = label or cfg.data.dataset
            tid = trial_identity(cfg, spec.validation, ds_label)
            if tid not in trials:
                trials[tid] = TrialPlan(tid, ds_label, shown, cfg, training_group(cfg, spec.validation, ds_label))
    if not trials:
        raise SweepError(f"{source}: no trials left ({dropped} excluded)")
    axes = list(dict.fromkeys(k for t in trials.values() for k in t.overrides))
    return SweepPlan(spec.name or Path(source).stem, source, spec, base, list(trials.values()), list(overrides), axes)


def same_experiment(old: dict[str, Any], new: Config) -> bool:
    """Whether a finished trial's resolved config (from an earlier version of the code or of the
    sweep file) is the experiment `new` describes: equal on every key both know, and every key
    only the new code knows at its default. So a code update that adds a config field does not
    turn finished trials into new ones, while any changed value does."""

    def flat(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in flatten(d).items() if not any(k == b or k.startswith(b + ".") for b in BOOKKEEPING)}

    a, b, defaults = flat(old), flat(new.to_dict()), {**flat(Config().to_dict()), **BEHAVIOUR_BEFORE_KEY}
    for key, value in b.items():
        if key in a:
            if json.dumps(a[key], sort_keys=True) != json.dumps(value, sort_keys=True):
                return False
        elif key not in defaults or json.dumps(defaults[key]) != json.dumps(value):
            return False
    return True
