"""pipeline.format.reader: member ranges, shard checks, metadata bounds, bounded decompression, the
member index and reads at its offsets."""

import io
import tarfile

import numpy as np
import pytest
import zstandard

from pipeline.format.errors import DataError
from pipeline.format.member_index import read_member_index, read_members_at, scan_index
from pipeline.format.reader import (check_shard, decode_payload, iter_members, iter_metas, iter_shard,
                                    parse_meta)
from pipeline.format.shards import ShardWriter, tar_member
from helpers import write_shard

DOCS = [(f"k{i}", bytes([65 + i]) * 1000) for i in range(5)]  # 512 + 1024 + 512 + 512 bytes each


def test_members_of_a_range_and_by_suffix(tmp_path):
    write_shard(tmp_path / "x.tar", DOCS, compress=False)
    got = list(iter_members(tmp_path / "x.tar", 1, 3))
    assert [(index, key) for index, key, _ in got] == [(1, "k1"), (2, "k2")]
    assert got[0][2] == {"bin": DOCS[1][1], "json": got[0][2]["json"]}
    assert [set(m) for _, _, m in iter_members(tmp_path / "x.tar", suffix=".json")] == [{"json"}] * 5
    assert list(iter_members(tmp_path / "x.tar", 3, 3)) == []
    with pytest.raises(DataError, match="x.tar: ends after 5 samples, 7 expected"):
        list(iter_members(tmp_path / "x.tar", 4, 7))


def test_samples_before_start_are_not_read(tmp_path, monkeypatch):
    write_shard(tmp_path / "x.tar", DOCS)
    read = []
    extract = tarfile.TarFile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda tar, info: read.append(info.name) or extract(tar, info))
    assert [key for _, key, _ in iter_members(tmp_path / "x.tar", 4)] == ["k4"]
    assert read == ["k4.bin.zst", "k4.json"]


def test_broken_tar_names_the_last_whole_sample(tmp_path):
    path = tmp_path / "x.tar"
    write_shard(path, DOCS, compress=False)
    path.write_bytes(path.read_bytes()[:2 * 2560 + 700])  # inside k2's payload
    members = iter_members(path)
    assert [key for _, key, _ in (next(members), next(members))] == ["k0", "k1"]
    with pytest.raises(DataError, match="x.tar: broken tar after sample k1"):
        next(members)
    with pytest.raises(DataError, match="x.tar: broken tar after sample k1"):
        list(iter_members(path, suffix=".json"))  # also when the member it ends in is passed over
    with pytest.raises(DataError, match="x.tar: broken tar before sample 3"):
        list(iter_members(path, 3))


def test_a_malformed_pax_header_is_a_broken_tar(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.bin")
        info.pax_headers = {"GNU.sparse.size": "12"}
        tar.addfile(info)
    (tmp_path / "x.tar").write_bytes(buffer.getvalue().replace(b"size=12", b"size=x2"))
    with pytest.raises(DataError, match="x.tar: broken tar before sample 0"):
        list(iter_members(tmp_path / "x.tar"))


def test_a_member_twice_is_refused(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(tar_member("a.json", b'{"length": 0}') * 2 + bytes(1024))
    with pytest.raises(DataError, match="a.json appears twice"):
        list(iter_members(path))


def test_metadata_is_checked_and_bounded():
    assert parse_meta({"json": b'{"length": 10}'}, 10) == {"length": 10}
    with pytest.raises(DataError, match="metadata length 11 is outside 0..10"):
        parse_meta({"json": b'{"length": 11}'}, 10)
    with pytest.raises(DataError, match="metadata length -1 is not a byte count"):
        parse_meta({"json": b'{"length": -1}'})
    for members in ({}, {"json": b"[1]"}, {"json": b"{not json"}, {"json": b'{"size": 3}'}):
        with pytest.raises(DataError, match="no valid metadata"):
            parse_meta(members)


def test_metas_are_read_without_the_payloads(tmp_path):
    writer = ShardWriter(tmp_path / "x.tar")
    writer.add("a", "zstd", b"not zstd at all", 3, {"length": 3})
    writer.close()
    assert list(iter_metas(tmp_path / "x.tar")) == [("a", {"length": 3})]
    with pytest.raises(DataError, match="x.tar: a: corrupt zstd member"):
        list(iter_shard(tmp_path / "x.tar"))


def test_shard_check_against_the_manifest_entry(tmp_path):
    path = tmp_path / "x.tar"
    info = write_shard(path, DOCS)
    check_shard(path, info)
    data = bytearray(path.read_bytes())
    data[600] ^= 0xFF
    path.write_bytes(bytes(data))
    check_shard(path, info, sha256=False)  # the size still agrees
    with pytest.raises(DataError, match=r"x.tar: sha256 \w+… does not match the manifest"):
        check_shard(path, info)
    path.write_bytes(bytes(data[:1000]))
    with pytest.raises(DataError, match="x.tar: file is 1000 bytes, the manifest says"):
        check_shard(path, info, cached=True)
    path.unlink()
    with pytest.raises(DataError, match="x.tar: cannot read the shard"):
        check_shard(path, info)


def test_decompression_is_bounded():
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * 10_000_000)
    assert len(bomb) < 1000
    with pytest.raises(DataError, match="more than 1000 bytes"):
        decode_payload({"bin.zst": bomb}, 1000)
    streamed = io.BytesIO()  # a frame without a content size in its header
    with zstandard.ZstdCompressor().stream_writer(streamed, closefd=False) as w:
        w.write(b"\x00" * 100_000)
    with pytest.raises(DataError, match="more than 99999 bytes"):
        decode_payload({"bin.zst": streamed.getvalue()}, 99_999)
    assert len(decode_payload({"bin.zst": streamed.getvalue()}, 100_000)) == 100_000


def test_length_mismatch_and_corrupt_member_name_the_key(tmp_path):
    writer = ShardWriter(tmp_path / "x.tar")
    writer.add("short", "zstd", zstandard.ZstdCompressor().compress(b"abc"), 3, {"length": 5})
    writer.close()
    with pytest.raises(DataError, match="short: payload is 3 bytes, metadata says 5"):
        list(iter_shard(tmp_path / "x.tar"))
    writer = ShardWriter(tmp_path / "y.tar")
    writer.add("junk", "zstd", b"\x28\xb5\x2f\xfd\x00\x00garbage", 3, {"length": 3})
    writer.close()
    with pytest.raises(DataError, match="y.tar: junk: corrupt zstd"):
        list(iter_shard(tmp_path / "y.tar"))



def test_the_member_index_locates_every_sample_and_matches_the_headers(tmp_path):
    info = write_shard(tmp_path / "x-000000.tar", DOCS + [("big", bytes(3 << 20))])
    index = read_member_index(tmp_path / "x-000000.tar", info)
    assert index.shape == (6, 3) and index[:, 2].tolist() == [1000] * 5 + [3 << 20]
    assert np.array_equal(index, scan_index(tmp_path / "x-000000.tar"))
    with open(tmp_path / "x-000000.tar", "rb") as f:
        for (key, data), (offset, size, length) in zip(DOCS, index.tolist()):
            got_key, members = read_members_at(f, offset, size)
            assert got_key == key and decode_payload(members, length) == data
        with pytest.raises(DataError, match="not one sample's members"):
            read_members_at(f, int(index[0, 0]), int(index[0, 1] + index[1, 1]))
        with pytest.raises(DataError, match="broken tar at byte 512"):
            read_members_at(f, 512, 1024)  # not a header
        with pytest.raises(DataError, match="the shard ends"):
            read_members_at(f, int(index[5, 0]), int(index[5, 1]) + 100_000)


def test_a_member_index_that_does_not_match_its_manifest_entry_is_refused(tmp_path):
    path = tmp_path / "x-000000.tar"
    info = write_shard(path, DOCS)
    index_path = tmp_path / "x-000000.tar.idx"
    index_path.write_bytes(index_path.read_bytes()[:-24])  # one sample short
    with pytest.raises(DataError, match="x-000000.tar.idx: sha256 does not match the manifest"):
        read_member_index(path, info)
    index_path.unlink()
    with pytest.raises(DataError, match="cannot read the member index"):
        read_member_index(path, info)
