"""Join the datasets written by `convert --part i/n` (one per part) into one dataset directory.

    part manifests ──check_parts──▶ the complete set 0/n … n-1/n, converted with the same arguments
      ──▶ merged manifest: their shards renumbered NAME-000000.tar… in part order
      ──read_member_index──▶ every shard's member index, checked (sha256, rows), before anything
      │                      is written
      ──prepare_output──▶ an empty directory, or one an interrupted merge of the same parts left
      ──place_shard──▶ each shard's member index written, then the
      │               shard hard-linked (same filesystem) or copied and checked against its
      │               sha256, under a temporary name then renamed: a shard file is whole or absent
      ──▶ index.json, written last

The parts are left untouched. An interrupted merge leaves no index.json; rerunning it keeps the
shards already in place (the same file, or the same size and sha256) and places the rest, so it
ends with the same dataset as an uninterrupted merge. Shard names come from the part manifests,
which load_manifest checks (NAME-NNNNNN.tar, nothing that leaves the directory).
"""

import os
from pathlib import Path

from pipeline.format.errors import DataError, UsageError
from pipeline.format.files import (HashingWriter, file_sha256, publish, temporary_path,
                                   write_bytes_atomically)
from pipeline.format.manifest import (INDEX_NAME, Manifest, ShardInfo, load_manifest, member_index_name,
                                      shard_name)
from pipeline.format.member_index import read_member_index
from pipeline.format.reader import check_shard


def merge_parts(part_dirs: list[Path], out: Path) -> Manifest:
    parts = check_parts(part_dirs)
    first = parts[0][1]
    common = {k: v for k, v in first.arguments.items() if k != "part"}
    merged = Manifest(first.name, first.modality, {**common, "merged_parts": len(parts)})
    placements = []  # (part shard path, its entry, merged name)
    for directory, manifest in parts:
        for info in manifest.shards:
            new_name = shard_name(merged.name, len(merged.shards))
            placements.append((Path(directory) / info.name, info, new_name))
            merged.shards.append(ShardInfo(**{**vars(info), "name": new_name}))
        merged.skipped.extend(manifest.skipped)
    # every member index read and checked before anything is written: a lying one stops the
    # merge with nothing made
    indexes = [read_member_index(source, info) if info.index_sha256 is not None else None
               for source, info, _ in placements]
    if prepare_output(out, merged):
        return merged
    try:
        for (source, info, new_name), index in zip(placements, indexes):
            if index is not None:  # first, as a converter publishes a shard
                write_bytes_atomically(out / member_index_name(new_name), index.tobytes())
            place_shard(source, info, out / new_name)
        merged.save(out)
    except OSError as error:  # disk full…: the shards placed so far stay, whole
        raise UsageError(f"{error.filename or out}: cannot write ({error.strerror or error}); "
                         "rerun the same command to go on") from None
    return merged


def check_parts(part_dirs: list[Path]) -> list[tuple[Path, Manifest]]:
    """(directory, manifest) of each part in part order; they must be the complete set 0/n …
    n-1/n, converted with the same arguments."""
    by_part = {}
    for directory in part_dirs:
        manifest = load_manifest(directory)
        part = manifest.arguments.get("part")
        if not isinstance(part, str):
            raise UsageError(f"{directory}: was not converted with --part i/n")
        if part in by_part:
            raise UsageError(f"{directory}: part {part} given twice (also {by_part[part][0]})")
        by_part[part] = (directory, manifest)
    count = next(iter(by_part)).partition("/")[2]
    expected = [f"{i}/{count}" for i in range(int(count))] if count.isdigit() else []
    if sorted(by_part) != sorted(expected):
        raise UsageError(f"parts {sorted(by_part)} are not the complete set {expected}")
    parts = [by_part[part] for part in expected]
    common = {k: v for k, v in parts[0][1].arguments.items() if k != "part"}
    for directory, manifest in parts:
        if {k: v for k, v in manifest.arguments.items() if k != "part"} != common:
            raise UsageError(f"{directory}: converted with other arguments than {parts[0][0]}")
    return parts


def prepare_output(out: Path, merged: Manifest) -> bool:
    """Make `out` ready; True when it already holds this merge, finished. Files an interrupted
    merge of the same parts left are kept; anything else there is refused."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{out}: cannot create the output directory ({error.strerror})") from None
    if (out / INDEX_NAME).exists():
        if load_manifest(out).to_dict() == merged.to_dict():
            return True
        raise UsageError(f"{out}: holds another dataset; choose another --out")
    ours = {info.name for info in merged.shards}
    ours |= {member_index_name(info.name) for info in merged.shards if info.index_sha256 is not None}
    for name in ours:  # a link or copy cut off by a kill
        temporary_path(out / name).unlink(missing_ok=True)
    others = sorted(path.name for path in out.iterdir() if path.name not in ours)
    if others:
        raise UsageError(f"{out}: the output directory is not empty (it holds {others[0]}, which "
                         "no merge of these parts writes)")
    return False


def place_shard(source: Path, info: ShardInfo, target: Path) -> None:
    """The part's shard under its merged name: kept if already there, else linked or copied
    through a temporary name. The part's shard must have its manifest size (a copy, its sha256)."""
    check_shard(source, info, sha256=False)
    if target.exists() and (os.path.samefile(source, target) or (
            target.stat().st_size == info.file_bytes and file_sha256(target) == info.sha256)):
        return
    tmp = temporary_path(target)
    try:
        os.link(source, tmp)
    except OSError:
        copy_checked(source, info, tmp)
    publish(tmp, target)


def copy_checked(source: Path, info: ShardInfo, target: Path) -> None:
    """Copy a shard, checking the sha256 of what was copied against its manifest entry."""
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            out = HashingWriter(dst)
            while chunk := src.read(1 << 20):
                out.write(chunk)
    except OSError:
        target.unlink(missing_ok=True)
        raise
    if out.sha256.hexdigest() != info.sha256:
        target.unlink()
        raise DataError(f"{source}: sha256 does not match its part's manifest: the shard is "
                        "corrupt or was replaced")
