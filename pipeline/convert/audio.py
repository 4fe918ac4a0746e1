"""Audio converter: any file soundfile reads → mono PCM byte streams at one sample rate.

    files ─▶ batches ─▶ worker: soundfile blocks ─▶ downmix ─▶ polyphase resample ─▶ encode ─▶ zstd
                                (float32, frames×ch)   (mean)   (rate_in → --sample-rate)  │
                                              whole file: one sample, streamed ◀───────────┤
                                              --clip-seconds C: a sample per C s ◀─────────┘

- downmix: the mean of the channels;
- resampling: scipy's polyphase `resample_poly` (Kaiser-windowed sinc low-pass at the lower
  Nyquist, so nothing aliases), applied block by block with enough context that the result equals
  resampling the whole file at once, in bounded memory whatever the file's length;
- encodings: "pcm16" (16-bit little-endian PCM) or "mulaw8" (8-bit µ-law), written by
  pipeline.format.audio_codec, which also reads them back.
Metadata: sample_rate, encoding, samples (in this sample), channels_in, source_sample_rate, and
offset: where the clip starts in the file, in samples at sample_rate (0 for a whole file).
Keys: `<file index>-<clip index>` (clip 0 for a whole file).
"""

import functools
import os
import struct
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile

from pipeline.convert.inputs import expand_sources
from pipeline.convert.samples import (FileItem, Sample, SkipInput, TaskResult, batch_files, discard,
                                      run_file_batch, sample_key)
from pipeline.format.audio_codec import DEFAULT_ENCODING, ENCODINGS, bytes_per_sample, encode_samples
from pipeline.format.errors import UsageError

# what the directory search takes by default: the endings of formats libsndfile reads
AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif",
                  ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64", ".voc", ".sd2", ".sph", ".nist",
                  ".htk", ".paf", ".pvf", ".xi", ".sds", ".wve", ".avr", ".svx", ".iff", ".ircam")
READ_FRAMES = 1 << 18  # frames per soundfile block
RESAMPLE_STEP = 1 << 18  # input samples per resampling step (about)
TASK_MAX_FILES = 32
TASK_SOURCE_BYTES = 4 << 20  # small tasks keep the workers evenly busy on a few long files
READ_ERRORS = (soundfile.SoundFileError, OSError)
OGG_END_OF_STREAM = 0x04  # the flag of an Ogg stream's last page


# ---------------------------------------------------------------------------------------------
# sample-rate conversion in bounded memory


@functools.lru_cache(maxsize=16)
def filter_taps(up: int, down: int) -> np.ndarray:
    """resample_poly's own low-pass for up/down, computed once per ratio."""
    from scipy.signal import firwin  # here, not at the top: scipy.signal takes 0.5 s to import

    max_rate = max(up, down)
    half_len = 10 * max_rate  # resample_poly's filter half-length, in upsampled samples
    return firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)


class Resampler:
    """rate_in → rate_out over a stream of blocks, equal to scipy's `resample_poly` over the whole
    signal (the same filter, zeros outside the signal) up to float32 rounding.

    Each step resamples a window of the input starting on a multiple of `down` samples, so that
    its outputs fall on the whole signal's output grid, with `context` multiples of `down` more
    input on both sides than the outputs it keeps need: further than the filter reaches.
    """

    def __init__(self, rate_in: int, rate_out: int, step_samples: int = RESAMPLE_STEP):
        common = gcd(rate_in, rate_out)
        self.up, self.down = rate_out // common, rate_in // common
        if self.up == self.down:
            return  # the identity: no filter
        self.taps = filter_taps(self.up, self.down)
        half_len = len(self.taps) // 2  # in upsampled samples
        self.context = -(-half_len // self.up) // self.down + 1
        self.step = max(1, step_samples // self.down)

    def __call__(self, blocks):
        if self.up == self.down:
            yield from blocks
            return
        from scipy.signal import resample_poly

        up, down, context, step = self.up, self.down, self.context, self.step
        window = (step + 2 * context) * down
        pending = np.zeros(context * down, dtype=np.float32)  # the zeros before the signal
        received = produced = 0
        for block in blocks:
            received += len(block)
            pending = np.concatenate([pending, block])
            while len(pending) >= window:
                out = resample_poly(pending[:window], up, down, window=self.taps)  # (window·up/down,)
                yield out[context * up: (context + step) * up]
                produced += step * up
                pending = pending[step * down:]
        total = -(-received * up // down)  # the whole signal's output length, ceil(n·up/down)
        if total > produced:
            out = resample_poly(pending, up, down, window=self.taps)
            yield out[context * up: context * up + total - produced]


def cut_clips(blocks, clip_samples: int):
    """Blocks of samples → arrays of exactly `clip_samples` (the last one may be shorter)."""
    held, count = [], 0
    for block in blocks:
        while len(block):
            take = min(len(block), clip_samples - count)
            held.append(block[:take])
            count += take
            block = block[take:]
            if count == clip_samples:
                yield np.concatenate(held)
                held, count = [], 0
    if count:
        yield np.concatenate(held)


# ---------------------------------------------------------------------------------------------
# one file → samples


@dataclass(frozen=True)
class AudioSettings:
    sample_rate: int = 16000
    encoding: str = DEFAULT_ENCODING
    clip_seconds: float | None = None  # None: one sample per file

    def __post_init__(self):
        if self.sample_rate <= 0:
            raise UsageError(f"--sample-rate {self.sample_rate}: must be positive, e.g. 16000")
        if self.encoding not in ENCODINGS:
            raise UsageError(f"--encoding {self.encoding}: choose one of {', '.join(ENCODINGS)}")
        if self.clip_seconds is not None and self.clip_length < 1:
            raise UsageError(f"--clip-seconds {self.clip_seconds}: must hold at least one sample")

    @property
    def clip_length(self) -> int | None:
        """Samples per clip at sample_rate; None: whole files."""
        return None if self.clip_seconds is None else round(self.clip_seconds * self.sample_rate)


def mono_blocks(sound: soundfile.SoundFile):
    """The file's frames, downmixed: the mean of its channels, block by block. Fewer frames than
    the file declares is a truncated file."""
    read = 0
    for block in sound.blocks(READ_FRAMES, dtype="float32", always_2d=True):  # (frames, channels)
        read += len(block)
        mono = block[:, 0].copy()  # (frames,)
        for channel in range(1, block.shape[1]):  # 30× faster than block.mean(axis=1)
            mono += block[:, channel]
        yield mono if block.shape[1] == 1 else mono * np.float32(1 / block.shape[1])
    if read != sound.frames:
        raise SkipInput(f"truncated: {read} of the {sound.frames} frames it declares")


# ---------------------------------------------------------------------------------------------
# truncation libsndfile does not report: it reads a cut WAV or Ogg file up to where it ends and
# declares only the frames it finds (a cut FLAC is an error already)


def wav_missing_bytes(path: Path) -> int:
    """How many bytes the WAV file's data chunk declares beyond the end of the file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        riff = f.read(12)
        if riff[:4] not in (b"RIFF", b"RIFX") or riff[8:12] != b"WAVE":
            return 0  # RF64, W64: not checked
        order, position = "<" if riff[:4] == b"RIFF" else ">", 12
        while position + 8 <= size:
            f.seek(position)
            chunk, chunk_size = struct.unpack(order + "4sI", f.read(8))
            if chunk == b"data":  # 0 and 0xFFFFFFFF: a streamed file that never said its size
                return 0 if chunk_size in (0, 0xFFFFFFFF) else max(0, position + 8 + chunk_size - size)
            position += 8 + chunk_size + chunk_size % 2  # chunks are padded to even sizes
    return 0


def ogg_ends_whole(path: Path) -> bool:
    """Whether the Ogg file is a run of whole pages, the last one marked end-of-stream."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        position, flags = 0, 0
        while position < size:
            f.seek(position)
            header = f.read(27)  # "OggS", version, flags, granule, serial, sequence, crc, segments
            lacing = f.read(header[26]) if len(header) == 27 else b""
            if header[:4] != b"OggS" or len(lacing) != header[26]:
                return False
            position += 27 + len(lacing) + sum(lacing)
            flags = header[5]
    return position == size and bool(flags & OGG_END_OF_STREAM)


def check_whole(path: Path, sound: soundfile.SoundFile) -> None:
    if sound.format in ("WAV", "WAVEX") and (missing := wav_missing_bytes(path)):
        raise SkipInput(f"truncated: the WAV data chunk lacks its last {missing} bytes")
    if sound.format == "OGG" and not ogg_ends_whole(path):
        raise SkipInput("truncated: the Ogg stream does not end with a whole end-of-stream page")


def convert_audio_file(item: FileItem, settings: AudioSettings, encoder) -> list[Sample]:
    try:
        with soundfile.SoundFile(item.path) as sound:
            check_whole(item.path, sound)
            if sound.frames == 0:
                raise SkipInput("no audio frames")
            meta = {"modality": "audio", "source": str(item.path),
                    "sample_rate": settings.sample_rate, "encoding": settings.encoding,
                    "channels_in": sound.channels, "source_sample_rate": sound.samplerate}
            resampled = Resampler(sound.samplerate, settings.sample_rate)(mono_blocks(sound))
            if settings.clip_length is None:
                samples = [whole_sample(item.file_index, resampled, meta, encoder)]
            else:
                samples = clipped_samples(item.file_index, resampled, settings.clip_length, meta, encoder)
    except READ_ERRORS as error:
        raise SkipInput(f"unreadable audio ({type(error).__name__}: {error})") from None
    if not samples or samples[0].length == 0:
        for sample in samples:
            discard(sample)
        raise SkipInput("no audio frames")
    return samples


def whole_sample(file_index: int, resampled, meta: dict, encoder) -> Sample:
    encoding = meta["encoding"]
    payload, length = encoder.encode_stream(encode_samples(block, encoding) for block in resampled)
    meta = {**meta, "length": length, "samples": length // bytes_per_sample(encoding), "offset": 0}
    return Sample(sample_key(file_index, 0), payload, length, meta)


def clipped_samples(file_index: int, resampled, clip_length: int, meta: dict, encoder) -> list[Sample]:
    encoding, samples = meta["encoding"], []
    try:
        for clip_index, clip in enumerate(cut_clips(resampled, clip_length)):
            raw = encode_samples(clip, encoding)
            clip_meta = {**meta, "length": len(raw), "samples": len(clip),
                         "offset": clip_index * clip_length}
            key = sample_key(file_index, clip_index)
            samples.append(Sample(key, encoder.encode(raw), len(raw), clip_meta))
    except BaseException:
        for sample in samples:  # a file that fails half-way is skipped whole
            discard(sample)
        raise
    return samples


# ---------------------------------------------------------------------------------------------
# the converter


@dataclass
class AudioFilesTask:
    settings: AudioSettings
    files: list[FileItem]


class AudioConverter:
    modality = "audio"

    def __init__(self, settings: AudioSettings):
        self.settings = settings

    def make_tasks(self, indexed_files):
        for batch in batch_files(indexed_files, TASK_MAX_FILES, TASK_SOURCE_BYTES):
            yield AudioFilesTask(self.settings, batch)

    @staticmethod
    def run_task(task: AudioFilesTask, encoder) -> TaskResult:
        return run_file_batch(task.files,
                              lambda _, item: convert_audio_file(item, task.settings, encoder))


def audio_files(sources: list[str], include: str | None = None, exclude: list[str] = ()) -> list[Path]:
    """Files named on the command line, and inside directories those with an audio ending (or
    matching `include`, e.g. '*' for every file)."""
    named = {Path(s) for s in sources if os.path.isfile(s)}
    files = [f for f in expand_sources(sources, include, exclude)
             if f in named or include or f.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise UsageError(f"no audio files ({', '.join(AUDIO_SUFFIXES[:6])}, …) found in "
                         f"{' '.join(sources)}; --include '*' takes every file")
    return files
