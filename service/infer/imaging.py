"""Image decoding for the /infer path, with the checks that must come before the decoder.

The format is taken from the bytes (not the client's content type) and the dimensions are read
from the header, so a 30000×30000 PNG of a few kilobytes is refused before it can expand into
gigabytes (a decompression bomb). A large JPEG is decoded reduced (libjpeg scales by 1/2, 1/4 or
1/8 while decoding), since faces are detected on a copy of at most ``api.detect_max_side`` a side
anyway; and the pixels that requests hold decoded are bounded across all of them together.

A JPEG's cost is more than its pixels. A progressive one is decoded scan by scan into a buffer of
16-bit coefficients for the whole image, whatever the reduction, and each scan passes over it again:
a 497 KB file that repeats its last scan 400 times held a core for 10 s, and nothing can interrupt
libjpeg once it runs. So the markers are read first: the scans are counted (at most
``MAX_JPEG_SCANS``) and a progressive JPEG is charged its full coefficient buffer against the budget.
"""

from __future__ import annotations

import contextlib
import math
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np


class ImageProblem(Enum):
    """Why an image is refused. The HTTP answer to each is chosen at the API edge (service/api/errors.py)."""

    UNSUPPORTED_FORMAT = "unsupported_format"
    """Its bytes are not a JPEG, PNG or WebP, whatever the request said they were."""
    INVALID = "invalid"
    """Corrupt or truncated, or it decodes to other than what its header says."""
    TOO_LARGE = "too_large"
    """Over the size limits, or more decoded pixels than the service holds at once."""


class ImageError(Exception):
    """An image the service will not analyse: ``kind`` says why, the message says what was found."""

    def __init__(self, kind: ImageProblem, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    progressive: bool = False
    scans: int = 1
    samples: int = 0
    """A JPEG's component samples, after chroma subsampling: 1.5 a pixel at 4:2:0, 3 at 4:4:4."""


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Every frame type that libjpeg decodes scan by scan into whole-image coefficient buffers.
_PROGRESSIVE_SOF = {0xC2, 0xC6, 0xCA, 0xCE}
# libjpeg's own progressive script writes 10 scans for colour (6 for grey); 32 leaves room for
# other encoders and an EXIF thumbnail's scan, while a file of hundreds of scans is refused.
MAX_JPEG_SCANS = 32
_SOS = b"\xff\xda"


def sniff_format(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _corrupt(fmt: str, why: str) -> ImageError:
    return ImageError(ImageProblem.INVALID, f"the {fmt.upper()} data is corrupt or truncated: {why}")


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int]:
    """Width, height, frame marker and component samples (ITU T.81, B.2.2) of the first frame header."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise _corrupt("jpeg", "bad marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise _corrupt("jpeg", "bad segment length")
        if marker in _SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            count = data[i + 9] if i + 9 < n else 0
            factors = [(b >> 4, b & 0x0F) for b in data[i + 11 : i + 11 + 3 * count : 3]]
            if not factors or len(factors) < count or not all(h and v for h, v in factors):
                raise _corrupt("jpeg", "bad frame header")
            h_max, v_max = max(h for h, _ in factors), max(v for _, v in factors)
            samples = sum(math.ceil(width * h / h_max) * math.ceil(height * v / v_max) for h, v in factors)
            return width, height, marker, samples
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise _corrupt("jpeg", "no frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    # The RIFF size and the first chunk's must fit in what arrived, as a PNG's chunks must.
    (riff,) = struct.unpack("<I", data[4:8])
    if riff + 8 > len(data) or riff < 4:
        raise _corrupt("webp", f"the RIFF header claims {riff} bytes, more than the data holds")
    if len(data) >= 20 and struct.unpack("<I", data[16:20])[0] + 20 > len(data):
        raise _corrupt("webp", "its first chunk claims more bytes than the data holds")
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, h
    if chunk == b"VP8X" and len(data) >= 30:
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    raise _corrupt("webp", "unknown or short header")


def _check_png_chunks(data: bytes) -> None:
    """The whole chunk structure, before any decoder sees the bytes.

    A decoder trusts each chunk's length field and may allocate that much before it finds the data
    missing: OpenCV took 1.7 GB for a 67-byte PNG whose IDAT claimed 0x6a00000c bytes. So every
    length must fit in what arrived, every CRC must match (PNG specification, section 5.3), and the
    chunks must run from IHDR to IEND.
    """
    i, n = 8, len(data)
    kind = b""
    while i < n and kind != b"IEND":
        if i + 12 > n:
            raise _corrupt("png", "a chunk is cut short")
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        end = i + 12 + length
        if length > 0x7FFFFFFF or end > n:
            raise _corrupt("png", f"a chunk claims {length} bytes, more than the data holds")
        if not kind.isalpha():
            raise _corrupt("png", "a chunk type is not four letters")
        if zlib.crc32(data[i + 4 : end - 4]) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise _corrupt("png", f"the {kind.decode()} chunk fails its CRC")
        i = end
    if kind != b"IEND":
        raise _corrupt("png", "no IEND chunk")


def read_header(data: bytes) -> ImageHeader:
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(ImageProblem.UNSUPPORTED_FORMAT, "the data is not a JPEG, PNG or WebP image")
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise _corrupt("png", "no IHDR header")
        width, height = struct.unpack(">II", data[16:24])
    elif fmt == "jpeg":
        width, height, frame, samples = _jpeg_frame(data)
        # Entropy-coded data stuffs every 0xFF with 0x00, so FF DA is a scan header wherever it occurs
        # (or one in an embedded thumbnail, which is counted too): a count, not a walk of the scans.
        scans = data.count(_SOS)
        if width > 0 and height > 0:
            return ImageHeader(fmt, width, height, frame in _PROGRESSIVE_SOF, scans, samples)
    else:
        width, height = _webp_size(data)
    if width <= 0 or height <= 0:
        raise _corrupt(fmt, "zero dimension")
    return ImageHeader(fmt, width, height)


def check_complete(fmt: str, data: bytes) -> None:
    """libjpeg pads a truncated JPEG with grey and returns it; we refuse it instead. A PNG's chunks
    must all be whole and intact (see `_check_png_chunks`)."""
    if fmt == "jpeg" and b"\xff\xd9" not in data[-64:]:
        raise _corrupt("jpeg", "no end-of-image marker")
    if fmt == "png":
        _check_png_chunks(data)


_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def reduction_for(header: ImageHeader, want_side: int) -> int:
    """The largest of 1, 2, 4 or 8 that keeps the decoded image's long side at least ``want_side``.

    libjpeg decodes at 1/2, 1/4 or 1/8 scale in its IDCT, several times faster than a full decode
    followed by a resize; a photo from a phone needs only the pixels that detection looks at."""
    long_side = max(header.width, header.height)
    factor = 1
    while factor < 8 and long_side // (factor * 2) >= want_side:
        factor *= 2
    return factor


@dataclass(frozen=True)
class DecodePlan:
    header: ImageHeader
    reduction: int

    @property
    def width(self) -> int:
        return math.ceil(self.header.width / self.reduction)

    @property
    def height(self) -> int:
        return math.ceil(self.header.height / self.reduction)

    @property
    def pixels(self) -> int:
        """What the decode holds, in decoded (3-byte) pixels: its output, or for a progressive JPEG the
        whole image's 2-byte coefficients, which libjpeg keeps while it decodes: as many as its pixels
        at 4:2:0, twice as many at 4:4:4, at any reduction."""
        out = self.width * self.height
        return max(out, math.ceil(2 * self.header.samples / 3)) if self.header.progressive else out


def plan_decode(data: bytes, *, max_pixels: int, max_side: int, want_side: int | None = None) -> DecodePlan:
    """The format, size and completeness checks, and the JPEG reduction that keeps the long side at
    least ``want_side`` (see `reduction_for`). PNG and WebP have no reduced decode in OpenCV (a
    reduced flag decodes them in full, then resizes), so they are planned, and counted, in full."""
    header = read_header(data)
    if header.width > max_side or header.height > max_side or header.width * header.height > max_pixels:
        raise ImageError(
            ImageProblem.TOO_LARGE,
            f"{header.width}x{header.height} exceeds the limit of {max_pixels} pixels or {max_side} per side",
        )
    if header.scans > MAX_JPEG_SCANS:
        raise ImageError(
            ImageProblem.TOO_LARGE, f"a JPEG of {header.scans} scans; at most {MAX_JPEG_SCANS} are decoded"
        )
    check_complete(header.format, data)
    reduction = reduction_for(header, want_side) if want_side and header.format == "jpeg" else 1
    return DecodePlan(header, reduction)


def decode_planned(data: bytes, plan: DecodePlan) -> np.ndarray:
    """BGR pixels of ``plan.width``×``plan.height`` (or that transposed: the decoder honours EXIF)."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED[plan.reduction])
    fmt = plan.header.format
    if image is None:
        raise _corrupt(fmt, "the decoder rejected it")
    if {image.shape[1], image.shape[0]} != {plan.width, plan.height}:
        raise _corrupt(fmt, "decoded size differs from the header")
    return image


def decode_image(
    data: bytes, *, max_pixels: int, max_side: int, want_side: int | None = None
) -> tuple[np.ndarray, ImageHeader, int]:
    """BGR pixels after the format, size and completeness checks, and the factor they were reduced
    by: with ``want_side``, a large JPEG is decoded at 1/2, 1/4 or 1/8 (see `reduction_for`)."""
    plan = plan_decode(data, max_pixels=max_pixels, max_side=max_side, want_side=want_side)
    return decode_planned(data, plan), plan.header, plan.reduction


class PixelBudget:
    """Decoded pixels that all requests together may hold; a request waits until its share is free."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        if pixels > self.capacity:
            raise ValueError(f"{pixels} pixels exceed the whole budget of {self.capacity}")
        with self._cond:
            self._cond.wait_for(lambda: self._used + pixels <= self.capacity)
            self._used += pixels
        try:
            yield
        finally:
            with self._cond:
                self._used -= pixels
                self._cond.notify_all()
