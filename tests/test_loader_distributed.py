"""Real ranks (gloo, spawned processes): one shard for 2 ranks × 2 workers must not hang training
or validation; together the ranks train on the global stream in order, epoch after epoch, and
every rank gets the same number of validation batches."""

import json
import time
from dataclasses import replace
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from loader_datasets import text_docs, write_text
from pipeline.load.loader import LoaderConfig, build_train_loader, build_validation_loader
from pipeline.format.manifest import load_manifest
from pipeline.format.vocab import PAD_ID

WORLD_SIZE = 2
STEPS = 40  # several epochs of each stream, which end at different steps on different ranks


def rank_main(rank: int, dataset: str, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=WORLD_SIZE, timeout=timedelta(seconds=60))
    try:
        # the ranks were spawned, so their DataLoader workers would be too: fork is much quicker
        cfg = LoaderConfig([dataset], seq_len=64, patch_size=8, micro_batch_size=2, num_workers=2,
                           seed=3, multiprocessing_context="fork")
        batches = iter(build_train_loader(cfg, rank, WORLD_SIZE))
        epochs, sequences = set(), []
        for _ in range(STEPS):  # a training step: every rank must reach each collective
            batch = next(batches)
            epochs.update(batch["epoch"])
            gathered = [None] * WORLD_SIZE
            dist.all_gather_object(gathered, batch["sequence"])
            sequences += sum(gathered, [])
            dist.all_reduce((batch["ids"] != PAD_ID).sum().reshape(1))
        validation = build_validation_loader(replace(cfg, validation=dataset), rank, WORLD_SIZE)
        scored, steps = torch.zeros(1, dtype=torch.long), 0
        for batch in validation:
            real = (batch["ids"] != PAD_ID).sum().reshape(1)
            dist.all_reduce(real)
            scored += real
            steps += 1
        result = {"epochs": sorted(epochs), "sequences": sequences, "validation_steps": steps, "len": len(validation),
                  "scored": int(scored)}
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_ranks_share_one_stream_and_one_shard_without_hanging(tmp_path):
    dataset = write_text(tmp_path / "one", text_docs(16, seed=9), shard_bytes=1 << 30)
    assert load_manifest(dataset).totals["shards"] == 1  # 1 shard for 2 ranks × 2 workers
    context = mp.start_processes(rank_main, args=(str(dataset), str(tmp_path / "rendezvous"), str(tmp_path)),
                                 nprocs=WORLD_SIZE, join=False, start_method="spawn")
    deadline = time.monotonic() + 150
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the ranks hung")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    totals = load_manifest(dataset).totals
    for result in results:
        assert result["epochs"][-1] >= 2  # went through epochs
        assert result["sequences"] == list(range(STEPS * WORLD_SIZE * 2))
        assert result["validation_steps"] == result["len"] == results[0]["len"]
        assert result["scored"] == totals["payload_bytes"] + totals["samples"]  # every byte, once


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_leave_a_group_sigusr1_to_the_trainer(tmp_path, context):
    """SLURM's pre-emption warning reaches every process of the job: the loader's workers must
    live on (the trainer saves, then closes them), whichever way they were started."""
    import os
    import signal

    import psutil

    dataset = write_text(tmp_path / "one", text_docs(16, seed=9))
    cfg = LoaderConfig([str(dataset)], seq_len=64, patch_size=8, micro_batch_size=2, num_workers=1,
                       multiprocessing_context=context)
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    try:
        batches = iter(build_train_loader(cfg))
        next(batches)
        workers = [child for child in psutil.Process().children()
                   if not any("resource_tracker" in part for part in child.cmdline())]
        assert len(workers) == 1
        for worker in workers:
            os.kill(worker.pid, signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.5)
        assert all(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)
        assert received == [1]
        for _ in range(20):
            next(batches)
    finally:
        signal.signal(signal.SIGUSR1, previous)
