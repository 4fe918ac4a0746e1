"""The trainer with real processes (forked by tests/forked.py): one process and two ranks on gloo
(DS_ACCELERATOR=cpu); exact resume, SIGKILL, SIGTERM, export, generate, eval, plot and config
errors."""

import json
import os
import signal
import time

import pytest
import torch

from tools.cli import main as cli
from train.config import load_config
from train.metrics import read_metrics

import forked
from helpers import (ENV, REPO, TINY_MODEL, finish, losses, relabelled, run_training, start_training, traced,
                     write_config)

# ---------------------------------------------------------------------------------------------
# configuration errors: one line, exit code 2


def test_config_errors_are_one_line(tmp_path, data, capsys):
    config = write_config(tmp_path, data["text"])
    sounds = relabelled(data["text"], tmp_path / "sounds", "audio")
    cases = [
        (["--set", "optim.lrr=1"], "unknown key(s) ['lrr'] in [optim]"),
        (["--set", "nosuch.key=1"], "unknown section(s) ['nosuch']"),
        (["--set", "data.datasets=['/no/such/dir']"], "/no/such/dir: not a converted dataset"),
        (["--set", "data.batch_size=6"], "data.batch_size = 6 is not a multiple of micro_batch_size"),
        (["--set", "data.seq_len=32"], "data.seq_len is model.seq_len: set it there"),
        (["--set", "model.pad_id=257"], "pad_id=257, but the byte vocabulary is fixed"),
        (["--set", "data.image_order=patch"], "data.image_order='patch' needs patch_size = 3·p²"),
        (["--set", "model.seq_len=100"], "seq_len=100 must be a multiple of patch_size=8"),
        (["--set", "data.weights=[1, 2]"], "data.weights has 2 entries for 1 datasets"),
        (["--set", "optim"], "expected section.key=value"),
        (["--set", "optim.recipe=papers"], "optim.recipe = 'papers': choose one of ['paper']"),
        (["--set", "model.preset=text-large"], "'text-large' is not a preset; choose one of"),
        (["--set", "model.architecture=perceiver_ar"], "perceiver_ar has no patches and no local model"),
        (["--set", "model.preset=tiny-spacebyte", "--set", f"data.datasets=['{sounds}']"],
         f"{sounds} holds audio; [model]: MegaByteConfig: spacebyte's spacelike patches follow words"),
        (["--set", "model.preset=tiny-spacebyte", "--set", f"data.validation='{sounds}'"],
         'set patching="periodic"'),
    ]
    for flags, message in cases:
        assert cli(["train", "--config", str(config), *flags]) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (flags, err)
    periodic = ["model.preset=tiny-spacebyte-periodic", f"data.datasets=['{sounds}']"]
    load_config(str(config), periodic).check_paths()  # periodic patches read any bytes
    assert cli(["config", "--config", "tiny-cpu", "--set", "optim.lr=0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["optim"]["lr"] == 0.5


def test_validation_reads_the_data_as_training_does(tmp_path):
    """The whole [data] section reaches the in-training validation loader: an image run trained in
    patch-scan order validates in patch-scan order, with the run's workers, micro-batch size and
    error policy, and text with the run's packing."""
    from loader_datasets import images, real_ids, text_docs, write_shards, write_text
    from pipeline.format.scan import to_patch_order
    from pipeline.format.vocab import BOUNDARY_ID
    from train.trainer import build_validation

    pictures = images(6, size=4)  # 48 bytes each: P = 12 is a 2×2×3 patch
    image = write_shards(tmp_path / "image", "image", pictures, per_shard=3, stored={1: b"junk"})
    model = ["model.seq_len=48", "model.patch_size=12", "model.global_dim=48", "model.global_heads=2"]
    data = {"image_order": "patch", "num_workers": 2, "on_error": "skip", "micro_batch_size": 3}
    config = load_config(str(write_config(tmp_path, image, validation=image, data=data)), model)
    loader = build_validation(config, 0, 1)()
    assert loader.dataloader.num_workers == 2
    batches = list(loader)  # sample 1 is corrupt: skipped (its place all PAD), not raised
    assert all(batch["ids"].shape == (3, 48) for batch in batches)
    rows = [bytes(real_ids(row)) for batch in batches for row in batch["ids"]]
    patch = [to_patch_order(payload, 4, 12).tobytes() for payload, _ in pictures]
    assert patch != [payload for payload, _ in pictures]
    assert sorted(row for row in rows if row) == sorted(patch[:1] + patch[2:])

    def boundary_inside_a_row(packing: str) -> bool:
        text = write_text(tmp_path / f"text-{packing}", text_docs(12, seed=5, low=40, high=100))
        settings = {"text_packing": packing, "num_workers": 0}
        config = load_config(str(write_config(tmp_path, text, validation=text, data=settings)),
                             ["model.seq_len=64"])
        rows = [real_ids(row) for batch in build_validation(config, 0, 1)() for row in batch["ids"]]
        return any(BOUNDARY_ID in row[:-1] for row in rows)

    assert boundary_inside_a_row("concat") and not boundary_inside_a_row("document")


def test_the_paper_recipe_fills_what_the_optim_section_does_not_set():
    from train.config import TrainConfig, load_config
    from train.engine import lr_factor

    for name in ("text", "imagenet64", "audio"):
        config = load_config(name)
        optim, model = config.optim, config.model
        assert optim.recipe == "paper" and model.activation == "relu" and model.init_std == 0.006
        assert (optim.betas, optim.warmup_steps, optim.schedule, optim.min_lr_ratio, optim.weight_decay,
                optim.grad_clip) == ([0.9, 0.98], 500, "linear", 0.0, 0.1, 1.0)
        factors = [lr_factor(step, config) for step in (0, 499, 500, (500 + optim.total_steps) // 2,
                                                        optim.total_steps)]
        assert factors[:3] == [1 / 500, 1.0, 1.0] and factors[3] == pytest.approx(0.5, abs=1e-4)
        assert factors[4] == 0.0  # linear (polynomial power 1) decay to an end lr of 0
        assert TrainConfig.from_dict(config.to_dict()) == config
    assert load_config("text", ["optim.warmup_steps=100"]).optim.warmup_steps == 100  # the section wins
    tiny = load_config("tiny-cpu").optim  # the demo keeps its own schedule
    assert (tiny.recipe, tiny.schedule, tiny.warmup_steps) == ("", "cosine", 50)


# ---------------------------------------------------------------------------------------------
# one process


@pytest.mark.slow
def test_single_process_trains_checkpoints_and_resumes_bit_exactly(tmp_path, data):
    (tmp_path / "whole").mkdir()
    run_training(write_config(tmp_path / "whole", data["text"]))
    reference = losses(tmp_path / "whole" / "run")
    assert len(reference) == 8 and reference[-1] < reference[0]
    assert "untrained_fraction" not in read_metrics(tmp_path / "whole" / "run")[0]  # a spacebyte figure
    checkpoints = sorted(p.name for p in (tmp_path / "whole" / "run" / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-000004", "step-000006", "step-000008"]  # keep_last = 3
    assert (tmp_path / "whole" / "run" / "checkpoints" / "latest").read_text().strip() == "step-000008"

    for attempt in range(3):  # a busy machine can let the run finish between the poll and the kill
        (tmp_path / f"killed-{attempt}").mkdir()
        killed = write_config(tmp_path / f"killed-{attempt}", data["text"])
        run_dir = tmp_path / f"killed-{attempt}" / "run"
        process = start_training(killed)
        deadline = time.time() + 240
        while not (run_dir / "checkpoints" / "step-000004" / "COMPLETE").exists():
            assert process.poll() is None and time.time() < deadline, "training ended before the kill"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if not (run_dir / "checkpoints" / "step-000008").exists():
            break
    assert not (run_dir / "checkpoints" / "step-000008").exists(), "the kill came too late, 3 times"
    run_training(killed)
    assert losses(run_dir) == reference  # bit for bit
    assert traced(run_dir) == traced(tmp_path / "whole" / "run")  # nothing repeated or skipped


@pytest.mark.slow
def test_a_spacebyte_run_logs_the_share_of_targets_past_its_global_positions(tmp_path, data):
    """global_len = 3 on 64-byte windows of code-like text: most targets get no global output."""
    config = write_config(tmp_path, data["text"], optim={"total_steps": 2}, run={"checkpoint_every": 0})
    run_training(config, extra=["model.preset=tiny-spacebyte", "model.global_len=3"])
    records = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert len(records) == 2 and all(0.5 < r["untrained_fraction"] < 1 for r in records)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path, data):
    config = write_config(tmp_path, data["text"], optim={"total_steps": 100000},
                          run={"checkpoint_every": 0})
    run_dir = tmp_path / "run"
    process = start_training(config)
    deadline = time.time() + 240
    while not (run_dir / "metrics.jsonl").exists() or len(losses(run_dir)) < 3:
        assert process.poll() is None and time.time() < deadline, process.stderr[-2000:]
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=120) == 0, process.stderr[-2000:]
    steps = len(losses(run_dir))
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step-{steps:06d}"
    assert (run_dir / "checkpoints" / latest / "COMPLETE").is_file()


# ---------------------------------------------------------------------------------------------
# two ranks


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path, data, stage=3):
    """The data order is global: one process with 2 workers and 2 accumulated micro-batches of 2
    takes the same global batch of 4 at every step as 2 ranks with 1 worker each, so the losses
    agree to float tolerance. ZeRO-3 alone: that one rank and two give the same steps at every
    stage is test_elastic's (per stage, on the trainer's engine); this is the loader's part."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    sections = {"optim": {"total_steps": 4}, "deepspeed": {"zero_stage": stage},
                "data": {"micro_batch_size": 2}, "run": {"checkpoint_every": 0}}
    run_training(write_config(tmp_path / "one", data["text"], **sections), extra=["data.num_workers=2"])
    run_training(write_config(tmp_path / "two", data["text"], **sections), ranks=2,
                 extra=["data.num_workers=1"])
    one_losses, two_losses = losses(tmp_path / "one" / "run"), losses(tmp_path / "two" / "run")
    assert len(one_losses) == len(two_losses) == 4
    assert torch.allclose(torch.tensor(one_losses), torch.tensor(two_losses), rtol=1e-5, atol=1e-6), \
        (one_losses, two_losses)
    assert sorted(traced(tmp_path / "one" / "run")) == sorted(traced(tmp_path / "two" / "run"))


@pytest.mark.slow
def test_two_ranks_resume_after_sigkill(tmp_path, data):
    (tmp_path / "whole").mkdir()
    (tmp_path / "killed").mkdir()
    sections = {"deepspeed": {"zero_stage": 2}, "data": {"micro_batch_size": 2}}
    run_training(write_config(tmp_path / "whole", data["text"], **sections), ranks=2)
    killed = write_config(tmp_path / "killed", data["text"], **sections)
    run_dir = tmp_path / "killed" / "run"
    process = start_training(killed, ranks=2)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "step-000004" / "COMPLETE").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before the kill"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both ranks at once
    process.wait()
    assert not (run_dir / "checkpoints" / "step-000008").exists(), "the kill came too late"
    run_training(killed, ranks=2)
    reference = losses(tmp_path / "whole" / "run")
    assert torch.allclose(torch.tensor(losses(run_dir)), torch.tensor(reference), rtol=1e-4, atol=1e-5)
    assert traced(run_dir) == traced(tmp_path / "whole" / "run")  # nothing repeated or skipped
    assert len(set(traced(run_dir))) == len(traced(run_dir))  # one epoch: every sequence once


# ---------------------------------------------------------------------------------------------
# export, generate, eval, plot


@pytest.mark.slow
def test_export_generate_eval_and_plot(tmp_path, data, capsys):
    config = write_config(tmp_path, data["text"], validation=data["val"], deepspeed={"zero_stage": 3},
                          optim={"total_steps": 4}, run={"eval_every": 2})
    result = finish(forked.start([str(REPO / "tests" / "live_generate.py"), "--config", str(config),
                                  *[f"--set={s}" for s in TINY_MODEL]], ENV))
    live = json.loads(result.stdout.strip().splitlines()[-1])

    weights = tmp_path / "model.safetensors"
    assert cli(["export", str(tmp_path / "run"), "--out", str(weights)]) == 0
    from model.weights import load_weights
    from model import generate

    model, metadata = load_weights(weights)
    assert metadata["modality"] == "text" and metadata["step"] == "4"
    prompts = [p.encode() for p in live["prompts"]]
    assert [g.hex() for g in generate(model, prompts, 40, temperature=0)] == live["greedy"]

    capsys.readouterr()
    assert cli(["generate", "--model", str(weights), "--prompt", live["prompts"][0], "--bytes", "40",
                "--temperature", "0"]) == 0
    printed = capsys.readouterr().out.encode()
    assert printed.startswith(live["prompts"][0].encode() + bytes.fromhex(live["greedy"][0]))

    assert cli(["eval", str(weights), "--data", str(data["val"]), "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    from pipeline.format.manifest import load_manifest

    totals = load_manifest(data["val"]).totals
    targets = totals["payload_bytes"] + totals["samples"]  # every byte and document end, once
    assert out.startswith(f"{data['val']}: {targets:,} targets")
    bpb = float(out.splitlines()[2].split()[1])  # the "plain" row
    assert 0 < bpb < 8

    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4] and evals[-1]["targets"] == targets
    assert cli(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
