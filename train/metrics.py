"""Training metrics on rank 0: one JSON line per record in OUT/metrics.jsonl, and TensorBoard.

Model FLOPs utilisation (GPU only) = training FLOPs per byte (model/flops.py, the count that
`megabyte flops` prints) × bytes trained on per second / the devices' peak.
"""

import hashlib
import json
import math
import time
from pathlib import Path

import torch

from pipeline.format.files import write_text_atomically

# dense bf16 tensor-core peak by device name; MFU is reported only for devices listed here
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
# memory bandwidth (bytes/s) of the same cards, from their data sheets (H100 SXM, A100 80GB SXM), for
# bench/roofline.py
PEAK_MEMORY_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.039e12, "L40S": 0.864e12}


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


class MetricsLogger:
    """Writes on rank 0 only; every other rank's logger does nothing."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.jsonl = None  # opened at the first record, after a resume has truncated the file
        self.tensorboard = None

    def log(self, step: int, kind: str, values: dict) -> None:
        """kind: "train" or "eval"; values: name → number."""
        if not self.enabled:
            return
        if self.jsonl is None:
            from torch.utils.tensorboard import SummaryWriter

            self.jsonl = open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8")
            self.tensorboard = SummaryWriter(str(self.out_dir / "tensorboard"))
        record = {"step": step, "kind": kind, "time": round(time.time(), 3), **values}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            if isinstance(value, (int, float)):
                self.tensorboard.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
            self.tensorboard.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep only the records up to `step` (a resumed run redoes the steps after it); atomic.
    A line that is not a whole record is dropped: it is what a run killed while writing leaves."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
             if record_step(line) <= step]
    write_text_atomically(path, "".join(line + "\n" for line in lines))


def record_step(line: str) -> float:
    """The step of one JSONL record; infinity for a line that is not a whole record."""
    try:
        record = json.loads(line)
        return record["step"] if isinstance(record, dict) and isinstance(record.get("step"), int) else math.inf
    except json.JSONDecodeError:
        return math.inf


class BatchTrace:
    """Per rank, one JSON line per optimizer step with every sequence it trained on: its place in
    the data order ([dataset, sequence number], pipeline.load.loader) and a short hash of its ids.
    Lets a test (or a suspicious user) check that a resumed run repeated or skipped nothing."""

    def __init__(self, out_dir: Path, rank: int, enabled: bool):
        self.path = Path(out_dir) / "trace" / f"rank-{rank}.jsonl"
        self.enabled = enabled
        self.file = None
        self.pending = []
        self.identities = []

    def add(self, batch: dict) -> None:
        if self.enabled:
            rows = batch["ids"].cpu().numpy()
            self.pending += [hashlib.sha1(row.tobytes()).hexdigest()[:16] for row in rows]
            self.identities += [[d, k] for d, k in zip(batch["dataset"], batch["sequence"])]

    def end_step(self, step: int) -> None:
        if not self.enabled:
            return
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")
        record = {"step": step, "sequences": self.pending, "identities": self.identities}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.pending, self.identities = [], []

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
