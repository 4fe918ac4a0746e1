"""pipeline.format.audio_codec: pcm16 and mulaw8 both ways, and what it refuses."""

import numpy as np
import pytest

from pipeline.format.audio_codec import bytes_per_sample, decode_samples, encode_samples
from pipeline.format.errors import DataError


def test_quantisation_errors():
    x = np.linspace(-1, 1, 200001)
    assert np.abs(decode_samples(encode_samples(x, "pcm16"), "pcm16") - x).max() <= 1 / 32768
    mulaw = decode_samples(encode_samples(x, "mulaw8"), "mulaw8")
    half_step = np.log(256) / 255 / 255 * (1 + 255 * np.abs(x))  # |dx/dy| · (1/255)
    assert (np.abs(mulaw - x) <= 1.02 * half_step).all()
    codes = np.arange(256, dtype=np.uint8).tobytes()
    levels = decode_samples(codes, "mulaw8")
    assert levels[0] == -1 and levels[-1] == 1 and (np.diff(levels) > 0).all()
    assert encode_samples(levels, "mulaw8") == codes
    assert np.diff(levels)[127] < np.diff(levels)[0] / 50  # fine steps near 0, coarse near ±1


def test_unknown_encodings_and_partial_samples_are_bad_data():
    assert (bytes_per_sample("pcm16"), bytes_per_sample("mulaw8")) == (2, 1)
    with pytest.raises(DataError, match="unknown audio encoding 'flac'"):
        decode_samples(b"\x00\x00", "flac")
    with pytest.raises(DataError, match="unknown audio encoding 'flac'"):
        encode_samples(np.zeros(2, dtype=np.float32), "flac")
    with pytest.raises(DataError, match="pcm16 audio of 3 bytes is not a whole number of samples"):
        decode_samples(b"\x00\x00\x00", "pcm16")
