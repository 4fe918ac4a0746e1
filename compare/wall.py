"""A run's wall time: the seconds each launch of its trainer took, kept in its run directory.

The runner (compare/runner.py) adds a launch when its trainer exits; measuring (compare/measure.py)
sums them. A resumed run counts every launch, start-up included.
"""

import json
from pathlib import Path

from pipeline.format.errors import DataError
from pipeline.format.files import write_text_atomically

WALL = "compare-wall.json"  # [seconds, ...]: one entry per launch of the run's trainer


def add_launch(run_dir: Path, seconds: float) -> None:
    wall = run_dir / WALL
    launches = json.loads(wall.read_text()) if wall.is_file() else []
    launches.append(round(seconds, 3))
    write_text_atomically(wall, json.dumps(launches) + "\n", on_error="usage")


def wall_seconds(run_dir: Path) -> float:
    wall = run_dir / WALL
    if not wall.is_file():
        raise DataError(f"{wall}: missing: the run was not trained by `megabyte compare`")
    return sum(json.loads(wall.read_text()))
