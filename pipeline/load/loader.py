"""The streaming loader: dataset directories → (B, T) batches of byte ids for every rank and worker.

    LoaderConfig.datasets (text / image / audio dirs)  ── index.json of each (pipeline.format.shards)
      │ per dataset, per epoch: seeded shard permutation, split by rank, split by worker
      ▼                                                                   (pipeline.load.streams)
    pieces ─▶ tar members ─▶ bounded zstd ─▶ Transform ─▶ packer ─▶ shuffled blocks
      │  (pipeline.load.reading over pipeline.format.reader)  (pipeline.load.packing)  (streams)
      ▼
    Mixer: which dataset gives the next sequence, seeded (seed, stream), weights e.g. .7/.2/.1
      ▼
    TrainDataset (IterableDataset; in each worker, that worker's stream): fetches of
      │ batches_per_fetch batches, rows as uint8 + lengths + ids > 255 (packing.encode_rows)
      ▼
    torchdata StatefulDataLoader ─▶ TrainLoader: a fetch from each worker, batches interleaved
      ▼
    batch {"ids": LongTensor (B, T), "modality": [str] * B, "dataset": [int] * B, "epoch": [int] * B}

The train loader never ends: each of the S = world_size × workers streams goes through its share
of epoch 0, then epoch 1, and so on, on its own. So every rank yields one batch per step for as
long as the trainer asks, and no rank ever waits at a collective for one that ran out of data:
ranks always get equal numbers of batches. Within an epoch of a dataset, every sequence is seen
exactly once across all ranks and workers (see pipeline.load.streams for how shards are split, also
when there are fewer shards than streams). `epoch` in a batch tells which epoch each row is from.

Exact resume: StatefulDataLoader collects every worker's TrainDataset.state_dict() with the fetch
it made (snapshot_every_n_steps=1), so TrainLoader.state_dict() holds, for this rank, each
worker's mixer count and each dataset stream's epoch and block cursor, plus how many batches of
the round of fetches in hand were used. A restored loader yields exactly what the uninterrupted
one would have yielded next, re-reading at most the current shard of each worker and dataset (and
making the round in hand again). The state is JSON-able and refuses another world size, worker count,
rank or data order.
"""

import math
import warnings
from dataclasses import KW_ONLY, dataclass, field

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from pipeline.load.packing import decode_rows, keep, rows_to_yield
from pipeline.load.reading import errors_as_items, raise_error_item
from pipeline.load.streams import DatasetStream, Source
from pipeline.load.validation import ValidationDataset, ValidationLoader, make_layout
from pipeline.load.workers import sigterm_blocked, worker_init_fn

STATE_FORMAT = "megabyte-loader"
STATE_VERSION = 1
MIX_ORDER = 3  # tag that keeps the mixer's generator apart from the shard and block orders
MIX_CHUNK = 4096  # dataset choices drawn at a time


@dataclass
class LoaderConfig:
    """What to read and how: the loader's settings, and the trainer's `[data]` section as they are.

    seq_len and patch_size are the model's (the trainer fills them in from `[model]`, and the seed
    from `run.seed`); everything else has its one default here.
    """

    datasets: list[str] = field(default_factory=list)  # directories to train on (shards + index.json)
    weights: list[float] = field(default_factory=list)  # sampling weight per dataset; [] = all equal
    validation: str = ""  # dataset directory for build_validation_loader; "" = none
    _: KW_ONLY
    seq_len: int  # T, ids per sequence; a multiple of patch_size
    patch_size: int  # P, bytes per patch of the model
    micro_batch_size: int = 8  # sequences per batch, per rank (per forward/backward)
    batch_size: int = 0  # sequences per optimizer step, all ranks together; 0 = micro_batch_size × world size
    num_workers: int = 1  # DataLoader worker processes per rank; 0 reads in the calling process
    seed: int = 0
    shuffle_buffer: int = 256  # sequences shuffled together (per worker and dataset); 0: no shuffle
    image_order: str = "raster"  # "raster" | "patch" (the paper's patch scan, P = 3·p²)
    text_packing: str = "concat"  # "concat": documents joined by BOUNDARY | "document": one per sequence
    on_error: str = "raise"  # bad shards/samples: "raise" | "skip" (log, count and go on)
    verify_shards: bool = True  # sha256 of each shard before its first read in each process
    batches_per_fetch: int = 8  # batches a worker hands over at once (fewer, larger transfers)
    prefetch_factor: int = 2  # fetches each worker prepares ahead
    snapshot_every_n_steps: int = 1  # worker state with every n-th batch; resume replays < n batches
    pin_memory: bool = False
    multiprocessing_context: str | None = None  # "fork" | "spawn" | "forkserver"; None: default

    def __post_init__(self):
        # messages start with the setting's name: the trainer reports them as data.<message>
        if isinstance(self.datasets, str):
            self.datasets = [self.datasets]
        self.datasets = [str(d) for d in self.datasets]
        self.validation = str(self.validation)
        if not self.datasets and not self.validation:
            raise ValueError("datasets is empty and there is no validation set: give at least one "
                             "dataset directory")
        self.weights = [float(w) for w in self.weights or []]
        if self.weights and len(self.weights) != len(self.datasets):
            raise ValueError(f"weights has {len(self.weights)} entries for {len(self.datasets)} datasets: "
                             "give one weight per dataset, or none for equal weights")
        if not all(math.isfinite(w) and w > 0 for w in self.weights):
            raise ValueError(f"weights {self.weights} must be positive numbers (drop a dataset "
                             "rather than give it weight 0)")
        for name in ("seq_len", "patch_size", "micro_batch_size", "batches_per_fetch", "prefetch_factor",
                     "snapshot_every_n_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.seq_len % self.patch_size:
            nearest = self.seq_len - self.seq_len % self.patch_size or self.patch_size
            raise ValueError(f"seq_len {self.seq_len} is not a multiple of patch_size {self.patch_size}: "
                             f"use e.g. seq_len {nearest}")
        for name in ("batch_size", "num_workers", "seed", "shuffle_buffer"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        choices = {"image_order": ("raster", "patch"), "text_packing": ("concat", "document"),
                   "on_error": ("raise", "skip")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        side = math.isqrt(self.patch_size // 3)
        if self.image_order == "patch" and 3 * side * side != self.patch_size:
            raise ValueError(f"image_order='patch' needs patch_size = 3·p² (3, 12, 48, 192, 768), "
                             f"got {self.patch_size}: change it or use image_order='raster'")

    @property
    def streams_per_rank(self) -> int:
        return max(1, self.num_workers)

    @property
    def fetch(self) -> int:
        """Batches per hand-over: several from a worker process, one when reading in-process."""
        return self.batches_per_fetch if self.num_workers else 1

    def mixing_weights(self) -> list[float]:
        weights = self.weights or [1.0] * len(self.datasets)
        return [w / sum(weights) for w in weights]

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per rank and optimizer step: micro_batch_size × world_size × steps = batch_size."""
        per_step = self.micro_batch_size * world_size
        if self.batch_size % per_step:
            raise ValueError(f"batch_size = {self.batch_size} is not a multiple of micro_batch_size × "
                             f"world size = {self.micro_batch_size} × {world_size}; change one of them")
        return max(1, self.batch_size // per_step)


def check_rank(rank: int, world_size: int) -> None:
    if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
        raise ValueError(f"rank {rank} and world_size {world_size}: need 0 <= rank < world_size")


def make_sources(config: LoaderConfig, directories: list[str]) -> list[Source]:
    return [Source(d, seq_len=config.seq_len, patch_size=config.patch_size,
                   image_order=config.image_order, text_packing=config.text_packing)
            for d in directories]


class Mixer:
    """Which dataset gives each next sequence: seeded (seed, stream) draws, resumable by count."""

    def __init__(self, weights: list[float], seed: int, stream: int, drawn: int = 0):
        self.weights, self.seed, self.stream, self.drawn = weights, seed, stream, drawn
        self._chunk = (None, None)

    def next(self) -> int:
        if len(self.weights) == 1:
            return 0
        chunk, position = divmod(self.drawn, MIX_CHUNK)
        if self._chunk[0] != chunk:
            rng = np.random.default_rng([self.seed, MIX_ORDER, self.stream, chunk])
            self._chunk = (chunk, rng.choice(len(self.weights), size=MIX_CHUNK, p=self.weights))
        self.drawn += 1
        return int(self._chunk[1][position])


class TrainDataset(IterableDataset):
    """One rank's batches; in each DataLoader worker, that worker's stream. Stateful (torchdata).

    Yields fetches: `config.fetch` batches at once, rows encoded by packing.encode_rows; bad data
    under on_error="raise" as a last {"error": message} item (reading.errors_as_items).
    state_dict(): {"stream", "streams", "batches", "mixed", "datasets": [DatasetStream state]}
    """

    def __init__(self, config: LoaderConfig, sources: list[Source], rank: int, world_size: int):
        self.config, self.sources = config, sources
        self.rank, self.world_size = rank, world_size
        self._streams = None  # built in the process that iterates (the worker)
        self._pending = None  # a state to restore when they are built

    def _build(self) -> None:
        config, info = self.config, get_worker_info()
        worker = info.id if info is not None else 0
        self.stream = self.rank * config.streams_per_rank + worker
        self.streams = self.world_size * config.streams_per_rank
        self._streams = [DatasetStream(source, i, stream=self.stream, streams=self.streams,
                                       seed=config.seed, shuffle_buffer=config.shuffle_buffer,
                                       on_error=config.on_error, verify=config.verify_shards)
                         for i, source in enumerate(self.sources)]
        self._mixer = Mixer(config.mixing_weights(), config.seed, self.stream)
        self.batches = 0
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None

    def _restore(self, state: dict) -> None:
        if (state["stream"], state["streams"]) != (self.stream, self.streams):
            raise ValueError(f"worker state is for stream {state['stream']} of {state['streams']}, "
                             f"this worker is stream {self.stream} of {self.streams}")
        for stream, stream_state in zip(self._streams, state["datasets"], strict=True):
            stream.load_state_dict(stream_state)
        self._mixer.drawn = state["mixed"]
        self.batches = state["batches"]

    def state_dict(self) -> dict:
        if self._streams is None:
            self._build()
        return {"stream": self.stream, "streams": self.streams, "batches": self.batches,
                "mixed": self._mixer.drawn, "datasets": [s.state_dict() for s in self._streams]}

    def load_state_dict(self, state: dict) -> None:
        self._streams, self._pending = None, state

    def __iter__(self):
        return errors_as_items(self._fetches())

    def _fetches(self):
        if self._streams is None:
            self._build()
        config = self.config
        while True:
            rows, modality, dataset, epoch = [], [], [], []
            for _ in range(config.micro_batch_size * config.fetch):
                choice = self._mixer.next()
                sequence, sequence_epoch = self._streams[choice].next_sequence()
                rows.append(sequence)
                modality.append(self.sources[choice].modality)
                dataset.append(choice)
                epoch.append(sequence_epoch)
            self.batches += config.fetch  # the state now says "after these", as they are handed out
            yield {**rows_to_yield(rows, config.seq_len), "modality": modality, "dataset": dataset,
                   "epoch": epoch}


class TrainLoader:
    """One rank's endless stream of batches, with state_dict()/load_state_dict().

    Workers hand over `batches_per_fetch` batches at a time, and a round of one fetch from each
    worker is handed out interleaved, so batch k comes from worker k % workers whatever the fetch
    size. The state is the DataLoader's state before the round being handed out plus how many of
    its batches were used (a restore makes that round again and drops those), or the state after
    it once it is used up.
    Iterating again (a second `for` or `iter`) goes on from where the last iteration stopped.
    """

    def __init__(self, config: LoaderConfig, rank: int, world_size: int):
        check_rank(rank, world_size)
        if not config.datasets:
            raise ValueError("datasets is empty: give at least one dataset directory to train on")
        config.accumulation_steps(world_size)  # batch_size must be whole micro-batches of every rank
        self.config, self.rank, self.world_size = config, rank, world_size
        self.sources = make_sources(config, config.datasets)
        streams = world_size * config.streams_per_rank
        for source in self.sources:
            if source.samples < streams:
                raise ValueError(f"{source.directory}: {source.samples} samples cannot feed "
                                 f"{streams} streams (world_size {world_size} × {config.streams_per_rank} "
                                 "workers): use fewer num_workers or a larger dataset")
        self.dataset = TrainDataset(config, self.sources, rank, world_size)
        workers = config.num_workers
        with warnings.catch_warnings():  # torchdata 0.11 calls torch.set_vital, deprecated in torch
            warnings.filterwarnings("ignore", message=".*set_vital.*")
            self.dataloader = StatefulDataLoader(
                self.dataset, batch_size=None, num_workers=workers, pin_memory=config.pin_memory,
                prefetch_factor=config.prefetch_factor if workers else None,
                multiprocessing_context=config.multiprocessing_context if workers else None,
                snapshot_every_n_steps=config.snapshot_every_n_steps, collate_fn=keep,
                worker_init_fn=worker_init_fn(workers))
        self._fetch = None  # (DataLoader state before the current round of fetches, its batches)
        self._used = 0  # batches of the current round handed out
        self._skip = 0  # batches to drop from the first round after a restore
        self._iterating = False

    def __iter__(self):
        if self._iterating:  # go on from the current position rather than from the start
            self.load_state_dict(self.state_dict())
        self._iterating = True
        return self._batches()

    def _batches(self):
        """Batches in round-robin order over the workers (worker k % W makes batch k), whatever
        the fetch size: a round is one fetch from each worker, handed out interleaved."""
        with sigterm_blocked():
            fetches = iter(self.dataloader)  # starts the workers
        size = self.config.micro_batch_size
        workers, per_fetch = max(1, self.config.num_workers), self.config.fetch
        while True:
            # where to come back to if a checkpoint falls inside this round (none can when a
            # round is one batch, and state_dict() is not free: skip it then)
            before = self.dataloader.state_dict() if workers * per_fetch > 1 else None
            round_ = [raise_error_item(next(fetches)) for _ in range(workers)]
            self._fetch, self._used, self._skip = (before, workers * per_fetch), self._skip, 0
            while self._used < self._fetch[1]:
                index, worker = divmod(self._used, workers)
                fetch, rows = round_[worker], slice(index * size, (index + 1) * size)
                self._used += 1
                yield {"ids": decode_rows(fetch, rows.start, rows.stop),
                       "modality": fetch["modality"][rows], "dataset": fetch["dataset"][rows],
                       "epoch": fetch["epoch"][rows]}

    def data_order(self) -> dict:
        """What fixes the order of the data; a state made under another order is refused."""
        config = self.config
        return {"seed": config.seed, "seq_len": config.seq_len, "patch_size": config.patch_size,
                "micro_batch_size": config.micro_batch_size, "shuffle_buffer": config.shuffle_buffer,
                "image_order": config.image_order, "text_packing": config.text_packing,
                "weights": config.mixing_weights(),
                "datasets": [[s.name, s.modality, len(s.shards), s.samples] for s in self.sources]}

    def skipped(self) -> int:
        """Bad shards and samples skipped (on_error="skip") before each worker's current block."""
        return sum(d["errors"] for state in worker_states(self.state_dict()["dataloader"])
                   for d in state["datasets"])

    def state_dict(self) -> dict:
        if self._fetch is None:  # not iterated since built or restored
            dataloader, used = self.dataloader.state_dict(), self._skip
        elif self._used == self._fetch[1]:  # the DataLoader's state is after the last round
            dataloader, used = self.dataloader.state_dict(), 0
        else:
            dataloader, used = self._fetch[0], self._used
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "rank": self.rank,
                "world_size": self.world_size, "num_workers": self.config.num_workers,
                "data_order": self.data_order(), "dataloader": dataloader, "used_of_fetch": used}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a loader state of {STATE_FORMAT} v{STATE_VERSION} (got format "
                             f"{state.get('format')!r} v{state.get('version')!r})")
        mine = (self.rank, self.world_size, self.config.num_workers)
        saved = (state["rank"], state["world_size"], state["num_workers"])
        if saved != mine:
            raise ValueError(f"loader state was saved by rank {saved[0]} of world_size {saved[1]} with "
                             f"num_workers {saved[2]}; this loader is rank {mine[0]} of {mine[1]} with "
                             f"num_workers {mine[2]}: resume with the same world size and num_workers "
                             "(the data order depends on both), giving each rank its own state")
        saved_order = state["data_order"]
        changed = sorted(k for k, v in self.data_order().items() if saved_order.get(k) != v)
        if changed:
            was = ", ".join(f"{k}={saved_order.get(k)!r}" for k in changed)
            raise ValueError(f"loader state was saved with other {', '.join(changed)} ({was}): "
                             "resume with the configuration it was saved with")
        self.dataloader.load_state_dict(state["dataloader"])
        self._fetch, self._used, self._skip = None, 0, state["used_of_fetch"]
        self._iterating = False


def build_train_loader(config: LoaderConfig, rank: int = 0, world_size: int = 1) -> TrainLoader:
    """This rank's endless, resumable stream of {"ids": (B, T), "modality": [..], ...} batches."""
    return TrainLoader(config, rank, world_size)


def build_validation_loader(config: LoaderConfig, rank: int = 0,
                            world_size: int = 1) -> ValidationLoader:
    """This rank's share of one unshuffled pass over `config.validation` (see
    pipeline.load.validation), read with the same settings as training: sequence length, patch
    size, image order, text packing, error policy, workers, micro-batch size.

    Finite; the same number of batches on every rank (the last ones padded with PAD rows); across
    ranks every byte of the dataset is in exactly one row.
    """
    check_rank(rank, world_size)
    if not config.validation:
        raise ValueError("validation is empty: give the dataset directory to evaluate on")
    [source] = make_sources(config, [config.validation])
    layout = make_layout(source, on_error=config.on_error, verify=config.verify_shards)
    dataset = ValidationDataset(source, layout, batch_size=config.micro_batch_size, rank=rank,
                                world_size=world_size, num_workers=config.num_workers,
                                on_error=config.on_error, verify=config.verify_shards)
    return ValidationLoader(dataset, config.num_workers,
                            config.multiprocessing_context if config.num_workers else None)


def worker_states(dataloader_state: dict) -> list[dict]:
    """The TrainDataset state of each worker inside a StatefulDataLoader state (torchdata 0.11)."""
    if "_snapshot" not in dataloader_state:  # num_workers 0
        return [dataloader_state["dataset_state"]]
    snapshots = dataloader_state["_snapshot"]["_worker_snapshots"]
    return [snapshots[f"worker_{i}"]["dataset_state"] for i in range(len(snapshots))]
