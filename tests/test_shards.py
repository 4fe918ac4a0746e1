"""Shard format v1: writer determinism and atomicity, payload names, manifest (pipeline.format.shards)."""

import tarfile

import pytest

from pipeline.format.errors import DataError, UsageError
from pipeline.format.reader import iter_shard
from pipeline.format.manifest import Manifest, load_manifest, payload_name, shard_name
from pipeline.format.shards import ShardWriter, ustar_header

from helpers import write_shard


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
    writer.add("k", "none", b"data", 4, {"length": 4})
    assert not (tmp_path / "x.tar").exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_hand_written_header_is_tarfiles_ustar_header():
    info = tarfile.TarInfo("00000001-000000002.bin.zst")
    info.size, info.mtime, info.mode = 123_456, 0, 0o644
    assert ustar_header(info.name, info.size) == info.tobuf(format=tarfile.USTAR_FORMAT)


def test_payload_names():
    assert (payload_name("zstd"), payload_name("none")) == ("bin.zst", "bin")
    with pytest.raises(ValueError, match="unknown compression 'gzip'"):
        payload_name("gzip")


def test_keys_with_dots_are_refused(tmp_path):
    writer = ShardWriter(tmp_path / "x.tar")
    with pytest.raises(DataError, match="no dot"):
        writer.add("a.b", "none", b"x", 1, {"length": 1})
    writer.abort()


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
