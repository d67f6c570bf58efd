"""The experiment config: one validated tree, built from defaults (the paper's MVTec-AD
protocol), a YAML preset, and `key.sub=value` overrides from the CLI or a sweep.

Bad values fail before any work starts, with one line naming the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from decodiff.datasets.registry import spec as dataset_spec
from decodiff.harness.recipes import DEFAULT_RECIPE, RECIPE_NAMES, departures, departures_text, recipe_tree
from decodiff.models.unet_presets import UNET_PRESETS

DATASETS = ("demo", "mvtec", "visa", "mpdd", "realiad", "folder")

# Keys added with a default that differs from how the code behaved before they existed: a config
# (or a finished trial, a cached training) that lacks one ran at this value, not at today's default.
# Sweeps match finished trials with it (sweep/spec.same_experiment); training keys leave such a key
# out at this value, so trainings that behave as before keep their keys (training/spec.training_spec).
BEHAVIOUR_BEFORE_KEY = {"model.init": "diffusers", "train.cache_augment": "variants", "train.channels_last": False}


def one_of(known: Collection[str], shown: str) -> AfterValidator:
    """A field check for names from a list kept elsewhere (presets, metrics), too long for a Literal;
    the error lists them as `shown`."""

    def check(value: str) -> str:
        if value not in known:
            raise ValueError(f"must be one of {shown}")
        return value

    return AfterValidator(check)


class ConfigError(ValueError):
    """A config problem; the message is one line naming the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunSection(Section):
    name: str = "bench"
    out_dir: str = "runs"  # every run writes <out_dir>/<name>-<time>/
    cache_dir: str = ".cache/decodiff"  # demo data, shards, VAEs, latent caches, trained models
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(default=None, ge=1)  # torch CPU threads (None: torch's default)
    # minutes for the whole run: training steps sized to fit (README "Your own images on a CPU"); None: as set
    time_budget: float | None = Field(default=None, gt=0)


class DemoSection(Section):
    size: int = Field(default=128, ge=32, le=1024)
    n_train: int = Field(default=80, ge=4)
    n_test_good: int = Field(default=12, ge=1)
    n_test_per_defect: int = Field(default=6, ge=1)
    categories: list[str] | None = None


class DataSection(Section):
    dataset: Literal["demo", "mvtec", "visa", "mpdd", "realiad", "folder"] = "demo"
    root: str | None = None  # native layout (not needed when `shards` is given)
    shards: str | None = None  # shard set folder or URL prefix; default: made from `root` in the cache
    categories: list[str] | None = None
    resize: int | None = Field(default=288, ge=8)  # published: resize 288 (aspect not kept) ...
    crop: int | None = Field(default=256, ge=8)  # ... then center crop 256
    num_workers: int = Field(default=0, ge=0)
    shuffle_buffer: int = Field(default=2000, ge=0)
    verify: bool = False  # sha256 of every shard before the run (sizes and sample counts are always checked)
    # the reader's layout options at shard time, as `decodiff data shard` takes them: visa split_csv;
    # realiad resolution, json_dir; folder normal, anomalous, masks, normal_test, test_fraction
    options: dict[str, str | int | float | bool] = {}
    # keep anomalous test images without masks (`data shard --masks-optional`): their category's
    # pixel metrics are null with a reason; without it a missing mask stops the sharding
    masks_optional: bool = False
    demo: DemoSection = DemoSection()

    @model_validator(mode="after")
    def _sizes(self) -> DataSection:
        if self.resize and self.crop and self.crop > self.resize:
            raise ValueError(
                f"data.crop {self.crop} is larger than data.resize {self.resize} (the crop is taken "
                f"from the resized image)"
            )
        return self

    @model_validator(mode="after")
    def _options(self) -> DataSection:
        if self.options:
            allowed = dataset_spec(self.dataset).options
            wrong = sorted(k for k in self.options if k not in allowed)
            if wrong:
                raise ValueError(
                    f"data.options {wrong}: not options of the {self.dataset} reader "
                    f"(its options: {', '.join(allowed) or 'none'})"
                )
        return self


class VAESection(Section):
    # a local diffusers folder (e.g. sd-vae-ft-ema), a single .safetensors/.ckpt file in the
    # Stable-Diffusion layout, or builtin:NAME; None: train a small one
    pretrained: str | None = None
    # when the small VAE is trained here (pretrained None): start from this VAE folder (builtin:NAME or a
    # path; its architecture must be vae.small's) and fine-tune it vae.steps steps; None: random weights
    init_from: str | None = None
    scale: float | None = Field(default=None, gt=0)  # latent scale; None: the VAE's own (0.18215 for an SD file)
    small: str = "f8-small"
    steps: int = Field(default=3000, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    kl_weight: float = Field(default=1e-6, ge=0)
    crop: int | None = Field(default=64, ge=8)  # train on random crops (the VAE is convolutional)
    generic_images: float = Field(default=0.0, ge=0, le=1)  # share of each batch from scikit-image's photos
    # images per encoder/decoder call wherever the frozen VAE runs (latent cache, on-the-fly training encodes,
    # latent-nn bank, evaluation, predict; not the VAE's own training): None auto (on a CPU sized to the
    # caches, models/vae.auto_micro_batch; elsewhere the whole batch), 0 the whole batch
    micro_batch: int | None = Field(default=None, ge=0)


class ModelSection(Section):
    size: Annotated[str, one_of(UNET_PRESETS, str(sorted(UNET_PRESETS)))] = "L"
    conditional: bool = True
    dropout: float | None = Field(default=None, ge=0, lt=1)  # None: the preset's
    # start training from these weights (a checkpoint of ours, a diffusers UNet folder, an LDM
    # checkpoint, the authors' {"model": ...} file); its sha256 enters the training key
    init_from: str | None = None
    init_partial: bool = False  # accept a load that is not complete (what did not fit is recorded)
    # from scratch: ldm zero-initialises the residual blocks' conv2, the transformers' proj_out and
    # conv_out, as LDM's UNet (the authors' model) does; diffusers keeps diffusers' defaults
    init: Literal["ldm", "diffusers"] = "ldm"


class ProcessSection(Section):
    steps: int = Field(default=10, ge=2, le=1000)  # T
    schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = "squaredcos_cap_v2"
    patch_sizes: list[int] = [1, 2, 4, 8, 16]
    patch_probs: list[float] = [0.30, 0.25, 0.20, 0.15, 0.10]
    r_mask: float = Field(default=0.7, ge=0, le=1)
    r_shuffle: float = Field(default=0.3, ge=0, le=1)

    @model_validator(mode="after")
    def _patches(self) -> ProcessSection:
        if len(self.patch_sizes) != len(self.patch_probs):
            raise ValueError("patch_sizes and patch_probs must have the same length")
        if any(p < 1 for p in self.patch_sizes) or any(q < 0 for q in self.patch_probs) or sum(self.patch_probs) <= 0:
            raise ValueError("patch sizes must be >= 1 and probabilities >= 0 with a positive sum")
        return self


class TrainSection(Section):
    epochs: int = Field(default=800, ge=1)
    max_steps: int | None = Field(default=None, ge=1)  # optimizer steps; stops earlier than epochs
    batch_size: int = Field(default=128, ge=1)  # global, over all processes and accumulation steps
    grad_accum: int = Field(default=2, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    min_lr: float = Field(default=1e-5, ge=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup: int = Field(default=10, ge=0)  # epochs ("per-epoch" schedules) or steps ("per-step")
    lr_schedule: Literal["published", "cosine", "constant"] = "published"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    ema: float | None = Field(default=None, gt=0, lt=1)
    grad_clip: float | None = Field(default=None, gt=0)
    latent_cache: bool = True
    # exact: the cache holds every distinct augmentation of each image (every +-translate shift, x2 with
    # rotate180) and each sample draws one per epoch with the published probabilities (latent_cache.py);
    # variants: `cache_variants` fixed draws per image (variant 0 un-augmented), one picked uniformly
    cache_augment: Literal["exact", "variants"] = "exact"
    cache_variants: int = Field(default=4, ge=1)  # cache_augment=variants: augmented copies per image
    translate: int = Field(default=4, ge=0)
    rotate180: bool = False
    reuse: bool = True  # reuse a finished model trained with the same settings and data
    checkpoint_every: int = Field(default=1000, ge=1)  # optimizer steps
    keep_checkpoints: int = Field(default=2, ge=1)  # training states kept for resuming (newest)
    log_every: int = Field(default=50, ge=1)
    compile: bool = False
    allow_tf32: bool = True
    # train the UNet channels-last (NHWC; models/layout.py): same maths, other rounding. Off by default:
    # on CPU it made the XS training step 2x slower (benchmarks/unet_vs_reference.py --train-channels-last)
    channels_last: bool = False


class InferSection(Section):
    reverse_steps: int = Field(default=5, ge=1)
    start_step: int | None = Field(default=None, ge=0)  # None: step_mapping decides; a step: start there
    # count -> steps (models/deviation.py reverse_timesteps): respacing (the authors' code: 5 -> 8,6,4,2,0;
    # 1 -> 0) or from-top (the paper: the correction starts at T; 5 -> 9,7,5,3,1; 1 -> 9)
    step_mapping: Literal["respacing", "from-top"] = "respacing"
    strategy: Literal["zt-1", "z0"] = "zt-1"
    combination: Literal["geometric", "arithmetic", "pixel", "latent"] = "geometric"
    gamma_p: float | None = Field(default=0.4, gt=0)
    gamma_l: float | None = Field(default=0.2, gt=0)
    sigma_pixel: float = Field(default=3.0, ge=0)
    sigma_latent: float = Field(default=1.0, ge=0)
    pixel_reference: Literal["vae", "input"] = "vae"
    image_score: Literal["max", "topk_mean", "avgpool_max"] = "max"
    # what the image score is taken from: the anomaly map (published; every preset's) or its latent part
    # alone, the map staying the localisation (models/anomaly_map.image_scores; README "The image score
    # from the latent part": better on the demo's grass, worse on gravel, a tie on the validation split)
    image_map: Literal["map", "latent"] = "map"
    topk: int = Field(default=100, ge=1)
    pool: int = Field(default=16, ge=1)
    batch_size: int = Field(default=16, ge=1)
    # simple methods scored in the same run on the same test images (harness/evaluation/baselines.py):
    # vae-recon |Decoder(Encoder(x)) - x|, latent-nn the distance of each latent 3x3 patch to its
    # nearest training patch of the category (PatchCore's idea on VAE latents); [] for none
    baselines: list[Literal["vae-recon", "latent-nn"]] = ["vae-recon", "latent-nn"]
    nn_bank: int = Field(default=16384, ge=1)  # latent-nn: training patches kept per category (random subset)
    # UNet and VAE channels-last (NHWC); None: on CPU, and on CUDA with bf16 (models/layout.py).
    # Same maths, other rounding (maps agree to ~1e-5, not bit for bit).
    channels_last: bool | None = None
    # "bf16": UNet and VAE under bfloat16 autocast (maps and latent arithmetic stay float32): a
    # labelled speed switch that changes the numbers; "fp32" (default) is the faithful path
    precision: Literal["fp32", "bf16"] = "fp32"
    # anomaly maps (float32 .npz: scoring them again gives the same numbers) in the run folder, for `score`
    # and figures
    save_maps: bool = True
    # each test image's z and Decoder(z) kept on disk for later evaluations on the same VAE and test set
    # (harness/evaluation/reference_cache.py): the same numbers, one encode and one decode fewer per image;
    # None: on a CPU when the references fit in 2 GiB
    reference_cache: bool | None = None


class MetricsSection(Section):
    aupro_protocol: Literal["mvtec", "deco-diff-code"] = "mvtec"
    # an image's label: the data set's (metadata), or anomalous when its cropped mask has a positive
    # pixel (mask-max, the authors' code; images without a mask keep their metadata label)
    image_label: Literal["metadata", "mask-max"] = "metadata"
    fpr_limit: float = Field(default=0.3, gt=0, le=1)
    bootstrap: int = Field(default=1000, ge=0)  # resamples of the test images for 95% intervals (0: none)


class TrackingSection(Section):
    enabled: bool = True
    uri: str | None = None  # None: sqlite:///<out_dir>/mlflow.db
    experiment: str = "decodiff"


class Config(Section):
    # the named set of settings the values come from (harness/recipes.py): paper, authors-code, or
    # custom (none); keys set in a preset or override win, and `departures()` lists them
    recipe: Literal["paper", "authors-code", "custom"] = "custom"
    # deco-diff: the paper's method; ddim-recon / vae-recon: reconstruction baselines on the same
    # VAE, UNet and data (models/reconstruction.py). A top-level key: it changes the training.
    method: Literal["deco-diff", "ddim-recon", "vae-recon"] = "deco-diff"
    run: RunSection = RunSection()
    data: DataSection = DataSection()
    vae: VAESection = VAESection()
    model: ModelSection = ModelSection()
    process: ProcessSection = ProcessSection()
    train: TrainSection = TrainSection()
    infer: InferSection = InferSection()
    metrics: MetricsSection = MetricsSection()
    tracking: TrackingSection = TrackingSection()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.infer.start_step is not None and self.infer.start_step >= self.process.steps:
            raise ValueError(f"infer.start_step must be below process.steps ({self.process.steps})")
        if self.infer.reverse_steps > self.process.steps:
            raise ValueError(f"infer.reverse_steps must be at most process.steps ({self.process.steps})")
        if self.train.batch_size % self.train.grad_accum:
            raise ValueError("train.batch_size must be a multiple of train.grad_accum")
        if self.method == "ddim-recon" and self.infer.strategy != "zt-1":
            raise ValueError("infer.strategy=z0 applies to method=deco-diff only (ddim-recon takes DDIM steps)")
        if self.method == "vae-recon" and (self.infer.combination != "pixel" or self.infer.pixel_reference != "input"):
            raise ValueError(
                "method=vae-recon scores |Decoder(Encoder(x)) - x| (there is no latent correction): "
                "set infer.combination=pixel and infer.pixel_reference=input"
            )
        no_latent = {"vae-recon": "vae-recon does not have (z0_hat = z)"}.get(self.method) or (
            "combination=pixel leaves out" if self.infer.combination == "pixel" else None
        )
        if self.infer.image_map == "latent" and no_latent:
            raise ValueError(f"infer.image_map=latent scores the latent part of the map, which {no_latent}: use map")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def departures(self) -> list[dict[str, Any]]:
        """The recipe's keys this config sets otherwise: [{"key", "recipe", "value"}]."""
        return departures(self.recipe, self.to_dict())

    def recipe_text(self) -> str:
        """The recipe and its departures in one line (reports, provenance, MLflow)."""
        return departures_text(self.recipe, self.departures())

    def digest(self, *sections: str) -> str:
        """A short hash of the named sections (all when none): keys for caches."""
        d = self.to_dict()
        part = {s: _get(d, s) for s in sections} if sections else d
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def _get(d: dict[str, Any], dotted: str) -> Any:
    for k in dotted.split("."):
        d = d[k]
    return d


# ---- building ---------------------------------------------------------------------------------
def preset_names() -> list[str]:
    root = resources.files("decodiff.configs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the base class says so
                pass
        return super().construct_mapping(node, deep)


def load_yaml(text: str, source: str) -> Any:
    """Parse a config or sweep file; one line naming `source`, the line and the key on any problem."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None


def load_preset(name_or_path: str, _chain: tuple[str, ...] = (), _named_by: str | None = None) -> dict[str, Any]:
    """A preset by name (configs/<name>.yaml, shipped with the package) or a YAML file path;
    `extends: NAME_OR_PATH` (a path relative to the file) builds on another."""
    path = Path(name_or_path)
    is_file = path.suffix in (".yaml", ".yml") or "/" in name_or_path
    ident = str(path.resolve()) if is_file else name_or_path
    by = f"{_named_by}: extends: " if _named_by else "--config "
    if ident in _chain:
        raise ConfigError(f"--config {_chain[0]}: `extends` goes round in a circle ({' -> '.join([*_chain, ident])})")
    if is_file:
        if not path.is_file():
            raise ConfigError(f"{by}{name_or_path}: file not found")
        text = path.read_text()
        source = name_or_path
    else:
        res = resources.files("decodiff.configs") / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(f"{by}{name_or_path}: no such preset (available: {', '.join(preset_names())})")
        text = res.read_text()
        source = f"configs/{name_or_path}.yaml"
    data = load_yaml(text, f"--config {source}")
    if data is None:  # an empty file would silently run the bare defaults
        raise ConfigError(f"--config {name_or_path}: the file is empty (expected config sections, or extends: PRESET)")
    if not isinstance(data, dict):
        raise ConfigError(f"--config {name_or_path}: expected a mapping of sections at the top level")
    base = data.pop("extends", None)
    if base:
        base = str(base)
        if is_file and (base.endswith((".yaml", ".yml")) or "/" in base) and not Path(base).is_absolute():
            base = str(path.parent / base)  # relative to the file that names it
        data = merge(load_preset(base, (*_chain, ident), source), data)
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=3e-4` -> ("train.lr", 0.0003); values are read as YAML (lists, null, numbers)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    node = d
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    m: Any = model
    for part in loc[:-1]:
        f = m.model_fields.get(part) if isinstance(part, str) else None
        if f is None:
            return []
        m = f.annotation
        if not (isinstance(m, type) and issubclass(m, BaseModel)):
            return []
    return sorted(m.model_fields)


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed(Config, loc)
        where = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"unknown config key '{key}' (allowed under {where}: {', '.join(allowed)})"
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return f"bad config: {msg}"
    if "ctx" in err and "expected" in err["ctx"]:
        msg = f"expected {err['ctx']['expected']}"
    got = err.get("input")
    got_s = "" if isinstance(got, dict) else f" (got {got!r})"
    more = f"; {len(exc.errors()) - 1} more problem(s)" if len(exc.errors()) > 1 else ""
    return f"bad config value '{key}': {msg}{got_s}{more}"


def apply_recipe(data: dict[str, Any]) -> dict[str, Any]:
    """The config data with its recipe's values filled in under every key it does not set
    (harness/recipes.py); an unknown recipe name is left for validation to report."""
    name = data.get("recipe", DEFAULT_RECIPE)
    if not isinstance(name, str) or name not in RECIPE_NAMES:
        return data
    return merge(recipe_tree(name), data)


def build_config(
    preset: str | None = None, overrides: list[str] | tuple[str, ...] = (), base: dict | None = None
) -> Config:
    """Defaults <- recipe <- preset <- overrides, validated; raises ConfigError with one line."""
    data: dict[str, Any] = dict(base or {})
    if preset:
        data = merge(data, load_preset(preset))
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    data = apply_recipe(data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def to_yaml(cfg: Config) -> str:
    """The resolved config; a comment line first says its recipe and the departures from it."""
    return f"# recipe: {cfg.recipe_text()}\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
