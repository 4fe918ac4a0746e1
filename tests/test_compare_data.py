"""compare/data/ without the network: a pinned archive whose hash differs is refused with
one line and exit code 2 before anything is converted, and never enters the cache; chapters and
splits are cut as documented; a corpus becomes two datasets disjoint by document."""

import hashlib
import sys

import pytest

from compare.data import archives, prepare
from compare.data.corpus import Corpus, build, held_out, is_built
from compare.data.text import DJANGO, kjv_chapters, kjv_documents
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
