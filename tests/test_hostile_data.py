"""Hostile and unlucky datasets: names that would be paths, lying lengths, damage without a
manifest, and the one line every bad input gets (inspect, render, the loader)."""

import hashlib
import json
import logging
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from loader_datasets import write_shards
from pipeline.format.errors import DataError
from pipeline.format.files import file_sha256
from pipeline.format.member_index import scan_index
from pipeline.format.reader import iter_members
from pipeline.format.manifest import MAX_RATIO, Manifest, ShardInfo, load_manifest, member_index_name
from pipeline.format.shards import tar_member
from pipeline.load.loader import LoaderConfig, build_train_loader, build_validation_loader
from tools.cli import main


def cli(*args) -> int:
    return main([str(a) for a in args])


def one_error_line(capsys, command: str = "inspect") -> str:
    """stderr holds exactly one line, the error; returns it."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"megabyte {command}: error: "), lines
    return lines[0]


def hand_written(directory: Path, samples, modality: str = "text") -> Path:
    """A one-shard dataset written member by member, no rule checked: samples are (key, meta,
    payload), each payload stored raw as `<key>.bin`."""
    directory.mkdir(parents=True)
    shard = directory / "d-000000.tar"
    members = [tar_member(f"{key}.bin", payload) + tar_member(f"{key}.json", json.dumps(meta).encode())
               for key, meta, payload in samples]
    shard.write_bytes(b"".join(members) + bytes(1024))
    payload_bytes = sum(len(payload) for _, _, payload in samples)
    info = ShardInfo(shard.name, len(samples), payload_bytes, shard.stat().st_size, file_sha256(shard))
    Manifest("d", modality, {}, [info]).save(directory)
    return directory


def text_meta(payload: bytes, **changes) -> dict:
    return {"modality": "text", "source": "x", "length": len(payload), **changes}


def converted_text(tmp_path: Path, *flags) -> Path:
    (tmp_path / "src").mkdir()
    for i in range(6):
        (tmp_path / "src" / f"{i}.txt").write_bytes(b"document %d " % i * (i + 20))
    assert cli("convert", "text", tmp_path / "src", "--out", tmp_path / "ds", "--no-progress", *flags) == 0
    return tmp_path / "ds"


def loader_config(directory: Path, **changes) -> LoaderConfig:
    return LoaderConfig([str(directory)], **{"seq_len": 64, "patch_size": 8, "micro_batch_size": 2,
                                             "num_workers": 0, **changes})


# ---------------------------------------------------------------------------------------------
# names read from shards and manifests never become paths unchecked


@pytest.mark.parametrize("key", ["{tmp}/outside/evil", "sub/evil", "../evil"])
def test_a_key_that_is_a_path_writes_nothing_outside_out(tmp_path, capsys, key):
    pcm = bytes(64)
    meta = {"modality": "audio", "source": "x", "length": 64, "encoding": "pcm16", "sample_rate": 16000}
    dataset = hand_written(tmp_path / "ds", [(key.format(tmp=tmp_path), meta, pcm)], "audio")
    assert cli("inspect", "render", dataset, "--out", tmp_path / "clips") == 1
    assert "invalid sample key" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no clips/, outside/ or evil.wav


@pytest.mark.parametrize("key", ["sub/x", "..", "a\\b", "", "x" * 91, "caf\u00e9"])
def test_keys_breaking_the_format_are_damaged_data(tmp_path, capsys, key):
    payload = b"abc"
    dataset = hand_written(tmp_path / "ds", [("good", text_meta(payload), payload),
                                             (key, text_meta(payload), payload)])
    with pytest.raises(DataError, match="invalid sample key"):
        list(iter_members(dataset / "d-000000.tar"))
    for verb in ("verify", "stats", "show"):
        assert cli("inspect", verb, dataset, *(["--index", "1"] if verb == "show" else [])) == 1
        assert "invalid sample key" in capsys.readouterr().err


def test_merge_refuses_a_shard_name_that_leaves_the_part(tmp_path, capsys):
    parts = []
    for i in range(2):
        (tmp_path / f"src{i}").mkdir()
        (tmp_path / f"src{i}" / "a.txt").write_bytes(b"text")
        assert cli("convert", "text", tmp_path / f"src{i}", "--out", tmp_path / f"p{i}", "--part",
                   f"{i}/2", "--no-progress") == 0
        parts.append(tmp_path / f"p{i}")
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    index = json.loads((parts[0] / "index.json").read_text())
    index["shards"] = [dict(index["shards"][0], name="../secret")] if index["shards"] else [
        {"name": "../secret", "samples": 1, "payload_bytes": 9, "file_bytes": 9, "sha256": "0" * 64}]
    (parts[0] / "index.json").write_text(json.dumps(index))
    assert cli("convert", "merge", *parts, "--out", tmp_path / "merged") == 2
    assert "shard name '../secret' is not NAME-NNNNNN.tar" in one_error_line(capsys, "convert")
    merged = tmp_path / "merged"
    assert not merged.exists() or not any(merged.iterdir())


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "x..y", ""])
def test_convert_refuses_a_dataset_name_that_is_a_path(tmp_path, capsys, name):
    (tmp_path / "a.txt").write_bytes(b"text")
    assert cli("convert", "text", tmp_path / "a.txt", "--out", tmp_path / "ds", "--name", name,
               "--no-progress") == 2
    assert "invalid dataset name" in one_error_line(capsys, "convert")


# ---------------------------------------------------------------------------------------------
# lengths: bounded before anything is allocated


@pytest.mark.parametrize("meta, words", [
    ({"modality": "text"}, "no valid metadata (KeyError: 'length')"),
    ({"modality": "text", "length": "3"}, "metadata length '3' is not a byte count"),
    ({"modality": "text", "length": True}, "metadata length True is not a byte count"),
    ({"modality": "text", "length": 3.0}, "metadata length 3.0 is not a byte count"),
    ({"modality": "text", "length": 10**12}, "metadata length 1000000000000 is outside 0..3"),
])
def test_metadata_lengths_are_damaged_data_in_every_inspect_verb(tmp_path, capsys, meta, words):
    dataset = hand_written(tmp_path / "ds", [("k", meta, b"abc")])
    shard = dataset / "d-000000.tar"
    for path in (dataset, shard):
        for verb in ("verify", "show", "stats", "ls"):
            code = cli("inspect", verb, path)
            if verb == "ls" and (path == dataset or "1000000000000" in words):
                assert code == 0  # the manifest alone, or a shard's lengths as its metadata says
                continue
            assert code == 1
            err = capsys.readouterr().err
            if path == shard and "1000000000000" in words:  # no manifest: read, and found short
                words = "payload is 3 bytes, metadata says 1000000000000"
            assert f"k: {words}" in err and "Traceback" not in err


@pytest.mark.parametrize("bound", ["recorded", "v1", "forged"])
def test_a_huge_length_is_damaged_data_for_the_loader(tmp_path, caplog, bound):
    """The bound: the shard's longest sample as recorded (v2), its payload bytes (a v1 manifest),
    or none that helps (a manifest forged to allow as much as its shard's size lets it claim):
    the member index then disagrees, and nothing is allocated."""
    docs = [(b"doc %d " % i * 20, {}) for i in range(6)]
    docs[4] = (docs[4][0], {"length": 10**8})
    dataset = write_shards(tmp_path / "ds", "text", docs, per_shard=3)
    index = json.loads((dataset / "index.json").read_text())
    for shard in index["shards"]:
        if bound != "recorded":
            del shard["max_sample_bytes"]
        if bound == "forged":
            shard["payload_bytes"] = MAX_RATIO * shard["file_bytes"]
    (dataset / "index.json").write_text(json.dumps(index))
    words = "metadata length 100000000 is outside" if bound != "forged" else \
        "metadata length 100000000, the member index says 120"
    with pytest.raises(DataError, match=f"s000004: {words}"):
        iterator = iter(build_train_loader(loader_config(dataset)))
        [next(iterator) for _ in range(20)]
    with caplog.at_level(logging.WARNING, logger="megabyte.loader"):
        loader = build_train_loader(loader_config(dataset, on_error="skip"))
        iterator = iter(loader)
        [next(iterator) for _ in range(20)]
    assert loader.skipped() >= 1 and any("s000004" in r.getMessage() for r in caplog.records)


def test_the_converter_records_the_longest_sample_and_the_loader_holds_to_it(tmp_path):
    dataset = converted_text(tmp_path)
    manifest = load_manifest(dataset)
    longest = max(len(p.read_bytes()) for p in (tmp_path / "src").iterdir())
    assert manifest.version == 3 and [s.max_sample_bytes for s in manifest.shards] == [longest]
    # a member swapped for a 64 MiB one, the metadata, the manifest's size and sha256 and the
    # member index agreeing:
    # only the recorded bound stands in the way
    big = zstandard.ZstdCompressor().compress(bytes(64 << 20))
    key = "00000000-000000000"
    shard = dataset / manifest.shards[0].name
    members = [(info_name, data) for _, k, m in iter_members(shard) for info_name, data in
               ((f"{k}.bin.zst", m["bin.zst"]), (f"{k}.json", m["json"]))]
    members = [(name, big if name == f"{key}.bin.zst" else
                json.dumps(text_meta(bytes(64 << 20))).encode() if name == f"{key}.json" else data)
               for name, data in members]
    shard.write_bytes(b"".join(tar_member(name, data) for name, data in members) + bytes(1024))
    manifest.shards[0].file_bytes, manifest.shards[0].sha256 = shard.stat().st_size, file_sha256(shard)
    index = scan_index(shard).tobytes()  # the forged shard's own member index
    (dataset / member_index_name(shard.name)).write_bytes(index)
    manifest.shards[0].index_sha256 = hashlib.sha256(index).hexdigest()
    manifest.save(dataset)
    with pytest.raises(DataError, match=f"{shard.name}.idx: sample 0: length {64 << 20} is outside 0..{longest}"):
        next(iter(build_train_loader(loader_config(dataset))))


def test_a_v1_dataset_stays_readable(tmp_path, capsys):
    """Written before format v2: frames without checksum or content size (a streamed one too),
    a manifest without max_sample_bytes."""
    streamed = zstandard.ZstdCompressor().compressobj()
    docs = [(b"old document %d " % i * 9, {}) for i in range(4)]
    dataset = write_shards(tmp_path / "v1", "text", docs, per_shard=2,
                           stored={3: streamed.compress(docs[3][0]) + streamed.flush()})
    index = json.loads((dataset / "index.json").read_text())
    index["version"] = 1
    for shard in index["shards"]:
        del shard["max_sample_bytes"]
    (dataset / "index.json").write_text(json.dumps(index))
    assert cli("inspect", "verify", dataset) == 0
    validation = build_validation_loader(loader_config(dataset, validation=dataset, text_packing="document",
                                                       seq_len=256))
    rows = [bytes(x for x in row.tolist() if x < 256) for batch in validation for row in batch["ids"]]
    assert sorted(row for row in rows if row) == sorted(doc for doc, _ in docs)


def test_inspect_reads_a_long_member_in_pieces(tmp_path, capsys):
    payload = bytes(32 << 20)  # 32 MiB of zeros: a few KiB compressed
    shard_dir = write_shards(tmp_path / "ds", "text", [(payload, {})], per_shard=1)
    shard = next(shard_dir.glob("*.tar"))
    tracemalloc.start()
    try:
        assert cli("inspect", "verify", shard) == 0
        assert cli("inspect", "stats", shard) == 0
        assert cli("inspect", "show", shard, "--bytes", "4") == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # pieces of 1 MiB, never the 32 MiB sample
    assert f"first 4 of {32 << 20:} bytes" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# a shard verifies without its manifest


def test_verify_of_a_shard_alone_catches_a_flipped_byte(tmp_path, capsys):
    dataset = converted_text(tmp_path)
    shard = next(dataset.glob("*.tar"))
    data = bytearray(shard.read_bytes())
    data[530] ^= 0x01  # inside the first member's zstd frame (its header is the first 512 bytes)
    shard.write_bytes(bytes(data))
    assert cli("inspect", "verify", shard) == 1
    err = capsys.readouterr().err
    assert "00000000-000000000: " in err and "Traceback" not in err


def test_verify_says_what_it_cannot_check_without_the_manifest(tmp_path, capsys):
    plain = zstandard.ZstdCompressor()  # frames without a checksum, as format v1 wrote them
    old_style = write_shards(tmp_path / "v1", "text", [(b"abc", {}), (b"def", {})], per_shard=2,
                             stored={0: plain.compress(b"abc"), 1: plain.compress(b"def")})
    assert cli("inspect", "verify", next(old_style.glob("*.tar"))) == 0
    out = capsys.readouterr().out
    assert "ok: 2 samples verified" in out and "2 of them carry no checksum" in out
    assert cli("inspect", "verify", old_style) == 0  # with its manifest: the sha256 covers all
    assert "carry no checksum" not in capsys.readouterr().out
    dataset = converted_text(tmp_path)
    assert cli("inspect", "verify", next(dataset.glob("*.tar"))) == 0
    assert "carry no checksum" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# one line, not a traceback


def image_meta(payload: bytes, **changes) -> dict:
    return {"modality": "image", "source": "x", "length": len(payload), "height": 2, "width": 2,
            "channels": 3, **changes}


@pytest.mark.parametrize("changes, words", [
    ({"height": 3}, "(height 3, width 2)"),
    ({"width": "2"}, "(height 2, width '2')"),
    ({"height": -2, "width": -2}, "(height -2, width -2)"),
])
def test_render_of_lying_image_sizes(tmp_path, capsys, changes, words):
    pixels = bytes(range(12))
    dataset = hand_written(tmp_path / "ds", [("k", image_meta(pixels, **changes), pixels)], "image")
    assert cli("inspect", "render", dataset, "--out", tmp_path / "grid.png") == 1
    line = one_error_line(capsys)
    assert "k: 12 bytes are no RGB image of the size its metadata gives" in line and words in line
    assert not (tmp_path / "grid.png").exists()


def test_render_of_audio_without_a_sample_rate(tmp_path, capsys):
    pcm = bytes(64)
    meta = {"modality": "audio", "source": "x", "length": 64, "encoding": "pcm16"}
    dataset = hand_written(tmp_path / "ds", [("k", meta, pcm)], "audio")
    assert cli("inspect", "render", dataset, "--out", tmp_path / "clips") == 1
    assert "k: no audio encoding and sample rate in its metadata" in one_error_line(capsys)


def test_render_to_a_full_device(tmp_path, capsys):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    pixels = bytes(range(12))
    dataset = hand_written(tmp_path / "ds", [("k", image_meta(pixels), pixels)], "image")
    assert cli("inspect", "render", dataset, "--out", "/dev/full") == 2
    assert "/dev/full: cannot write (No space left on device)" in one_error_line(capsys)


def test_the_loaders_raise_message_is_one_line_from_a_worker(tmp_path):
    docs = [(b"doc %d " % i * 20, {}) for i in range(8)]
    dataset = write_shards(tmp_path / "ds", "text", docs, per_shard=2, stored={5: b"junk"})
    for make in (lambda: iter(build_train_loader(loader_config(dataset, num_workers=2))),
                 lambda: iter(build_validation_loader(loader_config(dataset, validation=dataset,
                                                                    num_workers=2)))):
        with pytest.raises(DataError) as caught:
            iterator = make()
            [next(iterator) for _ in range(40)]
        message = str(caught.value)
        assert "s000005: corrupt zstd member" in message and "\n" not in message
        assert "Traceback" not in message


# ---------------------------------------------------------------------------------------------
# friction


def test_stats_prints_image_bytes_as_numbers_and_text_bytes_as_characters(tmp_path, capsys):
    pixels = bytes([200] * 9 + [7] * 3)
    images = hand_written(tmp_path / "img", [("k", image_meta(pixels), pixels)], "image")
    assert cli("inspect", "stats", images) == 0
    rows = capsys.readouterr().out.split("most common bytes:")[1].split()
    assert rows[:4] == ["200", "75.0000%", "7", "25.0000%"]
    text = hand_written(tmp_path / "txt", [("k", text_meta(b"aab\n"), b"aab\n")])
    assert cli("inspect", "stats", text) == 0
    rows = capsys.readouterr().out.split("most common bytes:")[1].split()
    assert rows[::2] == ["'a'", "'b'", "0x0a"]


def test_render_says_what_it_rendered_and_names_wavs_uniquely(tmp_path, capsys):
    meta = {"modality": "audio", "source": "x", "length": 4, "encoding": "pcm16", "sample_rate": 8000}
    first = hand_written(tmp_path / "a", [("k", meta, bytes(4)), ("j", meta, bytes(4))], "audio")
    second = hand_written(tmp_path / "b", [("k", meta, b"\x01\x00\x02\x00")], "audio")
    assert cli("inspect", "render", first, second, "--out", tmp_path / "clips") == 0
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [
        "000000-k.wav", "000001-j.wav", "000002-k.wav"]
    assert "rendered 3 of 3 samples (the first 3; --count N" in capsys.readouterr().out
    assert cli("inspect", "render", first, second, "--out", tmp_path / "two", "--count", "2") == 0
    assert "rendered 2 of 3 samples" in capsys.readouterr().out
