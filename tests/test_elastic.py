"""Elastic resume (train/reshard.py) with real processes on gloo: a run saved on 2 ranks goes on
on 1, then on 2 again, for ZeRO stages 1, 2 and 3; model and optimizer states come back exactly,
and the steps after each resume match an uninterrupted 2-rank run."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.format.errors import UsageError
import forked
from helpers import ENV, REPO, TINY_MODEL, finish, free_port, make_dataset, run_training, write_config
from train import checkpoint, reshard
from train.config import load_config
from train.export import model_from_checkpoint

STATES = ("fp32", "exp_avg", "exp_avg_sq")  # weights and Adam's moments, per parameter


def run_elastic(config: Path, ranks: int, until: int, extra=()) -> str:
    """tests/elastic_run.py on `ranks` processes; its stderr."""
    script = [str(REPO / "tests" / "elastic_run.py"), "--config", str(config),
              *[f"--set={s}" for s in TINY_MODEL], "--until", str(until), *extra]
    return finish(forked.start(script, ENV, ranks, free_port())).stderr


def steps(run_dir: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records}


def universal_states(folder: Path, scratch: Path) -> dict[str, torch.Tensor]:
    """Every parameter's consolidated fp32 weights, Adam moments and step in a checkpoint of any
    world size ({"name/state": tensor}), read through a universal conversion."""
    target = scratch / f"{folder.parent.parent.name}-{folder.parent.name}-{folder.name}"
    reshard.convert(folder, target)
    states = {}
    for parameter in (target / "zero").iterdir():
        for file in parameter.glob("*.pt") if parameter.is_dir() else ():  # stages 1-2: step.pt too
            saved = torch.load(file, weights_only=False)
            states[f"{parameter.name}/{file.stem}"] = saved["param"] if isinstance(saved, dict) else saved
    optimizer = torch.load(target / "zero" / "optimizer_state.pt", weights_only=False)
    for group, state in optimizer.get("optimizer_state_dict", {}).get("state", {}).items():
        states[f"group {group}/step"] = state["step"]  # ZeRO-3 keeps Adam's step here
    return states


def assert_same_states(saved: Path, resumed: Path, scratch: Path) -> None:
    expected, actual = universal_states(saved, scratch), universal_states(resumed, scratch)
    assert sorted(actual) == sorted(expected)
    assert {name.split("/")[1] for name in expected} == {*STATES, "step"}
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
        if name.endswith("/step"):  # Adam stepped once per optimizer step, in every group
            assert tensor.item() == int(saved.name.split("-")[1]), name


def assert_export_matches(folder: Path, scratch: Path) -> None:
    """export's consolidated weights (zero_to_fp32, what eval and generate read) are the fp32
    values of the universal conversion."""
    model, metadata, _ = model_from_checkpoint(folder)
    weights = model.state_dict()
    fp32 = {name.removesuffix("/fp32"): tensor for name, tensor in universal_states(folder, scratch).items()
            if name.endswith("/fp32")}
    assert metadata["step"] == int(folder.name.split("-")[1]) and fp32
    for name, tensor in fp32.items():
        assert torch.equal(weights[name], tensor.view_as(weights[name])), name


def assert_steps_match(elastic: dict[int, dict], reference: dict[int, dict], numbers) -> None:
    for step in numbers:
        assert elastic[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-5), step
        assert elastic[step]["lr"] == pytest.approx(reference[step]["lr"], rel=1e-12), step
        assert elastic[step]["weight_decay"] == [0.1, 0.0], step  # each group keeps its own


@pytest.mark.slow
@pytest.mark.parametrize("stage, plan", [(1, [1, 2]), (2, [1]), (3, [1, 2])])
def test_a_run_saved_on_two_ranks_goes_on_on_one_then_two(tmp_path, stage, plan):
    """Reference: 2 ranks, steps 1-4. Elastic: the reference's step-2 checkpoint, then one step
    on each world size of `plan`, each resume converting the checkpoint the last one saved."""
    sections = {"deepspeed": {"zero_stage": stage}, "data": {"micro_batch_size": 2},
                "optim": {"weight_decay": 0.1}}
    (tmp_path / "reference").mkdir()
    (tmp_path / "elastic").mkdir()
    reference = write_config(tmp_path / "reference", Path("unused"), **sections)
    until = 2 + len(plan)
    run_elastic(reference, ranks=2, until=until, extra=["--save-every", "2"])
    saved = tmp_path / "reference" / "run" / "checkpoints" / "step-000002"
    assert_export_matches(saved, tmp_path / "scratch")
    elastic = write_config(tmp_path / "elastic", Path("unused"), **sections)
    root = tmp_path / "elastic" / "run" / "checkpoints"
    root.mkdir(parents=True)
    shutil.copytree(saved, root / saved.name)

    for step, ranks in enumerate(plan, start=3):
        dump = tmp_path / f"resumed-{step}"
        log = run_elastic(elastic, ranks, until=step, extra=["--dump-resumed", str(dump)])
        resumed_from = root / f"step-{step - 1:06d}"
        assert f"{resumed_from}: saved by {3 - ranks} ranks; converting it" in log
        assert checkpoint.damage(resumed_from) is None  # the checkpoint itself is as it was saved
        assert (root / "universal" / resumed_from.name / checkpoint.MARKER).is_file()
        assert_same_states(resumed_from, dump / resumed_from.name, tmp_path / "scratch")
    assert_steps_match(steps(tmp_path / "elastic" / "run"), steps(tmp_path / "reference" / "run"),
                       range(3, until + 1))


@pytest.mark.slow
def test_a_conversion_is_made_once_and_made_again_when_broken(tmp_path, capsys):
    """A resume reuses an intact conversion (no second conversion); a broken one is made anew."""
    config = write_config(tmp_path, Path("unused"), deepspeed={"zero_stage": 2}, data={"micro_batch_size": 2})
    run_elastic(config, ranks=1, until=1)
    folder = tmp_path / "run" / "checkpoints" / "step-000001"
    capsys.readouterr()
    made = reshard.ensure_conversion(folder)
    assert "converting it" in capsys.readouterr().err
    marker = (made / checkpoint.MARKER).stat().st_mtime_ns
    assert reshard.ensure_conversion(folder) == made and capsys.readouterr().err == ""
    assert (made / checkpoint.MARKER).stat().st_mtime_ns == marker
    next((made / "zero").rglob("exp_avg.pt")).write_bytes(b"garbage")
    assert reshard.ensure_conversion(folder) == made
    assert "broken conversion" in capsys.readouterr().err and checkpoint.damage(made) is None
    assert not list(made.parent.glob(".*.tmp")) and not (made.parent / "latest_universal").exists()

    stage0 = load_config(str(write_config(tmp_path, Path("unused"), deepspeed={"zero_stage": 0})))
    with pytest.raises(UsageError, match="resume with deepspeed.zero_stage = 2 or on 1 ranks"):
        reshard.needs_universal(folder, stage0, world_size=2)


def fake_checkpoint(folder: Path, ranks: int, data: dict) -> Path:
    """Just what reshard.describe_change reads: the saved config and one state file per rank."""
    (folder / checkpoint.STATE).mkdir(parents=True)
    for rank in range(ranks):
        (folder / checkpoint.STATE / f"rank-{rank:05d}.json").write_text("{}")
    stored = {"data": {"datasets": ["unused"], **data}, "deepspeed": {"zero_stage": 2}}
    (folder / checkpoint.CONFIG).write_text(json.dumps(stored))
    return folder


def test_the_resume_says_what_changed(tmp_path):
    saved = {"batch_size": 8, "micro_batch_size": 2, "num_workers": 1}
    folder = fake_checkpoint(tmp_path / "step-000004", ranks=2, data=saved)

    def change(world_size: int, **data) -> str | None:
        config = write_config(tmp_path, Path("unused"), data={**saved, **data})
        return reshard.describe_change(folder, load_config(str(config)), world_size)

    assert change(2) is None
    assert change(1) == "resuming with ranks 2 → 1, gradient accumulation 2 → 4, global batch 8 (unchanged)"
    assert change(4, batch_size=16, num_workers=2) == (
        "resuming with ranks 2 → 4, global batch 8 → 16, loader workers per rank 1 → 2")
    assert change(2, batch_size=0, micro_batch_size=4) == (  # 0: one micro-batch per rank
        "resuming with gradient accumulation 2 → 1, micro-batch 2 → 4, global batch 8 (unchanged)")


@pytest.mark.slow
def test_the_trainer_resumes_on_another_world_size(tmp_path):
    """The whole trainer (loader included): 2 ranks save, 1 rank goes on, saying what changed."""
    dataset = make_dataset(tmp_path, "text", 60, seed=3)
    sections = {"deepspeed": {"zero_stage": 3}, "data": {"micro_batch_size": 2},
                "optim": {"total_steps": 4}, "run": {"checkpoint_every": 2}}
    config = write_config(tmp_path, dataset, **sections)
    run_training(config, ranks=2, extra=["optim.total_steps=2"])
    result = run_training(config, ranks=1)
    assert "resuming with ranks 2 → 1, gradient accumulation 1 → 2, global batch 4 (unchanged)" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert os.path.isdir(tmp_path / "run" / "checkpoints" / "universal" / "step-000002")
