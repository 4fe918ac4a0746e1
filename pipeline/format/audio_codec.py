"""Audio as stored bytes: the two encodings, both ways (pure numpy).

    float32 samples in [-1, 1] ──encode_samples──▶ stored bytes ──decode_samples──▶ float32 samples

- "pcm16": 16-bit little-endian PCM, x·32768 rounded and clipped to the int16 range (a 16-bit
  source at the target rate keeps its exact samples); decoded as int16 / 32768.
- "mulaw8": µ-law with µ = 255 (WaveNet's companding), one byte per sample:
  byte = round((F(x) + 1)/2 · 255), F(x) = sign(x)·ln(1 + µ|x|)/ln(1 + µ); decoded by F's inverse.

Audio is mono, so one audio sample is one frame: ENCODINGS gives its size, which the loader's
windows never split.
"""

import numpy as np

from pipeline.format.errors import DataError

ENCODINGS = {"pcm16": 2, "mulaw8": 1}  # encoding → bytes per audio sample
DEFAULT_ENCODING = "pcm16"  # the paper's setting; a sample whose metadata names none holds it
MU = 255


def bytes_per_sample(encoding: str) -> int:
    """The size of one audio sample; an encoding this format does not know is bad data."""
    if encoding not in ENCODINGS:
        raise DataError(f"unknown audio encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")
    return ENCODINGS[encoding]


def encode_samples(samples: np.ndarray, encoding: str) -> bytes:
    """float samples in [-1, 1] → stored bytes (values beyond are clipped, NaN becomes 0)."""
    bytes_per_sample(encoding)
    if encoding == "pcm16":
        scaled = samples * np.float32(32768.0)  # a new array: the rest works in place
        np.nan_to_num(scaled, copy=False, nan=0.0, posinf=32767.0, neginf=-32768.0)
        np.rint(scaled, out=scaled)
        return np.clip(scaled, -32768, 32767, out=scaled).astype("<i2").tobytes()
    x = np.clip(np.nan_to_num(samples, nan=0.0), -1.0, 1.0)
    companded = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    return np.round((companded + 1.0) / 2.0 * MU).astype(np.uint8).tobytes()


def decode_samples(raw: bytes, encoding: str) -> np.ndarray:
    """Stored bytes → float32 samples in [-1, 1]: the inverse of encode_samples up to its
    quantisation (pcm16: 1/65536; mulaw8: half a µ-law step)."""
    if len(raw) % bytes_per_sample(encoding):
        raise DataError(f"{encoding} audio of {len(raw)} bytes is not a whole number of samples")
    if encoding == "pcm16":
        return (np.frombuffer(raw, dtype="<i2") / 32768.0).astype(np.float32)
    companded = np.frombuffer(raw, dtype=np.uint8) / MU * 2.0 - 1.0
    return (np.sign(companded) * np.expm1(np.abs(companded) * np.log1p(MU)) / MU).astype(np.float32)
