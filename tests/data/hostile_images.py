"""A generator of hostile image folders: class folders of good PNG/JPEG images mixed with every kind of
file a folder from the wild holds (truncated, bit-flipped, empty, mislabelled, a decompression bomb,
unusual but valid formats, a directory named like an image, links that loop or point nowhere, a FIFO).

`make_hostile_folder(root, ...)` writes one and returns a `HostileFolder` that records, for each entry,
its kind, and the outcome the kind calls for, which the tests hold the folder tools to:

- `SKIPPED[kind]`: the reason a tool must give for leaving the file out;
- `DECODED` kinds: valid images that must be decoded, to `expected[path]` (uint8 RGB, read with PIL or
  built with NumPy here), within `tolerance[path]` (JPEG decoders differ by a few levels);
- `IGNORED` kinds: entries no tool may list (a directory link that loops: a walk must not follow it).

Usable from bench scripts too (`copies` repeats every bad kind, e.g. to make a thousand bad files).
"""

import dataclasses
import io
import os
import struct
import zlib
from typing import Dict

import numpy as np
from PIL import Image

# The reasons are written out here, not imported, so that the tests check the code against them.
SKIPPED = {
    "truncated_png": "truncated or damaged",
    "truncated_jpeg": "truncated or damaged",
    "bit_flip_png": "truncated or damaged",
    "empty": "empty",
    "zeroed": "not an image",
    "text_named_png": "not an image",
    "bomb_png": "too large",
    "bomb_jpeg": "too large",
    "directory": "not a file",
    "symlink_loop": "not a file",
    "broken_symlink": "not a file",
    "fifo": "not a file",
}
DECODED = (
    "wrong_extension",
    "cmyk_jpeg",
    "png16",
    "palette_alpha",
    "gray_alpha",
    "animated_gif",
    "exif_rotated",
    "bmp",
    "webp_lossless",
    "webp_lossy",
)
IGNORED = ("directory_link_loop",)
KINDS = tuple(SKIPPED) + DECODED + IGNORED
BOMB_SIDE = 30_000


@dataclasses.dataclass
class HostileFolder:
    root: str
    kinds: Dict[str, str] = dataclasses.field(default_factory=dict)  # path -> kind ("good" for good images)
    expected: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # decoded kinds and good images
    tolerance: Dict[str, float] = dataclasses.field(default_factory=dict)  # max mean |difference| allowed

    def paths(self, *kinds):
        return sorted(p for p, k in self.kinds.items() if k in kinds)

    @property
    def listed(self):
        """Every entry a folder tool must consider (all but the ignored ones)."""
        return sorted(p for p, k in self.kinds.items() if k not in IGNORED)

    def skipped_counts(self):
        """{reason: count} of the bad entries."""
        counts = {}
        for kind in self.kinds.values():
            if kind in SKIPPED:
                counts[SKIPPED[kind]] = counts.get(SKIPPED[kind], 0) + 1
        return counts


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(width, height, bit_depth, colour_type, rows):
    """A PNG written by hand: `rows` is the raw scanline data (each row led by its filter byte)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b"")
    )


def bomb_png(side=BOMB_SIDE):
    """A few KB that declare `side` x `side` RGB pixels: the header and the first rows of zeros."""
    return png_bytes(side, side, 8, 2, (b"\x00" * (3 * side + 1)) * 4)


def bomb_jpeg(side=65_000):
    """A small JPEG whose frame header is rewritten to declare `side` x `side` pixels."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (128, 64, 32)), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _flip_bits(data, rng, start, stop, count=4):
    data = bytearray(data)
    for position in rng.integers(start, stop, count):
        data[position] ^= 1 << int(rng.integers(8))
    return bytes(data)


def _make_bad(folder, kind, index, rng, size):
    """Writes one entry of a SKIPPED or IGNORED kind; returns its path."""
    name = os.path.join(folder, f"{kind}_{index}")
    noise = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    if kind in ("truncated_png", "truncated_jpeg"):
        data = encode(noise, "PNG" if kind == "truncated_png" else "JPEG")
        # A random byte before the trailer: a file that lacks only its end marker still decodes whole.
        path = name + (".png" if kind == "truncated_png" else ".jpg")
        _write(path, data[: int(rng.integers(1, len(data) - 20))])
    elif kind == "bit_flip_png":
        data = encode(noise, "PNG")
        start = data.index(b"IDAT") + 4  # the compressed pixels, which the chunk's CRC covers
        stop = start + struct.unpack(">I", data[start - 8 : start - 4])[0]
        path = name + ".png"
        _write(path, _flip_bits(data, rng, start, stop))
    elif kind == "empty":
        path = name + ".jpg"
        _write(path, b"")
    elif kind == "zeroed":
        path = name + ".png"
        _write(path, bytes(len(encode(noise, "PNG"))))  # a block of zeros where a file's bytes were
    elif kind == "text_named_png":
        path = name + ".png"
        _write(path, b"<html><body>404 Not Found</body></html>\n")
    elif kind == "bomb_png":
        path = name + ".png"
        _write(path, bomb_png())
    elif kind == "bomb_jpeg":
        path = name + ".jpg"
        _write(path, bomb_jpeg())
    elif kind == "directory":
        path = name + ".png"
        os.mkdir(path)
    elif kind == "symlink_loop":
        path = name + ".jpg"
        os.symlink(os.path.basename(path), path)
    elif kind == "broken_symlink":
        path = name + ".png"
        os.symlink("no_such_file.png", path)
    elif kind == "fifo":
        path = name + ".png"
        os.mkfifo(path)
    elif kind == "directory_link_loop":
        path = name
        os.symlink(".", path)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return path


def _make_decoded(folder, kind, index, rng, size):
    """Writes one valid but unusual image; returns (path, expected uint8 RGB, tolerance)."""
    name = os.path.join(folder, f"{kind}_{index}")
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    if kind == "wrong_extension":  # a PNG named .jpg: the decoders read the content, not the name
        path = name + ".jpg"
        _write(path, encode(Image.fromarray(pixels), "PNG"))
        return path, pixels, 0.0
    if kind == "cmyk_jpeg":
        # Flat colours (black ink 0) so that the JPEG's loss stays small: four quadrants.
        cmyk = np.zeros((size, size, 4), np.uint8)
        half = size // 2
        cmyk[:half, :half, :3] = (0, 255, 255)  # red
        cmyk[:half, half:, :3] = (255, 0, 255)  # green
        cmyk[half:, :half, :3] = (255, 255, 0)  # blue
        path = name + ".jpg"
        _write(path, encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95))
        return path, 255 - cmyk[..., :3], 4.0
    if kind == "png16":
        wide = rng.integers(0, 65536, (size, size, 3)).astype(">u2")
        rows = b"".join(b"\x00" + row.tobytes() for row in wide)
        path = name + ".png"
        _write(path, png_bytes(size, size, 16, 2, rows))
        return path, (wide.astype(np.uint32) >> 8).astype(np.uint8), 0.5  # 8 bits: the high byte (or rounded)
    if kind == "palette_alpha":
        palette_image = Image.fromarray(pixels).quantize(16)
        alpha = bytes([0, 128] + [255] * 14)
        path = name + ".png"
        _write(path, encode(palette_image, "PNG", transparency=alpha))
        return path, np.asarray(palette_image.convert("RGB")), 0.0  # the colours, alpha dropped
    if kind == "gray_alpha":
        gray_alpha = rng.integers(0, 256, (size, size, 2), dtype=np.uint8)
        path = name + ".png"
        _write(path, encode(Image.fromarray(gray_alpha, "LA"), "PNG"))
        return path, np.repeat(gray_alpha[..., :1], 3, axis=-1), 0.0
    if kind == "animated_gif":
        colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
        frames = [Image.new("RGB", (size, size), c) for c in colours]
        path = name + ".gif"
        _write(path, encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0))
        return path, np.broadcast_to(np.uint8(colours[0]), (size, size, 3)).copy(), 0.0  # the first frame
    if kind == "exif_rotated":
        # Wider than tall, with orientation 6 (rotate 90 degrees to display): the pixels come as stored.
        wide = Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8))
        exif = Image.Exif()
        exif[0x0112] = 6
        data = encode(wide, "JPEG", quality=95, exif=exif.tobytes())
        path = name + ".jpg"
        _write(path, data)
        return path, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), 4.0
    if kind in ("webp_lossless", "webp_lossy"):
        lossless = kind == "webp_lossless"
        data = encode(Image.fromarray(pixels), "WEBP", lossless=lossless, quality=90)
        path = name + ".webp"
        _write(path, data)
        return path, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), 0.0 if lossless else 4.0
    if kind == "bmp":
        path = name + ".bmp"
        _write(path, encode(Image.fromarray(pixels), "BMP"))
        return path, pixels, 0.0
    raise ValueError(f"unknown kind {kind!r}")


def make_hostile_folder(root, classes=("ants", "bees"), good_per_class=4, kinds=KINDS, copies=1, seed=0, size=20):
    """Writes class folders of good images (PNG and JPEG in turn) and `copies` of every kind in `kinds`,
    spread over the classes in turn; returns the `HostileFolder`."""
    rng = np.random.default_rng(seed)
    folder = HostileFolder(os.path.abspath(root))
    class_dirs = [os.path.join(folder.root, c) for c in classes]
    for d in class_dirs:
        os.makedirs(d, exist_ok=True)
        for i in range(good_per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            fmt, ext = ("PNG", ".png") if i % 2 == 0 else ("JPEG", ".jpg")
            data = encode(Image.fromarray(pixels), fmt, quality=95)
            path = os.path.join(d, f"good_{i}{ext}")
            _write(path, data)
            folder.kinds[path] = "good"
            folder.expected[path] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            folder.tolerance[path] = 0.0 if fmt == "PNG" else 4.0
    turn = 0
    for copy in range(copies):
        for kind in kinds:
            target = class_dirs[turn % len(class_dirs)]
            turn += 1
            if kind in DECODED:
                path, expected, tolerance = _make_decoded(target, kind, copy, rng, size)
                folder.expected[path] = expected
                folder.tolerance[path] = tolerance
            else:
                path = _make_bad(target, kind, copy, rng, size)
            folder.kinds[path] = kind
    return folder
