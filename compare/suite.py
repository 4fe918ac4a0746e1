"""A comparison suite: one TOML file naming the data, the budget, the shared recipe and the runs.

    title = "Text: prose"                 # the heading of results.md (default: the file's name)
    train = "data/real/kjv-train"         # one converted dataset (a directory or a URL)
    validation = "data/real/kjv-val"      # scored on every byte after training
    out_dir = "runs/compare-kjv"          # OUT/runs/NAME per run, then OUT/results.{md,json}, curves.png
    budget_flops = 2e13                   # training FLOPs per run; or budget_minutes = 10
    config = "tiny-cpu"                   # the shared train config (a file or a shipped name)
    generate_bytes = 8192                 # bytes generated (batch 1) to time each model
    generate_repeats = 3                  # timings of that generation; the median counts
    seeds = 3                             # each run's best setting trained with 3 seeds (compare/sweep.py)
    curve_points = 8                      # validations during each run, for curves.png
    curve_batches = 16                    # validation batches each of those scores (run.eval_batches)
    launcher = ["deepspeed", "--num_gpus", "8"]   # default: this Python, one process
    ranks = 8                             # processes the launcher starts (timing budget_minutes)
    [set]                                 # keys of the train config, for every run
    "model.seq_len" = 512
    [sweep]                               # train config keys → values: every run tries each setting
    "optim.lr" = [1e-3, 2e-3, 4e-3]       # (a grid: every combination of the keys' values)
    [[runs]]
    name = "megabyte"                     # letters, digits, '_', '-' (it names OUT/runs/NAME)
    preset = "tiny"
    set = { "model.dropout" = 0.0 }       # this run's own keys, over [set]
    sweep = { "optim.lr" = [5e-4, 1e-3] } # this run's own grid, instead of [sweep]

Relative paths are taken from the directory the command runs in, as for `megabyte train`. A run's
train config is CONFIG, then [set], then the run's `set`, then what the comparison itself decides
(OWNED_KEYS): each run is the command line `-m train.main --config CONFIG --set ...` that
`train_command` returns, and the same overrides build its config here for checking and planning.
Everything is checked before anything trains: a bad suite is one UsageError line.
"""

import hashlib
import json
import math
import re
import sys
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from pipeline.format.errors import UsageError
from pipeline.format.manifest import KEY_PATTERN
from train.config import (ConfigError, TrainConfig, check_fields, check_types, load_config, read_toml,
                          resolve_shipped)

SHIPPED_SUITES = Path(__file__).parent / "suites"
# train config keys the comparison sets for every run; a suite may not set them
OWNED_KEYS = ("data.datasets", "data.validation", "optim.total_steps", "run.out_dir", "run.eval_every",
              "run.eval_batches", "run.checkpoint_every", "run.max_minutes")
RUN_NAME = KEY_PATTERN  # a run's name follows the rule of a sample's key: no dot, no separator
SWEPT_NAME = re.compile(r"[A-Za-z0-9._+-]{1,40}")  # a swept string's rule: it names a folder


@dataclass
class RunSpec:
    name: str
    preset: str
    overrides: dict[str, object] = field(default_factory=dict)  # "section.key" → value
    sweep: dict[str, list] | None = None  # "section.key" → the values tried; None: the suite's [sweep]


@dataclass
class Suite:
    """A suite file's keys are these fields (but `path`, the file itself; [set] fills `overrides`);
    those without a default are required. Ranges are in the fields' metadata (train.config)."""
    path: Path
    train: str
    validation: str
    out_dir: Path
    runs: list[RunSpec]
    title: str = ""  # "": the file's name
    budget_flops: float = 0.0  # 0 when the budget is in minutes
    budget_minutes: float = 0.0  # 0 when the budget is in FLOPs
    overrides: dict[str, object] = field(default_factory=dict, metadata={"key": "set"})
    config: str = "tiny-cpu"
    generate_bytes: int = field(default=8192, metadata={"least": 1, "most": 2**24})
    generate_repeats: int = field(default=3, metadata={"least": 1, "most": 100})
    sweep: dict[str, list] = field(default_factory=dict)  # every run's grid, unless the run gives its own
    seeds: int = field(default=1, metadata={"least": 1, "most": 100})
    curve_points: int = field(default=8, metadata={"least": 1, "most": 1000})
    curve_batches: int = field(default=16, metadata={"least": 1, "most": 10**6})
    launcher: list[str] = field(default_factory=lambda: [sys.executable])
    ranks: int = field(default=1, metadata={"least": 1, "most": 2**20})

    def run_dir(self, run: RunSpec) -> Path:
        return self.out_dir / "runs" / run.name

    def budget_text(self) -> str:
        return (f"{self.budget_flops:.3g} training FLOPs" if self.budget_flops
                else f"{self.budget_minutes:g} minutes")

    def train_overrides(self, run: RunSpec, total_steps: int) -> list[str]:
        """--set arguments of the run's trainer: [set], the run's set, then the comparison's own."""
        every = max(1, total_steps // self.curve_points)
        owned = {"data.datasets": [self.train], "data.validation": self.validation,
                 "optim.total_steps": total_steps, "run.out_dir": str(self.run_dir(run)),
                 "run.eval_every": every, "run.eval_batches": self.curve_batches,
                 "run.checkpoint_every": every, "run.max_minutes": 0}  # the budget is the steps
        values = {**self.overrides, "model.preset": run.preset, **run.overrides, **owned}
        return [f"{key}={json.dumps(value)}" for key, value in values.items()]

    def train_config(self, run: RunSpec, total_steps: int) -> TrainConfig:
        """The run's config as its trainer will read it (UsageError naming the run if it cannot)."""
        try:
            return load_config(self.config, self.train_overrides(run, total_steps))
        except ConfigError as error:
            raise UsageError(f"run {run.name!r}: {error}") from None

    def train_command(self, run: RunSpec, total_steps: int) -> list[str]:
        sets = [part for o in self.train_overrides(run, total_steps) for part in ("--set", o)]
        return [*self.launcher, "-m", "train.main", "--config", self.config, *sets]

    def fingerprint(self, config: TrainConfig) -> str:
        """What decides a run's training: the budget and its whole resolved train config (so an
        edited config file counts too), less the keys at their defaults (so that a key a newer
        version adds, at its default, leaves a run planned before as it was). The same
        fingerprint, the same run (plan.json)."""
        settings = {name: {key: value for key, value in section.items() if value != defaults.get(key, MISSING)}
                    for (name, section), defaults in zip(config.to_dict().items(), section_defaults(config))}
        facts = [self.budget_flops, self.budget_minutes, settings]
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def section_defaults(config: TrainConfig) -> list[dict]:
    """Each section of config.to_dict() → its fields' defaults (where they have one)."""
    sections = [config.data, config.model, config.optim, config.deepspeed, config.run]
    return [{f.name: f.default if f.default is not MISSING else f.default_factory()
             for f in fields(section) if not (f.default is MISSING and f.default_factory is MISSING)}
            for section in sections]


# a suite file's keys → the Suite fields they fill
KEYS = {f.metadata.get("key", f.name): f for f in fields(Suite) if f.name != "path"}
REQUIRED = [key for key, f in KEYS.items() if f.default is MISSING and f.default_factory is MISSING]


def load_suite(name: str) -> Suite:
    """A suite file, or the name of a shipped suite (e.g. "text-prose")."""
    path = resolve_shipped(name, SHIPPED_SUITES, "suite")
    return build_suite(path, read_toml(path))


def build_suite(path: Path, raw: dict) -> Suite:
    check_top_level(path, raw)
    budgets = [key for key in ("budget_flops", "budget_minutes") if key in raw]
    if not budgets:
        raise UsageError(f"{path}: no budget: set budget_flops (training FLOPs per run) or budget_minutes")
    if len(budgets) == 2:
        raise UsageError(f"{path}: both budget_flops and budget_minutes: keep one")
    budget = raw[budgets[0]]
    if not (math.isfinite(budget) and budget > 0):
        raise UsageError(f"{path}: {budgets[0]} = {budget}: the budget must be above 0")
    if not all(isinstance(part, str) and part for part in raw.get("launcher", ["python"])):
        raise UsageError(f"{path}: launcher = {raw['launcher']!r}: a list of words, e.g. [\"deepspeed\", "
                         "\"--num_gpus\", \"8\"]")
    values = {KEYS[key].name: value for key, value in raw.items()}
    values.update(title=raw.get("title") or path.stem, out_dir=Path(raw["out_dir"]),
                  budget_flops=float(raw.get("budget_flops", 0)), budget_minutes=float(raw.get("budget_minutes", 0)),
                  overrides=flat_keys(path, "set", raw.get("set", {})),
                  sweep=sweep_grid(path, "sweep", raw.get("sweep", {})),
                  runs=[build_run(path, index, entry) for index, entry in enumerate(raw["runs"])])
    suite = Suite(path=path, **values)
    check_fields(f"{path}: ", suite)
    if not suite.runs:
        raise UsageError(f"{path}: no runs: add at least one [[runs]] table with a name and a preset")
    names = [run.name for run in suite.runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"{path}: run name {repeated[0]!r} is used twice: each run needs its own name")
    return suite


def check_top_level(path: Path, raw: dict) -> None:
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {unknown}; known keys are {sorted(KEYS)}")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise UsageError(f"{path}: {missing[0]} is missing")
    check_types(f"{path}: ", {key: file_type(f.type) for key, f in KEYS.items()}, raw)


def file_type(kind) -> type:
    """The type of a suite file's value for a field of type `kind`: a path is a string, a list or
    a table just that (their items are checked where they are read: build_run, flat_keys)."""
    return str if kind is Path else typing.get_origin(kind) or kind


def flat_keys(path: Path, where: str, table: dict) -> dict[str, object]:
    """{"model": {"seq_len": 512}} or {"model.seq_len": 512} → {"model.seq_len": 512}; the owned
    keys are refused."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict) and "." not in key:
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    for key, value in flat.items():
        if key.count(".") != 1:
            raise UsageError(f"{path}: {where}: {key!r} is not a train config key (section.key, "
                             "e.g. \"model.seq_len\")")
        if key in OWNED_KEYS:
            raise UsageError(f"{path}: {where}: {key} is set by the comparison itself (from train, "
                             "validation, out_dir, the budget and curve_points); leave it out")
        if key == "model.preset":
            raise UsageError(f"{path}: {where}: model.preset is the run's `preset` key")
        if isinstance(value, dict):
            raise UsageError(f"{path}: {where}: {key} = {value!r}: a table is not a config value")
    return flat


def build_run(path: Path, index: int, entry) -> RunSpec:
    where = f"runs[{index}]"
    if not isinstance(entry, dict):
        raise UsageError(f"{path}: {where}: expected a table with name and preset")
    unknown = sorted(set(entry) - {"name", "preset", "set", "sweep"})
    if unknown:
        raise UsageError(f"{path}: {where}: unknown key(s) {unknown}; a run has name, preset, set and sweep")
    for key in ("name", "preset"):
        if not isinstance(entry.get(key), str):
            raise UsageError(f"{path}: {where}: {key} is missing (a string)")
    if not RUN_NAME.fullmatch(entry["name"]):
        raise UsageError(f"{path}: {where}: name {entry['name']!r}: 1-90 letters, digits, '_' and '-' "
                         "only (it names a folder)")
    overrides = entry.get("set", {})
    if not isinstance(overrides, dict):
        raise UsageError(f"{path}: {where}: set = {overrides!r}: expected a table")
    sweep = sweep_grid(path, f"{where}.sweep", entry["sweep"]) if "sweep" in entry else None
    return RunSpec(entry["name"], entry["preset"], flat_keys(path, f"{where}.set", overrides), sweep)


def sweep_grid(path: Path, where: str, table) -> dict[str, list]:
    """A [sweep] table → {"section.key": [values]}: each key a train config key the suite may set,
    each list of distinct numbers, booleans or short names (a value names the setting's folder)."""
    if not isinstance(table, dict):
        raise UsageError(f"{path}: {where} = {table!r}: expected a table, e.g. {{ \"optim.lr\" = [1e-3, 2e-3] }}")
    grid = flat_keys(path, where, table)
    for key, values in grid.items():
        if key == "run.seed":
            raise UsageError(f"{path}: {where}: run.seed is not swept: set seeds = N to repeat each run's "
                             "best setting with N seeds")
        if not (isinstance(values, list) and values):
            raise UsageError(f"{path}: {where}: {key} = {values!r}: expected a list of the values to try")
        for value in values:
            if not (isinstance(value, (int, float)) or SWEPT_NAME.fullmatch(str(value))):
                raise UsageError(f"{path}: {where}: {key} = {value!r}: a swept value is a number, a boolean "
                                 "or a name of 1-40 letters, digits, '.', '_', '+' and '-'")
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"{path}: {where}: {key} = {value}: not a finite number")
        if len(set(map(json.dumps, values))) < len(values):
            raise UsageError(f"{path}: {where}: {key} = {values}: a value is repeated")
    return grid
