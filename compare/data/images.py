"""The image corpora: photographs cut into tiles, stored at 32×32 (photos32), 64×64 (photos64) or
640×640 (photos640, the paper's largest images: 1,228,800 bytes each)."""

from functools import partial
from pathlib import Path

from compare.data.corpus import Corpus, held_out
from pipeline.convert.image import ImageSettings, build_image_converter

HELD_OUT_EVERY = 12  # every 12th photo (1 of 12), its tiles at the first scale
# (295 KB at either size: scoring every byte of the set stays within a minute for each model on a CPU)
SHORT_SIDES = (512, 768)  # each photo is cut at these two scales…
TILE_SCALE = 2  # …into non-overlapping tiles of twice the stored side, which the converter boxes down
# photos640: tiles of 640 stored as cut (scale 1), from each photo scaled to a short side of 640 (one
# tile) and of 1280 (four or six; the photos' own short sides are 1,024 to 1,920 px, so a few are
# scaled up a little)
SHORT_SIDES_640 = (640, 1280)


def cut_tiles(photo: Path, folder: Path, short_sides: tuple[int, ...], tile: int) -> None:
    """One photo → non-overlapping tile×tile PNG tiles, scaled to each of short_sides."""
    from PIL import Image

    with Image.open(photo) as image:
        image = image.convert("RGB")
        for short_side in short_sides:
            scale = short_side / min(image.size)
            width, height = round(image.width * scale), round(image.height * scale)
            scaled = image.resize((width, height), Image.Resampling.LANCZOS)
            for top in range(0, height - tile + 1, tile):
                for left in range(0, width - tile + 1, tile):
                    cut = scaled.crop((left, top, left + tile, top + tile))
                    cut.save(folder / f"{photo.stem}-s{short_side}-y{top:04d}-x{left:04d}.png")


def photo_documents(trees: dict[str, Path], staging: Path, image_size: int,
                    short_sides: tuple[int, ...] = SHORT_SIDES, tile_scale: int = TILE_SCALE):
    """The 12 nature photographs of mate-backgrounds as image_size² tiles; validation: whole photos
    (their tiles at the first scale). A tile covers tile_scale·image_size pixels of the scaled photo,
    so photos64's tiles show four times the area of photos32's: there are a quarter as many, with
    the same bytes in all."""
    tile = tile_scale * image_size
    photos = sorted((trees["mate-backgrounds"] / "usr/share/backgrounds/mate/nature").glob("*.jpg"))
    train_photos, val_photos = held_out(photos, HELD_OUT_EVERY)
    splits = []
    for split, chosen, sides in [("train", train_photos, short_sides), ("val", val_photos, short_sides[:1])]:
        folder = staging / split
        folder.mkdir()
        for photo in chosen:
            cut_tiles(photo, folder, sides, tile)
        splits.append(folder)
    settings = ImageSettings(image_size, resize="box")
    converter, train, _ = build_image_converter([str(splits[0])], settings, layout="flat")
    _, val, _ = build_image_converter([str(splits[1])], settings, layout="flat")
    arguments = {"modality": "image", "size": image_size, "resize": "box", "tile": tile,
                 "short_sides": list(short_sides), "val_short_sides": list(short_sides[:1]),
                 "val_photos": [p.name for p in val_photos]}
    return train, val, converter, arguments


PHOTOS32 = Corpus("photos32", ("mate-backgrounds",), partial(photo_documents, image_size=32))
PHOTOS64 = Corpus("photos64", ("mate-backgrounds",), partial(photo_documents, image_size=64))
PHOTOS640 = Corpus("photos640", ("mate-backgrounds",),
                   partial(photo_documents, image_size=640, short_sides=SHORT_SIDES_640, tile_scale=1))
