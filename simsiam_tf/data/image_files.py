"""Checks of image files before anything decodes them: what a folder source leaves out (or stops at), and why.

`check_file` reads at most a file's header (for JPEG, the markers up to the frame
header), never its pixels: an entry that is not a regular file (a directory named like
an image, a FIFO, a broken link or a link loop), an empty file, content of no format
TensorFlow decodes, a header that declares more pixels than a limit (a decompression
bomb: a few KB that declare 30,000 x 30,000 pixels) and a header cut short are caught
here. Files that pass still go through the decoder once (`sources`), which catches
damaged pixel data. `BadFile.message` names the problem and the fix; `SkipReport`
counts what was left out, by reason.
"""

import dataclasses
import errno
import os
import stat
import struct
from concurrent import futures
from typing import Tuple

from simsiam_tf.config.sections import DEFAULT_MAX_IMAGE_PIXELS  # noqa: F401 (image_files.X documents it)

NOT_A_FILE = "not a file"
UNREADABLE = "unreadable"
EMPTY = "empty"
NOT_AN_IMAGE = "not an image"
TOO_LARGE = "too large"
DAMAGED = "truncated or damaged"
REASONS = (DAMAGED, TOO_LARGE, NOT_AN_IMAGE, EMPTY, NOT_A_FILE, UNREADABLE)

FIXES = {
    NOT_A_FILE: "remove or rename it (every name ending in an image extension is read as an image)",
    UNREADABLE: "fix its permissions or remove it",
    EMPTY: "copy it again or remove it",
    NOT_AN_IMAGE: "convert it to PNG or JPEG, or remove it",
    TOO_LARGE: "downscale or remove it, or raise --max_image_pixels (Python: max_image_pixels=...) if it is "
    "genuine and the memory allows",
    DAMAGED: "copy it again or re-encode it, or remove it",
}

_PNG = b"\x89PNG\r\n\x1a\n"
_SIGNATURES = {"PNG": (_PNG,), "JPEG": (b"\xff\xd8\xff",), "GIF": (b"GIF87a", b"GIF89a"), "BMP": (b"BM",)}
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WebP")
# JPEG start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC), which hold the image size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_HEAD = 32


class _Short(Exception):
    """The file ends inside its header."""


class _Bad(Exception):
    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class BadFile:
    """An image file that cannot be used: its path, the reason (one of `REASONS`) and what was found."""

    path: str
    reason: str
    detail: str

    def message(self):
        return f"{self.path}: {self.reason} ({self.detail}); {FIXES[self.reason]}"


def _format_of(head):
    for name, signatures in _SIGNATURES.items():
        if head.startswith(signatures):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    every = [s for signatures in _SIGNATURES.values() for s in signatures] + [b"RIFF"]
    if head and any(s.startswith(head) for s in every):
        raise _Short()
    return None


def _jpeg_size(f):
    """(height, width) from the first start-of-frame marker; the segments before it are skipped, not read."""
    f.seek(2)
    while True:
        byte = f.read(1)
        if not byte:
            raise _Short()
        if byte != b"\xff":
            continue  # stray bytes before a marker: libjpeg skips them with a warning, and so does this
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            raise _Short()
        m = marker[0]
        if m == 0x01 or 0xD0 <= m <= 0xD8:
            continue  # markers without a length
        if m in (0xD9, 0xDA):
            raise _Bad(DAMAGED, "no JPEG frame header before the image data")
        length = f.read(2)
        if len(length) < 2:
            raise _Short()
        (n,) = struct.unpack(">H", length)
        if m in _SOF:
            frame = f.read(5)
            if len(frame) < 5:
                raise _Short()
            _, height, width = struct.unpack(">BHH", frame)
            return height, width
        if n < 2:
            raise _Bad(DAMAGED, f"a JPEG segment of length {n}")
        f.seek(n - 2, os.SEEK_CUR)


def _size(fmt, head, f):
    """(height, width) that the header of a file of format `fmt` declares."""
    if fmt == "JPEG":
        return _jpeg_size(f)
    need = {"PNG": 24, "GIF": 10, "BMP": 26, "WebP": 30}[fmt]
    if len(head) < need:
        raise _Short()
    if fmt == "PNG":
        if head[12:16] != b"IHDR":
            raise _Bad(DAMAGED, "the PNG does not start with its IHDR header")
        width, height = struct.unpack(">II", head[16:24])
    elif fmt == "GIF":
        width, height = struct.unpack("<HH", head[6:10])
    elif fmt == "BMP":
        if struct.unpack("<I", head[14:18])[0] == 12:  # the OS/2 header: 16-bit sizes
            width, height = struct.unpack("<HH", head[18:22])
        else:
            width, height = (abs(v) for v in struct.unpack("<ii", head[18:26]))
    else:
        chunk = head[12:16]
        if chunk == b"VP8X":
            width = 1 + int.from_bytes(head[24:27], "little")
            height = 1 + int.from_bytes(head[27:30], "little")
        elif chunk == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        elif chunk == b"VP8 ":
            width, height = (v & 0x3FFF for v in struct.unpack("<HH", head[26:30]))
        else:
            raise _Bad(DAMAGED, f"an unknown WebP chunk {chunk!r}")
    return height, width


def _not_a_file(path):
    """What `path` is when it is no regular file (a directory, a FIFO, a loop...), else None."""
    try:
        mode = os.stat(path).st_mode  # follows links
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link loop"
        return "a broken symbolic link" if os.path.islink(path) else f"cannot be examined: {err.strerror}"
    if stat.S_ISDIR(mode):
        return "a directory"
    return None if stat.S_ISREG(mode) else "a FIFO, socket or device"


def check_file(path, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """A `BadFile` when `path` cannot be a usable image, judged from its header alone; None when it may be.

    Never blocks on a FIFO (nothing that is not a regular file is opened) and never
    reads pixel data, so a decompression bomb costs a few bytes of reading.
    """
    what = _not_a_file(path)
    if what is not None:
        return BadFile(path, NOT_A_FILE, what)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
            if not head:
                return BadFile(path, EMPTY, "0 bytes")
            fmt = _format_of(head)
            if fmt is None:
                return BadFile(
                    path, NOT_AN_IMAGE, f"its content is none of {', '.join(FORMATS)} (first bytes {head[:8]!r})"
                )
            height, width = _size(fmt, head, f)
    except _Short:
        return BadFile(path, DAMAGED, "the file ends inside its header")
    except _Bad as bad:
        return BadFile(path, bad.reason, bad.detail)
    except OSError as err:
        return BadFile(path, UNREADABLE, err.strerror or str(err))
    if height * width > max_pixels:
        return BadFile(
            path,
            TOO_LARGE,
            f"a {fmt} that declares {width:,} x {height:,} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (a decompression bomb, or a very large scan)",
        )
    if height == 0 or width == 0:
        return BadFile(path, DAMAGED, f"a {fmt} header that declares {width} x {height} pixels")
    return None


def check_files(paths, max_pixels=DEFAULT_MAX_IMAGE_PIXELS, stop_at_first=False, threads=16):
    """The `BadFile`s among `paths`, in their order (`check_file` on each, on `threads` threads: the
    work is waiting for the disk). `stop_at_first`: return as soon as the first is known."""
    bad = []
    with futures.ThreadPoolExecutor(threads) as pool:
        for found in pool.map(lambda p: check_file(p, max_pixels), paths):
            if found is not None:
                bad.append(found)
                if stop_at_first:
                    pool.shutdown(wait=False, cancel_futures=True)
                    break
    return bad


@dataclasses.dataclass(frozen=True)
class SkipReport:
    """What a folder source left out: `bad` among `total` files listed."""

    total: int
    bad: Tuple[BadFile, ...]
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def counts(self):
        """{reason: number of files}, in the order of `REASONS`, reasons that occur only."""
        return {r: n for r in REASONS if (n := sum(b.reason == r for b in self.bad))}

    def summary(self):
        """E.g. "skipped 3 of 220 files: 2 truncated or damaged, 1 too large (> 250,000,000 pixels)"."""
        parts = [
            f"{n} {reason}" + (f" (> {self.max_pixels:,} pixels)" if reason == TOO_LARGE else "")
            for reason, n in self.counts().items()
        ]
        return f"skipped {len(self.bad)} of {self.total} files" + (": " + ", ".join(parts) if parts else "")

    def describe(self):
        """What metrics.json records: the counts per reason and the number of files listed."""
        return {"files_listed": self.total, "files_skipped": len(self.bad), "skipped_by_reason": self.counts()}


def skipped_entry(**sources):
    """{"skipped_files": {name: `SkipReport.describe()`}} of the named `Source`s that left files out, or {}."""
    entry = {
        name: source.skipped.describe()
        for name, source in sources.items()
        if source is not None and getattr(source, "skipped", None) is not None and source.skipped.bad
    }
    return {"skipped_files": entry} if entry else {}
