"""Audio converter (pipeline/convert/audio.py), its CLI and the audio half of tools/render.py.

Generated tones and noise: frequency and level survive resampling, nothing aliases, the block-wise
resampler equals resampling the whole signal, PCM16 and µ-law decode back within their
quantisation, clips, formats, bad inputs, and a conversion killed and resumed.
"""

import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly

from pipeline.convert.audio import Resampler
from pipeline.format.audio_codec import decode_samples
from helpers import manifest, read_dataset, run_killed_then_resumed
from tools.cli import main as cli


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * frequency * t)  # (frames,)


def noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, round(seconds * rate))


def convert_audio(sources, out, *flags) -> int:
    sources = sources if isinstance(sources, list) else [sources]
    return cli(["convert", "audio", *map(str, sources), "--out", str(out), "--no-progress", *map(str, flags)])


def decoded(out) -> list[np.ndarray]:
    return [decode_samples(payload, meta["encoding"]) for _, meta, payload in read_dataset(out)]


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()]


# ---------------------------------------------------------------------------------------------
# resampling


def test_tone_keeps_its_frequency_and_level(tmp_path):
    left, right = tone(1000, 2.0, 44100, 0.6), tone(1000, 2.0, 44100, 0.2)
    soundfile.write(tmp_path / "tone.wav", np.stack([left, right], axis=1), 44100)  # (frames, 2)
    assert convert_audio(tmp_path / "tone.wav", tmp_path / "out") == 0
    [(key, meta, payload)] = read_dataset(tmp_path / "out")
    samples = decode_samples(payload, "pcm16")
    assert key == "00000000-000000000"
    assert meta == {"modality": "audio", "source": str(tmp_path / "tone.wav"), "length": 64000,
                    "sample_rate": 16000, "encoding": "pcm16", "samples": 32000, "channels_in": 2,
                    "source_sample_rate": 44100, "offset": 0}
    assert abs(peak_frequency(samples, 16000) - 1000) <= 0.5
    middle = samples[1000:-1000]  # the downmix: the mean of 0.6 and 0.2
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.4 / np.sqrt(2), rel=0.01)


def test_resampling_does_not_alias(tmp_path):
    # 12 kHz is above the 8 kHz Nyquist of 16 kHz: plain decimation would fold it to 4 kHz
    soundfile.write(tmp_path / "high.wav", tone(12000, 1.0, 44100), 44100)
    assert convert_audio(tmp_path / "high.wav", tmp_path / "out") == 0
    [samples] = decoded(tmp_path / "out")
    assert np.sqrt(np.mean(samples[500:-500] ** 2)) < 0.005  # < -37 dB of the 0.35 RMS input
    naive = tone(12000, 1.0, 44100)[np.arange(16000) * 44100 // 16000]  # what aliasing looks like
    assert np.sqrt(np.mean(naive ** 2)) > 0.3


@pytest.mark.parametrize("rate_in, rate_out, step, block", [
    (44100, 16000, 441 * 3, 1000), (48000, 16000, 7, 4096), (22050, 16000, 2000, 333),
    (8000, 16000, 10, 77), (16000, 16000, 100, 999), (44100, 16000, 441, 1)])
def test_blockwise_resampling_equals_the_whole_signal(rate_in, rate_out, step, block):
    signal = noise(0.5, rate_in, seed=rate_in).astype(np.float32)
    whole = resample_poly(signal, rate_out, rate_in) if rate_in != rate_out else signal
    blocks = (signal[i: i + block] for i in range(0, len(signal), block))
    streamed = np.concatenate(list(Resampler(rate_in, rate_out, step)(blocks)))
    assert np.array_equal(streamed, whole)


# ---------------------------------------------------------------------------------------------
# encodings


def test_pcm16_at_the_target_rate_keeps_the_exact_samples(tmp_path):
    pcm = np.random.default_rng(1).integers(-32768, 32768, 5000).astype(np.int16)
    soundfile.write(tmp_path / "exact.wav", pcm, 16000, subtype="PCM_16")
    assert convert_audio(tmp_path / "exact.wav", tmp_path / "out") == 0
    [(_, _, payload)] = read_dataset(tmp_path / "out")
    assert payload == pcm.astype("<i2").tobytes()


def test_mulaw_conversion(tmp_path):
    signal = tone(440, 0.5, 16000, 0.8)
    soundfile.write(tmp_path / "a.wav", signal, 16000, subtype="FLOAT")
    assert convert_audio(tmp_path / "a.wav", tmp_path / "out", "--encoding", "mulaw8") == 0
    [(_, meta, payload)] = read_dataset(tmp_path / "out")
    assert meta["encoding"] == "mulaw8" and meta["length"] == meta["samples"] == len(signal) == len(payload)
    half_step = np.log(256) / 255 / 255 * (1 + 255 * np.abs(signal))
    assert (np.abs(decode_samples(payload, "mulaw8") - signal) <= 1.02 * half_step + 1e-7).all()


# ---------------------------------------------------------------------------------------------
# clips and formats


@pytest.mark.parametrize("rate_in", [16000, 44100])
def test_clips_cut_the_resampled_stream(tmp_path, rate_in):
    soundfile.write(tmp_path / "long.wav", noise(2.5, rate_in), rate_in)
    assert convert_audio(tmp_path / "long.wav", tmp_path / "whole") == 0
    assert convert_audio(tmp_path / "long.wav", tmp_path / "clips", "--clip-seconds", 1) == 0
    clips = read_dataset(tmp_path / "clips")
    assert [key for key, _, _ in clips] == [f"00000000-00000000{i}" for i in range(3)]
    assert [(meta["offset"], meta["samples"]) for _, meta, _ in clips] == [
        (0, 16000), (16000, 16000), (32000, 8000)]
    [(_, _, whole)] = read_dataset(tmp_path / "whole")
    assert b"".join(payload for _, _, payload in clips) == whole


def test_formats_soundfile_reads(tmp_path):
    pcm = np.round(noise(0.3, 22050, seed=5) * 32767).astype(np.int16)  # the same integers in each
    soundfile.write(tmp_path / "a.wav", pcm, 22050, subtype="PCM_16")
    soundfile.write(tmp_path / "b.flac", pcm, 22050, subtype="PCM_16")
    soundfile.write(tmp_path / "c.aiff", pcm, 22050, subtype="PCM_16")
    soundfile.write(tmp_path / "d.ogg", tone(500, 0.5, 22050), 22050, format="OGG", subtype="VORBIS")
    (tmp_path / "notes.txt").write_text("not searched: no audio ending\n")
    assert convert_audio(tmp_path, tmp_path / "out") == 0
    samples = read_dataset(tmp_path / "out")
    names = ["a.wav", "b.flac", "c.aiff", "d.ogg"]  # notes.txt is not among them
    assert [meta["source"] for _, meta, _ in samples] == [str(tmp_path / name) for name in names]
    wav, flac, aiff, ogg = (payload for _, _, payload in samples)
    assert wav == flac == aiff  # lossless formats give the same stream
    assert abs(peak_frequency(decode_samples(ogg, "pcm16"), 16000) - 500) <= 2
    assert manifest(tmp_path / "out")["skipped"] == []


# ---------------------------------------------------------------------------------------------
# bad inputs and usage errors


def make_bad_audio(root) -> dict[str, str]:
    root.mkdir()
    soundfile.write(root / "good.wav", tone(300, 0.2, 16000), 16000)
    (root / "text.wav").write_text("RIFF? no, just text pretending to be audio\n")
    (root / "empty.flac").write_bytes(b"")
    soundfile.write(root / "silent.wav", np.zeros((0, 2)), 16000)
    truncated = (root / "good.wav").read_bytes()[:30]  # a header cut short
    (root / "cut.wav").write_bytes(truncated)
    return {"text.wav": "unreadable audio", "empty.flac": "empty file", "silent.wav": "no audio frames",
            "cut.wav": "unreadable audio"}


def test_bad_audio_is_skipped_with_reasons(tmp_path):
    expected = make_bad_audio(tmp_path / "in")
    assert convert_audio(tmp_path / "in", tmp_path / "out") == 0
    sources = [meta["source"] for _, meta, _ in read_dataset(tmp_path / "out")]
    assert sources == [str(tmp_path / "in/good.wav")]
    skipped = {s["source"].rsplit("/", 1)[1]: s["reason"] for s in manifest(tmp_path / "out")["skipped"]}
    assert sorted(skipped) == sorted(expected)
    for name, reason in expected.items():
        assert skipped[name].startswith(reason), (name, skipped[name])


def test_strict_stops_at_bad_audio(tmp_path, capsys):
    make_bad_audio(tmp_path / "in")
    assert convert_audio(tmp_path / "in", tmp_path / "out", "--strict") == 1
    assert "(--strict)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "index.json").exists()


@pytest.mark.parametrize("flags, message", [(["--clip-seconds", "0.00001"], "must hold at least one sample"),
                                            (["--include", "*.mp3"], "no input files"),
                                            (["{tmp}/notes"], "no audio files")])
def test_usage_errors_exit_2(tmp_path, capsys, flags, message):
    soundfile.write(tmp_path / "a.wav", tone(300, 0.1, 16000), 16000)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/readme.txt").write_text("no audio here\n")
    sources = [f.format(tmp=tmp_path) for f in flags if f.startswith("{tmp}")] or [tmp_path]
    flags = [f for f in flags if not f.startswith("{tmp}")]
    assert convert_audio(sources, tmp_path / "out", *flags) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# kill and resume; rendering


def test_kill_and_resume(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(40):
        stereo = np.stack([noise(1.0, 44100, i), noise(1.0, 44100, i + 99)], axis=1)  # (frames, 2)
        soundfile.write(tmp_path / f"in/{i:03d}.wav", stereo, 44100)
    # 4 clips a file, about 6 a shard, 23 files (4 MiB) a task: killed inside the first task
    command = ["convert", "audio", str(tmp_path / "in"), "--clip-seconds", "0.25", "--shard-size", "56K"]
    run_killed_then_resumed(tmp_path, command, killed_flags=["--workers", "2"], after_shards=5)


def test_render_writes_the_stored_samples(tmp_path, capsys):
    soundfile.write(tmp_path / "a.wav", noise(0.5, 16000, 3), 16000)
    soundfile.write(tmp_path / "b.wav", tone(440, 0.5, 16000), 16000)
    assert convert_audio(tmp_path, tmp_path / "pcm") == 0
    stored = read_dataset(tmp_path / "pcm")
    render = ["inspect", "render"]
    assert cli([*render, str(tmp_path / "pcm"), "--out", str(tmp_path / "one.wav"), "--indices", "1"]) == 0
    pcm, rate = soundfile.read(tmp_path / "one.wav", dtype="int16")
    assert rate == 16000 and pcm.astype("<i2").tobytes() == stored[1][2]  # the bytes themselves
    assert cli([*render, str(tmp_path / "pcm"), "--out", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        f"{position:06d}-{key}.wav" for position, (key, _, _) in enumerate(stored)]

    assert convert_audio(tmp_path / "b.wav", tmp_path / "mulaw", "--encoding", "mulaw8") == 0
    assert cli([*render, str(tmp_path / "mulaw"), "--out", str(tmp_path / "m.wav"), "--count", "1"]) == 0
    heard, _ = soundfile.read(tmp_path / "m.wav", dtype="float32")
    [(_, _, payload)] = read_dataset(tmp_path / "mulaw")
    assert np.abs(heard - decode_samples(payload, "mulaw8")).max() <= 1 / 32768
