"""Member indexes and manifests that lie consistently: a `.idx` whose sha256 in index.json was
rewritten to match it, a manifest whose counts no shard of its size can hold. Each is refused
before anything is allocated or sought, in one line naming the file and the sample: by the
loader, `inspect verify`, `convert merge`; the manifest's counts by every reader (inspect, the
loaders, eval)."""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import error_line
from loader_datasets import text_docs, write_shards
from pipeline.format.errors import DataError, report_errors
from pipeline.load.loader import LoaderConfig, build_train_loader, build_validation_loader
from tools.cli import main

SHARD = "ds-000000.tar"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A text dataset of two shards of 6 samples each."""
    return write_shards(tmp_path_factory.mktemp("index") / "ds", "text",
                        [(doc, {}) for doc in text_docs(12, seed=3, low=50, high=300)], per_shard=6)


def forged(pristine: Path, root: Path, rows=None, data=None, **entry) -> Path:
    """A copy of the dataset whose first shard's member index holds `rows` (or the bytes `data`),
    its manifest entry changed by `entry` and its index_sha256 rewritten to match."""
    directory = root / "ds"
    shutil.copytree(pristine, directory)
    index_path = directory / f"{SHARD}.idx"
    if data is None:
        index = np.frombuffer(index_path.read_bytes(), dtype="<i8").reshape(-1, 3).copy()
        rows(index)
        data = index.tobytes()
    elif callable(data):
        data = data(index_path.read_bytes())
    index_path.write_bytes(data)
    manifest = json.loads((directory / "index.json").read_text())
    manifest["shards"][0].update(index_sha256=hashlib.sha256(data).hexdigest(), **entry)
    (directory / "index.json").write_text(json.dumps(manifest))
    return directory


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def loader_batches(directory: Path) -> int:
    """What the trainer does with a dataset before its first step: build the loader, take a batch."""
    config = LoaderConfig([str(directory)], seq_len=64, patch_size=8, micro_batch_size=2, num_workers=0)
    next(iter(build_train_loader(config)))
    return 0


def set_row(row: int, column: int, value: int):
    def edit(index):
        index[row, column] = np.array(value % 2**64, dtype=np.uint64).astype(np.int64)  # 2^64-512: -512
    return edit


# what the index says → the words of the one line
LIES = {
    "offset -1": (dict(rows=set_row(1, 0, -1)), "sample 1: its members start at byte -1, not at"),
    "offset 2^64-512": (dict(rows=set_row(2, 0, 2**64 - 512)), "sample 2: its members start at byte -512"),
    "offset past the end": (dict(rows=set_row(5, 0, 2**40)), "sample 5: its members start at byte 1099511627776"),
    "member bytes 2^60": (dict(rows=set_row(1, 1, 2**60)),
                          "sample 1: 1152921504606846976 member bytes at byte 2048 are not whole samples"),
    "member bytes 0": (dict(rows=set_row(0, 1, 0)), "sample 0: 0 member bytes at byte 0"),
    "length 2^60": (dict(rows=set_row(3, 2, 2**60)), "sample 3: length 1152921504606846976 is outside 0.."),
    "length -1": (dict(rows=set_row(4, 2, -1)), "sample 4: length -1 is outside 0.."),
    # the manifest allows it (as much as its shard's size lets it claim), the member bytes do not
    "length 2^27 with its bound": (dict(rows=set_row(0, 2, 2**27), max_sample_bytes=2**27, payload_bytes=2**27),
                                   "sample 0: length 134217728 is outside 0..67141631"),
    "truncated": (dict(data=lambda data: data[:-5]), "indexes 5 samples and a part row, the manifest says 6"),
    "a row short": (dict(data=lambda data: data[:-24]), "indexes 5 samples, the manifest says 6"),
    "empty": (dict(data=b""), "indexes 0 samples, the manifest says 6"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_member_index_is_one_line_naming_shard_and_sample(pristine, tmp_path, capsys, lie):
    changes, words = LIES[lie]
    directory = forged(pristine, tmp_path, **changes)
    before = files(directory)
    assert report_errors("train", loader_batches, directory) == 1
    line = error_line(capsys)
    assert line.startswith(f"megabyte train: error: {directory / SHARD}.idx: {words}"), line
    assert main(["inspect", "verify", str(directory)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{SHARD}.idx: {words}" in err.splitlines()[0], err
    assert files(directory) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_rows_must_follow_each_other_as_the_writer_wrote_them(pristine, tmp_path):
    """Two rows naming the same sample: each inside the shard, but not where the writer put it."""
    def twice(index):
        index[1] = index[0]
    directory = forged(pristine, tmp_path, rows=twice)
    with pytest.raises(DataError, match=r"sample 1: its members start at byte 0, not at 2048 where"):
        loader_batches(directory)


@pytest.mark.parametrize("entry, words", [
    ({"samples": 10**12}, "1000000000000 samples cannot fit in"),
    ({"payload_bytes": 10**13}, "10000000000000 payload bytes cannot come from"),
    ({"max_sample_bytes": 10**9}, "its longest sample (1000000000 bytes) is longer than all its samples"),
    ({"file_bytes": 2**63}, "samples and byte counts must be integers in 0..2^60"),
])
def test_manifest_counts_beyond_the_shards_size_are_refused_by_every_reader(pristine, tmp_path, capsys,
                                                                            entry, words):
    directory = forged(pristine, tmp_path, rows=lambda index: None, **entry)
    for verb in ("verify", "stats", "show", "ls"):
        assert main(["inspect", verb, str(directory)]) == 2
        line = error_line(capsys)
        assert f"{directory}/index.json: not a valid manifest (shard {SHARD}: {words}" in line, line
    assert report_errors("train", loader_batches, directory) == 2
    assert words in error_line(capsys)


@pytest.mark.parametrize("entry", [{"samples": 8}, {"samples": 10**12, "file_bytes": 10**16}])
def test_a_count_that_fits_the_claimed_size_is_found_by_the_index(pristine, tmp_path, capsys, entry):
    """The index is read no further than its file goes, whatever the manifest claims; `inspect
    verify` finds the shard's size wrong first."""
    directory = forged(pristine, tmp_path, rows=lambda index: None, **entry)
    assert report_errors("train", loader_batches, directory) == 1
    assert f"{SHARD}.idx: indexes 6 samples, the manifest says {entry['samples']}" in error_line(capsys)
    assert main(["inspect", "verify", str(directory)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and SHARD in err.splitlines()[0]


def test_merge_refuses_a_lying_member_index_before_writing_anything(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    for i in range(8):
        (source / f"{i}.txt").write_bytes(b"part document %d " % i * 40)
    parts = []
    for i in range(2):
        parts.append(tmp_path / f"p{i}")
        assert main(["convert", "text", str(source), "--out", str(parts[-1]), "--part", f"{i}/2",
                     "--no-progress"]) == 0
    manifest = json.loads((parts[1] / "index.json").read_text())
    index_path = parts[1] / (manifest["shards"][0]["name"] + ".idx")
    index = np.frombuffer(index_path.read_bytes(), dtype="<i8").reshape(-1, 3).copy()
    index[0, 0] = -1
    index_path.write_bytes(index.tobytes())
    manifest["shards"][0]["index_sha256"] = hashlib.sha256(index.tobytes()).hexdigest()
    (parts[1] / "index.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["convert", "merge", *map(str, parts), "--out", str(tmp_path / "merged")]) == 1
    assert f"{index_path}: sample 0: its members start at byte -1" in error_line(capsys)
    assert not (tmp_path / "merged").exists()


def test_validation_counts_no_payload_the_samples_do_not_hold(pristine, tmp_path):
    """A payload_bytes a thousand times the real one (its shard's size allows it): the validation
    pass would count a thousand times the sequences, all PAD; skip leaves the shard out, raise
    stops at the first sequence missing."""
    manifest = json.loads((pristine / "index.json").read_text())
    real = manifest["shards"][0]["payload_bytes"]
    directory = forged(pristine, tmp_path, rows=lambda index: None, payload_bytes=1000 * real)
    config = LoaderConfig(validation=str(directory), seq_len=64, patch_size=8, micro_batch_size=2,
                          num_workers=0, on_error="skip")
    honest = len(build_validation_loader(dataclasses.replace(config, validation=str(pristine))))
    loader = build_validation_loader(config)
    assert len(loader) < honest and len(list(loader)) == len(loader)
    with pytest.raises(DataError, match="ran out after .* the shards hold less than the manifest says"):
        list(build_validation_loader(dataclasses.replace(config, on_error="raise")))


def test_eval_of_a_dataset_whose_manifest_lies_is_one_line(pristine, tmp_path, capsys):
    import torch

    from model import PRESETS, build_model
    from model.weights import save_weights

    config = dataclasses.replace(PRESETS["tiny"], seq_len=64, global_dim=32, global_heads=2, local_dim=16,
                                 local_heads=2, global_layers=1, local_layers=1)
    torch.manual_seed(0)
    save_weights(build_model(config), tmp_path / "model.safetensors", {"modality": "text"})
    directory = forged(pristine, tmp_path, rows=lambda index: None, samples=10**12)
    assert main(["eval", str(tmp_path / "model.safetensors"), "--data", str(directory), "--device", "cpu",
                 "--no-progress"]) == 2
    assert f"{directory}/index.json: not a valid manifest (shard {SHARD}: 1000000000000 samples" in error_line(capsys)


@pytest.mark.parametrize("change, said", [
    (lambda m: m["shards"].__setitem__(0, 5), "a shard entry is a int, not a JSON object"),
    (lambda m: m.__setitem__("shards", {"a": 1}), "shards is a dict, not a list"),
    (lambda m: m["shards"][0].__setitem__("owner", "x"), "a shard entry has unknown keys ['owner']"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_it(pristine, tmp_path, capsys, change, said):
    directory = tmp_path / "ds"
    shutil.copytree(pristine, directory)
    manifest = json.loads((directory / "index.json").read_text())
    change(manifest)
    (directory / "index.json").write_text(json.dumps(manifest))
    assert main(["inspect", "ls", str(directory)]) == 2
    line = error_line(capsys)
    assert f"{directory / 'index.json'}: not a valid manifest ({said})" in line, line
