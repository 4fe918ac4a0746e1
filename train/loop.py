"""The training loop: one function, from the current step to optim.total_steps.

Per optimizer step: `accumulation` micro-batches of forward + backward (DeepSpeed accumulates and
steps on the last), then one all-reduce of [nats, targets, untrained fractions, a vote per stop
reason] that gives every rank the same view for logging and for stopping: a signal that reaches one
rank only stops them all at the same step. The step's loss and bits per byte are nats / targets over
all of them (train/evaluate.py has the definition). A SpaceByte run also logs untrained_fraction,
the mean over the step's micro-batches (all ranks) of the share of targets past the global positions
(model/spacebyte.py): they are left out of targets and loss. Checkpoints are taken at step boundaries only, so a
resumed run continues exactly where the saved one stood.
"""

import math
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from model.flops import training_flops_per_byte
from train import checkpoint
from train.config import TrainConfig
from train.evaluate import evaluate
from train.metrics import peak_flops
from train.trainer import Trainer


class StopRequest:
    """SIGTERM or SIGINT (a scheduler or a user stopping the job) or SIGUSR1 (SLURM's warning before
    a pre-emption or the time limit, with --signal=USR1@120) sets a flag; the loop saves at the next
    step boundary and returns. Loader workers forked after this inherit the handler, so a SIGUSR1
    sent to every process of the job leaves them running too."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self):
        self.received: signal.Signals | None = None
        self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}

    def handle(self, signum, frame):
        self.received = signal.Signals(signum)

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# why a run stops early, as the line that says so begins; a vote for each in the step's all-reduce
STOP_REASONS = {signal.SIGTERM: "stopped (SIGTERM)", signal.SIGINT: "interrupted (SIGINT)",
                signal.SIGUSR1: "pre-empted (SIGUSR1)", "max_minutes": "out of time (run.max_minutes)"}


def train_loop(t: Trainer, stop: StopRequest) -> dict:
    """Train from t.run_state.step to optim.total_steps (or a stop request); the last step's metrics."""
    config, engine, state = t.config, t.engine, t.run_state
    total = config.optim.total_steps
    accumulation = engine.gradient_accumulation_steps()
    started = time.perf_counter()
    peak = peak_flops()
    model_flops = training_flops_per_byte(config.model) if peak else None
    bar = tqdm(total=total, initial=state.step, desc="train", unit="step",
               disable=t.rank != 0 or not config.run.progress, dynamic_ncols=True)
    last, first_step = {}, state.step
    spacebyte = config.model.architecture == "spacebyte"
    while state.step < total:
        step_start = time.perf_counter()
        # nats, targets, untrained fractions (SpaceByte), then a vote per stop reason
        sums = torch.zeros(3 + len(STOP_REASONS), dtype=torch.float64, device=t.device)
        for _ in range(accumulation):
            batch = next(t.batches)
            ids = batch["ids"].to(t.device, non_blocking=True)  # (B, T)
            # the mean nats over the targets counted here, and their number; the head's fused
            # loss never holds the (B, L, V) logits
            loss, targets = engine(ids, loss=True)
            engine.backward(loss)
            engine.step()
            sums[0] += loss.detach().double() * targets  # stays on the device: no sync per micro-batch
            sums[1] += targets
            if spacebyte:
                sums[2] += engine.module.untrained_fraction  # set by the forward
            t.trace.add(batch)
        state.step += 1
        t.trace.end_step(state.step)
        out_of_time = config.run.max_minutes and time.perf_counter() - started > 60 * config.run.max_minutes
        here = {stop.received, "max_minutes" if out_of_time else None}  # this rank's reasons
        sums[3:] = torch.tensor([float(reason in here) for reason in STOP_REASONS])
        dist.all_reduce(sums)  # on the device: NCCL reduces device tensors only
        step_nats, step_bytes, untrained, *votes = sums.tolist()
        stop_reasons = [why for why, count in zip(STOP_REASONS.values(), votes) if count]
        loss_mean = step_nats / max(step_bytes, 1)
        state.bytes_seen += int(step_bytes)
        seconds = time.perf_counter() - step_start
        last = {"loss": loss_mean, "bpb": loss_mean / math.log(2), "lr": engine.get_lr()[0],
                "grad_norm": float(engine.get_global_grad_norm() or 0.0),
                "bytes_per_s": step_bytes / seconds, "bytes_seen": state.bytes_seen}
        if spacebyte:
            last["untrained_fraction"] = untrained / (accumulation * t.world_size)
        if model_flops:
            last["mfu"] = model_flops * last["bytes_per_s"] / (peak * t.world_size)
        if state.step % config.run.log_every == 0 or state.step == total:
            t.metrics.log(state.step, "train", last)
        bar.set_postfix(loss=f"{loss_mean:.3f}", bpb=f"{last['bpb']:.3f}",
                        B_s=f"{last['bytes_per_s']:.3g}", refresh=False)  # update shows it: no lag
        bar.total = reachable_steps(config, state.step, first_step, started)
        bar.update(1)
        if state.step == first_step + 1 and t.rank == 0 and config.run.progress:
            tqdm.write(pace(state.step, seconds, step_bytes, bar.total - state.step), file=sys.stderr)
        stopping = bool(stop_reasons)
        every = config.run.checkpoint_every
        if stopping or state.step == total or (every and state.step % every == 0):
            folder = save(t)
        if stopping and t.rank == 0:
            tqdm.write(f"{', '.join(stop_reasons)} at step {state.step}: saved {folder}; the same "
                       "command resumes from it", file=sys.stderr)
        if t.validation and (state.step == total or stopping or
                             (config.run.eval_every and state.step % config.run.eval_every == 0)):
            last.update({f"val_{k}": v for k, v in run_eval(t).items()})
        if stopping:
            break
    bar.close()
    return last


def reachable_steps(config: TrainConfig, step: int, first_step: int, started: float) -> int:
    """The step the run will end at: optim.total_steps, or fewer when run.max_minutes stops it
    first at the pace so far (so that the progress bar's time left counts both)."""
    total = config.optim.total_steps
    if not config.run.max_minutes or step == first_step:
        return total
    elapsed = time.perf_counter() - started
    left = max(0.0, 60 * config.run.max_minutes - elapsed)
    return min(total, step + int(left * (step - first_step) / elapsed))


def pace(step: int, seconds: float, step_bytes: float, steps_left: int) -> str:
    """The line after a run's first step: how long a step takes, and the rest of the run at that
    pace (a bar that moves once in minutes says little before it has moved)."""
    return (f"step {step}: {duration(seconds)} a step ({step_bytes / seconds:,.0f} bytes/s); "
            f"{steps_left:,} steps left, about {duration(seconds * steps_left)}")


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def save(t: Trainer) -> Path:
    return checkpoint.save(t.checkpoint_dir, t.run_state.step, t.checkpoint_parts(),
                           t.checkpoint_config(), t.config.run.keep_last)


def run_eval(t: Trainer) -> dict:
    result = evaluate(t.engine, t.validation(), t.device, t.config.run.eval_batches)
    t.metrics.log(t.run_state.step, "eval", result)
    if t.rank == 0:
        tqdm.write(f"step {t.run_state.step}: validation {result['bpb']:.4f} bits/byte over "
                   f"{result['targets']:,} targets")
    return result
