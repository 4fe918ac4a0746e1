"""Join the datasets written by `convert --part i/n` (one per part) into one dataset directory.

Shards are hard-linked when the parts are on the same filesystem (copied through a temporary name
otherwise) and renumbered NAME-000000.tar… in part order; the parts are left untouched. The merged
manifest is written last, so an interrupted merge leaves no index.json and can simply be rerun.
"""

import os
import shutil
from pathlib import Path

from pipeline.format.errors import UsageError
from pipeline.format.shards import Manifest, load_manifest, shard_name


def merge_parts(part_dirs: list[Path], out: Path) -> Manifest:
    manifests = [load_manifest(d) for d in part_dirs]
    by_part = {}
    for directory, manifest in zip(part_dirs, manifests):
        part = manifest.arguments.get("part")
        if part is None:
            raise UsageError(f"{directory}: was not converted with --part i/n")
        if part in by_part:
            raise UsageError(f"{directory}: part {part} given twice (also {by_part[part][0]})")
        by_part[part] = (directory, manifest)
    count = int(next(iter(by_part)).split("/")[1])
    expected = [f"{i}/{count}" for i in range(count)]
    if sorted(by_part, key=lambda p: int(p.split("/")[0])) != expected:
        raise UsageError(f"parts {sorted(by_part)} are not the complete set {expected}")
    first = by_part[expected[0]][1]
    common = {k: v for k, v in first.arguments.items() if k != "part"}
    for part in expected:
        directory, manifest = by_part[part]
        if {k: v for k, v in manifest.arguments.items() if k != "part"} != common:
            raise UsageError(f"{directory}: converted with other arguments than {by_part[expected[0]][0]}")

    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise UsageError(f"{out}: the output directory is not empty")
    merged = Manifest(first.name, first.modality, {**common, "merged_parts": count})
    for part in expected:
        directory, manifest = by_part[part]
        for shard in manifest.shards:
            new_name = shard_name(merged.name, len(merged.shards))
            link_or_copy(Path(directory) / shard.name, out / new_name)
            merged.shards.append(type(shard)(**{**vars(shard), "name": new_name}))
        merged.skipped.extend(manifest.skipped)
    merged.save(out)
    return merged


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
