"""The audio corpus: recorded sounds at 8 kHz, a byte per sample."""

from pathlib import Path

from compare.data.corpus import Corpus, held_out
from pipeline.convert.audio import AudioConverter, AudioSettings

HELD_OUT_EVERY = 10  # every 10th file
SAMPLE_RATE = 8000
ENCODING = "mulaw8"  # a byte per sample: a context of N bytes hears N / 8000 seconds


def sound_documents(trees: dict[str, Path], staging: Path):
    """Sonic Pi's recorded samples and ALSA's spoken channel names, a sample per file."""
    files = (sorted((trees["sonic-pi-samples"] / "usr/share/sonic-pi/samples").glob("*.flac"))
             + sorted((trees["alsa-utils"] / "usr/share/sounds/alsa").glob("*.wav")))
    train, val = held_out(files, HELD_OUT_EVERY)
    converter = AudioConverter(AudioSettings(SAMPLE_RATE, ENCODING))
    return train, val, converter, {"modality": "audio", "sample_rate": SAMPLE_RATE, "encoding": ENCODING}


SOUNDS8K = Corpus("sounds8k", ("sonic-pi-samples", "alsa-utils"), sound_documents)
