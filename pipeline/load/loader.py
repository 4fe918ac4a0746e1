"""The streaming loader: dataset directories → (B, T) batches of byte ids for every rank and worker.

    LoaderConfig.datasets (text / image / audio dirs) ── index.json and member indexes of each
      ▼
    GlobalOrder (below; sample tables and the Mixer from pipeline.load.order): position j of one
      │  global stream of sequences → (dataset, its output number k) → segments of samples.
      │  Seeded; the same for any cluster shape.
      ▼
    rank r, batch b (counted from the loader's start position C): positions C + b·W·B + r·B + i,
      │  i < B (W ranks, B = micro_batch_size): a global step's batches are consecutive positions
      ▼
    TrainDataset (IterableDataset, in DataLoader worker w of V): fetches w, w+V, w+2V, … of
      │  `batches_per_fetch` batches; rows read by SampleReader (pipeline.load.reading) at their
      │  member offsets: each rank reads only its own samples
      ▼
    torch DataLoader (fetches in round robin over the workers = in order) ─▶ TrainLoader
      ▼
    batch {"ids": LongTensor (B, T), "modality": [str] * B, "dataset": [int] * B,
           "sequence": [int] * B (k: which output of that dataset), "epoch": [int] * B}

The train loader never ends: each dataset goes through epoch 0, then epoch 1, and so on, every
epoch a new permutation of the whole dataset's pieces; within an epoch every sequence comes once.
Every rank yields one batch per step for as long as the trainer asks.

Exact and elastic resume: the state is the global position (sequences handed out by all ranks
together) and how many of them each dataset gave, plus what fixes the order. It is the same on
every rank, and a loader of any world size, worker count or batch size restored from it goes on
with the next sequence of the same global stream. A state made under another order (seed,
datasets, weights, sequence length, patch size, image order, text packing, piece length) is
refused, naming the setting that changed.
"""

import math
from dataclasses import KW_ONLY, dataclass, field

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.load.order import Mixer, dataset_order
from pipeline.load.packing import decode_rows, keep, rows_to_yield
from pipeline.load.reading import ErrorPolicy, SampleReader, errors_as_items, raise_error_item
from pipeline.load.streams import Source
from pipeline.load.validation import ValidationDataset, ValidationLoader, make_layout
from pipeline.load.workers import sigterm_blocked, worker_init_fn

STATE_FORMAT = "megabyte-loader"
STATE_VERSION = 2


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
    piece_sequences: int = 8  # documents and clips longer than this many sequences are shuffled in pieces
    shuffle_sequences: int = 1024  # then sequences are permuted in blocks of this many; 1 = not
    image_order: str = "raster"  # "raster" | "patch" (the paper's patch scan, P = 3·p²)
    text_packing: str = "concat"  # "concat": documents joined by BOUNDARY | "document": one per sequence
    on_error: str = "raise"  # bad shards/samples: "raise" | "skip" (log, count and go on)
    # True: where a shard is read whole (the validation pass, a shard without a member index),
    # its sha256 is checked before its first read in each process; the train loader reads an
    # indexed shard sample by sample, checked by its size, its index's sha256 and each member's
    # checksums. False: shard sizes only.
    verify_shards: bool = True
    batches_per_fetch: int = 8  # batches a worker hands over at once (fewer, larger transfers)
    prefetch_factor: int = 2  # fetches each worker prepares ahead
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
                     "piece_sequences", "shuffle_sequences"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.seq_len % self.patch_size:
            nearest = self.seq_len - self.seq_len % self.patch_size or self.patch_size
            raise ValueError(f"seq_len {self.seq_len} is not a multiple of patch_size {self.patch_size}: "
                             f"use e.g. seq_len {nearest}")
        for name in ("batch_size", "num_workers", "seed"):
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


class GlobalOrder:
    """Position j of the global stream → (dataset, sequence number, segments, epoch), for every
    dataset of the config (pipeline.load.order). Picklable: workers get the built tables."""

    def __init__(self, config: LoaderConfig):
        self.config = config
        self.sources = make_sources(config, config.datasets)
        piece_len = config.piece_sequences * config.seq_len
        self.datasets = [dataset_order(source, piece_len=piece_len, shuffle_sequences=config.shuffle_sequences,
                                       seed=config.seed, dataset=d)
                         for d, source in enumerate(self.sources)]

    def mixer(self, position: int = 0, counts: list[int] | None = None) -> Mixer:
        return Mixer(self.config.mixing_weights(), self.config.seed, position, counts)

    def data_order(self) -> dict:
        """What fixes the order of the data; a state made under another order is refused."""
        config = self.config
        return {"seed": config.seed, "seq_len": config.seq_len, "patch_size": config.patch_size,
                "image_order": config.image_order, "text_packing": config.text_packing,
                "piece_sequences": config.piece_sequences, "shuffle_sequences": config.shuffle_sequences,
                "weights": config.mixing_weights(),
                "datasets": [[s.name, s.modality, len(s.shards), s.samples] for s in self.sources]}


@dataclass
class Assignment:
    """Which positions of the global stream one rank's batches take, from the loader's start."""

    start: int  # C: the global position the loader started (or was restored) at
    counts: list[int]  # sequences each dataset gave before C
    rank: int
    world_size: int
    batch: int  # B, sequences per micro-batch and rank

    def first(self, b: int) -> int:
        """The first position of this rank's batch b."""
        return self.start + (b * self.world_size + self.rank) * self.batch


class TrainDataset(IterableDataset):
    """One rank's batches; in DataLoader worker w of V, fetches w, w+V, … of `config.fetch`
    batches, rows encoded by packing.encode_rows. Bad data under on_error="raise" ends it with an
    {"error": message} item (reading.errors_as_items); skipped data is counted in "skipped"."""

    def __init__(self, order: GlobalOrder, assignment: Assignment):
        self.order, self.assignment = order, assignment

    def __iter__(self):
        return errors_as_items(self._fetches())

    def _fetches(self):
        config, assignment = self.order.config, self.assignment
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        policy = ErrorPolicy(config.on_error)
        readers = [SampleReader(source, d.table, verify=config.verify_shards, policy=policy)
                   for source, d in zip(self.order.sources, self.order.datasets)]
        mixer = self.order.mixer(assignment.start, assignment.counts)
        fetch = worker
        while True:
            dataset, sequence, epoch, segments = [], [], [], []
            for b in range(fetch * config.fetch, (fetch + 1) * config.fetch):
                first = assignment.first(b)
                mixer.advance(first)
                datasets, numbers = mixer.advance(first + assignment.batch)
                for d, k in zip(datasets.tolist(), numbers.tolist()):
                    row_segments, row_epoch = self.order.datasets[d].output(k)
                    dataset.append(d)
                    sequence.append(k)
                    epoch.append(row_epoch)
                    segments.append(row_segments)
            for d, reader in enumerate(readers):
                reader.prefetch([s.sample for row_d, row in zip(dataset, segments) if row_d == d for s in row])
            rows = [[part for s in row for part in readers[d].tokens(s.sample).slice(s.start, s.stop)]
                    for d, row in zip(dataset, segments)]
            modality = [self.order.sources[d].modality for d in dataset]
            yield {**rows_to_yield(rows, config.seq_len), "modality": modality, "dataset": dataset,
                   "sequence": sequence, "epoch": epoch, "skipped": policy.count}
            fetch += workers


class TrainLoader:
    """One rank's endless stream of batches, with state_dict()/load_state_dict() (see the module
    docstring). Iterating again (a second `for` or `iter`) goes on from where the last stopped,
    with fresh workers."""

    def __init__(self, config: LoaderConfig, rank: int, world_size: int):
        check_rank(rank, world_size)
        if not config.datasets:
            raise ValueError("datasets is empty: give at least one dataset directory to train on")
        config.accumulation_steps(world_size)  # batch_size must be whole micro-batches of every rank
        self.config, self.rank, self.world_size = config, rank, world_size
        self.order = GlobalOrder(config)
        self.sources = self.order.sources
        self._mixer = self.order.mixer()  # at the position after the batches handed out
        self._skipped = {}  # worker → bad samples it replaced by PAD so far, this iteration
        self._skipped_before = 0

    def __iter__(self):
        return self._batches()

    def _batches(self):
        config = self.config
        assignment = Assignment(self._mixer.position, self._mixer.counts.tolist(), self.rank,
                                self.world_size, config.micro_batch_size)
        workers = config.num_workers
        dataloader = DataLoader(
            TrainDataset(self.order, assignment), batch_size=None, num_workers=workers,
            pin_memory=config.pin_memory, prefetch_factor=config.prefetch_factor if workers else None,
            multiprocessing_context=config.multiprocessing_context if workers else None,
            collate_fn=keep, worker_init_fn=worker_init_fn(workers))
        self._skipped_before += sum(self._skipped.values())
        self._skipped = {}
        with sigterm_blocked():
            fetches = iter(dataloader)  # starts the workers
        size, step = config.micro_batch_size, config.micro_batch_size * self.world_size
        for number, fetch in enumerate(map(raise_error_item, fetches)):
            self._skipped[number % max(1, workers)] = fetch["skipped"]
            for start in range(0, config.fetch * size, size):
                rows = slice(start, start + size)
                self._mixer.advance(self._mixer.position + step)
                yield {"ids": decode_rows(fetch, rows.start, rows.stop), "modality": fetch["modality"][rows],
                       "dataset": fetch["dataset"][rows], "sequence": fetch["sequence"][rows],
                       "epoch": fetch["epoch"][rows]}

    def data_order(self) -> dict:
        return self.order.data_order()

    def skipped(self) -> int:
        """Bad samples replaced by PAD ids (on_error="skip") in the fetches received so far."""
        return self._skipped_before + sum(self._skipped.values())

    def state_dict(self) -> dict:
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "position": self._mixer.position,
                "counts": self._mixer.counts.tolist(), "data_order": self.data_order(),
                "saved_by": {"world_size": self.world_size, "num_workers": self.config.num_workers,
                             "micro_batch_size": self.config.micro_batch_size}}

    def load_state_dict(self, state: dict) -> None:
        """Go on after the position of `state`, saved by a loader of any world size or worker count."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a loader state of {STATE_FORMAT} v{STATE_VERSION} (got format "
                             f"{state.get('format')!r} v{state.get('version')!r}): it was saved by an "
                             "older version, whose data order cannot be continued")
        saved_order = state["data_order"]
        changed = sorted(k for k, v in self.data_order().items() if saved_order.get(k) != v)
        if changed:
            was = ", ".join(f"{k}={saved_order.get(k)!r}" for k in changed)
            raise ValueError(f"loader state was saved with other {', '.join(changed)} ({was}): "
                             "resume with the configuration it was saved with")
        self._mixer = self.order.mixer(state["position"], state["counts"])


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
