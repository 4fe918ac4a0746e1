"""Stored bytes back to pictures and sound: what you see and hear is what the model reads.

    image sample ─▶ bytes_to_image (raster, or the patch scan undone) ─▶ (H, W, 3) ─▶ image_grid ─▶ PNG
    audio sample ─▶ write_wav: pcm16 as stored, mulaw8 through decode_samples ─▶ 16-bit PCM ─▶ WAV

Plain functions of bytes and metadata, so the generation tool can turn model output into files with
the same code that renders the shards. Shards are read, and the image order and audio codec
undone, through pipeline.format alone.
"""

import math
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from pipeline.format.audio_codec import ENCODINGS, decode_samples
from pipeline.format.errors import DataError, UsageError
from pipeline.format.reader import iter_sample_members, read_sample
from pipeline.format.scan import from_patch_order

GRID_BACKGROUND = (255, 255, 255)


def bytes_to_image(raw: bytes, size: int | tuple[int, int], order: str = "raster",
                   patch_bytes: int | None = None) -> np.ndarray:
    """S·S·3 (or H·W·3) RGB bytes → a (H, W, 3) uint8 array.

    order "raster": row-major pixels, as stored in the shards; "patch": the paper's scan of
    p×p blocks (square images, p = sqrt(patch_bytes/3)), undone first.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if len(raw) != height * width * 3:
        raise ValueError(f"{len(raw)} bytes are not a {height}×{width} RGB image "
                         f"({height * width * 3} bytes)")
    if order == "patch":
        if height != width or patch_bytes is None:
            raise ValueError("the patch scan needs a square image and patch_bytes")
        raw = from_patch_order(raw, height, patch_bytes)
    elif order != "raster":
        raise ValueError(f"unknown byte order {order!r}: raster or patch")
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)  # (H, W, 3)


def image_grid(images: list[np.ndarray], columns: int | None = None, padding: int = 2,
               scale: int = 1) -> Image.Image:
    """(H, W, 3) arrays of one size → one picture, `columns` per row (default: a near square),
    `padding` white pixels between them, each enlarged `scale` times (nearest neighbour)."""
    if not images:
        raise ValueError("no images to put in a grid")
    height, width = images[0].shape[:2]
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_h, cell_w = height * scale + padding, width * scale + padding
    grid = Image.new("RGB", (columns * cell_w + padding, rows * cell_h + padding), GRID_BACKGROUND)
    for position, pixels in enumerate(images):
        tile = Image.fromarray(pixels, "RGB")
        if scale != 1:
            tile = tile.resize((width * scale, height * scale), Image.Resampling.NEAREST)
        row, column = divmod(position, columns)
        grid.paste(tile, (padding + column * cell_w, padding + row * cell_h))
    return grid


def write_wav(path, raw: bytes, encoding: str, sample_rate: int) -> None:
    """Audio bytes → a 16-bit PCM WAV file; pcm16 bytes go in unchanged."""
    if encoding == "pcm16":
        samples = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
    else:
        samples = np.clip(decode_samples(raw, encoding), -1.0, 32767 / 32768)
        samples = np.round(samples * 32768).astype(np.int16)
    soundfile.write(str(path), samples, sample_rate, subtype="PCM_16", format="WAV")


# ---------------------------------------------------------------------------------------------
# rendering datasets


def select_samples(paths, indices: list[int] | None = None, count: int = 16):
    """(position, shard, key, meta, payload) of the samples at `indices` (dataset positions,
    0-based), or of the first `count`; only those are decoded, and reading stops once it has them."""
    wanted = set(indices) if indices is not None else set(range(count))
    found = {}
    for position, (shard, bound, key, members) in enumerate(iter_sample_members(paths)):
        if position in wanted:
            found[position] = (position, shard, key, *read_sample(shard, key, members, bound))
        if len(found) == len(wanted) or position >= max(wanted, default=-1):
            break
    missing = sorted(wanted - set(found))
    if missing and indices is not None:
        raise UsageError(f"no sample at index {missing[0]} (the dataset has fewer samples)")
    if not found:
        raise UsageError(f"no samples in {' '.join(map(str, paths))}")
    return [found[p] for p in sorted(found)] if indices is None else [found[p] for p in indices]


def sample_image(shard, key: str, meta: dict, payload: bytes) -> np.ndarray:
    """The sample's pixels, (H, W, 3); metadata whose size does not fit its bytes is bad data."""
    height, width = meta.get("height"), meta.get("width")
    if not (type(height) is int and type(width) is int and height > 0 and width > 0
            and height * width * 3 == len(payload)):
        raise DataError(f"{shard}: {key}: {len(payload)} bytes are no RGB image of the size its "
                        f"metadata gives (height {height!r}, width {width!r})")
    return bytes_to_image(payload, (height, width))


def sample_wav(path: Path, shard, key: str, meta: dict, payload: bytes) -> None:
    """The sample as a WAV file; metadata without a usable encoding and sample rate is bad data."""
    encoding, rate = meta.get("encoding"), meta.get("sample_rate")
    if encoding not in ENCODINGS or type(rate) is not int or not 0 < rate < 2**31:
        raise DataError(f"{shard}: {key}: no audio encoding and sample rate in its metadata "
                        f"(encoding {encoding!r}, sample_rate {rate!r})")
    try:
        write_wav(path, payload, encoding, rate)
    except soundfile.SoundFileError as error:
        raise UsageError(f"{path}: cannot write ({error})") from None


def render_samples(paths, out: Path, indices: list[int] | None = None, count: int = 16,
                   columns: int | None = None, scale: int = 1) -> tuple[list[Path], int]:
    """Image samples → one PNG grid at `out`; audio samples → WAV files (`out` itself for one
    sample and a .wav name, else `out/<dataset index>-<key>.wav`). Returns (the files written,
    how many samples they show)."""
    samples = select_samples(paths, indices, count)
    modalities = {meta.get("modality") for _, _, _, meta, _ in samples}
    if modalities not in ({"image"}, {"audio"}):
        raise UsageError("render draws image or audio samples, one kind at a time; these are "
                         f"{', '.join(sorted(map(str, modalities)))}")
    try:
        if modalities == {"image"}:
            return [write_grid(out, samples, columns, scale)], len(samples)
        return write_wavs(out, samples), len(samples)
    except OSError as error:
        raise UsageError(f"{error.filename or out}: cannot write ({error.strerror or error})") from None


def write_grid(out: Path, samples: list, columns: int | None, scale: int) -> Path:
    images = [sample_image(shard, key, meta, payload) for _, shard, key, meta, payload in samples]
    if len({image.shape for image in images}) > 1:
        raise UsageError("the selected images differ in size; render them separately")
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, columns, scale=scale).save(out, format="PNG")
    return out


def write_wavs(out: Path, samples: list) -> list[Path]:
    """One WAV per sample, named by its dataset index and key (keys are checked when read: no
    path can come of them)."""
    if len(samples) == 1 and out.suffix.lower() == ".wav":
        targets = [out]
    else:
        targets = [out / f"{position:06d}-{key}.wav" for position, _, key, _, _ in samples]
    targets[0].parent.mkdir(parents=True, exist_ok=True)
    for target, (_, shard, key, meta, payload) in zip(targets, samples):
        sample_wav(target, shard, key, meta, payload)
    return targets
