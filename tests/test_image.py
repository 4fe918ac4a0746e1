"""Image converter (pipeline/convert/image.py), its CLI and the image half of tools/render.py.

Every layout on small synthetic images of several modes and sizes: labels, pixels byte-identical
to a direct Pillow reference of the same decode and resize, bad inputs, workers, parts, and a
conversion killed and resumed.
"""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tools.render import bytes_to_image, image_grid
from pipeline.format.scan import to_patch_order
from tools.cli import main as cli

from helpers import manifest, read_dataset, run_killed_then_resumed, shard_bytes

SIZE = 24


# ---------------------------------------------------------------------------------------------
# helpers


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A (H, W, 3) test picture: gradients, so resizing and cropping matter, plus noise."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     (x + 2 * y) * 7 % 256], axis=-1)
    noise = np.random.default_rng(seed).integers(-30, 30, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_image(path: Path, mode: str, width: int, height: int, seed: int = 0, **save_args) -> Path:
    """Save a picture in one of Pillow's modes; the format follows the file name."""
    rgb = Image.fromarray(picture(width, height, seed))
    alpha = Image.fromarray(picture(width, height, seed + 1)[..., 0])  # 0..255, some fully clear
    if mode == "RGBA":
        image = rgb.copy()
        image.putalpha(alpha)
    elif mode == "LA":
        image = rgb.convert("L")
        image.putalpha(alpha)
    elif mode == "P":  # palette with a transparent index
        image = rgb.quantize(16)
        save_args.setdefault("transparency", 3)
    elif mode == "I;16":
        image = Image.fromarray(picture(width, height, seed)[..., 0].astype(np.uint16) * 257 + 100)
    else:
        image = rgb.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_args)
    return path


def reference_pixels(path: Path, size: int, resize: str = "crop") -> bytes:
    """What the converter should store, spelled out with plain Pillow calls."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "I;16"):
            image = Image.fromarray((np.asarray(image).astype(np.int64) >> 8).astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            image = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
        image = image.convert("RGB")
    if resize == "box":
        return image.resize((size, size), Image.Resampling.BOX).tobytes()
    width, height = image.size
    if width <= height:
        new_size = (size, round(height * size / width))
    else:
        new_size = (round(width * size / height), size)
    image = image.resize(new_size, Image.Resampling.BICUBIC)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return image.crop((left, top, left + size, top + size)).tobytes()


def convert_image(sources, out: Path, *flags) -> int:
    sources = sources if isinstance(sources, list) else [sources]
    return cli(["convert", "image", *map(str, sources), "--out", str(out), "--no-progress",
                *map(str, flags)])


# a class folder of every mode the converter must handle, at sizes below, around and above S
MIXED_FOLDER = {
    "n01/a.JPEG": ("RGB", 50, 37),
    "n01/b.png": ("L", 31, 64),
    "n01/c.png": ("RGBA", 40, 40),
    "n02/d.png": ("P", 20, 70),
    "n02/e.jpg": ("CMYK", 64, 48),
    "n02/f.png": ("LA", 13, 9),
    "n03/g.png": ("I;16", 45, 30),
    "n03/h.png": ("1", 33, 33),
    "n03/i.bmp": ("RGB", 24, 24),
}


def make_folder(root: Path, layout: dict = MIXED_FOLDER) -> list[Path]:
    return [make_image(root / name, mode, width, height, seed=i)
            for i, (name, (mode, width, height)) in enumerate(layout.items())]


# ---------------------------------------------------------------------------------------------
# ImageFolder


@pytest.mark.parametrize("resize", ["crop", "box"])
def test_image_folder_labels_and_pixels(tmp_path, resize):
    files = make_folder(tmp_path / "train")
    assert convert_image(tmp_path / "train", tmp_path / "out", "--size", SIZE, "--resize", resize) == 0
    samples = read_dataset(tmp_path / "out")
    assert [key for key, _, _ in samples] == [f"{i:08d}-000000000" for i in range(len(files))]
    for path, (key, meta, payload) in zip(sorted(files), samples):
        synset = path.parent.name
        assert meta["source"] == str(path)
        assert (meta["synset"], meta["label"]) == (synset, ["n01", "n02", "n03"].index(synset))
        assert meta["modality"] == "image" and meta["length"] == SIZE * SIZE * 3 == len(payload)
        assert (meta["height"], meta["width"], meta["channels"]) == (SIZE, SIZE, 3)
        assert payload == reference_pixels(path, SIZE, resize), path.name
    info = manifest(tmp_path / "out")
    assert info["modality"] == "image" and info["skipped"] == []
    assert info["arguments"]["layout"] == "folder" and info["arguments"]["resize"] == resize


def test_pixel_rules(tmp_path):
    """Images of exactly S×S are stored unresized, so the conversion rules show in the bytes."""
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    rgba[:, :, :3] = 40
    rgba[:, : SIZE // 2, 3] = 255  # left half opaque, right half fully transparent
    (tmp_path / "train/a").mkdir(parents=True)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "train/a/alpha.png")
    deep = np.full((SIZE, SIZE), 0x9A3C, dtype=np.uint16)  # 16-bit grey: the high byte is 0x9A
    Image.fromarray(deep).save(tmp_path / "train/a/deep.png")
    halves = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    halves[:, : SIZE // 2] = (255, 0, 0)  # red left, blue right, stored turned by EXIF orientation 6
    halves[:, SIZE // 2:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(halves).save(tmp_path / "train/a/turned.png", exif=exif)

    assert convert_image(tmp_path / "train", tmp_path / "out", "--size", SIZE) == 0
    images = {Path(meta["source"]).stem: bytes_to_image(payload, SIZE)
              for _, meta, payload in read_dataset(tmp_path / "out")}
    assert (images["alpha"][:, : SIZE // 2] == 40).all()
    assert (images["alpha"][:, SIZE // 2:] == 255).all()  # transparency over white
    assert (images["deep"] == 0x9A).all()
    assert (images["turned"][: SIZE // 2] == (255, 0, 0)).all()  # the left half is now on top
    assert (images["turned"][SIZE // 2:] == (0, 0, 255)).all()


# ---------------------------------------------------------------------------------------------
# flat validation folder with a labels file


def make_val(tmp_path: Path, count: int = 6) -> Path:
    for synset in ("n01", "n02", "n03"):
        (tmp_path / "train" / synset).mkdir(parents=True)
    for i in range(count):
        make_image(tmp_path / f"val/ILSVRC2012_val_{i + 1:08d}.JPEG", "RGB", 30 + i, 20, seed=i)
    return tmp_path / "val"


def labels_of(out: Path) -> list[tuple[int, str]]:
    return [(meta["label"], meta["synset"]) for _, meta, _ in read_dataset(out)]


def test_flat_folder_with_ilsvrc_ground_truth(tmp_path):
    val = make_val(tmp_path)
    # ILSVRC ids follow the devkit's order, not the sorted one: id 1 = n03, 2 = n01, 3 = n02
    (tmp_path / "ids.txt").write_text("n03 1 third\nn01 2 first\nn02 3 second\n")
    (tmp_path / "truth.txt").write_text("1\n2\n3\n3\n2\n1\n")
    assert convert_image(val, tmp_path / "out", "--size", 8, "--labels", tmp_path / "truth.txt",
                         "--label-ids", tmp_path / "ids.txt", "--classes-from", tmp_path / "train") == 0
    assert labels_of(tmp_path / "out") == [(2, "n03"), (0, "n01"), (1, "n02"),
                                           (1, "n02"), (0, "n01"), (2, "n03")]
    assert manifest(tmp_path / "out")["arguments"]["layout"] == "flat"
    for path, (_, meta, payload) in zip(sorted(val.iterdir()), read_dataset(tmp_path / "out")):
        assert meta["source"] == str(path) and payload == reference_pixels(path, 8)


def test_flat_folder_with_devkit_meta_mat(tmp_path):
    from scipy.io import savemat

    val = make_val(tmp_path, count=3)
    entry = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")]
    synsets = np.array([(2, "n01", 0), (1, "n03", 0), (4, "n00-animal", 2), (3, "n02", 0)], dtype=entry)
    savemat(tmp_path / "meta.mat", {"synsets": synsets})
    (tmp_path / "truth.txt").write_text("3\n1\n2\n")
    assert convert_image(val, tmp_path / "out", "--size", 8, "--labels", tmp_path / "truth.txt",
                         "--label-ids", tmp_path / "meta.mat", "--classes-from", tmp_path / "train") == 0
    assert labels_of(tmp_path / "out") == [(1, "n02"), (2, "n03"), (0, "n01")]


def test_flat_folder_one_label_per_line_with_class_list(tmp_path):
    val = make_val(tmp_path, count=4)
    (tmp_path / "classes.txt").write_text("n09 tench\nn05 goldfish\nn07 shark\n")
    (tmp_path / "synsets.txt").write_text("n07\nn09\nn05\nn07\n")
    assert convert_image(val, tmp_path / "a", "--size", 8, "--labels", tmp_path / "synsets.txt",
                         "--classes", tmp_path / "classes.txt") == 0
    assert labels_of(tmp_path / "a") == [(2, "n07"), (0, "n09"), (1, "n05"), (2, "n07")]
    (tmp_path / "zero_based.txt").write_text("2\n0\n1\n2\n")  # integer ids count classes here
    assert convert_image(val, tmp_path / "b", "--size", 8, "--labels", tmp_path / "zero_based.txt",
                         "--label-base", 0, "--classes", tmp_path / "classes.txt") == 0
    assert labels_of(tmp_path / "b") == labels_of(tmp_path / "a")


def test_flat_folder_csv_labels(tmp_path):
    val = make_val(tmp_path, count=4)
    # Kaggle's LOC_val_solution.csv: a header, names without extension, boxes after the synset
    (tmp_path / "solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000003,n01 10 20 30 40 n01 1 2 3 4\n"
        "ILSVRC2012_val_00000001.JPEG,n03\n"
        "ILSVRC2012_val_00000002,n02 5 6 7 8\n"
        "some_other_file,n01\n")
    assert convert_image(val, tmp_path / "out", "--size", 8, "--labels", tmp_path / "solution.csv",
                         "--classes-from", tmp_path / "train") == 0
    assert labels_of(tmp_path / "out") == [(2, "n03"), (1, "n02"), (0, "n01")]
    skipped = manifest(tmp_path / "out")["skipped"]
    assert skipped == [{"source": str(val / "ILSVRC2012_val_00000004.JPEG"),
                        "reason": f"no label in {tmp_path / 'solution.csv'}"}]


def test_unlabelled_flat_folder(tmp_path):
    val = make_val(tmp_path, count=2)
    assert convert_image(val, tmp_path / "out", "--size", 8) == 0
    assert labels_of(tmp_path / "out") == [(None, None), (None, None)]


def test_files_folders_and_globs_in_any_mix(tmp_path, capsys):
    """The rule of every converter: files, folders and globs alike, in sorted file order; loose
    images are labelled by --labels, or not at all."""
    val = make_val(tmp_path, count=6)
    extra = make_image(tmp_path / "extra/a.png", "RGB", 20, 30, seed=9)
    names = sorted(val.iterdir())
    sources = [names[1], names[0], val / "ILSVRC2012_val_0000000[56].JPEG", tmp_path / "extra"]
    assert convert_image(sources, tmp_path / "out", "--size", 8) == 0
    samples = read_dataset(tmp_path / "out")
    expected = [extra, names[0], names[1], names[4], names[5]]
    assert [meta["source"] for _, meta, _ in samples] == [str(path) for path in expected]
    assert [payload for _, _, payload in samples] == [reference_pixels(path, 8) for path in expected]
    assert labels_of(tmp_path / "out") == [(None, None)] * 5
    assert manifest(tmp_path / "out")["arguments"]["layout"] == "flat"

    (tmp_path / "labels.csv").write_text("ILSVRC2012_val_00000001,n02\nILSVRC2012_val_00000005,n01\n"
                                         "a.png,n03\n")
    assert convert_image(sources, tmp_path / "labelled", "--size", 8, "--labels",
                         tmp_path / "labels.csv", "--classes-from", tmp_path / "train") == 0
    assert labels_of(tmp_path / "labelled") == [(2, "n03"), (1, "n02"), (0, "n01")]
    skipped = manifest(tmp_path / "labelled")["skipped"]
    assert [skip["source"] for skip in skipped] == [str(names[1]), str(names[5])]

    assert convert_image(names[2], tmp_path / "one", "--size", 8) == 0  # a single file
    assert [meta["source"] for _, meta, _ in read_dataset(tmp_path / "one")] == [str(names[2])]
    capsys.readouterr()
    assert convert_image([val, extra], tmp_path / "no", "--size", 8, "--layout", "folder") == 2
    assert "the folder layout reads one ImageFolder" in capsys.readouterr().err


@pytest.mark.parametrize("case, flags, message", [
    ("missing labels file", ["--labels", "{tmp}/nope.txt"], "no such labels file"),
    ("too few labels", ["--labels", "{tmp}/two.txt", "--classes-from", "{tmp}/train"],
     "2 labels for 3 files"),
    ("unknown synset", ["--labels", "{tmp}/bad.txt", "--classes-from", "{tmp}/train"],
     "bad.txt:2: synset n99"),
    ("synsets without classes", ["--labels", "{tmp}/synsets.txt"], "needs a class list"),
    ("id out of range", ["--labels", "{tmp}/big.txt", "--classes-from", "{tmp}/train"],
     "label 4 is outside 1..3"),
    ("both class options", ["--labels", "{tmp}/synsets.txt", "--classes", "{tmp}/c.txt",
                            "--classes-from", "{tmp}/train"], "not both"),
])
def test_usage_errors_exit_2(tmp_path, capsys, case, flags, message):
    val = make_val(tmp_path, count=3)
    (tmp_path / "two.txt").write_text("1\n2\n")
    (tmp_path / "bad.txt").write_text("n01\nn99\nn02\n")
    (tmp_path / "synsets.txt").write_text("n01\nn02\nn03\n")
    (tmp_path / "big.txt").write_text("1\n4\n2\n")
    (tmp_path / "c.txt").write_text("n01\n")
    flags = [f.format(tmp=tmp_path) for f in flags]
    size = [] if "--size" in flags else ["--size", 8]
    assert convert_image(val, tmp_path / "out", *size, *flags) == 2, case
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "out" / "index.json").exists()


def test_class_folder_missing_from_class_list_is_a_usage_error(tmp_path, capsys):
    make_folder(tmp_path / "train", {"n01/a.png": ("RGB", 9, 9), "n02/b.png": ("RGB", 9, 9)})
    (tmp_path / "classes.txt").write_text("n02\n")
    assert convert_image(tmp_path / "train", tmp_path / "out", "--size", 8,
                         "--classes", tmp_path / "classes.txt") == 2
    assert "n01: class folder not in the class list" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# downsampled ImageNet .npz


def planar_rows(count: int, side: int, seed: int) -> np.ndarray:
    images = np.stack([picture(side, side, seed + i) for i in range(count)])  # (n, R, R, 3)
    return images.transpose(0, 3, 1, 2).reshape(count, -1)  # (n, 3·R·R) channel-planar


def test_npz_batches(tmp_path):
    first, second = planar_rows(5, 8, seed=0), planar_rows(3, 8, seed=10)
    np.savez(tmp_path / "train_data_batch_1.npz", data=first, labels=np.array([1, 5, 3, 1000, 2]))
    np.savez_compressed(tmp_path / "train_data_batch_2.npz", data=second, labels=np.array([7, 8, 9]))
    (tmp_path / "train_data_batch_3.npz").write_bytes(  # cut off half-way: skipped, the rest goes on
        (tmp_path / "train_data_batch_1.npz").read_bytes()[:700])

    assert convert_image(str(tmp_path / "*.npz"), tmp_path / "out", "--size", 8) == 0
    samples = read_dataset(tmp_path / "out")
    rows = [(0, i, first[i]) for i in range(5)] + [(1, i, second[i]) for i in range(3)]
    assert [key for key, _, _ in samples] == [f"{f:08d}-{r:09d}" for f, r, _ in rows]
    for (_, row, data), (_, meta, payload) in zip(rows, samples):
        assert payload == data.reshape(3, 8, 8).transpose(1, 2, 0).tobytes()  # row-major RGB
        assert meta["row"] == row
    assert [meta["label"] for _, meta, _ in samples] == [0, 4, 2, 999, 1, 6, 7, 8]  # 1-based → 0-based
    assert {meta["synset"] for _, meta, _ in samples} == {None}
    [skip] = manifest(tmp_path / "out")["skipped"]
    assert skip["source"] == str(tmp_path / "train_data_batch_3.npz") and "npz" in skip["reason"]
    assert manifest(tmp_path / "out")["arguments"]["layout"] == "npz"


def test_npz_rows_resized_to_another_size(tmp_path):
    rows = planar_rows(2, 8, seed=3)
    np.savez(tmp_path / "val_data.npz", data=rows, labels=np.array([1, 2]))
    assert convert_image(tmp_path / "val_data.npz", tmp_path / "out", "--size", 4, "--resize", "box") == 0
    for data, (_, meta, payload) in zip(rows, read_dataset(tmp_path / "out")):
        image = Image.fromarray(data.reshape(3, 8, 8).transpose(1, 2, 0))
        assert payload == image.resize((4, 4), Image.Resampling.BOX).tobytes()
        assert meta["height"] == meta["width"] == 4


# ---------------------------------------------------------------------------------------------
# bad inputs


def make_bad_folder(root: Path) -> dict[str, str]:
    """A class folder with one good image and every kind of bad input; returns name → reason."""
    make_image(root / "n01/good.JPEG", "RGB", 30, 30)  # 900 pixels: over --max-pixels 700, a warning
    jpeg = io.BytesIO()
    Image.fromarray(picture(24, 24)).save(jpeg, "JPEG")
    (root / "n01/truncated.JPEG").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    png = io.BytesIO()
    Image.fromarray(picture(16, 16)).save(png, "PNG")
    corrupt = bytearray(png.getvalue())
    data = corrupt.index(b"IDAT") + 10
    corrupt[data: data + 50] = bytes(range(50))  # a valid header, garbage in the compressed pixels
    (root / "n01/corrupt.png").write_bytes(bytes(corrupt))
    (root / "n02").mkdir()
    (root / "n02/notes.txt").write_text("not a picture\n")
    (root / "n02/empty.JPEG").write_bytes(b"")
    make_image(root / "n02/huge.png", "RGB", 40, 40)  # 1600 pixels > 2 × --max-pixels 700: refused
    (root / "README").write_text("class folders below\n")
    make_image(root / ".ipynb_checkpoints/good-checkpoint.png", "RGB", 9, 9)  # hidden: no class
    return {".ipynb_checkpoints/good-checkpoint.png": "not inside a class folder",
            "n01/truncated.JPEG": "broken image", "n01/corrupt.png": "broken image",
            "n02/notes.txt": "not an image", "n02/empty.JPEG": "empty file",
            "n02/huge.png": "decompression bomb", "README": "not inside a class folder"}


def test_bad_inputs_are_skipped_with_reasons(tmp_path):
    expected = make_bad_folder(tmp_path / "train")
    with pytest.warns(Image.DecompressionBombWarning):  # good.JPEG is warned about, not skipped
        assert convert_image(tmp_path / "train", tmp_path / "out", "--size", 8, "--max-pixels", 700) == 0
    [(_, meta, _)] = read_dataset(tmp_path / "out")
    assert (meta["source"], meta["label"]) == (str(tmp_path / "train/n01/good.JPEG"), 0)
    skipped = {Path(s["source"]).relative_to(tmp_path / "train").as_posix(): s["reason"]
               for s in manifest(tmp_path / "out")["skipped"]}
    assert sorted(skipped) == sorted(expected)
    for name, reason in expected.items():
        assert skipped[name].startswith(reason), (name, skipped[name])
    assert manifest(tmp_path / "out")["totals"]["skipped"] == len(expected)


def test_strict_stops_at_the_first_bad_input(tmp_path, capsys):
    make_bad_folder(tmp_path / "train")
    assert convert_image(tmp_path / "train", tmp_path / "out", "--size", 8, "--strict") == 1
    assert "(--strict)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "index.json").exists()


# ---------------------------------------------------------------------------------------------
# workers, parts, kill and resume


def make_many(root: Path, count: int, width: int = 40, height: int = 30) -> None:
    for i in range(count):
        make_image(root / f"n{i % 3:02d}/img{i:04d}.JPEG", "RGB", width + i % 7, height, seed=i)


def test_two_workers_and_parts_give_the_same_dataset(tmp_path):
    make_many(tmp_path / "train", 40)
    flags = ["--size", 8, "--shard-size", "16K"]
    assert convert_image(tmp_path / "train", tmp_path / "one", *flags) == 0
    assert convert_image(tmp_path / "train", tmp_path / "two", *flags, "--workers", 2) == 0
    assert len(shard_bytes(tmp_path / "one")) > 2
    assert shard_bytes(tmp_path / "two") == shard_bytes(tmp_path / "one")

    for part in ("0/2", "1/2"):
        assert convert_image(tmp_path / "train", tmp_path / f"part{part[0]}", *flags, "--part", part) == 0
    assert cli(["convert", "merge", str(tmp_path / "part0"), str(tmp_path / "part1"),
                "--out", str(tmp_path / "merged")]) == 0
    whole = {key: (meta, payload) for key, meta, payload in read_dataset(tmp_path / "one")}
    merged = {key: (meta, payload) for key, meta, payload in read_dataset(tmp_path / "merged")}
    assert merged == whole


def test_kill_and_resume(tmp_path):
    make_many(tmp_path / "train", 300, width=160, height=120)
    run_killed_then_resumed(tmp_path, ["convert", "image", str(tmp_path / "train"), "--size", "16",
                                       "--shard-size", "16K"], killed_flags=["--workers", "2"],
                            after_shards=12)  # 8 shards a task: killed inside the second task


# ---------------------------------------------------------------------------------------------
# rendering


def test_render_grid_shows_the_stored_bytes(tmp_path, capsys):
    make_folder(tmp_path / "train")
    assert convert_image(tmp_path / "train", tmp_path / "out", "--size", SIZE) == 0
    assert cli(["inspect", "render", str(tmp_path / "out"), "--out", str(tmp_path / "grid.png"),
                "--indices", "4,0,7", "--columns", "2", "--scale", "2"]) == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    cell = SIZE * 2 + 2  # scaled tile + padding
    assert grid.shape == (2 * cell + 2, 2 * cell + 2, 3)
    payloads = [payload for _, _, payload in read_dataset(tmp_path / "out")]
    for position, index in enumerate([4, 0, 7]):
        row, column = divmod(position, 2)
        top, left = 2 + row * cell, 2 + column * cell
        tile = grid[top: top + 2 * SIZE: 2, left: left + 2 * SIZE: 2]  # every other pixel: unscaled
        assert np.array_equal(tile, bytes_to_image(payloads[index], SIZE))
    assert (grid[2 + cell:, 2 + cell:] == 255).all()  # the fourth cell stays empty

    assert cli(["inspect", "render", str(tmp_path / "out"), "--out", str(tmp_path / "x.png"),
                "--indices", "99"]) == 2
    assert "no sample at index 99" in capsys.readouterr().err


def test_bytes_to_image_orders():
    image = picture(8, 8)
    raster = image.tobytes()
    assert np.array_equal(bytes_to_image(raster, 8), image)
    scanned = to_patch_order(raster, 8, 48).tobytes()
    assert np.array_equal(bytes_to_image(scanned, 8, order="patch", patch_bytes=48), image)
    assert not np.array_equal(bytes_to_image(scanned, 8), image)
    with pytest.raises(ValueError, match="not a 8×8 RGB image"):
        bytes_to_image(raster[:-1], 8)
    grid = image_grid([image, image, image], padding=1)
    assert grid.size == (2 * 9 + 1, 2 * 9 + 1)
