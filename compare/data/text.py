"""Text corpora: the King James Bible, a document per chapter (prose), and Django's sources, a
document per .py file (code)."""

from pathlib import Path

from compare.data.archives import run_tool
from compare.data.corpus import Corpus, held_out
from pipeline.convert.text import TextConverter
from pipeline.format.errors import DataError

KJV_CHAPTERS = 1189
HELD_OUT_EVERY = 20  # every 20th document (sorted order) is validation


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
    train, val = held_out(files, HELD_OUT_EVERY)
    return train, val, TextConverter(), {"modality": "text", "documents": "chapters"}


def django_documents(trees: dict[str, Path], staging: Path):
    """Django's source distribution: a document per non-empty .py file."""
    files = sorted(f for f in trees["django"].rglob("*.py") if f.stat().st_size > 0)
    train, val = held_out(files, HELD_OUT_EVERY)
    return train, val, TextConverter(), {"modality": "text", "documents": "*.py files"}


KJV = Corpus("kjv", ("bible-kjv-text", "bible-kjv"), kjv_documents)
DJANGO = Corpus("django", ("django",), django_documents)
