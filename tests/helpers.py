"""What several test files share: small datasets made on the spot, the tiny trainer config, and the
ways a test starts real trainer processes (forked from this one, or the command lines themselves),
reads what they wrote and checks one-line errors."""

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import zstandard

import forked

from pipeline.convert.driver import ConvertOptions, convert
from pipeline.convert.text import TextConverter
from pipeline.format.reader import iter_samples
from pipeline.format.shards import ShardWriter
from tools.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SEQ_LEN = 64
TINY_MODEL = ["model.preset=tiny", f"model.seq_len={SEQ_LEN}", "model.global_dim=64",
              "model.global_layers=2", "model.global_heads=2", "model.local_dim=32",
              "model.local_layers=1", "model.local_heads=2", "model.dropout=0.0"]


# ---------------------------------------------------------------------------------------------
# data


def make_dataset(root: Path, name: str, documents: int, seed: int = 0) -> Path:
    """A text dataset of `documents` small code-like files."""
    rng = random.Random(seed)
    src = root / f"{name}-src"
    src.mkdir(parents=True)
    words = [b"def", b"return", b"self", b"import", b"class", b"(x)", b":", b"\n    ", b"=", b"1"]
    for i in range(documents):
        text = b" ".join(rng.choice(words) for _ in range(400))
        (src / f"{i:04d}.py").write_bytes(text[: rng.randrange(50, 400)])
    out = root / name
    convert(TextConverter(), sorted(src.iterdir()), ConvertOptions(out=out, name=name, progress=False),
            {"modality": "text"})
    return out


def relabelled(dataset: Path, out: Path, modality: str) -> Path:
    """A copy of a dataset whose manifest names another modality (what the checks before training
    read), its shards unchanged."""
    shutil.copytree(dataset, out)
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**index, "modality": modality}))
    return out


def write_shard(path, samples, compress=True):
    """One shard of text samples [(key, bytes)], zstd members unless `compress` is False."""
    writer = ShardWriter(path)
    cctx = zstandard.ZstdCompressor(level=3)
    for key, data in samples:
        payload = cctx.compress(data) if compress else data
        writer.add(key, "zstd" if compress else "none", payload, len(data),
                   {"modality": "text", "source": "test", "length": len(data)})
    return writer.close()


def read_dataset(out: Path) -> list[tuple[str, dict, bytes]]:
    return [(key, meta, payload) for _, key, meta, payload in iter_samples([out])]


def manifest(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def run_killed_then_resumed(tmp_path: Path, command: list[str], killed_flags=(),
                            after_shards: int = 1) -> None:
    """Convert uninterrupted; convert again in a subprocess killed (SIGKILL) once it has
    published `after_shards` shards, then rerun it: the shards and manifest must equal the
    uninterrupted ones."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert cli([*command, "--out", str(full), "--no-progress"]) == 0
    process = subprocess.Popen([sys.executable, "-m", "tools.cli", *command, "--out", str(resumed),
                                "--no-progress", *killed_flags], cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(resumed.glob("*.tar"))) < after_shards and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)  # its own session: the converter and its workers
    process.wait()
    assert not (resumed / "index.json").exists(), "finished before the kill: give the test more input"
    assert len(shard_bytes(resumed)) < len(shard_bytes(full))
    assert cli([*command, "--out", str(resumed), "--no-progress", *killed_flags]) == 0
    assert shard_bytes(resumed) == shard_bytes(full)
    assert manifest(resumed)["shards"] == manifest(full)["shards"]
    assert not list(resumed.glob(".*"))  # no journal, temporary shard or spill file left


# ---------------------------------------------------------------------------------------------
# the trainer in real processes


def write_config(root: Path, dataset: Path, validation: Path | None = None, **sections) -> Path:
    """A TOML config for the tiny model; sections: {"optim": {...}, "run": {...}, ...}."""
    base = {
        "data": {"datasets": [str(dataset)], "batch_size": 4, "micro_batch_size": 4, "num_workers": 0},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "total_steps": 8},
        "deepspeed": {"zero_stage": 1},
        "run": {"out_dir": str(root / "run"), "checkpoint_every": 2, "eval_every": 0, "log_every": 1,
                "progress": False, "trace_batches": True, "seed": 7},
    }
    if validation:
        base["data"]["validation"] = str(validation)
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    lines = []
    for section, values in base.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = root / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def train_flags(config: Path, extra=()) -> list[str]:
    """The flags of train.main for `config` with the tiny model and `extra` overrides."""
    return ["--config", str(config), *[f"--set={s}" for s in (*TINY_MODEL, *extra)]]


def train_command(config: Path, ranks: int = 1, extra=()) -> list[str]:
    """`python -m train.main` on one rank, the `deepspeed` launcher on several: the command lines
    themselves, for the tests whose subject they are."""
    flags = train_flags(config, extra)
    if ranks == 1:
        return [sys.executable, "-m", "train.main", *flags]
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ranks),
            "--master_port", str(free_port()), "--module", "train.main", *flags]


def start_training(config: Path, ranks: int = 1, extra=()) -> forked.Forked:
    """Train `config` on `ranks` ranks in processes forked from this one (tests/forked.py), in a
    process group of their own."""
    return forked.start(["-m", "train.main", *train_flags(config, extra)], ENV, ranks, free_port())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(process: forked.Forked, timeout: int = 300) -> forked.Forked:
    """Wait for `process` (killing its group past `timeout`); it must have exited with 0."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return process


def run_training(config: Path, ranks: int = 1, extra=(), timeout: int = 300) -> forked.Forked:
    return finish(start_training(config, ranks, extra), timeout)


def losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


def traced(run_dir: Path) -> list[str]:
    """Every sequence hash trained on, all ranks, step by step."""
    hashes = []
    for path in sorted((run_dir / "trace").glob("rank-*.jsonl")):
        hashes += [h for line in path.read_text().splitlines() for h in json.loads(line)["sequences"]]
    return hashes


def wait_for_steps(process: forked.Forked, run_dir: Path, steps: int) -> None:
    """Wait until the run in `process` has logged `steps` training steps (it must stay alive)."""
    deadline = time.time() + 240
    while not (run_dir / "metrics.jsonl").exists() or len(losses(run_dir)) < steps:
        assert process.poll() is None and time.time() < deadline, process.stderr[-2000:]
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# errors


def error_line(capsys) -> str:
    """stderr holds exactly one line and no traceback; returns it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@contextlib.contextmanager
def deadline(seconds: float):
    """An AssertionError if the block runs longer than `seconds` (a hang)."""
    def hung(signum, frame):
        raise AssertionError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root and its bytes: what a test compares to see that nothing was written."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
