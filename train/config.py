"""Training configuration: a TOML file with five sections, overridable from the command line.

    [data]       the loader's config (pipeline.load.loader.LoaderConfig): datasets, weights,
                 validation set, batch sizes, loader options; seq_len and patch_size are the
                 model's, the seed is run.seed
    [model]      preset = "<name in model.PRESETS>", plus any MegaByteConfig field to override
    [optim]      AdamW and the learning-rate schedule; `recipe = "paper"` starts from the paper's
                 (App. A.1), the keys given in the section override it
    [deepspeed]  ZeRO stage, precision, offload (or a raw DeepSpeed JSON)
    [run]        output directory, checkpoint / eval / log intervals, seed, limits

`--set section.key=value` overrides one key; the value is read as a TOML value (`3`, `1e-3`,
`true`, `"text"`, `["a", "b"]`), and a bare word is taken as a string. Unknown sections or keys,
a value of another type than its field's, numbers out of range, missing datasets, data the model
cannot read (spacelike patches on images or audio), an output directory that is a file and batch
sizes that do not divide are ConfigError: one line naming the key and saying what to change.

Each section is a dataclass: its fields are the keys, their types the types a value must have, and
a field's metadata holds its range beside it (check_fields): {"least": x} (at least x), {"above":
x}, {"most": x}, every bounded number finite; {"choices": (...)} for a setting of a few values.
"""

import dataclasses
import json
import math
import operator
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from model import PRESETS, MegaByteConfig
from pipeline.format import storage
from pipeline.format.errors import UsageError
from pipeline.format.manifest import INDEX_NAME, load_manifest
from pipeline.load.loader import LoaderConfig

SHIPPED_CONFIGS = Path(__file__).parent / "configs"


class ConfigError(UsageError):
    """A training configuration that cannot run, with what to change."""


# Training recipes: defaults for [optim] that the keys written in the section override.
# "paper" is App. A.1 of the paper: Adam β = (0.9, 0.98), gradient-norm clip 1.0, weight decay 0.1,
# 500 warm-up updates, then metaseq's polynomial decay with power 1 (linear) to an end lr of 0. The
# model half of that recipe (pre-norm, ReLU, dropout 0.1 but none on embeddings, truncated-normal
# init with std 0.006) belongs to the model: the paper presets in model/presets.py carry it.
RECIPES = {
    "paper": {"betas": [0.9, 0.98], "grad_clip": 1.0, "weight_decay": 0.1, "warmup_steps": 500,
              "schedule": "linear", "min_lr_ratio": 0.0},
}


@dataclass
class OptimConfig:
    recipe: str = ""  # "paper": start from RECIPES["paper"]; "" = the defaults below
    lr: float = field(default=2e-3, metadata={"above": 0})  # peak learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = field(default=1e-8, metadata={"above": 0})
    # on matrices only, not on norms, biases or embeddings
    weight_decay: float = field(default=0.1, metadata={"least": 0})
    grad_clip: float = field(default=1.0, metadata={"least": 0})
    warmup_steps: int = field(default=100, metadata={"least": 0})  # linear warm-up from 0
    # after warm-up: "cosine" or "linear" decay to min_lr_ratio·lr, or "constant"
    schedule: str = field(default="cosine", metadata={"choices": ("cosine", "linear", "constant")})
    min_lr_ratio: float = field(default=0.1, metadata={"least": 0, "most": 1})  # a fraction of lr
    total_steps: int = field(default=1000, metadata={"least": 1})  # optimizer steps of the whole run


@dataclass
class DeepSpeedSection:
    zero_stage: int = field(default=2, metadata={"choices": (0, 1, 2, 3)})  # 0: plain data parallel
    # "auto" (bf16 on GPU, fp32 on CPU), "bf16" or "fp32"
    precision: str = field(default="auto", metadata={"choices": ("auto", "bf16", "fp32")})
    offload_optimizer: bool = False  # ZeRO-Offload of optimizer states to CPU memory
    offload_param: bool = False  # parameters to CPU memory too (ZeRO-3 only)
    config_file: str = ""  # a raw DeepSpeed JSON: used as the base; batch sizes come from [data]


@dataclass
class RunConfig:
    out_dir: str = "runs/default"  # checkpoints, metrics.jsonl, TensorBoard events, resolved config
    seed: int = 1234
    # optimizer steps; 0 = only at the end (and on SIGTERM/SIGINT)
    checkpoint_every: int = field(default=500, metadata={"least": 0})
    keep_last: int = field(default=3, metadata={"least": 1})  # checkpoints kept; older ones are pruned
    eval_every: int = field(default=500, metadata={"least": 0})  # optimizer steps; 0 = only at the end
    # validation batches per rank per evaluation; 0 = the whole set
    eval_batches: int = field(default=0, metadata={"least": 0})
    log_every: int = field(default=10, metadata={"least": 1})
    # stop (with a checkpoint) after this wall time; 0 = no limit
    max_minutes: float = field(default=0.0, metadata={"least": 0})
    progress: bool = True  # progress bar on rank 0
    trace_batches: bool = False  # write OUT/trace/rank-R.jsonl: a hash of every sequence trained on
    compile: bool = False  # torch.compile each transformer block (BENCHMARKS.md: no gain measured at 350M)


SECTIONS = {"optim": OptimConfig, "deepspeed": DeepSpeedSection, "run": RunConfig}
# [data] is the loader's config, less these settings: each is stated once, in the section named
DATA_FROM = {"seq_len": "model.seq_len", "patch_size": "model.patch_size", "seed": "run.seed"}


@dataclass
class TrainConfig:
    data: LoaderConfig
    model: MegaByteConfig
    model_preset: str
    optim: OptimConfig
    deepspeed: DeepSpeedSection
    run: RunConfig

    def to_dict(self) -> dict:
        """JSON-safe; `from_dict(to_dict())` gives the same config (stored in checkpoints)."""
        data = {k: v for k, v in dataclasses.asdict(self.data).items() if k not in DATA_FROM}
        return {"data": data,
                "model": {"preset": self.model_preset, **self.model.to_dict()},
                "optim": dataclasses.asdict(self.optim),
                "deepspeed": dataclasses.asdict(self.deepspeed),
                "run": dataclasses.asdict(self.run)}

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        unknown = sorted(set(raw) - set(SECTIONS) - {"data", "model"})
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; sections are "
                              f"{sorted([*SECTIONS, 'data', 'model'])}")
        values = {name: dict(raw.get(name, {})) for name in SECTIONS}
        values["optim"] = with_recipe(values["optim"])
        sections = {name: build_section(name, kind, values[name]) for name, kind in SECTIONS.items()}
        model_fields = dict(raw.get("model", {}))
        preset = model_fields.pop("preset", "tiny")
        check_types("model.", field_types(MegaByteConfig), model_fields)
        if preset not in PRESETS:
            raise ConfigError(f"model.preset {preset!r} is not a preset; choose one of {sorted(PRESETS)}")
        try:
            model = MegaByteConfig.from_dict({**PRESETS[preset].to_dict(), **model_fields})
        except (ValueError, TypeError) as error:
            raise ConfigError(f"[model]: {error}") from None
        data = build_data_section(raw.get("data", {}), model, sections["run"])
        config = cls(data=data, model=model, model_preset=preset, **sections)
        config.check()
        return config

    def check(self) -> None:
        """Ranges and combinations (the types are checked when the sections are built; [data]'s
        ranges by the LoaderConfig itself)."""
        data, optim = self.data, self.optim
        for name in SECTIONS:
            check_fields(f"{name}.", getattr(self, name))
        if len(optim.betas) != 2 or not all(0 <= beta < 1 for beta in optim.betas):
            raise ConfigError(f"optim.betas = {optim.betas}: two numbers from 0 to below 1, "
                              "e.g. [0.9, 0.98]")
        if not data.datasets:
            raise ConfigError("data.datasets is empty: list at least one converted dataset directory")
        if self.deepspeed.offload_param and self.deepspeed.zero_stage != 3:
            raise ConfigError("deepspeed.offload_param needs deepspeed.zero_stage = 3")

    def check_paths(self) -> None:
        """The datasets exist (a URL's manifest can be read), the model can read each one's
        modality (spacelike patches need text), and the output directory can be one (checked at
        start-up, before anything is built, not when a checkpoint's config is read)."""
        for path in [*self.data.datasets, *([self.data.validation] if self.data.validation else [])]:
            if storage.is_url(path):
                try:  # reachable, with these credentials, and a dataset: all in one request
                    manifest = load_manifest(path)
                except UsageError as error:
                    raise ConfigError(f"{error}; fix the URL or the credentials") from None
            elif not (Path(path) / INDEX_NAME).is_file():
                raise ConfigError(f"{path}: not a converted dataset (no {INDEX_NAME}); convert it with "
                                  "`megabyte convert` or fix the path in [data]")
            else:
                manifest = load_manifest(path)
            try:
                self.model.check_modality(manifest.modality)
            except ValueError as error:
                raise ConfigError(f"{path} holds {manifest.modality}; [model]: {error}") from None
        out_dir = Path(self.run.out_dir)
        existing = next(path for path in [out_dir, *out_dir.parents] if path.exists())
        if not existing.is_dir():
            raise ConfigError(f"run.out_dir = '{out_dir}': {existing} is a file, not a folder; "
                              "choose another run.out_dir")

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each rank (see LoaderConfig.accumulation_steps)."""
        try:
            return self.data.accumulation_steps(world_size)
        except ValueError as error:
            raise ConfigError(f"data.{error}") from None


def build_data_section(values: dict, model: MegaByteConfig, run: RunConfig) -> LoaderConfig:
    """[data] → the loader's config, with the model's sequence length and patch size and the
    run's seed."""
    stated = sorted(set(values) & set(DATA_FROM))
    if stated:
        raise ConfigError(f"data.{stated[0]} is {DATA_FROM[stated[0]]}: set it there (one value "
                          "for the model and the loader)")
    check_keys("data", LoaderConfig, values, exclude=set(DATA_FROM))
    check_types("data.", field_types(LoaderConfig), values)
    try:
        return LoaderConfig(**values, seq_len=model.seq_len, patch_size=model.patch_size, seed=run.seed)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"data.{error}") from None


def check_keys(name: str, kind, values: dict, exclude: set = frozenset()) -> None:
    known = {f.name for f in dataclasses.fields(kind)} - exclude
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{name}]; known keys are {sorted(known)}")


def with_recipe(optim: dict) -> dict:
    """[optim] keys over the defaults of the recipe they name (if any)."""
    recipe = optim.get("recipe", "")
    if recipe and recipe not in RECIPES:
        raise ConfigError(f"optim.recipe = {recipe!r}: choose one of {sorted(RECIPES)} (or leave it out)")
    return {**RECIPES.get(recipe, {}), **optim}


def build_section(name: str, kind, values: dict):
    check_keys(name, kind, values)
    check_types(f"{name}.", field_types(kind), values)
    return kind(**values)


def field_types(kind) -> dict[str, type]:
    """A dataclass's field names → their types."""
    return {f.name: f.type for f in dataclasses.fields(kind)}


def check_types(where: str, types: dict[str, type], values: dict) -> None:
    """Each key of `values` that `types` names holds a value of that type (an int will do for a
    float, a bool will not do for a number); ConfigError naming the key (after `where`, e.g.
    "optim."), the value and the type."""
    for key, kind in types.items():
        value = values.get(key)
        if key in values and not has_type(value, kind):
            expected = str(kind) if typing.get_origin(kind) else kind.__name__  # list[str], int
            raise ConfigError(f"{where}{key} = {value!r}: expected {expected}, not {type(value).__name__}")


# a field's metadata key → (holds(value, bound), what it says)
RANGES = {"least": (operator.ge, "at least {}"), "above": (operator.gt, "above {}"),
          "most": (operator.le, "at most {}")}


def check_fields(where: str, config) -> None:
    """Each field of a dataclass instance is in the range its metadata declares (see the module's
    docstring); ConfigError naming the key (after `where`, e.g. "optim."), the value and the range."""
    for f in dataclasses.fields(config):
        value, bounds = getattr(config, f.name), f.metadata
        if "choices" in bounds and value not in bounds["choices"]:
            raise ConfigError(f"{where}{f.name} = {value!r}: choose one of {list(bounds['choices'])}")
        ranges = {key: bound for key, bound in bounds.items() if key in RANGES}
        holds = all(RANGES[key][0](value, bound) for key, bound in ranges.items())
        if ranges and not (math.isfinite(value) and holds):
            raise ConfigError(f"{where}{f.name} = {value}: must be {range_text(ranges)}")


def range_text(ranges: dict) -> str:
    if ranges.keys() == {"least", "most"}:
        return f"{ranges['least']} to {ranges['most']}"
    return " and ".join(RANGES[key][1].format(bound) for key, bound in ranges.items())


def has_type(value, kind) -> bool:
    if typing.get_origin(kind) is list:
        [item] = typing.get_args(kind)
        return isinstance(value, list) and all(has_type(v, item) for v in value)
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def parse_override(text: str) -> tuple[str, str, object]:
    """'section.key=value' → (section, key, value); the value is parsed as TOML if it can be."""
    target, sep, value_text = text.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. optim.lr=1e-3")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text  # a bare word: a string
    return section, key.strip(), value


def resolve_shipped(name: str, folder: Path, what: str) -> Path:
    """A file path, or the name of a file shipped in `folder` (e.g. "tiny-cpu" for a config)."""
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    shipped = folder / f"{name}.toml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in folder.glob("*.toml"))
    raise ConfigError(f"{name}: no such {what} file (shipped {what}s: {', '.join(names)})")


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror or error})") from None


def load_config(path: str, overrides: list[str] = ()) -> TrainConfig:
    raw = read_toml(resolve_shipped(path, SHIPPED_CONFIGS, "config"))
    for override in overrides:
        section, key, value = parse_override(override)
        raw.setdefault(section, {})[key] = value
    return TrainConfig.from_dict(raw)


def stored_model_config(raw: dict) -> MegaByteConfig:
    """The model of a config as `to_dict` stored it (a run's OUT/config.json, a checkpoint's
    config.json): its [model] section less the preset's name. ValueError if it is not one."""
    return MegaByteConfig.from_dict({k: v for k, v in raw["model"].items() if k != "preset"})


def check_stored(config) -> None:
    """Each section a stored config holds is an object whose keys have their fields' types, and a
    whole config (one with [data]) the ranges and combinations of a config read from a file (the
    keys it leaves out take their defaults: older checkpoints have fewer); `media` maps names to
    text."""
    kinds = {"data": LoaderConfig, "model": MegaByteConfig, **SECTIONS}
    if not isinstance(config, dict):
        raise UsageError(f"holds a {type(config).__name__}, not a config object")
    for name, section in config.items():
        if name in kinds or name == "media":
            if not isinstance(section, dict):
                raise UsageError(f"[{name}] is a {type(section).__name__}, not a section")
        if name in kinds:
            check_types(f"{name}.", field_types(kinds[name]), section)
        elif name == "media" and not all(isinstance(value, str) for value in section.values()):
            raise UsageError("[media] holds values that are not text")
    if "data" in config:  # a trainer's whole config: its ranges too (a part alone has no datasets)
        TrainConfig.from_dict({name: section for name, section in config.items() if name != "media"})


def dump_config(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), indent=1)

