"""A run's trials: each setting of its sweep, then its best setting again with other seeds.

    run "megabyte", sweep {"optim.lr": [1e-3, 2e-3]}, seeds = 2
        OUT/runs/megabyte/optim.lr=0.001            the grid: every combination of the swept
        OUT/runs/megabyte/optim.lr=0.002            values, at the config's own run.seed
        → the best: the lowest validation bits per byte (plain windows, every byte; ties: the first)
        OUT/runs/megabyte/optim.lr=0.002,seed=1235  the best setting at run.seed + 1, + 2, ...

A run without a sweep is one setting, "default" (OUT/runs/NAME/default, and its seeds beside it);
a run with neither a sweep nor seeds is its own trial, OUT/runs/NAME, as before sweeps. A trial is
a RunSpec like any run (its name is its folder under OUT/runs), so it is planned, trained and
measured as one. What is compared is the run's summary: the best setting, the mean and spread of
its seeds, and every setting's score (`summarize`).
"""

import itertools
import json
import statistics

from compare.suite import RunSpec, Suite

DEFAULT = "default"  # the folder of a run's one setting when it has seeds but no sweep


def run_grid(suite: Suite, run: RunSpec) -> dict[str, list]:
    return suite.sweep if run.sweep is None else run.sweep


def settings(suite: Suite, run: RunSpec) -> list[dict]:
    """Every combination of the run's swept values, in the order the suite lists them."""
    grid = run_grid(suite, run)
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def is_plain(suite: Suite, run: RunSpec) -> bool:
    """A run of one setting and one seed: trained as itself, in OUT/runs/NAME."""
    return suite.seeds == 1 and not run_grid(suite, run)


def trial(suite: Suite, run: RunSpec, setting: dict, seed: int | None = None) -> RunSpec:
    """The run at `setting` (and at `seed`, else the config's own run.seed)."""
    if is_plain(suite, run):
        return run
    values = {**setting, **({} if seed is None else {"run.seed": seed})}
    folder = ",".join(f"{key.removeprefix('run.')}={json.dumps(value).strip(chr(34))}"
                      for key, value in values.items()) or DEFAULT
    if not setting and seed is not None:
        folder = f"{DEFAULT},{folder}"
    return RunSpec(f"{run.name}/{folder}", run.preset, {**run.overrides, **values})


def grid_trials(suite: Suite, run: RunSpec) -> list[RunSpec]:
    return [trial(suite, run, setting) for setting in settings(suite, run)]


def seed_trials(suite: Suite, run: RunSpec, setting: dict, first_seed: int) -> list[RunSpec]:
    """The best setting again at the seeds after the one the grid was trained with."""
    return [trial(suite, run, setting, first_seed + n) for n in range(1, suite.seeds)]


def best_index(scores: list[dict]) -> int:
    """The grid's best: the lowest validation bits per byte, the first of equals."""
    return min(range(len(scores)), key=lambda i: scores[i]["bpb"])


def at_edge(suite: Suite, run: RunSpec, setting: dict) -> list[str]:
    """The swept numeric keys whose best value is the least or the greatest of their values: the
    optimum may lie beyond the grid."""
    grid = run_grid(suite, run)
    numeric = {key: values for key, values in grid.items()
               if len(values) > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)}
    return [key for key, values in numeric.items() if setting[key] in (min(values), max(values))]


def summarize(suite: Suite, run: RunSpec, grid: list[dict], seeds: list[dict]) -> dict:
    """The run's result: its best trial's figures, with the seeds' mean bits per byte as "bpb" and
    their range, the best setting, and every setting's score.

    grid: the scores (result of compare/measure.py) of every setting, in order; seeds: the best
    setting's scores at the other seeds."""
    best = best_index(grid)
    setting = settings(suite, run)[best]
    repeats = [grid[best], *seeds]
    values = [score["bpb"] for score in repeats]
    summary = {**grid[best], "name": run.name, "setting": setting, "edge": at_edge(suite, run, setting),
               "bpb": statistics.fmean(values), "bpb_min": min(values), "bpb_max": max(values),
               "seeds": [{"seed": score["seed"], "bpb": score["bpb"]} for score in repeats]}
    if len(settings(suite, run)) > 1:
        summary["sweep"] = [{"set": s, **{key: score[key] for key in GRID_KEYS}, "best": i == best}
                            for i, (s, score) in enumerate(zip(settings(suite, run), grid))]
    return summary


def is_current(suite: Suite, run: RunSpec, result: dict) -> bool:
    """Whether a run's saved result summarizes the grid and seeds the suite gives it now (a grid
    widened since is trained where it is new and summarized again)."""
    tried = [entry["set"] for entry in result.get("sweep", [{"set": result.get("setting", {})}])]
    return tried == settings(suite, run) and len(result.get("seeds", [])) == suite.seeds


# what the grid keeps of each setting's scores
GRID_KEYS = ("bpb", "steps", "wall_seconds", "loss_rise", "loss_rise_step")
