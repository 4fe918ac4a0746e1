"""What the bytes of a dataset hold: sample lengths, the byte histogram and its entropy, and what
general-purpose compressors make of the same bytes. Read in pieces through pipeline.format.reader:
no sample is held whole. Used by `megabyte inspect --stats`, the demo and `megabyte compare`'s scale
beside each table."""

import bz2
import lzma
import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.format.errors import UsageError
from pipeline.format.reader import iter_sample_members, read_chunks, read_meta


@dataclass
class Stats:
    samples: int
    payload_bytes: int
    lengths: np.ndarray  # (samples,) byte-stream length of each sample
    histogram: np.ndarray  # (256,) count of each byte value
    modalities: dict

    @property
    def entropy_bits(self) -> float:
        """Unigram entropy of the bytes, in bits per byte."""
        p = self.histogram[self.histogram > 0] / max(self.histogram.sum(), 1)
        return float(-(p * np.log2(p)).sum())

    def length_percentiles(self) -> dict:
        if not self.samples:
            return {}
        q = np.percentile(self.lengths, [0, 10, 50, 90, 99, 100])
        return dict(zip(["min", "p10", "p50", "p90", "p99", "max"], q.astype(int).tolist()))


def iter_payloads(paths):
    """(meta, iterator of the payload's chunks) of every sample, in dataset order."""
    for shard, bound, key, members in iter_sample_members(paths):
        meta = read_meta(shard, key, members, bound)
        yield meta, read_chunks(shard, key, members, meta["length"])


def dataset_chunks(paths):
    """Every sample's payload bytes, concatenated in dataset order, as a stream of chunks."""
    for _, chunks in iter_payloads(paths):
        yield from chunks


def dataset_stats(paths, max_samples: int | None = None) -> Stats:
    """Lengths, byte histogram and modalities of the samples, each read in pieces."""
    histogram = np.zeros(256, dtype=np.int64)
    lengths, modalities = [], {}
    for meta, chunks in iter_payloads(paths):
        if max_samples is not None and len(lengths) >= max_samples:
            break
        for chunk in chunks:
            data = np.frombuffer(chunk, dtype=np.uint8)
            for start in range(0, len(data), 1 << 16):  # bincount counts in int64: 8 bytes a byte
                histogram += np.bincount(data[start:start + (1 << 16)], minlength=256)
        lengths.append(meta["length"])
        modality = str(meta.get("modality", "?"))
        modalities[modality] = modalities.get(modality, 0) + 1
    lengths = np.array(lengths, dtype=np.int64)
    return Stats(len(lengths), int(lengths.sum()), lengths, histogram, modalities)


# name → a new incremental compressor at its strongest setting (compress(chunk) … flush())
COMPRESSORS = {"gzip -9": lambda: zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS),  # gzip's framing
               "bzip2 -9": lambda: bz2.BZ2Compressor(9),
               "xz -9": lambda: lzma.LZMACompressor(preset=9)}


def compressed_bits_per_byte(chunks) -> dict[str, float]:
    """8 × compressed size / raw size of the bytes `chunks` hold (read once, never held whole),
    for each of COMPRESSORS: what a general-purpose compressor makes of the same bytes."""
    compressors = {name: make() for name, make in COMPRESSORS.items()}
    sizes = dict.fromkeys(compressors, 0)
    raw = 0
    for chunk in chunks:
        raw += len(chunk)
        for name, compressor in compressors.items():
            sizes[name] += len(compressor.compress(chunk))
    if not raw:
        raise UsageError("no bytes to compress")
    return {name: 8 * (sizes[name] + len(compressor.flush())) / raw for name, compressor in compressors.items()}
