"""Fuzzing real shards: byte flips, truncations, member renames, metadata and manifest edits.

Datasets come from the real converters and real bytes: the standard library's own small .py
files (text), pictures made with Pillow (image), short WAV files (audio). Each case damages a
fresh copy of one dataset, then reads it every way there is: inspect verify/show/stats on the
dataset and on each shard file alone, the reader sample by sample, and the train and validation
loaders with on_error "raise" and "skip". What must hold:

- nothing but the project's DataError/UsageError comes out, as one line (the loaders may also
  refuse to be built with a ValueError, as for a dataset too small for their streams: the trainer
  and eval report those as one line too);
- no silent acceptance: every byte stream read back is one of the original samples' (by key,
  for the reader), or the sample is reported damaged;
- no hang (each case within 10 s) and nothing written.

A damaged shard is tried twice, with its manifest entry left as it was (the sha256 check catches
it) and with the entry made to agree (size, sha256), as if the damage came before the manifest
was written: then the format's own checks must catch it. The consistent liar goes further: a
shard, its member index and the manifest damaged together (bit flips, truncation, length fields
set to 0, -1, 2^31 or 2^63, JSON values of another type), every size and sha256 in the manifest
rewritten to agree. Seeded: the same cases every run (FUZZ_SEED=n in the environment runs
another set).
"""

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from pipeline.format.errors import DataError, UsageError, report_errors
from pipeline.format.files import file_sha256
from pipeline.format.reader import iter_members, iter_sample_members, read_sample
from pipeline.format.manifest import load_manifest
from pipeline.format.shards import tar_member
from pipeline.format.vocab import BOUNDARY_ID, PAD_ID
from pipeline.load.loader import LoaderConfig, build_train_loader, build_validation_loader
from tools.cli import build_parser, main

from helpers import deadline, snapshot

SEED = int(os.environ.get("FUZZ_SEED", 20240511))
CASES = 300
SEQ_LEN = 4096  # every sample fits one sequence: each row of a batch is one whole sample


# ---------------------------------------------------------------------------------------------
# real datasets


def stdlib_sources(count: int) -> list[Path]:
    """Small .py files of the running Python's standard library, in a fixed order."""
    library = Path(json.__file__).resolve().parents[1]
    return [p for p in sorted(library.glob("*.py")) if 300 < p.stat().st_size < SEQ_LEN - 1][:count]


def make_inputs(root: Path) -> dict[str, list[str]]:
    """Raw inputs for each modality; returns the convert arguments for each."""
    rng = np.random.default_rng(SEED)
    (root / "text").mkdir(parents=True)
    for source in stdlib_sources(12):
        shutil.copyfile(source, root / "text" / source.name)
    (root / "image" / "cls").mkdir(parents=True)
    for i in range(6):
        pixels = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(root / "image" / "cls" / f"{i}.png")
    (root / "audio").mkdir()
    for i in range(4):
        soundfile.write(root / "audio" / f"{i}.wav", rng.uniform(-0.5, 0.5, 800 + 100 * i), 16000)
    return {"text": ["text", str(root / "text"), "--shard-size", "6K"],
            "image": ["image", str(root / "image"), "--size", "8", "--shard-size", "3K"],
            "audio": ["audio", str(root / "audio"), "--shard-size", "5K"]}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """modality → (pristine dataset directory, {key: original byte stream}, {shard name: [(key,
    byte stream)]})."""
    root = tmp_path_factory.mktemp("fuzz")
    found = {}
    for modality, arguments in make_inputs(root / "in").items():
        out = root / modality
        assert main(["convert", *arguments, "--out", str(out), "--no-progress"]) == 0
        originals = {}
        for shard, bound, key, members in iter_sample_members([out]):
            originals[key] = read_sample(shard, key, members, bound)[1]
        shards = {info.name: read_shard(out / info.name) for info in load_manifest(out).shards}
        assert len(shards) >= 2 and len(originals) >= 4
        found[modality] = (out, originals, shards)
    return found


# ---------------------------------------------------------------------------------------------
# damage


def tar_headers(data: bytes) -> list[int]:
    """Offsets of the member headers of a tar held in memory."""
    offsets = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar:
            offsets.append(info.offset)
    return offsets


def rename_member(data: bytearray, rng: random.Random) -> None:
    """Change one character of one member's name, the header checksum made to agree."""
    offset = rng.choice(tar_headers(bytes(data)))
    name_length = data[offset:offset + 100].index(0)
    data[offset + rng.randrange(name_length)] = ord(rng.choice("az09_-./\\"))
    data[offset + 148:offset + 156] = b" " * 8
    data[offset + 148:offset + 156] = b"%06o\0 " % sum(data[offset:offset + 512])


def edit_meta(data: bytes, rng: random.Random) -> bytes:
    """The shard rebuilt with one sample's metadata length changed."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(info.name, tar.extractfile(info).read()) for info in tar]
    index = rng.choice([i for i, (name, _) in enumerate(members) if name.endswith(".json")])
    meta = json.loads(members[index][1])
    choice = rng.choice(["+1", "-1", "0", "huge", "string", "bool", "float", "missing", "negative"])
    values = {"+1": meta["length"] + 1, "-1": meta["length"] - 1, "0": 0, "huge": 10**12,
              "string": str(meta["length"]), "bool": True, "float": float(meta["length"]),
              "negative": -meta["length"]}
    if choice == "missing":
        del meta["length"]
    else:
        meta["length"] = values[choice]
    members[index] = (members[index][0], json.dumps(meta).encode())
    return b"".join(tar_member(name, body) for name, body in members) + bytes(1024)


def damage_shard(directory: Path, rng: random.Random) -> str:
    manifest = load_manifest(directory)
    number = rng.randrange(len(manifest.shards))
    shard = directory / manifest.shards[number].name
    data = bytearray(shard.read_bytes())
    kind = rng.choice(["flip", "flip", "flip", "truncate", "rename", "meta"])
    if kind == "flip":
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "rename":
        rename_member(data, rng)
    else:
        data = bytearray(edit_meta(bytes(data), rng))
    shard.write_bytes(bytes(data))
    synced = rng.random() < 0.6
    if synced:  # the manifest agrees with the damaged file
        index = json.loads((directory / "index.json").read_text())
        index["shards"][number].update(file_bytes=len(data), sha256=file_sha256(shard))
        (directory / "index.json").write_text(json.dumps(index))
    return f"{kind} of shard {number}{' (manifest synced)' if synced else ''}"


def edit_manifest(directory: Path, rng: random.Random) -> str:
    index = json.loads((directory / "index.json").read_text())
    entries = index["shards"]
    number = rng.randrange(len(entries))
    entry = entries[number]
    field = rng.choice(["samples", "payload_bytes", "file_bytes", "max_sample_bytes", "sha256", "name",
                        "drop shard", "twice", "version", "modality"])
    if field in ("samples", "payload_bytes", "file_bytes", "max_sample_bytes"):
        entry[field] = rng.choice([entry[field] + 1, max(entry[field] - 1, 0), 0, 10**13, -1,
                                   str(entry[field]), None, 1.5])
    elif field == "sha256":
        entry["sha256"] = rng.choice(["0" * 64, entry["sha256"][::-1], 5, ""])
    elif field == "name":
        entry["name"] = rng.choice(["../" + entry["name"], "/etc/hostname", entries[-1 - number]["name"],
                                    entry["name"].replace("000", "999"), "x.tar", 7])
    elif field == "drop shard":
        del entries[number]
    elif field == "twice":
        entries.append(dict(entry))
    elif field == "version":
        index["version"] = rng.choice([3, 0, "2", None])
    else:
        index["modality"] = rng.choice(["text", "image", "audio", "video"])
    if not entries:
        entries.append(entry)
    (directory / "index.json").write_text(json.dumps(index))
    return f"manifest {field} of shard {number}"


# ---------------------------------------------------------------------------------------------
# reading it back, every way


PARSER = build_parser()  # built once: main() would build it for every call


def inspect(verb: str, path: Path) -> int:
    """`megabyte inspect VERB PATH` as main() runs it: an exit code, no traceback, an error as one
    last line on stderr."""
    args = PARSER.parse_args(["inspect", verb, str(path)])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = report_errors(args.command, args.func, args)
    lines = err.getvalue().strip().splitlines()
    assert code in (0, 1, 2) and bool(code) == bool(lines)
    assert not lines or lines[-1].startswith("megabyte inspect: error: ")
    return code


def check_inspect(directory: Path, pristine: dict[str, list]) -> None:
    """inspect verify/show/stats on the dataset and on each shard. What verify passes reads back
    as the original: each shard the manifest lists, or the shard file alone."""
    for verb in ("show", "stats"):
        for path in [directory, *sorted(directory.glob("*.tar"))]:
            inspect(verb, path)
    if inspect("verify", directory) == 0:
        for info in load_manifest(directory).shards:
            assert read_shard(directory / info.name) == pristine[info.name], f"{info.name} verified"
    for shard in sorted(directory.glob("*.tar")):
        if inspect("verify", shard) == 0:
            assert read_shard(shard) == pristine[shard.name], f"{shard.name} verified alone"


def read_shard(path: Path) -> list[tuple[str, str]]:
    """(key, sha256 of its byte stream) of each sample of a shard file."""
    return [(key, hashlib.sha256(read_sample(path, key, members)[1]).hexdigest())
            for _, key, members in iter_members(path)]


def check_reader(directory: Path, originals: dict[str, bytes]) -> None:
    """Every sample the reader gives, with the manifest and from each shard file alone, is the
    original sample of its key."""
    for paths in ([directory], sorted(directory.glob("*.tar"))):
        try:
            for shard, bound, key, members in iter_sample_members(paths):
                try:
                    _, payload = read_sample(shard, key, members, bound)
                except DataError:
                    continue
                assert key in originals and payload == originals[key], f"{shard}: {key} changed"
        except (DataError, UsageError) as error:
            assert "\n" not in str(error)


def row_samples(batch: dict, modality: str) -> list[bytes]:
    """The sample in each row of a batch: its ids up to PAD, the text boundary dropped."""
    samples = []
    for row in batch["ids"].tolist():
        ids = row[:row.index(PAD_ID)] if PAD_ID in row else row
        if modality == "text" and ids and ids[-1] == BOUNDARY_ID:
            ids = ids[:-1]
        if ids:
            assert max(ids) < 256, "a special id inside a sample"
            samples.append(bytes(ids))
    return samples


def check_loaders(directory: Path, modality: str, originals: dict[str, bytes]) -> None:
    """Train and validation loaders, raise and skip: one-line errors, and every row an original."""
    allowed = set(originals.values())
    for on_error in ("raise", "skip"):
        config = LoaderConfig([str(directory)], validation=str(directory), seq_len=SEQ_LEN,
                              patch_size=8, micro_batch_size=4, num_workers=0,
                              text_packing="document", on_error=on_error)
        for build in (build_train_loader, build_validation_loader):
            try:
                loader = build(config)
            except ValueError as error:  # refused at build: a one-line message too
                assert "\n" not in str(error)
                continue
            except (DataError, UsageError) as error:
                assert "\n" not in str(error)
                continue
            try:
                iterator = iter(loader)
                for _ in range(len(originals) // 4 + 2):
                    batch = next(iterator, None)
                    if batch is None:
                        break
                    for sample in row_samples(batch, modality):
                        assert sample in allowed, "the loader yielded bytes no sample held"
            except DataError as error:
                assert "\n" not in str(error)


# ---------------------------------------------------------------------------------------------
# the cases


def run_cases(datasets, tmp_path: Path, count: int, tag: str, damage) -> dict[str, int]:
    """Damage `count` fresh copies of the datasets, damage(directory, rng) → what it did (parts
    joined by ", "), and read each every way, within 10 s and writing nothing. Returns how often
    each kind of damage (the first word of a part) came."""
    seen = {}
    for case in range(count):
        rng = random.Random(f"{SEED}{tag}-{case}")
        modality = rng.choice(sorted(datasets))
        pristine, originals, shards = datasets[modality]
        directory = tmp_path / f"case{case}"
        shutil.copytree(pristine, directory)
        what = damage(directory, rng)
        before = snapshot(tmp_path)
        try:
            with deadline(10):
                check_inspect(directory, shards)
                check_reader(directory, originals)
                check_loaders(directory, modality, originals)
            assert snapshot(tmp_path) == before, "something was written"
        except AssertionError as error:
            raise AssertionError(f"case {case} ({modality}: {what}): {error}") from error
        shutil.rmtree(directory)
        for part in what.split(", "):
            seen[part.split()[0]] = seen.get(part.split()[0], 0) + 1
    return seen


def test_fuzzed_shards_are_refused_in_one_line_and_never_read_wrong(datasets, tmp_path):
    def damage(directory, rng):
        return damage_shard(directory, rng) if rng.random() < 0.75 else edit_manifest(directory, rng)

    seen = run_cases(datasets, tmp_path, CASES, "", damage)
    assert set(seen) == {"flip", "truncate", "rename", "meta", "manifest"}, seen


# ---------------------------------------------------------------------------------------------
# a consistent liar: shard, member index and manifest damaged together, every sha256 and size in
# the manifest made to agree with what it describes


LIES = (0, -1, 2**31, 2**63)  # what a length field is set to


def set_member_size(data: bytearray, rng: random.Random) -> None:
    """One member header's size field set to one of LIES (octal where it fits, else base-256 as
    GNU tar writes it), its header checksum made to agree."""
    offset = rng.choice(tar_headers(bytes(data)))
    value = rng.choice(LIES)
    if 0 <= value < 8**11:
        field = b"%011o\0" % value
    else:
        field = bytes([0xFF if value < 0 else 0x80]) + (value % 2**88).to_bytes(11, "big")
    data[offset + 124:offset + 136] = field
    data[offset + 148:offset + 156] = b" " * 8
    data[offset + 148:offset + 156] = b"%06o\0 " % sum(data[offset:offset + 512])


def damage_bytes(data: bytearray, rng: random.Random, row_bytes: int | None) -> str:
    """Flip a byte, cut the file, or set a length field to one of LIES: a member header's size
    (row_bytes None: a shard) or one number of a member index row."""
    kind = rng.choice(["flip", "truncate", "length", "length"])
    if kind == "flip" and data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data) + 1) if rng.random() < 0.7 else len(data) - rng.randrange(1, 25):]
    elif row_bytes is None:
        set_member_size(data, rng)
    elif len(data) >= row_bytes:
        at = rng.randrange(len(data) // 8) * 8
        data[at:at + 8] = (rng.choice(LIES) % 2**64).to_bytes(8, "little")
    return kind


OTHER_TYPES = ["7", "", [], [1], {}, {"a": 1}, None, True, 1.5, -1, 0, 2**31, 2**63, 10**30]


def swap_json_value(index: dict, rng: random.Random) -> str:
    """One value anywhere in the manifest replaced by one of another type."""
    places = []

    def walk(node, path):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            places.append((node, key, f"{path}.{key}"))
            walk(value, f"{path}.{key}")

    walk(index, "")
    node, key, path = rng.choice(places)
    node[key] = rng.choice([v for v in OTHER_TYPES if type(v) is not type(node[key])])
    return f"json {path}"


def lie_consistently(directory: Path, rng: random.Random) -> str:
    """Damage a shard, its member index and/or the manifest; the manifest's sizes and sha256
    then agree with the files, and sometimes its sample count with the index."""
    index = json.loads((directory / "index.json").read_text())
    number = rng.randrange(len(index["shards"]))
    entry = index["shards"][number]
    shard = directory / entry["name"]
    member_index = directory / (entry["name"] + ".idx")
    what = []
    for target in rng.sample(["shard", "idx", "json"], rng.randint(1, 2)):
        if target == "json":
            continue
        path = shard if target == "shard" else member_index
        data = bytearray(path.read_bytes())
        what.append(f"{target} {damage_bytes(data, rng, None if target == 'shard' else 24)}")
        path.write_bytes(bytes(data))
    entry.update(file_bytes=shard.stat().st_size, sha256=file_sha256(shard),
                 index_sha256=file_sha256(member_index))
    if rng.random() < 0.3:
        entry["samples"] = member_index.stat().st_size // 24
    if "json" in what or not what or rng.random() < 0.3:
        what.append(swap_json_value(index, rng))
    text = json.dumps(index)
    if rng.random() < 0.05:
        text = text[:rng.randrange(len(text))]
        what.append("json truncated")
    (directory / "index.json").write_text(text)
    return ", ".join(what) + f" (shard {number})"


LIAR_CASES = 200


def test_a_consistent_liar_is_refused_in_one_line_and_never_read_wrong(datasets, tmp_path):
    seen = run_cases(datasets, tmp_path, LIAR_CASES, "-liar", lie_consistently)
    assert set(seen) == {"shard", "idx", "json"}, seen
