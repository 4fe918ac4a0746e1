"""Hostile and unlucky conversions: truncated inputs, a killed converter's workers, an
interrupted merge, a full disk (simulated, and a real tmpfs where one can be mounted)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import zstandard

from pipeline.format import files
from pipeline.format.reader import iter_samples
from pipeline.format.manifest import load_manifest
from tools.cli import main

REPO = Path(__file__).resolve().parents[1]


def cli(*args) -> int:
    return main([str(a) for a in args])


def one_error_line(capsys, command: str = "convert") -> str:
    lines = [line for line in capsys.readouterr().err.strip().splitlines()
             if not line.startswith("warning: skipped")]
    assert len(lines) == 1 and lines[0].startswith(f"megabyte {command}: error: "), lines
    return lines[0]


def skipped(out: Path) -> dict[str, str]:
    return {Path(s["source"]).name: s["reason"] for s in load_manifest(out).skipped}


def dataset_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


# ---------------------------------------------------------------------------------------------
# truncated inputs are bad inputs


def test_truncated_zst_text_is_skipped_or_stops_strict(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    document = os.urandom(3000) + b"the end\n" * 2000
    whole = zstandard.ZstdCompressor().compress(document)
    (tmp_path / "in" / "whole.txt.zst").write_bytes(whole)
    (tmp_path / "in" / "cut.txt.zst").write_bytes(whole[: len(whole) // 2])
    lines = b"".join(b'{"text": "line %d"}\n' % i for i in range(3000))
    (tmp_path / "in" / "cut.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines)[:-3])
    (tmp_path / "in" / "two-frames.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(lines[:40]) + zstandard.ZstdCompressor().compress(lines[40:57]))
    assert cli("convert", "text", tmp_path / "in", "--out", tmp_path / "out", "--no-progress") == 0
    reasons = skipped(tmp_path / "out")
    assert set(reasons) == {"cut.txt.zst", "cut.jsonl.zst"}
    assert all("ends inside a zstd frame (truncated)" in reason for reason in reasons.values())
    documents = {(Path(meta["source"]).name, meta.get("line")): payload
                 for _, _, meta, payload in iter_samples([tmp_path / "out"])}
    assert documents[("whole.txt.zst", None)] == document
    assert [documents[("two-frames.jsonl.zst", i)] for i in (1, 2, 3)] == [b"line 0", b"line 1", b"line 2"]
    assert ("cut.txt.zst", None) not in documents
    cut_lines = sorted(line for name, line in documents if name == "cut.jsonl.zst")
    assert cut_lines == list(range(1, len(cut_lines) + 1)) and len(cut_lines) < 3000  # those before the cut
    capsys.readouterr()
    assert cli("convert", "text", tmp_path / "in" / "cut.txt.zst", "--out", tmp_path / "strict",
               "--strict", "--no-progress") == 1
    assert "cut.txt.zst: broken or unreadable (EOFError: the file ends inside a zstd frame" in \
        one_error_line(capsys)


@pytest.mark.parametrize("audio_format, subtype, suffix", [("WAV", "PCM_16", "wav"), ("OGG", "VORBIS", "ogg")])
def test_truncated_wav_and_ogg_are_skipped_or_stop_strict(tmp_path, capsys, audio_format, subtype, suffix):
    (tmp_path / "in").mkdir()
    signal_ = np.sin(np.arange(16000 * 4) / 7).astype(np.float32) * 0.5  # 4 s: several Ogg pages
    soundfile.write(tmp_path / "whole", signal_, 16000, format=audio_format, subtype=subtype)
    data = (tmp_path / "whole").read_bytes()
    (tmp_path / "in" / f"whole.{suffix}").write_bytes(data)
    for fraction in (0.6, 0.95):
        (tmp_path / "in" / f"cut{fraction}.{suffix}").write_bytes(data[: int(len(data) * fraction)])
    assert cli("convert", "audio", tmp_path / "in", "--out", tmp_path / "out", "--no-progress") == 0
    reasons = skipped(tmp_path / "out")
    assert set(reasons) == {f"cut0.6.{suffix}", f"cut0.95.{suffix}"}
    assert all("truncated" in reason for reason in reasons.values()), reasons
    [(_, _, meta, _)] = iter_samples([tmp_path / "out"])
    assert meta["source"].endswith(f"whole.{suffix}") and meta["samples"] == 16000 * 4
    capsys.readouterr()
    assert cli("convert", "audio", tmp_path / "in" / f"cut0.95.{suffix}", "--out", tmp_path / "strict",
               "--strict", "--no-progress") == 1
    assert "truncated" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------
# workers die with a killed converter


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that no longer reaps it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_and_resource_tracker_die_with_a_killed_converter(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(300):
        (tmp_path / "in" / f"{i:03d}.txt").write_bytes(os.urandom(20_000))
    command = [sys.executable, "-m", "tools.cli", "convert", "text", str(tmp_path / "in"), "--out",
               str(tmp_path / "out"), "--workers", "2", "--level", "19", "--shard-size", "100K",
               "--no-progress"]
    converter = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        helpers = []
        while len(helpers) < 3 and converter.poll() is None and time.monotonic() < deadline:
            helpers = children(converter.pid)  # two workers and the resource tracker
            time.sleep(0.01)
        assert len(helpers) == 3, "the converter finished before its workers were seen"
        converter.send_signal(signal.SIGKILL)
        converter.wait()
        deadline = time.monotonic() + 30
        while any(map(alive, helpers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(alive, helpers))
    finally:
        for pid in [converter.pid, *helpers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not (tmp_path / "out" / "index.json").exists()


# ---------------------------------------------------------------------------------------------
# merge: rerunnable, atomic per file


@pytest.fixture
def parts(tmp_path):
    (tmp_path / "src").mkdir()
    for i in range(12):
        (tmp_path / "src" / f"{i:02d}.txt").write_bytes(os.urandom(3000))
    for i in range(3):
        assert cli("convert", "text", tmp_path / "src", "--out", tmp_path / f"part{i}", "--part",
                   f"{i}/3", "--shard-size", "4K", "--no-progress") == 0
    assert cli("convert", "merge", *[tmp_path / f"part{i}" for i in range(3)], "--out", tmp_path / "clean") == 0
    return [tmp_path / f"part{i}" for i in range(3)]


def full_disk_after(monkeypatch, writes: int) -> None:
    """Writes through HashingWriter (shards, copies) fail with ENOSPC after `writes` of them."""
    original, count = files.HashingWriter.write, [0]

    def write(self, data):
        count[0] += 1
        if count[0] > writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, data)

    monkeypatch.setattr(files.HashingWriter, "write", write)


def test_an_interrupted_merge_by_copy_reruns_to_the_same_dataset(parts, tmp_path, monkeypatch, capsys):
    clean = dataset_files(tmp_path / "clean")
    merged = tmp_path / "merged"

    def no_links(source, target):
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    full_disk_after(monkeypatch, 3)  # the disk fills during the fourth shard's copy
    capsys.readouterr()
    assert cli("convert", "merge", *parts, "--out", merged) == 2
    assert "cannot write (No space left on device); rerun the same command" in one_error_line(capsys)
    assert not (merged / "index.json").exists() and not list(merged.glob(".*"))
    assert len(list(merged.glob("*.tar"))) == 3  # three whole shards, no partial one
    monkeypatch.undo()
    monkeypatch.setattr(os, "link", no_links)
    files.temporary_path(merged / sorted(clean)[5]).write_bytes(b"cut off by a kill")
    assert cli("convert", "merge", *parts, "--out", merged) == 0
    assert dataset_files(merged) == clean
    assert cli("convert", "merge", *parts, "--out", merged) == 0  # finished: a rerun is a no-op
    assert dataset_files(merged) == clean


def test_a_merge_rerun_replaces_a_damaged_shard_and_refuses_foreign_files(parts, tmp_path, capsys):
    clean = dataset_files(tmp_path / "clean")
    merged = tmp_path / "merged"
    merged.mkdir()
    damaged = sorted(clean)[1]
    (merged / damaged).write_bytes(clean[damaged][:-1] + b"!")  # left by something else
    assert cli("convert", "merge", *parts, "--out", merged) == 0
    assert dataset_files(merged) == clean
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert cli("convert", "merge", *parts, "--out", tmp_path / "other") == 2
    assert "not empty (it holds notes.txt" in one_error_line(capsys)
    index = json.loads((merged / "index.json").read_text())
    index["skipped"] = [{"source": "x", "reason": "y"}]
    (merged / "index.json").write_text(json.dumps(index))
    assert cli("convert", "merge", *parts, "--out", merged) == 2
    assert "holds another dataset" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------
# a full disk during conversion


def test_a_full_disk_stops_the_conversion_in_one_line_and_it_resumes(tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    for i in range(20):
        (tmp_path / "in" / f"{i:02d}.txt").write_bytes(os.urandom(2000))
    command = ["convert", "text", tmp_path / "in", "--shard-size", "8K", "--no-progress"]
    assert cli(*command, "--out", tmp_path / "clean") == 0
    full_disk_after(monkeypatch, 10)
    capsys.readouterr()
    assert cli(*command, "--out", tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert "cannot write (No space left on device); the shards so far are kept" in line
    assert not list((tmp_path / "out").glob(".*.tmp")) and not (tmp_path / "out" / "index.json").exists()
    monkeypatch.undo()
    assert cli(*command, "--out", tmp_path / "out") == 0
    assert dataset_files(tmp_path / "out") == dataset_files(tmp_path / "clean")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 32 KiB tmpfs mounted at tmp_path/disk (root may mount one; elsewhere the test is
    skipped), and a function that grows it: a real full disk, then space freed."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    disk = tmp_path / "disk"
    disk.mkdir()

    def mount(options: str, flags: int = 0) -> int:
        return libc.mount(b"tmpfs", str(disk).encode(), b"tmpfs", flags, options.encode())

    if mount("size=32k,mode=0755") != 0:
        pytest.skip(f"cannot mount a tmpfs here ({os.strerror(ctypes.get_errno())})")
    try:
        yield disk, lambda: mount("size=4m", 32)  # MS_REMOUNT
    finally:
        libc.umount2(str(disk).encode(), 2)  # MNT_DETACH


def test_a_full_tmpfs_stops_the_conversion_in_one_line_and_a_rerun_completes(tmp_path, small_tmpfs, capsys):
    disk, free_space = small_tmpfs
    (tmp_path / "in").mkdir()
    for i in range(20):
        (tmp_path / "in" / f"{i:02d}.txt").write_bytes(os.urandom(2000))
    command = ["convert", "text", tmp_path / "in", "--shard-size", "8K", "--no-progress"]
    assert cli(*command, "--out", tmp_path / "clean") == 0
    capsys.readouterr()
    assert cli(*command, "--out", disk / "out") == 2
    line = one_error_line(capsys)
    out = disk / "out"
    assert f"{out}: cannot write (No space left on device); the shards so far are kept" in line
    assert not (out / "index.json").exists() and not list(out.glob(".*.tmp*"))
    assert list(out.glob("*.tar"))  # whole shards, each with its index
    assert sorted(p.name for p in disk.iterdir()) == ["out"]
    assert free_space() == 0
    assert cli(*command, "--out", out) == 0
    assert dataset_files(out) == dataset_files(tmp_path / "clean")
