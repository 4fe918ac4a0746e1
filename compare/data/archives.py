"""Pinned public archives: each by package, exact version and sha256, downloaded with the
registry's own client, verified, unpacked once.

    PINNED ─▶ fetch: OUT/downloads/FILE (apt-get download / pip download into a scratch folder,
              verified before it enters the cache, verified again on every use)
           ─▶ unpack: OUT/downloads/PACKAGE_VERSION/ (dpkg-deb -x, or tar with the "data" filter)

A hash that differs from the table stops the run with one line and exit code 2 (ChecksumMismatch).
Needs `apt-get` and `dpkg-deb` (Debian/Ubuntu, no root) and pip.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.format.errors import DataError, UsageError
from pipeline.format.files import file_sha256


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


class ChecksumMismatch(DataError):
    """A downloaded archive is not the pinned one. Exit code 2, like a run that cannot start."""

    exit_code = 2


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
