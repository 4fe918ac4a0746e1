"""Training configuration: a TOML file with five sections, overridable from the command line.

    [data]       the loader's config (pipeline.load.loader.LoaderConfig): datasets, weights,
                 validation set, batch sizes, loader options; seq_len and patch_size are the
                 model's, the seed is run.seed
    [model]      preset = "<name in model.PRESETS>", plus any MegaByteConfig field to override
    [optim]      AdamW and the learning-rate schedule
    [deepspeed]  ZeRO stage, precision, offload (or a raw DeepSpeed JSON)
    [run]        output directory, checkpoint / eval / log intervals, seed, limits

`--set section.key=value` overrides one key; the value is read as a TOML value (`3`, `1e-3`,
`true`, `"text"`, `["a", "b"]`), and a bare word is taken as a string. Unknown sections or keys,
missing datasets and batch sizes that do not divide are ConfigError: one line saying what to change.
"""

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from model import PRESETS, MegaByteConfig
from pipeline.format.errors import UsageError
from pipeline.load.loader import LoaderConfig

SHIPPED_CONFIGS = Path(__file__).parent / "configs"


class ConfigError(UsageError):
    """A training configuration that cannot run, with what to change."""


@dataclass
class OptimConfig:
    lr: float = 2e-3  # peak learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    weight_decay: float = 0.1  # on matrices only, not on norms, biases or embeddings
    grad_clip: float = 1.0
    warmup_steps: int = 100  # linear warm-up from 0
    schedule: str = "cosine"  # after warm-up: "cosine" or "linear" decay to min_lr_ratio·lr, or "constant"
    min_lr_ratio: float = 0.1
    total_steps: int = 1000  # optimizer steps of the whole run


@dataclass
class DeepSpeedSection:
    zero_stage: int = 2  # 0 (plain data parallel), 1, 2 or 3
    precision: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU), "bf16" or "fp32"
    offload_optimizer: bool = False  # ZeRO-Offload of optimizer states to CPU memory
    offload_param: bool = False  # parameters to CPU memory too (ZeRO-3 only)
    config_file: str = ""  # a raw DeepSpeed JSON: used as the base; batch sizes come from [data]


@dataclass
class RunConfig:
    out_dir: str = "runs/default"  # checkpoints, metrics.jsonl, TensorBoard events, resolved config
    seed: int = 1234
    checkpoint_every: int = 500  # optimizer steps; 0 = only at the end (and on SIGTERM/SIGINT)
    keep_last: int = 3  # checkpoints kept; older ones are pruned
    eval_every: int = 500  # optimizer steps; 0 = only at the end
    eval_batches: int = 0  # validation batches per rank per evaluation; 0 = the whole set
    log_every: int = 10
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    progress: bool = True  # progress bar on rank 0
    trace_batches: bool = False  # write OUT/trace/rank-R.jsonl: a hash of every sequence trained on
    compile: bool = False  # torch.compile each transformer block (no gain measured at 350M: BENCHMARKS.md)


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
        sections = {name: build_section(name, kind, raw.get(name, {})) for name, kind in SECTIONS.items()}
        model_fields = dict(raw.get("model", {}))
        preset = model_fields.pop("preset", "tiny")
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
        if self.optim.total_steps < 1:
            raise ConfigError(f"optim.total_steps = {self.optim.total_steps}: must be at least 1")
        if not self.data.datasets:
            raise ConfigError("data.datasets is empty: list at least one converted dataset directory")
        choices = {"optim.schedule": (self.optim.schedule, ("cosine", "linear", "constant")),
                   "deepspeed.precision": (self.deepspeed.precision, ("auto", "bf16", "fp32")),
                   "deepspeed.zero_stage": (self.deepspeed.zero_stage, (0, 1, 2, 3))}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{name} = {value!r}: choose one of {list(allowed)}")
        if self.deepspeed.offload_param and self.deepspeed.zero_stage != 3:
            raise ConfigError("deepspeed.offload_param needs deepspeed.zero_stage = 3")

    def check_paths(self) -> None:
        """The datasets exist (checked at start-up, not when a checkpoint's config is read)."""
        for path in [*self.data.datasets, *([self.data.validation] if self.data.validation else [])]:
            if not (Path(path) / "index.json").is_file():
                raise ConfigError(f"{path}: not a converted dataset (no index.json); convert it with "
                                  "`megabyte convert` or fix the path in [data]")

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
    try:
        return LoaderConfig(**values, seq_len=model.seq_len, patch_size=model.patch_size, seed=run.seed)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"data.{error}") from None


def check_keys(name: str, kind, values: dict, exclude: set = frozenset()) -> None:
    known = {f.name for f in dataclasses.fields(kind)} - exclude
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{name}]; known keys are {sorted(known)}")


def build_section(name: str, kind, values: dict):
    check_keys(name, kind, values)
    try:
        return kind(**values)
    except TypeError as error:
        raise ConfigError(f"[{name}]: {error}") from None


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


def resolve_config_path(path: str) -> Path:
    """A file path, or the name of a shipped config (e.g. "tiny-cpu")."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    shipped = SHIPPED_CONFIGS / f"{path}.toml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.toml"))
    raise ConfigError(f"{path}: no such config file (shipped configs: {', '.join(names)})")


def load_config(path: str, overrides: list[str] = ()) -> TrainConfig:
    config_path = resolve_config_path(path)
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{config_path}: not valid TOML ({error})") from None
    for override in overrides:
        section, key, value = parse_override(override)
        raw.setdefault(section, {})[key] = value
    return TrainConfig.from_dict(raw)


def dump_config(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), indent=1)

