"""The audio corpora: recorded sounds at 8 kHz, a µ-law byte per sample (sounds8k), or at the
paper's 16 kHz, 16-bit little-endian PCM, two bytes per sample (sounds16k)."""

from functools import partial
from pathlib import Path

from compare.data.corpus import Corpus, held_out
from pipeline.convert.audio import AudioConverter, AudioSettings

HELD_OUT_EVERY = 10  # every 10th file


def trim(files: list[Path], seconds: float, folder: Path) -> list[Path]:
    """The first `seconds` of each file, as float WAV copies in folder (float32 holds every 16- and
    24-bit sample exactly, so nothing is requantised before the converter)."""
    import soundfile

    trimmed = []
    for index, path in enumerate(files):
        frames = round(seconds * soundfile.info(path).samplerate)
        samples, rate = soundfile.read(path, frames=frames, dtype="float32", always_2d=True)
        trimmed.append(folder / f"{index:03d}-{path.stem}.wav")
        soundfile.write(trimmed[-1], samples, rate, subtype="FLOAT")
    return trimmed


def sound_documents(trees: dict[str, Path], staging: Path, sample_rate: int, encoding: str,
                    val_seconds: float | None = None):
    """Sonic Pi's recorded samples and ALSA's spoken channel names, a sample per file; with
    val_seconds, only the first val_seconds of each held-out file (a smaller validation set)."""
    files = (sorted((trees["sonic-pi-samples"] / "usr/share/sonic-pi/samples").glob("*.flac"))
             + sorted((trees["alsa-utils"] / "usr/share/sounds/alsa").glob("*.wav")))
    train, val = held_out(files, HELD_OUT_EVERY)
    arguments = {"modality": "audio", "sample_rate": sample_rate, "encoding": encoding}
    if val_seconds is not None:
        val = trim(val, val_seconds, staging)
        arguments["val_seconds"] = val_seconds
    return train, val, AudioConverter(AudioSettings(sample_rate, encoding)), arguments


# a context of N bytes hears N / 8000 seconds
SOUNDS8K = Corpus("sounds8k", ("sonic-pi-samples", "alsa-utils"),
                  partial(sound_documents, sample_rate=8000, encoding="mulaw8"))
# a context of N bytes hears N / 32000 seconds. The whole held-out files would be 4× sounds8k's
# validation bytes (960 KB): the first half second of each (259 KB, as the other validation sets)
# keeps scoring to about a minute for MegaByte and the Transformer; PerceiverAR's forward costs
# ~30M FLOPs a byte, so it takes several
SOUNDS16K = Corpus("sounds16k", ("sonic-pi-samples", "alsa-utils"),
                   partial(sound_documents, sample_rate=16000, encoding="pcm16", val_seconds=0.5))
