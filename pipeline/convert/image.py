"""Image converter: ImageNet layouts → shards of S×S raw RGB bytes (row-major, S·S·3 per sample).

    ImageFolder  SRC/<synset>/*.JPEG ───┐ label: the synset's index among the sorted class folders
    flat         image files, folders   ┤ label: from --labels (by file name, or one per line in
                 and globs, in any mix  │ sorted order), else none
                                        ▼
                 batches of files ─▶ worker: Pillow open ─▶ EXIF orientation ─▶ RGB ─▶ resize ─▶ bytes
                                                                                   crop | box
    downsampled  SRC/*.npz ─▶ main process streams `data` rows ─▶ worker: channel-planar → row-major
                              (3·R·R bytes each, `labels` 1-based)        (─▶ resize when R ≠ S)

Labels in metadata are 0-based class indices everywhere, with the synset beside them when known.
Pixels:
- RGB conversion: alpha and transparency are composited over white; 16-bit grey (PNG "I;16",
  "I") keeps its high byte; every other mode (L, 1, P, CMYK, YCbCr, …) goes through Pillow's
  `convert("RGB")`. ICC profiles are not applied.
- resize "crop" (default): the shorter side to S with Pillow's antialiased bicubic filter (the
  longer side to round(long·S/short)), then the centre S×S (offset floor((long' - S)/2)).
  resize "box": the whole image to S×S with Pillow's box filter, aspect not kept, as downsampled
  ImageNet (Chrabaszcz et al., 2017) was made.
- Pillow's decompression-bomb guard stays on: over MAX_IMAGE_PIXELS (--max-pixels) an image
  warns, over twice that it is skipped; truncated images are errors (skipped), never padded.
Keys: `<file index>-<item index>`, the item index being 0 for an image file and the row of an
npz file, so a --part split and its merge give the same keys as one run.
"""

import io
import struct
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.convert.inputs import expand_sources
from pipeline.convert.samples import (FileItem, Sample, SkipInput, TaskResult, batch_files, run_file_batch,
                                      sample_key)
from pipeline.format.errors import UsageError
from pipeline.convert.labels import Label, LabelMap, NO_LABEL, build_label_map, folder_labels, read_label_file

LAYOUTS = ("folder", "flat", "npz")
RESIZE_METHODS = ("crop", "box")
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's own default, 89,478,485
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
BACKGROUND = (255, 255, 255, 255)  # what transparent pixels become
TASK_PIXEL_BYTES = 8 << 20  # pixels a task returns, at most (and at least one image)
TASK_MAX_FILES = 64
TASK_SOURCE_BYTES = 32 << 20
# what Pillow raises on a broken file, besides DecompressionBombError and UnidentifiedImageError
BROKEN_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)
NPZ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile)


# ---------------------------------------------------------------------------------------------
# pixels: one image file → S·S·3 bytes


@dataclass(frozen=True)
class ImageSettings:
    size: int  # S: samples are S×S
    resize: str = "crop"  # "crop" | "box"
    max_pixels: int = DEFAULT_MAX_PIXELS  # Pillow's MAX_IMAGE_PIXELS while converting

    def __post_init__(self):
        if self.size <= 0:
            raise UsageError(f"--size {self.size}: must be a positive number of pixels, e.g. 64")
        if self.resize not in RESIZE_METHODS:
            raise UsageError(f"--resize {self.resize}: choose one of {', '.join(RESIZE_METHODS)}")
        if self.max_pixels <= 0:
            raise UsageError(f"--max-pixels {self.max_pixels}: must be positive")

    @property
    def sample_bytes(self) -> int:
        return self.size * self.size * 3


@contextmanager
def pixel_limit(max_pixels: int):
    """Pillow's decompression-bomb limit is a module global: set it for the work at hand only
    (workers are spawned, so the parent's setting would not reach them anyway)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB (see the module docstring for the rules)."""
    if image.mode in SIXTEEN_BIT_MODES:
        high_byte = np.clip(np.asarray(image).astype(np.int64) >> 8, 0, 255)  # (H, W)
        image = Image.fromarray(high_byte.astype(np.uint8), "L")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_square(image: Image.Image, size: int, method: str) -> Image.Image:
    """An RGB image → S×S: "crop" (shorter side to S, centre crop) or "box" (whole image)."""
    if method == "box":
        return image.resize((size, size), Image.Resampling.BOX)
    width, height = image.size
    short = min(width, height)
    new_width = max(size, round(width * size / short))
    new_height = max(size, round(height * size / short))
    resized = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def apply_orientation(image: Image.Image) -> None:
    """Turn the image as its EXIF Orientation tag says. A broken EXIF block leaves it as stored:
    the pixels are still good."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (SyntaxError, ValueError, OSError, struct.error):
        pass


def decode_image(path: Path, settings: ImageSettings) -> tuple[bytes, tuple[int, int]]:
    """One image file → (S·S·3 raw RGB bytes, its (width, height) upright); SkipInput if bad."""
    try:
        with Image.open(path) as image:
            image.load()
            apply_orientation(image)
            original_size = image.size
            pixels = resize_square(to_rgb(image), settings.size, settings.resize).tobytes()
    except Image.DecompressionBombError as error:
        raise SkipInput(f"decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise SkipInput("not an image Pillow can read") from None
    except BROKEN_IMAGE_ERRORS as error:
        raise SkipInput(f"broken image ({type(error).__name__}: {error})") from None
    return pixels, original_size


def image_sample(key: str, pixels: bytes, settings: ImageSettings, encoder, **fields) -> Sample:
    meta = {"modality": "image", "length": len(pixels), "height": settings.size,
            "width": settings.size, "channels": 3, **fields}
    return Sample(key, encoder.encode(pixels), len(pixels), meta)


# ---------------------------------------------------------------------------------------------
# downsampled ImageNet .npz: `data` (N, 3·R·R) uint8 channel-planar rows, `labels` (N,) 1-based


def read_npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"npy format version {version} is not supported")
    shape, fortran_order, dtype = readers[version](f)
    if fortran_order or dtype != np.uint8 or len(shape) < 2:
        raise ValueError(f"data is {dtype} {shape}{' Fortran-ordered' if fortran_order else ''}, "
                         "expected uint8 rows (N, 3·R·R) in C order")
    return shape, dtype


def planar_side(shape: tuple[int, ...]) -> int:
    """R such that a row of shape[1:] holds 3·R·R bytes."""
    row_bytes = int(np.prod(shape[1:]))
    side = int(round((row_bytes / 3) ** 0.5))
    if 3 * side * side != row_bytes:
        raise ValueError(f"rows of {row_bytes} bytes are not square RGB images (3·R·R)")
    return side


def npz_labels(archive: zipfile.ZipFile, rows: int, label_map: LabelMap) -> list[Label]:
    if "labels.npy" not in archive.namelist():
        return [NO_LABEL] * rows
    labels = np.load(io.BytesIO(archive.read("labels.npy")), allow_pickle=False).reshape(-1)
    if len(labels) != rows:
        raise ValueError(f"{len(labels)} labels for {rows} rows")
    resolved = []
    for number in labels.tolist():
        try:
            resolved.append(label_map.by_id(int(number), base=1))
        except ValueError as error:
            resolved.append(str(error))
    return resolved


@dataclass
class NpzRowsTask:
    settings: ImageSettings
    file_index: int
    path: Path
    first_row: int
    side: int  # R: the rows are 3·R·R bytes
    rows: bytes  # (n, 3, R, R) channel-planar
    labels: list[Label]
    skipped: list[dict]
    source_bytes: int


def npz_tasks(settings: ImageSettings, file_index: int, path: Path, label_map: LabelMap):
    """Stream one .npz's rows in the main process (a member of a zip can only be read in order
    cheaply); yield tasks of about TASK_PIXEL_BYTES."""
    size = path.stat().st_size

    first_row = 0
    try:
        with zipfile.ZipFile(path) as archive, archive.open("data.npy") as f:
            shape, _ = read_npy_header(f)
            side = planar_side(shape)
            total, row_bytes = shape[0], 3 * side * side
            labels = npz_labels(archive, total, label_map)
            per_task = max(1, TASK_PIXEL_BYTES // max(row_bytes, settings.sample_bytes))
            for first_row in range(0, total, per_task):
                count = min(per_task, total - first_row)
                rows = f.read(count * row_bytes)
                if len(rows) != count * row_bytes:
                    raise EOFError(f"data ends in row {first_row + len(rows) // row_bytes} of {total}")
                yield NpzRowsTask(settings, file_index, path, first_row, side, rows,
                                  labels[first_row: first_row + count], [],
                                  size * count // max(total, 1))
    except NPZ_ERRORS as error:
        reason = f"broken or unreadable npz ({type(error).__name__}: {error})"
        yield NpzRowsTask(settings, file_index, path, first_row, 0, b"", [],
                          [{"source": str(path), "reason": reason}], 0)


def run_npz_rows(task: NpzRowsTask, encoder) -> TaskResult:
    settings = task.settings
    count = len(task.labels)
    images = np.frombuffer(task.rows, dtype=np.uint8)
    images = images.reshape(count, 3, task.side, task.side)  # (n, 3, R, R)
    images = images.transpose(0, 2, 3, 1)  # (n, R, R, 3): channel-planar → row-major RGB
    result = TaskResult([], list(task.skipped), task.source_bytes)
    for offset, (image, label) in enumerate(zip(images, task.labels)):
        row = task.first_row + offset
        if isinstance(label, str):
            result.skipped.append({"source": f"{task.path}:{row}", "reason": label})
            continue
        if task.side != settings.size:
            image = resize_square(Image.fromarray(image), settings.size, settings.resize)
        pixels = np.ascontiguousarray(image).tobytes()
        result.samples.append(image_sample(sample_key(task.file_index, row), pixels, settings, encoder,
                                           source=str(task.path), row=row, label=label[0],
                                           synset=label[1]))
    return result


# ---------------------------------------------------------------------------------------------
# the converter


@dataclass
class ImageFilesTask:
    settings: ImageSettings
    files: list[FileItem]
    labels: list[Label]  # one per file


def run_image_files(task: ImageFilesTask, encoder) -> TaskResult:
    settings = task.settings

    def convert_file(position: int, item: FileItem) -> list[Sample]:
        label = task.labels[position]
        if isinstance(label, str):
            raise SkipInput(label)
        pixels, (width, height) = decode_image(item.path, settings)
        return [image_sample(sample_key(item.file_index, 0), pixels, settings, encoder,
                             source=str(item.path), label=label[0], synset=label[1],
                             original_width=width, original_height=height)]

    with pixel_limit(settings.max_pixels):
        return run_file_batch(task.files, convert_file)


class ImageConverter:
    modality = "image"

    def __init__(self, settings: ImageSettings, layout: str, file_labels: dict[Path, Label] | None = None,
                 label_map: LabelMap | None = None):
        self.settings = settings
        self.layout = layout
        self.file_labels = file_labels  # folder and flat layouts; None: unlabelled
        self.label_map = label_map or LabelMap(None)  # npz layout

    def make_tasks(self, indexed_files):
        if self.layout == "npz":
            for file_index, path in indexed_files:
                yield from npz_tasks(self.settings, file_index, path, self.label_map)
            return
        per_task = max(1, min(TASK_MAX_FILES, TASK_PIXEL_BYTES // self.settings.sample_bytes))
        for batch in batch_files(indexed_files, per_task, TASK_SOURCE_BYTES):
            labels = [self.file_labels[item.path] if self.file_labels else NO_LABEL for item in batch]
            yield ImageFilesTask(self.settings, batch, labels)

    @staticmethod
    def run_task(task, encoder) -> TaskResult:
        if isinstance(task, NpzRowsTask):
            return run_npz_rows(task, encoder)
        return run_image_files(task, encoder)


def detect_layout(sources: list[str], files: list[Path], labels: Path | None) -> str:
    """npz when every input is a .npz; ImageFolder when the one source is a folder whose images
    sit in subfolders and no --labels is given; otherwise flat: the images as they are given
    (files, folders and globs, as every converter takes them), labelled by --labels or not at all."""
    if all(f.suffix.lower() == ".npz" for f in files):
        return "npz"
    root = Path(sources[0])
    if labels or len(sources) != 1 or not root.is_dir() or all(f.parent == root for f in files):
        return "flat"
    return "folder"


def build_image_converter(sources: list[str], settings: ImageSettings, *, layout: str = "auto",
                          labels: Path | None = None, classes: Path | None = None,
                          classes_from: Path | None = None, label_ids: Path | None = None,
                          label_base: int = 1) -> tuple[ImageConverter, list[Path], str]:
    """Inputs and label options → (converter, sorted input files, the layout used)."""
    files = expand_sources(sources)
    if layout == "auto":
        layout = detect_layout(sources, files, labels)
    if layout == "npz":
        if labels:
            raise UsageError("--labels does not apply to .npz inputs: their labels are inside")
        label_map = build_label_map(classes, classes_from, label_ids)
        return ImageConverter(settings, layout, label_map=label_map), files, layout
    if layout == "folder":
        root = Path(sources[0])
        if len(sources) != 1 or not root.is_dir():
            raise UsageError(f"the folder layout reads one ImageFolder (SRC/<synset>/…); got "
                             f"{' '.join(sources)}")
        if labels:
            raise UsageError("--labels is for flat images; an ImageFolder's labels are its class "
                             "folders")
        label_map = build_label_map(classes, classes_from, label_ids, folder_root=root)
        return ImageConverter(settings, layout, folder_labels(root, files, label_map)), files, layout
    label_map = build_label_map(classes, classes_from, label_ids)
    file_labels = read_label_file(labels, files, label_map, label_base) if labels else None
    return ImageConverter(settings, layout, file_labels), files, layout
