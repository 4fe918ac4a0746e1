"""`megabyte inspect`: ls, stats, verify (catches damage), show."""

import hashlib
import json

import numpy as np
import pytest

from tools.cli import main


@pytest.fixture
def dataset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"{i:02d}.txt").write_bytes(b"abc\n" * (i + 1) + bytes([i]))
    out = tmp_path / "ds"
    assert main(["convert", "text", str(src), "--out", str(out), "--shard-size", "2K",
                 "--no-progress"]) == 0
    return out


def test_ls_and_stats(dataset, capsys):
    assert main(["inspect", "ls", str(dataset)]) == 0
    lines = capsys.readouterr().out.splitlines()
    shards = sorted(dataset.glob("*.tar"))
    assert len(lines) == len(shards) + 2 and lines[-1].split()[3] == "30"
    assert main(["inspect", "ls", str(shards[0])]) == 0  # a bare shard, no manifest
    assert main(["inspect", "stats", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "samples        30" in out
    payload = sum(4 * (i + 1) + 1 for i in range(30))
    assert f"payload bytes  {payload:,}" in out
    assert "min 5" in out and "max 121" in out
    entropy = float(out.split("byte entropy")[1].split()[0])
    assert 1.9 < entropy < 2.3  # four roughly equally common bytes plus 30 rare ones


def test_verify_passes_then_catches_flipped_byte_and_truncation(dataset, capsys):
    assert main(["inspect", "verify", str(dataset)]) == 0
    shard = sorted(dataset.glob("*.tar"))[1]
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # inside the first member's payload
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["inspect", "verify", str(dataset)]) == 1
    err = capsys.readouterr().err
    assert f"{shard}: sha256 " in err and "does not match the manifest" in err
    assert err.strip().splitlines()[-1].startswith("megabyte inspect: error: ")

    last = sorted(dataset.glob("*.tar"))[-1]
    last.write_bytes(last.read_bytes()[:700])
    assert main(["inspect", "verify", str(dataset)]) == 1
    err = capsys.readouterr().err
    assert f"{last}: file is 700 bytes, the manifest says" in err
    assert str(last) in err.split("sha256")[-1] or "broken tar" in err or "incomplete" in err


def test_verify_names_the_key_of_a_bad_member(tmp_path, capsys):
    src = tmp_path / "a.txt"
    src.write_bytes(b"z" * 5000)
    main(["convert", "text", str(src), "--out", str(tmp_path / "ds"), "--compression", "none",
          "--no-progress"])
    shard = next((tmp_path / "ds").glob("*.tar"))
    data = shard.read_bytes().replace(b'"length": 5000', b'"length": 5001')
    shard.write_bytes(data)
    assert main(["inspect", "verify", str(shard)]) == 1
    assert "00000000-000000000: payload is 5000 bytes, metadata says 5001" in capsys.readouterr().err


def test_show_by_index_and_key(dataset, capsys):
    assert main(["inspect", "show", str(dataset), "--index", "2", "--bytes", "8"]) == 0
    out = capsys.readouterr().out
    assert "key    00000002-000000000" in out and "first 8 of 13 bytes" in out
    meta = json.loads(out.split("meta   ")[1].splitlines()[0])
    assert meta["length"] == 13 and meta["modality"] == "text"
    assert main(["inspect", "show", str(dataset), "--key", "00000029-000000000", "--hex"]) == 0
    assert "61 62 63 0a" in capsys.readouterr().out
    assert main(["inspect", "show", str(dataset), "--key", "nope"]) == 2


def test_verify_checks_the_member_indexes(dataset, capsys):
    manifest = json.loads((dataset / "index.json").read_text())
    entry = manifest["shards"][0]
    index_path = dataset / (entry["name"] + ".idx")
    rows = np.frombuffer(index_path.read_bytes(), dtype="<i8").copy()
    rows[2] -= 1  # the first sample's length, still within the shard's longest
    index_path.write_bytes(rows.tobytes())
    assert main(["inspect", "verify", str(dataset)]) == 1
    assert "member index is corrupt or was replaced" in capsys.readouterr().err
    entry["index_sha256"] = hashlib.sha256(index_path.read_bytes()).hexdigest()  # a forged entry
    (dataset / "index.json").write_text(json.dumps(manifest))
    assert main(["inspect", "verify", str(dataset)]) == 1
    assert "its member index does not match its members" in capsys.readouterr().err


def test_compressed_bits_per_byte_are_each_compressors_own_figure(dataset):
    import bz2
    import gzip
    import lzma

    from pipeline.format.stats import compressed_bits_per_byte, dataset_chunks

    rng = np.random.default_rng(0)
    repetitive = b"def f(x):\n    return x + 1\n" * 2000
    noise = rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    for data in (repetitive, noise):
        chunks = [data[i:i + 7000] for i in range(0, len(data), 7000)]  # fed in pieces
        bpb = compressed_bits_per_byte(iter(chunks))
        assert bpb == {"gzip -9": 8 * len(gzip.compress(data, 9)) / len(data),
                       "bzip2 -9": 8 * len(bz2.compress(data, 9)) / len(data),
                       "xz -9": 8 * len(lzma.compress(data, preset=9)) / len(data)}
        assert all(v < 0.2 for v in bpb.values()) if data is repetitive else all(v > 7.9 for v in bpb.values())
    # the dataset's bytes: every document's, in order, nothing between them
    payloads = [b"abc\n" * (i + 1) + bytes([i]) for i in range(30)]
    assert b"".join(dataset_chunks([dataset])) == b"".join(payloads)
