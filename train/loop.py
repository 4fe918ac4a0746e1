"""The training loop: one function, from the current step to optim.total_steps.

Per optimizer step: `accumulation` micro-batches of forward + backward (DeepSpeed accumulates and
steps on the last), then one all-reduce of [nats, targets, stop request] that gives every rank
the same view for logging and for stopping; the step's loss and bits per byte are nats / targets
over all of them (train/evaluate.py has the definition). Checkpoints are taken at step boundaries only, so a
resumed run continues exactly where the saved one stood.
"""

import math
import signal
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from model import byte_loss
from model.flops import training_flops_per_byte
from pipeline.format.vocab import PAD_ID
from train import checkpoint
from train.config import TrainConfig
from train.evaluate import evaluate, predicted_targets
from train.metrics import peak_flops
from train.trainer import Trainer


class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop saves at the next step boundary and returns."""

    def __init__(self):
        self.requested = False
        self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(self, signum, frame):
        self.requested = True

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


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
    while state.step < total:
        step_start = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64, device=t.device)  # nats, targets, stop votes
        for _ in range(accumulation):
            batch = next(t.batches)
            ids = batch["ids"].to(t.device, non_blocking=True)  # (B, T)
            logits = engine(ids)  # (B, L, V)
            loss = byte_loss(logits, ids)  # the mean over the targets counted here
            engine.backward(loss)
            engine.step()
            targets = (predicted_targets(logits, ids) != PAD_ID).sum()
            sums[0] += loss.detach().double() * targets  # stays on the device: no sync per micro-batch
            sums[1] += targets
            t.trace.add(batch)
        state.step += 1
        t.trace.end_step(state.step)
        out_of_time = config.run.max_minutes and time.perf_counter() - started > 60 * config.run.max_minutes
        sums[2] = float(stop.requested or out_of_time)
        dist.all_reduce(sums)  # on the device: NCCL reduces device tensors only
        step_nats, step_bytes, stop_votes = sums.tolist()
        loss_mean = step_nats / max(step_bytes, 1)
        state.bytes_seen += int(step_bytes)
        seconds = time.perf_counter() - step_start
        last = {"loss": loss_mean, "bpb": loss_mean / math.log(2), "lr": engine.get_lr()[0],
                "grad_norm": float(engine.get_global_grad_norm() or 0.0),
                "bytes_per_s": step_bytes / seconds, "bytes_seen": state.bytes_seen}
        if model_flops:
            last["mfu"] = model_flops * last["bytes_per_s"] / (peak * t.world_size)
        if state.step % config.run.log_every == 0 or state.step == total:
            t.metrics.log(state.step, "train", last)
        bar.set_postfix(loss=f"{loss_mean:.3f}", bpb=f"{last['bpb']:.3f}",
                        B_s=f"{last['bytes_per_s']:.3g}", refresh=False)  # update shows it: no lag
        bar.total = reachable_steps(config, state.step, first_step, started)
        bar.update(1)
        stopping = stop_votes > 0
        every = config.run.checkpoint_every
        if stopping or state.step == total or (every and state.step % every == 0):
            save(t)
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


def save(t: Trainer) -> None:
    checkpoint.save(t.checkpoint_dir, t.run_state.step, t.checkpoint_parts(), t.checkpoint_config(),
                    t.config.run.keep_last)


def run_eval(t: Trainer) -> dict:
    result = evaluate(t.engine, t.validation(), t.device, t.config.run.eval_batches)
    t.metrics.log(t.run_state.step, "eval", result)
    if t.rank == 0:
        tqdm.write(f"step {t.run_state.step}: validation {result['bpb']:.4f} bits/byte over "
                   f"{result['targets']:,} targets")
    return result
