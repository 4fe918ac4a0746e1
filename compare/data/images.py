"""The image corpus: photographs cut into tiles, stored at 32×32."""

from pathlib import Path

from compare.data.corpus import Corpus, held_out
from pipeline.convert.image import ImageSettings, build_image_converter

HELD_OUT_EVERY = 12  # every 12th photo (1 of 12), its tiles at the first scale
# (344 KB: scoring every byte of the set stays within a minute for each model on a CPU)
SHORT_SIDES = (512, 768)  # each photo is cut at these two scales…
TILE = 64  # …into non-overlapping TILE×TILE tiles, which the converter boxes down to IMAGE_SIZE
IMAGE_SIZE = 32


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
    train_photos, val_photos = held_out(photos, HELD_OUT_EVERY)
    splits = []
    for split, chosen, sides in [("train", train_photos, SHORT_SIDES), ("val", val_photos, SHORT_SIDES[:1])]:
        folder = staging / split
        folder.mkdir()
        for photo in chosen:
            cut_tiles(photo, folder, sides)
        splits.append(folder)
    settings = ImageSettings(IMAGE_SIZE, resize="box")
    converter, train, _ = build_image_converter([str(splits[0])], settings, layout="flat")
    _, val, _ = build_image_converter([str(splits[1])], settings, layout="flat")
    arguments = {"modality": "image", "size": IMAGE_SIZE, "resize": "box", "tile": TILE,
                 "short_sides": list(SHORT_SIDES), "val_short_sides": list(SHORT_SIDES[:1]),
                 "val_photos": [p.name for p in val_photos]}
    return train, val, converter, arguments


PHOTOS32 = Corpus("photos32", ("mate-backgrounds",), photo_documents)
