"""Shard format v1: writer determinism and atomicity, bounded decompression, reader errors."""

import io
import tarfile

import pytest
import zstandard

from pipeline.format.errors import DataError, UsageError
from pipeline.format.shards import (Manifest, ShardWriter, decompress_bounded, iter_shard, load_manifest,
                             shard_name)


def write_shard(path, samples, compress=True):
    writer = ShardWriter(path)
    cctx = zstandard.ZstdCompressor(level=3)
    for key, data in samples:
        payload = cctx.compress(data) if compress else data
        writer.add(key, "bin.zst" if compress else "bin", payload, len(data),
                   {"modality": "text", "source": "test", "length": len(data)})
    return writer.close()


SAMPLES = [("a-1", b"hello"), ("a-2", bytes(range(256)) * 3), ("a-3", b"\x00")]


def test_writer_is_deterministic_and_readable(tmp_path):
    first = write_shard(tmp_path / "x.tar", SAMPLES)
    second = write_shard(tmp_path / "y.tar", SAMPLES)
    assert (tmp_path / "x.tar").read_bytes() == (tmp_path / "y.tar").read_bytes()
    assert first.sha256 == second.sha256 and first.samples == 3
    assert first.payload_bytes == sum(len(d) for _, d in SAMPLES)
    assert first.file_bytes == (tmp_path / "x.tar").stat().st_size
    assert [(k, p) for k, _, p in iter_shard(tmp_path / "x.tar")] == SAMPLES
    with tarfile.open(tmp_path / "x.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:2]] == ["a-1.bin.zst", "a-1.json"]
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}


def test_uncompressed_payloads(tmp_path):
    write_shard(tmp_path / "x.tar", SAMPLES, compress=False)
    assert [(k, p) for k, _, p in iter_shard(tmp_path / "x.tar")] == SAMPLES


def test_shard_appears_only_when_closed(tmp_path):
    writer = ShardWriter(tmp_path / "x.tar")
    writer.add("k", "bin", b"data", 4, {"length": 4})
    assert not (tmp_path / "x.tar").exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_keys_with_dots_are_refused(tmp_path):
    writer = ShardWriter(tmp_path / "x.tar")
    with pytest.raises(ValueError, match="no dot"):
        writer.add("a.b", "bin", b"x", 1, {"length": 1})
    writer.abort()


def test_decompression_is_bounded():
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * 10_000_000)
    assert len(bomb) < 1000
    with pytest.raises(DataError, match="more than 1000 bytes"):
        decompress_bounded(bomb, 1000)
    streamed = io.BytesIO()  # a frame without a content size in its header
    with zstandard.ZstdCompressor().stream_writer(streamed, closefd=False) as w:
        w.write(b"\x00" * 100_000)
    with pytest.raises(DataError):
        decompress_bounded(streamed.getvalue(), 99_999)
    assert len(decompress_bounded(streamed.getvalue(), 100_000)) == 100_000


def test_length_mismatch_and_corrupt_member_name_the_key(tmp_path):
    writer = ShardWriter(tmp_path / "x.tar")
    writer.add("short", "bin.zst", zstandard.ZstdCompressor().compress(b"abc"), 3, {"length": 5})
    writer.close()
    with pytest.raises(DataError, match="short: payload is 3 bytes, metadata says 5"):
        list(iter_shard(tmp_path / "x.tar"))
    writer = ShardWriter(tmp_path / "y.tar")
    writer.add("junk", "bin.zst", b"\x28\xb5\x2f\xfd\x00\x00garbage", 3, {"length": 3})
    writer.close()
    with pytest.raises(DataError, match="y.tar: junk: corrupt zstd"):
        list(iter_shard(tmp_path / "y.tar"))


def test_manifest_roundtrip_and_errors(tmp_path):
    info = write_shard(tmp_path / shard_name("d", 0), SAMPLES)
    manifest = Manifest("d", "text", {"level": 3}, [info], [{"source": "s", "reason": "r"}])
    manifest.save(tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded == manifest and loaded.totals["samples"] == 3 and loaded.totals["skipped"] == 1
    with pytest.raises(UsageError, match="no such manifest"):
        load_manifest(tmp_path / "elsewhere")
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(UsageError, match="not a valid manifest"):
        load_manifest(tmp_path)
