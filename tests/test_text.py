"""Text conversion end to end: roundtrip, determinism, resume, parts, bad inputs, CLI errors."""

import gzip
import json
import lzma
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webdataset
import zstandard

from pipeline.format.reader import iter_samples
from pipeline.format.manifest import load_manifest
from tools.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def make_corpus(root: Path, docs: int = 40, seed: int = 0) -> dict[str, bytes]:
    """Plain files (some compressed, some invalid UTF-8) and JSONL; returns source → doc bytes
    keyed as '<path>' for plain files and '<path>:<line>' for JSONL lines."""
    import random

    rng = random.Random(seed)
    expected = {}
    (root / "books" / "sub").mkdir(parents=True)
    for i in range(docs):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        body = b"doc %d\x00\xff\xfe " % i + body  # byte 0 and invalid UTF-8 stay as they are
        folder = root / "books" / ("sub" if i % 3 else "")
        if i % 4 == 1:
            path = folder / f"book{i}.txt.gz"
            path.write_bytes(gzip.compress(body, mtime=0))
        elif i % 4 == 2:
            path = folder / f"book{i}.txt.zst"
            path.write_bytes(zstandard.ZstdCompressor().compress(body))
        elif i % 4 == 3:
            path = folder / f"book{i}.txt.xz"
            path.write_bytes(lzma.compress(body))
        else:
            path = folder / f"book{i}.txt"
            path.write_bytes(body)
        expected[str(path)] = body
    lines = []
    for j in range(docs):
        text = f"record {j} é ✓ " + "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(1, 400)))
        lines.append(json.dumps({"text": text, "id": j}))
        expected[f"{root / 'web.jsonl.gz'}:{j + 1}"] = text.encode("utf-8")
    (root / "web.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    return expected


def decoded(out: Path) -> dict[str, bytes]:
    result = {}
    for _, _, meta, payload in iter_samples([out]):
        source = meta["source"] + (f":{meta['line']}" if "line" in meta else "")
        result[source] = payload
    return result


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


@pytest.fixture
def corpus(tmp_path):
    return tmp_path / "corpus", make_corpus(tmp_path / "corpus")


def test_roundtrip_is_byte_exact(corpus, tmp_path):
    root, expected = corpus
    assert run_cli("convert", "text", root, "--out", tmp_path / "out", "--shard-size", "16K",
                   "--no-progress") == 0
    assert decoded(tmp_path / "out") == expected
    manifest = load_manifest(tmp_path / "out")
    assert len(manifest.shards) > 1
    assert manifest.totals["samples"] == len(expected)
    assert manifest.totals["payload_bytes"] == sum(map(len, expected.values()))


def test_uncompressed_members(corpus, tmp_path):
    root, expected = corpus
    run_cli("convert", "text", root, "--out", tmp_path / "out", "--compression", "none", "--no-progress")
    with open(next((tmp_path / "out").glob("*.tar")), "rb") as f:
        assert b".bin\x00" in f.read(1024)  # the first member is <key>.bin
    assert decoded(tmp_path / "out") == expected


def test_deterministic_whatever_the_workers(corpus, tmp_path):
    root, _ = corpus
    for out, workers in [("a", 1), ("b", 1), ("c", 2)]:
        run_cli("convert", "text", root, "--out", tmp_path / out, "--shard-size", "16K",
                "--workers", workers, "--no-progress")
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b") == shard_bytes(tmp_path / "c")
    shas = [[s.sha256 for s in load_manifest(tmp_path / o).shards] for o in "abc"]
    assert shas[0] == shas[1] == shas[2]


def test_stock_webdataset_reads_shards(corpus, tmp_path):
    root, expected = corpus
    run_cli("convert", "text", root, "--out", tmp_path / "out", "--no-progress")
    urls = [str(p) for p in sorted((tmp_path / "out").glob("*.tar"))]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False))
    assert len(samples) == len(expected)
    assert set(samples[0]) >= {"__key__", "bin.zst", "json"}
    meta = json.loads(samples[0]["json"])
    assert len(zstandard.ZstdDecompressor().decompress(samples[0]["bin.zst"])) == meta["length"]


def test_gnu_tar_lists_shards(corpus, tmp_path):
    root, _ = corpus
    run_cli("convert", "text", root, "--out", tmp_path / "out", "--no-progress")
    listing = subprocess.run(["tar", "tvf", str(next((tmp_path / "out").glob("*.tar")))],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert listing[0].split()[1] == "0/0" and "1970-01-01" in listing[0]


def test_kill_and_resume_gives_identical_shards(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(300):
        (root / f"doc{i:03d}.txt").write_bytes(os.urandom(20_000))  # incompressible: ~20 KB each
    args = [sys.executable, "-m", "tools.cli", "convert", "text", str(root), "--shard-size", "100K",
            "--level", "19", "--no-progress"]
    subprocess.run(args + ["--out", str(tmp_path / "whole")], check=True, cwd=REPO)

    killed = tmp_path / "killed"
    process = subprocess.Popen(args + ["--out", str(killed)], cwd=REPO)
    deadline = time.time() + 60
    while len(list(killed.glob("*.tar"))) < 3 and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(list(killed.glob("*.tar")))
    assert not (killed / "index.json").exists(), "the kill came too late to test a resume"
    assert partial >= 3

    subprocess.run(args + ["--out", str(killed)], check=True, cwd=REPO)
    assert shard_bytes(killed) == shard_bytes(tmp_path / "whole")
    assert load_manifest(killed).to_dict() == load_manifest(tmp_path / "whole").to_dict()
    assert not list(killed.glob(".*"))  # no journal, temporary shard or spill file left


def test_parts_merge_to_the_single_run(corpus, tmp_path):
    root, expected = corpus
    for i in range(3):
        assert run_cli("convert", "text", root, "--out", tmp_path / f"part{i}", "--part", f"{i}/3",
                       "--shard-size", "8K", "--no-progress") == 0
    parts = [decoded(tmp_path / f"part{i}") for i in range(3)]
    assert sum(map(len, parts)) == len(expected)  # disjoint and complete
    assert run_cli("convert", "merge", *[tmp_path / f"part{i}" for i in range(3)],
                   "--out", tmp_path / "merged") == 0
    merged_keys = {key for _, key, _, _ in iter_samples([tmp_path / "merged"])}
    run_cli("convert", "text", root, "--out", tmp_path / "single", "--no-progress")
    single_keys = {key for _, key, _, _ in iter_samples([tmp_path / "single"])}
    assert merged_keys == single_keys
    assert decoded(tmp_path / "merged") == expected
    assert run_cli("inspect", "verify", tmp_path / "merged") == 0


def test_merge_refuses_incomplete_parts(corpus, tmp_path, capsys):
    root, _ = corpus
    run_cli("convert", "text", root, "--out", tmp_path / "p0", "--part", "0/2", "--no-progress")
    assert run_cli("convert", "merge", tmp_path / "p0", "--out", tmp_path / "m") == 2
    assert "not the complete set" in capsys.readouterr().err
    assert not (tmp_path / "m" / "index.json").exists()


def bad_inputs(root: Path) -> dict[str, str]:
    """Write one of each bad input; return file name → expected words in the skip reason."""
    root.mkdir()
    (root / "good.txt").write_bytes(b"fine")
    (root / "empty.txt").write_bytes(b"")
    (root / "broken.txt.gz").write_bytes(gzip.compress(b"x" * 10000)[:30])
    (root / "broken.txt.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    (root / "broken.txt.xz").write_bytes(lzma.compress(b"y" * 1000)[:-20])
    unreadable = root / "secret.txt"
    unreadable.write_bytes(b"no")
    unreadable.chmod(0)
    (root / "lines.jsonl").write_bytes(b'{"text": "ok"}\nnot json\n{"body": "x"}\n{"text": 5}\n\n')
    return {"empty.txt": "empty file", "broken.txt.gz": "broken", "broken.txt.zst": "broken",
            "broken.txt.xz": "broken", "lines.jsonl:2": "not valid JSON",
            "lines.jsonl:3": "no field 'text'", "lines.jsonl:4": "not a string"}


def test_bad_inputs_are_skipped_and_listed(tmp_path, capsys):
    expected = bad_inputs(tmp_path / "in")
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        expected["secret.txt"] = "unreadable"
    assert run_cli("convert", "text", tmp_path / "in", "--out", tmp_path / "out", "--no-progress") == 0
    skipped = {Path(s["source"]).name: s["reason"] for s in load_manifest(tmp_path / "out").skipped}
    assert set(skipped) == set(expected)
    for name, words in expected.items():
        assert words in skipped[name], (name, skipped[name])
    err = capsys.readouterr().err
    assert err.count("warning: skipped") == len(expected)
    docs = {meta["source"].split("/")[-1] + str(meta.get("line", "")): payload
            for _, _, meta, payload in iter_samples([tmp_path / "out"])}
    assert docs["lines.jsonl1"] == b"ok" and docs["good.txt"] == b"fine"


def test_strict_stops_at_the_first_bad_input(tmp_path, capsys):
    bad_inputs(tmp_path / "in")
    assert run_cli("convert", "text", tmp_path / "in", "--out", tmp_path / "out", "--strict",
                   "--no-progress") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("megabyte convert: error:") and "(--strict)" in err[-1]
    assert not (tmp_path / "out" / "index.json").exists()


def test_missing_source_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    assert run_cli("convert", "text", tmp_path / "nope", "--out", tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == f"megabyte convert: error: {tmp_path / 'nope'}: no such file or directory"
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "a.txt").write_bytes(b"text")
    (tmp_path / "file").write_bytes(b"not a directory")
    assert run_cli("convert", "text", tmp_path / "a.txt", "--out", tmp_path / "file" / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create the output directory" in err[0]


def test_rerun_of_a_finished_conversion_changes_nothing(corpus, tmp_path, capsys):
    root, _ = corpus
    run_cli("convert", "text", root, "--out", tmp_path / "out", "--no-progress")
    before = shard_bytes(tmp_path / "out")
    assert run_cli("convert", "text", root, "--out", tmp_path / "out", "--no-progress") == 0
    assert shard_bytes(tmp_path / "out") == before
    assert run_cli("convert", "text", root, "--out", tmp_path / "out", "--level", "5") == 2
    assert "other arguments" in capsys.readouterr().err


def test_large_document_spills_and_roundtrips(tmp_path, monkeypatch):
    import pipeline.convert.samples

    monkeypatch.setattr(pipeline.convert.samples, "SPILL_BYTES", 1000)
    body = os.urandom(50_000)
    (tmp_path / "big.txt").write_bytes(body)
    run_cli("convert", "text", tmp_path / "big.txt", "--out", tmp_path / "out", "--no-progress")
    assert decoded(tmp_path / "out") == {str(tmp_path / "big.txt"): body}
    assert not list((tmp_path / "out").glob(".spill-*"))


def test_jsonl_filling_a_task_exactly_is_not_an_empty_file(tmp_path, monkeypatch):
    import pipeline.convert.text

    monkeypatch.setattr(pipeline.convert.text, "DOCS_PER_TASK_BYTES", 10)
    (tmp_path / "a.jsonl").write_text('{"text": "0123456789"}\n{"text": "abcdefghij"}\n')
    run_cli("convert", "text", tmp_path / "a.jsonl", "--out", tmp_path / "out", "--no-progress")
    manifest = load_manifest(tmp_path / "out")
    assert manifest.skipped == [] and manifest.totals["samples"] == 2
