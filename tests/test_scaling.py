"""bench/scaling.py: the patch size it gives each length, the runs it skips from the last one's
figures (without running them), and a whole tiny sweep in fresh processes (slow)."""

import argparse
import json

import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("scaling")


def test_the_patch_grows_with_the_length_as_the_papers_presets(bench):
    assert [bench.patch_size(T) for T in (1024, 8192, 2**16, 2**18, 2**20, 1_228_800)] == [8, 8, 8, 32, 256, 192]
    with pytest.raises(ValueError, match="no patch size"):
        bench.patch_size(1000 * 8193)


def test_a_length_predicted_over_the_limit_is_skipped_with_every_longer_one(bench, monkeypatch):
    """A Transformer step took 2 s at T = 1024: 4096 is predicted at ≥ 32 s (the square of the
    growth), over a limit of 30 s, so it and 16384 are skipped, not run; a failed run stops the
    sweep too."""
    ran = []

    def fake_spawn(job, limit):
        ran.append(job["T"])
        return dict(seconds=2.0, memory_mb=10.0, patch_size=8)

    monkeypatch.setattr(bench, "spawn", fake_spawn)
    args = argparse.Namespace(lengths=[1024, 4096, 16384], limit=30.0, memory_fraction=0.8, latents=1024)
    rows = bench.sweep(args, "transformer", "train", False)
    assert ran == [1024]
    assert "predicted ≥ 32 s from T=1,024" in rows[1]["skipped"] and "skipped" in rows[2]
    monkeypatch.setattr(bench, "spawn", lambda job, limit: ran.append(job["T"]) or dict(skipped="failed: OOM"))
    rows = bench.sweep(argparse.Namespace(lengths=[1024, 4096], limit=1e9, memory_fraction=0.8, latents=1024),
                       "megabyte", "train", True)
    assert ran == [1024, 1024] and rows[0]["skipped"] == "failed: OOM"
    assert rows[1]["skipped"] == "not run: T=1,024 failed: OOM"


def test_megabyte_is_predicted_by_its_patches_not_the_square_of_its_bytes(bench):
    """From T = 65,536 (P = 8: 8,192 patches) to 2^18 (P = 32: 8,192 patches) MegaByte's attention
    does not grow: 4× the bytes, 4× the time; so does PerceiverAR's, whose latents attend to every
    byte; the Transformer's is 16×. Memory grows with T."""
    last = dict(T=2**16, seconds=10.0, memory_mb=100.0)
    assert bench.predicted(last, "megabyte", 2**18, 1024) == (40.0, 400.0)
    assert bench.predicted(last, "perceiver_ar", 2**18, 1024) == (40.0, 400.0)
    assert bench.predicted(last, "transformer", 2**18, 1024) == (160.0, 400.0)
    assert bench.predicted(dict(last, T=2**14), "megabyte", 2**16, 1024) == (160.0, 400.0)  # P = 8 both
    assert bench.predicted(dict(last, T=512), "perceiver_ar", 1024, 1024) == (40.0, 200.0)  # 512 → 1024 latents


def test_memory_past_the_machine_is_skipped(bench, monkeypatch):
    def fake_spawn(job, limit):  # 1000 MB a 1024 bytes
        return dict(seconds=0.1, memory_mb=job["T"] / 1024 * 1000, patch_size=8)

    monkeypatch.setattr(bench, "spawn", fake_spawn)
    monkeypatch.setattr(bench, "total_memory_mb", lambda: 3000.0)
    args = argparse.Namespace(lengths=[1024, 2048, 4096], limit=1e9, memory_fraction=0.8, latents=1024)
    rows = bench.sweep(args, "megabyte", "train", True)
    assert "skipped" not in rows[1] and "over the machine's memory" in rows[2]["skipped"]


def test_a_sweep_run_again_in_part_replaces_its_rows_and_tabulates(bench, tmp_path):
    first = [dict(arch="megabyte", kind="generate", checkpointing=False, T=1024, prefill_seconds=0.5, bytes_per_s=9.0),
             dict(arch="megabyte", kind="train", checkpointing=True, T=1024, seconds=0.5, memory_mb=2.0),
             dict(arch="transformer", kind="train", checkpointing=False, T=1024, skipped="over the limit"),
             dict(arch="megabyte", kind="generate", checkpointing=False, T=512, skipped="failed: exit -9")]
    again = [dict(first[0], bytes_per_s=500.0)]
    for name, rows in (("first.json", first), ("again.json", again)):
        (tmp_path / name).write_text(json.dumps(dict(machine="m", rows=rows)))
    rows = bench.merged([str(tmp_path / "first.json"), str(tmp_path / "again.json")])
    assert len(rows) == 4 and [(r["arch"], r["kind"], r["T"]) for r in rows] == [
        ("megabyte", "generate", 512), ("megabyte", "generate", 1024), ("megabyte", "train", 1024),
        ("transformer", "train", 1024)]  # by architecture, kind, checkpointing, T
    assert rows[1]["bytes_per_s"] == 500.0
    lines = bench.table(rows).splitlines()
    assert lines[2:] == ["| megabyte | 512 | 8 |  |  | failed |",
                         "| megabyte | 1,024 | 8 |  | 488 µs, 2.0 KB | 0.50 s, 500 B/s |",
                         "| transformer | 1,024 | 1 | — |  |  |"]


@pytest.mark.slow
def test_a_tiny_sweep_measures_every_architecture_and_plots(bench, tmp_path, monkeypatch):
    out, picture = tmp_path / "scaling.json", tmp_path / "scaling.png"
    monkeypatch.setattr("sys.argv", ["scaling.py", "--lengths", "256", "512", "--global-dim", "64",
                                     "--global-heads", "2", "--local-dim", "32", "--new-bytes", "16",
                                     "--latents", "64", "--json", str(out), "--plot", str(picture)])
    bench.main()
    rows = json.loads(out.read_text())["rows"]
    kinds = {(r["arch"], r["kind"], r["checkpointing"]) for r in rows}
    assert len(kinds) == 3 * 3 and len(rows) == 2 * 9  # train without and with checkpointing, generate
    for row in rows:
        assert "skipped" not in row, row
        assert row["seconds"] > 0 and row["params"] > 0
    assert all(r["bytes_per_s"] > 0 and r["new_bytes"] == 16 for r in rows if r["kind"] == "generate")
    assert picture.stat().st_size > 0
