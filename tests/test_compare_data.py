"""compare/data/ without the network: a pinned archive whose hash differs is refused with
one line and exit code 2 before anything is converted, and never enters the cache; chapters and
splits are cut as documented; a corpus becomes two datasets disjoint by document; the photo and
sound corpora come at both sizes and rates from one function each."""

import hashlib
import sys
from pathlib import Path

import pytest

from compare.data import archives, prepare
from compare.data.audio import SOUNDS16K
from compare.data.corpus import Corpus, build, held_out, is_built
from compare.data.images import PHOTOS32, PHOTOS64
from compare.data.text import DJANGO, kjv_chapters, kjv_documents
from pipeline.format.manifest import load_manifest
from pipeline.format.reader import iter_samples

GOOD = b"a pinned archive\n"


@pytest.fixture
def pinned(monkeypatch):
    """A one-source table: dataset "kjv" made of package "pkg" 1.0, file pkg_1.0_all.deb."""
    source = archives.Pinned("pkg", "1.0", "pkg_1.0_all.deb", hashlib.sha256(GOOD).hexdigest(),
                             "apt")
    monkeypatch.setattr(archives, "PINNED", {"pkg": source})
    monkeypatch.setattr(prepare, "CORPORA", {"kjv": Corpus("kjv", ("pkg",), kjv_documents)})
    return source


def no_download(source):
    raise AssertionError(f"tried to download {source.package}")


def test_a_cached_archive_with_another_hash_is_refused_before_anything_is_converted(
        pinned, tmp_path, monkeypatch, capsys):
    out = tmp_path / "real"
    (out / "downloads").mkdir(parents=True)
    (out / "downloads" / pinned.file).write_bytes(b"not the pinned archive\n")
    monkeypatch.setattr(archives, "download_command", no_download)
    assert prepare.main(["--out", str(out), "--only", "kjv"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    actual = hashlib.sha256(b"not the pinned archive\n").hexdigest()
    assert len(error) == 1
    assert pinned.file in error[0] and pinned.sha256 in error[0] and actual in error[0]
    assert sorted(p.name for p in out.iterdir()) == ["downloads"]  # no dataset, no SOURCES.md
    assert sorted(p.name for p in (out / "downloads").iterdir()) == [pinned.file]  # nothing unpacked


def test_a_download_with_another_hash_never_enters_the_cache(pinned, tmp_path, monkeypatch):
    write = f"open({pinned.file!r}, 'wb').write(b'tampered')"
    monkeypatch.setattr(archives, "download_command", lambda source: [sys.executable, "-c", write])
    downloads = tmp_path / "downloads"
    with pytest.raises(archives.ChecksumMismatch, match=pinned.sha256):
        archives.fetch(pinned, downloads)
    assert list(downloads.iterdir()) == []  # the temporary download folder is gone too


def test_a_download_with_the_pinned_hash_is_cached_and_reused(pinned, tmp_path, monkeypatch):
    write = f"open({pinned.file!r}, 'wb').write({GOOD!r})"
    monkeypatch.setattr(archives, "download_command", lambda source: [sys.executable, "-c", write])
    downloads = tmp_path / "downloads"
    path = archives.fetch(pinned, downloads)
    assert path == downloads / pinned.file and path.read_bytes() == GOOD
    monkeypatch.setattr(archives, "download_command", no_download)
    assert archives.fetch(pinned, downloads) == path  # cached: verified, not fetched again


def test_kjv_chapters_split_at_headings_and_keep_verse_numbers():
    verses = ("\nGenesis 1\n\n  1 In the beginning.\n  2 And the earth.\n\n"
              "1 Kings 3\n\n  1 And Solomon.\n  176 Last.\n")
    assert kjv_chapters(verses) == [
        ("Genesis 1", "Genesis 1\n\n1 In the beginning.\n2 And the earth.\n"),
        ("1 Kings 3", "1 Kings 3\n\n1 And Solomon.\n176 Last.\n"),
    ]


def test_held_out_is_every_nth_document_and_disjoint():
    files = [f"doc{i}" for i in range(45)]
    train, val = held_out(files, 20)
    assert val == ["doc0", "doc20", "doc40"]
    assert set(train) | set(val) == set(files) and not set(train) & set(val)


def test_a_corpus_becomes_train_and_val_datasets_disjoint_by_document(tmp_path):
    tree = tmp_path / "django_5.1.4" / "Django-5.1.4"
    for i in range(25):
        (tree / f"pkg{i % 3}").mkdir(parents=True, exist_ok=True)
        (tree / f"pkg{i % 3}" / f"module{i:02d}.py").write_text(f"value = {i}\n")
    (tree / "pkg0" / "__init__.py").write_text("")  # empty: not a document
    out = tmp_path / "real"
    build(DJANGO, out, {"django": tree.parent})
    read = {split: {meta["source"]: payload for _, _, meta, payload in iter_samples([out / f"django-{split}"])}
            for split in ("train", "val")}
    modules = sorted(tree.rglob("module*.py"))  # sorted as the script sorts them
    assert sorted(read["val"]) == [str(modules[0]), str(modules[20])]
    assert sorted(read["train"]) == sorted(str(m) for m in modules[1:20] + modules[21:])
    assert read["val"][str(modules[20])] == modules[20].read_bytes()
    assert is_built(out, "django")
    assert not (out / "downloads" / ".staging-django").exists()


def photo_tree(root, count):
    """A mate-backgrounds tree of `count` random 300×200 photographs."""
    import numpy as np
    from PIL import Image

    folder = root / "usr/share/backgrounds/mate/nature"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(folder / f"photo{i:02d}.jpg")
    return root


@pytest.mark.parametrize("corpus, side", [(PHOTOS32, 32), (PHOTOS64, 64)])
def test_photo_corpora_are_tiles_of_their_size_with_whole_photos_held_out(tmp_path, corpus, side):
    """photos32 and photos64 cut the same photographs, a tile twice the stored side; the first of
    every 12 photos is validation, at the first scale only."""
    tree = photo_tree(tmp_path / "mate", 13)
    out = tmp_path / "real"
    build(corpus, out, {"mate-backgrounds": tree})
    sources = {}
    for split in ("train", "val"):
        samples = list(iter_samples([out / f"{corpus.name}-{split}"]))
        assert {len(payload) for _, _, _, payload in samples} == {side * side * 3}
        sources[split] = {Path(meta["source"]).name.split("-")[0] for _, _, meta, _ in samples}
    assert sources["val"] == {"photo00", "photo12"}
    assert sources["train"] == {f"photo{i:02d}" for i in range(1, 12)}
    # 512 / 200 scales a photo to 768×512, 768 / 200 to 1152×768: tiles of 2·side a side
    tiles = [(768 // (2 * side)) * (512 // (2 * side)), (1152 // (2 * side)) * (768 // (2 * side))]
    assert load_manifest(out / f"{corpus.name}-val").totals["samples"] == 2 * tiles[0]
    assert load_manifest(out / f"{corpus.name}-train").totals["samples"] == 11 * sum(tiles)


def test_sounds16k_is_16_bit_pcm_at_16_khz_with_the_held_out_files_cut_short(tmp_path):
    """The same recordings as sounds8k: 16-bit PCM at 16 kHz, two bytes a sample, the held-out
    files only their first half second (the others whole)."""
    import numpy as np
    import soundfile

    samples_dir = tmp_path / "sonic" / "usr/share/sonic-pi/samples"
    alsa_dir = tmp_path / "alsa" / "usr/share/sounds/alsa"
    samples_dir.mkdir(parents=True)
    alsa_dir.mkdir(parents=True)
    tone = np.sin(np.arange(22050) * 0.05).astype(np.float32) * 0.5  # 1 s at 22.05 kHz
    for i in range(11):
        soundfile.write(samples_dir / f"sound{i:02d}.flac", tone, 22050)
    soundfile.write(alsa_dir / "Front_Left.wav", tone, 22050)
    out = tmp_path / "real"
    build(SOUNDS16K, out, {"sonic-pi-samples": tmp_path / "sonic", "alsa-utils": tmp_path / "alsa"})
    lengths = {split: sorted(len(payload) for _, _, _, payload in iter_samples([out / f"sounds16k-{split}"]))
               for split in ("train", "val")}
    assert lengths == {"train": [32000] * 10, "val": [16000] * 2}  # files 0 and 10 held out
    assert load_manifest(out / "sounds16k-val").arguments["encoding"] == "pcm16"
