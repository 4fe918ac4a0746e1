"""ImageNet labels: 0-based class indices and their synsets, from class folders, synset lists,
the devkit's meta.mat, and the label files of a flat validation folder (CSV or one per line)."""

import csv
from dataclasses import dataclass
from pathlib import Path

from pipeline.format.errors import UsageError



@dataclass
class LabelMap:
    """Class index (0-based, what metadata stores) ↔ synset, and integer label ids → synsets.

    classes: the synset of each class index (None: unknown, integer ids are class indices).
    ids: the synset of each integer id when ids are not class indices (ImageNet's ILSVRC2012 ids
    follow the devkit's order, not the sorted one); None: ids count classes.
    """

    classes: list[str] | None
    ids: list[str] | None = None

    def __post_init__(self):
        self._index = {synset: i for i, synset in enumerate(self.classes or self.ids or [])}

    def by_synset(self, synset: str) -> tuple[int, str]:
        if not self._index:
            raise ValueError(f"synset {synset} needs a class list (--classes or --classes-from) "
                             "to become a class index")
        if synset not in self._index:
            raise ValueError(f"synset {synset} is not one of the {len(self._index)} classes")
        return self._index[synset], synset

    def by_id(self, number: int, base: int) -> tuple[int, str | None]:
        names = self.ids or self.classes
        index = number - base
        if index < 0 or (names is not None and index >= len(names)):
            top = f"{base + len(names) - 1}" if names is not None else "…"
            raise ValueError(f"label {number} is outside {base}..{top}")
        if self.ids:
            return self.by_synset(self.ids[index])
        return index, self.classes[index] if self.classes else None

    def parse(self, token: str, base: int) -> tuple[int, str | None]:
        """A label as written in a labels file: an integer id or a synset."""
        token = token.strip()
        if token.lstrip("-").isdigit():
            return self.by_id(int(token), base)
        return self.by_synset(token)


def read_name_list(path: Path) -> list[str]:
    """The first word of each non-blank line: a synset list (LOC_synset_mapping.txt's
    "n01440764 tench, …" and map_clsloc.txt's "n02119789 1 kit_fox" lines work as they are)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    lines = path.read_text(encoding="utf-8").splitlines()
    names = [line.split()[0] for line in lines if line.strip()]
    if len(set(names)) != len(names):
        raise UsageError(f"{path}: a name is listed twice")
    if not names:
        raise UsageError(f"{path}: lists no names")
    return names


def read_devkit_ids(path: Path) -> list[str]:
    """ILSVRC2012 devkit meta.mat → the synset of each ILSVRC2012_ID (1-based) in id order."""
    from scipy.io import loadmat  # only this layout needs it

    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]  # the 1000 classes
        return [str(s["WNID"]) for s in sorted(leaves, key=lambda s: int(s["ILSVRC2012_ID"]))]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path}: not an ImageNet devkit meta.mat ({error})") from None


def class_folders(directory: Path) -> list[str]:
    """The sorted subfolder names; hidden ones (.ipynb_checkpoints, …) are not classes."""
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory")
    names = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise UsageError(f"{directory}: has no class folders")
    return names


def build_label_map(classes: Path | None, classes_from: Path | None, label_ids: Path | None,
                    folder_root: Path | None = None) -> LabelMap:
    """--classes FILE or --classes-from DIR (or, for ImageFolder, its own sorted class folders)
    and --label-ids FILE (a synset list in id order, or the devkit's meta.mat)."""
    if classes and classes_from:
        raise UsageError("give --classes or --classes-from, not both")
    if classes:
        class_list = read_name_list(classes)
    elif classes_from or folder_root:
        class_list = class_folders(classes_from or folder_root)
    else:
        class_list = None
    ids = None
    if label_ids:
        if not label_ids.is_file():
            raise UsageError(f"{label_ids}: no such file")
        ids = read_devkit_ids(label_ids) if label_ids.suffix == ".mat" else read_name_list(label_ids)
    return LabelMap(class_list, ids)


Label = tuple[int | None, str | None] | str  # (class index, synset), or why there is none
NO_LABEL = (None, None)


def folder_labels(root: Path, files: list[Path], label_map: LabelMap) -> dict[Path, Label]:
    """ImageFolder: each file's class folder (the first directory under the root) is its synset."""
    labels = {}
    for path in files:
        parts = path.relative_to(root).parts
        if len(parts) < 2 or parts[0].startswith("."):
            labels[path] = "not inside a class folder"
            continue
        try:
            labels[path] = label_map.by_synset(parts[0])
        except ValueError as error:
            raise UsageError(f"{root / parts[0]}: class folder not in the class list "
                             f"({error})") from None
    return labels


def read_label_file(path: Path, files: list[Path], label_map: LabelMap,
                    base: int) -> dict[Path, Label]:
    """--labels: `filename,label` CSV rows, or one label per line for the sorted files."""
    if not path.is_file():
        raise UsageError(f"{path}: no such labels file")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if any("," in line for line in lines):
        return csv_labels(path, lines, files, label_map, base)
    if len(lines) != len(files):
        raise UsageError(f"{path}: {len(lines)} labels for {len(files)} files (one label per line "
                         "is read as the label of each file in sorted name order)")
    return {file: parse_label(path, number, line, label_map, base)
            for number, (file, line) in enumerate(zip(files, lines), start=1)}


def csv_labels(path: Path, lines: list[str], files: list[Path], label_map: LabelMap,
               base: int) -> dict[Path, Label]:
    """`filename,label` rows (the filename with or without its extension; the label is the
    first word of the second column, so Kaggle's LOC_val_solution.csv works). Rows naming no
    file of the folder (a header, files not copied) are ignored; a file without a row is skipped."""
    by_name = {}
    for number, row in enumerate(csv.reader(lines), start=1):
        if len(row) < 2 or not row[1].split():
            raise UsageError(f"{path}:{number}: expected filename,label")
        by_name[row[0].strip()] = (number, row[1].split()[0])
    labels = {}
    for file in files:
        found = by_name.get(file.name) or by_name.get(file.stem)
        labels[file] = (parse_label(path, *found, label_map, base) if found
                        else f"no label in {path}")
    return labels


def parse_label(path: Path, number: int, token: str, label_map: LabelMap, base: int) -> Label:
    if not token.strip():
        raise UsageError(f"{path}:{number}: empty label")
    try:
        return label_map.parse(token, base)
    except ValueError as error:
        raise UsageError(f"{path}:{number}: {error}") from None
