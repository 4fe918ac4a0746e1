"""The budget → optimizer steps of each run, decided once and kept in OUT/plan.json.

A run's compute is counted as the training FLOPs of the bytes it is trained on:

    FLOPs per step  = training FLOPs per byte (model/flops.py) × positions per step
    positions/step  = data.batch_size sequences × the positions a forward predicts (seq_len, or
                      the latents of a PerceiverAR)
    steps           = budget_flops / FLOPs per step, rounded to the nearest step

so a model that costs twice as much per byte trains on half the bytes, and every run spends the
budget to within half a step (MIN_STEPS keeps that within 1%: a smaller budget is refused). With
budget_minutes the steps come from timing a few training steps of each model here (forward,
backward and AdamW on the micro-batch, times the micro-batches per step and rank); the run then
trains for exactly that many steps, whatever the clock says later, so a resumed run finishes the
same. Each run's schedule (warm-up, decay) is fitted to its own steps.

plan.json keeps, per run, a fingerprint of what decides it (the budget and the resolved train config,
Suite.fingerprint): a rerun reuses the plan, and a run whose settings changed is refused rather
than continued under another budget.
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from compare.suite import RunSpec, Suite
from compare.sweep import grid_trials
from model.flops import training_flops_per_byte
from pipeline.format.errors import UsageError
from pipeline.format.files import write_text_atomically
from train.config import TrainConfig
from train.windows import predicted_per_window

MIN_STEPS = 50  # half a step of rounding is then at most 1% of the budget
MAX_STEPS = 10**9  # a budget buying more is a typo (1e308), not a plan
TIMED_STEPS = 5  # budget_minutes: training steps timed per model (the median counts),
WARM_UP_SECONDS = 1.0  # after at least this long of untimed ones: a fresh process's first steps are slow


@dataclass
class RunPlan:
    steps: int
    flops_per_byte: float  # training FLOPs (forward + backward) per predicted byte
    positions_per_step: int
    fingerprint: str
    seconds_per_step: float = 0.0  # budget_minutes only: the timing the steps came from

    @property
    def flops_per_step(self) -> float:
        return self.flops_per_byte * self.positions_per_step


def plan_suite(suite: Suite, trials: list[RunSpec] | None = None, save: bool = True) -> dict[str, RunPlan]:
    """Each trial's plan (default: every setting of every run's grid, compare/sweep.py): from
    OUT/plan.json where it was made before, else made now and added to it (unless `save` is False:
    `--plan`, a dry run, writes nothing)."""
    trials = trials if trials is not None else [t for run in suite.runs for t in grid_trials(suite, run)]
    path = suite.out_dir / "plan.json"
    saved = read_plan(path)
    plans = {}
    for trial in trials:
        config = suite.train_config(trial, total_steps=1)  # every key, the preset: checked here
        config.check_paths()
        fingerprint = suite.fingerprint(config)
        old = saved.get(trial.name)
        if old is not None and old.fingerprint != fingerprint:
            raise UsageError(f"{suite.out_dir}: run {trial.name!r} was planned from other settings (the "
                             "data, budget, config or the run changed since): choose another out_dir, or "
                             f"remove {suite.run_dir(trial)} and its entry in {path}")
        plans[trial.name] = old or plan_run(suite, trial, config, fingerprint)
    if not save:
        return plans
    suite.out_dir.mkdir(parents=True, exist_ok=True)
    every = {**saved, **plans}
    text = json.dumps({name: asdict(plan) for name, plan in every.items()}, indent=1) + "\n"
    write_text_atomically(path, text, on_error="usage")
    return plans


def read_plan(path: Path) -> dict[str, RunPlan]:
    if not path.is_file():
        return {}
    try:
        return {name: RunPlan(**fields) for name, fields in json.loads(path.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise UsageError(f"{path}: not a comparison plan ({error}); remove it to plan again") from None


def plan_run(suite: Suite, run: RunSpec, config: TrainConfig, fingerprint: str) -> RunPlan:
    """Size the run's steps (UsageError if the budget buys too few)."""
    if config.data.batch_size < 1:
        raise UsageError(f"run {run.name!r}: data.batch_size is 0 (micro-batch × ranks): set it in the "
                         "config or [set], so that the budget can be counted in sequences")
    positions = config.data.batch_size * predicted_per_window(config.model)
    plan = RunPlan(0, training_flops_per_byte(config.model), positions, fingerprint)
    if suite.budget_flops:
        steps = suite.budget_flops / plan.flops_per_step
        if steps > MAX_STEPS:
            raise too_many_steps(suite, run, steps)
        plan.steps = round(steps)
        if plan.steps < MIN_STEPS:
            raise UsageError(f"run {run.name!r}: budget_flops = {suite.budget_flops:.3g} buys {plan.steps} "
                             f"steps of {plan.flops_per_step:.3g} FLOPs; at least {MIN_STEPS} are needed "
                             f"(raise it to {MIN_STEPS * plan.flops_per_step:.3g}, or shrink data.batch_size)")
    else:
        plan.seconds_per_step = time_step(config, suite.ranks)
        steps = 60 * suite.budget_minutes / plan.seconds_per_step
        if steps > MAX_STEPS:
            raise too_many_steps(suite, run, steps)
        plan.steps = max(1, int(steps))
    return plan


def too_many_steps(suite: Suite, run: RunSpec, steps: float) -> UsageError:
    return UsageError(f"{suite.path}: run {run.name!r}: {suite.budget_text()} buys {steps:.3g} steps, more "
                      f"than the {MAX_STEPS:,} a run may plan: lower the budget")


def time_step(config: TrainConfig, ranks: int) -> float:
    """Seconds one optimizer step of this run takes on this machine's first device: the median of
    TIMED_STEPS after WARM_UP_SECONDS of steps (random bytes: the cost does not depend on them)."""
    import torch

    from model import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(config.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    micro, accumulation = config.data.micro_batch_size, config.accumulation_steps(ranks)
    ids = torch.randint(0, 256, (micro, config.model.seq_len), device=device)  # (B, T)
    precision = torch.bfloat16 if device.type == "cuda" else torch.float32
    times, warm_until = [], time.perf_counter() + WARM_UP_SECONDS
    while len(times) < TIMED_STEPS:
        started = time.perf_counter()
        for _ in range(accumulation):
            with torch.autocast(device.type, dtype=precision, enabled=device.type == "cuda"):
                loss, _ = model(ids, loss=True)  # as the trainer computes it
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if started > warm_until:
            times.append(time.perf_counter() - started)
    return sorted(times)[TIMED_STEPS // 2]


def suite_cost(suite: Suite, plans: dict[str, RunPlan]) -> tuple[float, float]:
    """(training FLOPs, training seconds on this machine) of the whole suite: every setting of every
    grid, and each run's other seeds counted at its dearest setting (which one is best is not known
    before it trains). Seconds come from timing each model's steps here, as budget_minutes does;
    evaluation and generation come on top."""
    timed = {}  # a model and its batch → seconds per step: settings that differ by lr cost the same
    flops = seconds = 0.0
    for run in suite.runs:
        costs = []
        for trial in grid_trials(suite, run):
            plan, config = plans[trial.name], suite.train_config(trial, total_steps=1)
            key = json.dumps([config.model.to_dict(), config.data.micro_batch_size, config.data.batch_size])
            if key not in timed:
                timed[key] = plan.seconds_per_step or time_step(config, suite.ranks)
            costs.append((plan.steps * plan.flops_per_step, plan.steps * timed[key]))
        flops += sum(f for f, _ in costs) + (suite.seeds - 1) * max(f for f, _ in costs)
        seconds += sum(s for _, s in costs) + (suite.seeds - 1) * max(s for _, s in costs)
    return flops, seconds
