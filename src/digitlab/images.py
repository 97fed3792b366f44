"""Reading a picture a person hands over: any file Pillow opens, a PIL image or an array.

Everything ends up as two float maps in [0, 1]: the grey level (0 black, 1 white) and, where
the picture has a meaningful alpha channel, its opacity. The orientation stored in EXIF is
applied first (`ImageOps.exif_transpose`), so the picture is upright as a viewer shows it.
16-bit, 32-bit and float pictures are scaled by their own range (a few outlying pixels, a
scanner's hot pixel, left out of it), never clipped at 255.

Every failure is an `ImageError` whose message names the file and says what is wrong.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from digitlab.errors import ImageError

# Limits that still take any phone's photo (48-50 MP, 8,000 x 6,000 and more, 10-30 MB) and
# a 600-dpi page scan, but refuse a decompression bomb before it is decoded (Pillow's own
# error comes at 179 MP) and a file that is surely not one picture before it is opened.
MAX_PIXELS = 12_000 * 12_000
MAX_BYTES = 100 * 2**20
# A bigger picture is box-averaged down by a whole factor on reading (JPEGs decoded at that
# scale directly): the digit finder works at 512 px and crops at most this much from it, and
# a 48 MP photo as float maps would be 1.2 GB.
READ_MAX_SIDE = 4096
MIN_SIDE = 8  # below this there is no digit to find (MNIST itself is 28x28)

# ITU-R 601 luma, the weights Pillow's own convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class Picture:
    """A picture as float maps: `grey` (H, W) float64 in [0, 1], 1 = white; `alpha` (H, W)
    float64 in [0, 1] or None when every pixel is opaque; where it came from and its mode."""

    grey: np.ndarray
    alpha: np.ndarray | None
    name: str
    mode: str
    rotated: bool = False  # an EXIF orientation tag turned it
    rgb: np.ndarray | None = None  # (H, W, 3) float64 in [0, 1] for colour pictures
    scale: float = 1.0  # the file's long side over these maps' (> 1: read reduced)
    frames: int = 1  # an animation's frames or a TIFF's pages; only the first is read


def read_picture(
    source, *, name: str | None = None, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES
) -> Picture:
    """Read a path, raw bytes, a PIL image or an array (H, W), (H, W, 3|4) as a `Picture`.

    Arrays: uint8 is 0..255; other integer types are scaled by their range (a 16-bit scan
    keeps its contrast); float arrays in [0, 1] are taken as they are, other floats are scaled
    by their range. Raises `ImageError` naming `name` (default: the path) for a file that is
    missing, not an image, truncated, over `max_bytes`/`max_pixels`, or under 8 pixels a side.
    """
    if isinstance(source, Picture):
        return source
    if isinstance(source, memoryview):
        source = source.tobytes()
    elif hasattr(source, "read") and not isinstance(source, Image.Image):
        source = _read_stream(source, name, max_bytes)  # an open file, io.BytesIO
    if isinstance(source, (str, Path, bytes, bytearray)) or hasattr(source, "__fspath__"):
        return _read_file(source, name, max_pixels, max_bytes)
    name = name or "the image"
    if isinstance(source, Image.Image):
        _check_size(name, source.width, source.height, max_pixels)
        try:
            return _from_pil(source, name)
        # ValueError: a closed image, a mode Pillow cannot convert; OSError: an image opened
        # but not yet loaded whose data Pillow cannot decode (an EPS without Ghostscript).
        except (ValueError, OSError) as exc:
            why = _needs_outside_help(source)
            if why:
                raise ImageError(f"{name}: {why}") from exc
            raise ImageError(f"{name}: Pillow cannot read this image ({exc})") from exc
    if source is None or np.isscalar(source):
        raise ImageError(
            f"{name}: expected a picture (a path, bytes, an open file, a PIL image or an "
            f"array), got {type(source).__name__}"
        )
    arr = np.asarray(source)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{name}: expected an image array (H, W) or (H, W, 3|4), got {arr.shape}")
    # The dtype before the size: a 1x1 array of text was called "too small" when no size
    # would have made it a picture. Only booleans, integers and floats are pixels (NumPy
    # counts timedelta64 as an integer type; strings, bytes, objects, datetimes, complex and
    # structured dtypes are not numbers to read either).
    if arr.dtype.kind not in "biuf":
        raise ImageError(f"{name}: pixels must be real numbers, got dtype {arr.dtype}")
    _check_size(name, arr.shape[1], arr.shape[0], max_pixels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    long_side = max(arr.shape[:2])
    arr = _reduced_array(arr, _reduction(arr.shape[1], arr.shape[0]))
    alpha = rgb = None
    if arr.ndim == 3 and arr.shape[2] == 4:
        # Opacity by 255 even when it is only 0 and 1 (nearly transparent, not a mask).
        alpha = (
            arr[..., 3] / 255.0 if arr.dtype == np.uint8 else _unit(arr[..., 3], arr.dtype, name)
        )
        arr = arr[..., :3]
    grey = _unit(arr, arr.dtype, name)
    if grey.ndim == 3:
        rgb = np.clip(grey, 0, 1)
        grey = rgb @ _LUMA
    scale = long_side / max(grey.shape)
    mode = f"array {arr.dtype}"
    return Picture(np.clip(grey, 0, 1), _meaningful(alpha), name, mode, rgb=rgb, scale=scale)


def _unit(arr: np.ndarray, dtype, name: str) -> np.ndarray:
    """Pixels as floats in [0, 1]: uint8 by 255 (a 0/1 mask as it is), floats in [0, 1] as
    they are, other types by their own range. That range is the bulk's (0.1 to 99.9
    percentile) widened by its own width on each side, so a hot pixel (65535 in a scan of
    500..3000, one 1e30 in a float picture) is clipped instead of squeezing the whole picture
    into 4% of the range (it then read as blank); the ink of a tiny digit keeps at least the
    bulk's width of contrast. Raises ImageError for NaN or infinite values."""
    if dtype == np.uint8:
        # A 0/1 mask (a segmentation or thresholding export) is paper and ink, not a black
        # picture: by 255 it read as blank. One float array made, not two: a fresh page of
        # memory is slow to touch (a 1600 x 1500 RGB page took 0.4 s in two copies here).
        if arr.size and arr.max() == 1:
            return arr.astype(np.float64)
        return np.divide(arr, 255.0, dtype=np.float64)
    a = arr.astype(np.float64)
    if np.issubdtype(dtype, np.floating) and not np.isfinite(a).all():
        raise ImageError(f"{name}: the image holds NaN or infinite values")
    if np.issubdtype(dtype, np.floating) and a.size and a.min() >= 0 and a.max() <= 1:
        return a
    if not a.size:
        return a
    p_lo, p_hi = (float(v) for v in np.percentile(a, [0.1, 99.9]))
    spread = p_hi - p_lo
    lo, hi = max(float(a.min()), p_lo - spread), min(float(a.max()), p_hi + spread)
    return np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)


def _check_size(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        side = int(max_pixels**0.5)
        raise ImageError(
            f"{name}: the image is too large ({width}x{height} pixels; at most {side}x{side})"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"{name}: the image is too small ({width}x{height} pixels; a digit needs at least "
            f"{MIN_SIDE}x{MIN_SIDE})"
        )


def _read_file(source, name: str | None, max_pixels: int, max_bytes: int) -> Picture:
    if isinstance(source, (bytes, bytearray)):
        name = name or "the uploaded file"
        size, stream = len(source), io.BytesIO(source)
    else:
        path = Path(source)
        name = name or str(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageError(f"{name}: cannot read the file ({exc.strerror or exc})") from exc
        if not str(source).strip():
            raise ImageError("an empty path names no picture")
        if path.is_dir():
            raise ImageError(f"{name}: is a folder, not an image")
        if not path.is_file():  # a named pipe or a device: reading it could wait forever
            raise ImageError(f"{name}: is not a regular file")
        stream = path
    if size > max_bytes:
        raise ImageError(
            f"{name}: the file is too large ({size / 2**20:.0f} MB; at most "
            f"{max_bytes / 2**20:.0f} MB)"
        )
    head = source[:64] if isinstance(source, (bytes, bytearray)) else _head(path)
    if _is_heif(head):
        _heif_opener(name)
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, on decompression bombs; our own limit is lower. It
            # also warns of corrupt EXIF data it then ignores (two lines naming site-packages
            # on stderr, beside a right answer).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(stream) as im:
                why = _needs_outside_help(im)
                if why:
                    raise ImageError(f"{name}: {why}")
                _check_size(name, im.width, im.height, max_pixels)  # before decoding
                factor = _reduction(im.width, im.height)
                long_side = max(im.width, im.height)
                if factor > 1 and im.format == "JPEG":
                    # libjpeg decodes at 1/2, 1/4 or 1/8 scale: an 8,000 x 6,000 photo in
                    # 34 MB instead of 137 MB (and 0.44 instead of 0.52 s, measured).
                    im.draft(im.mode, (-(-im.width // factor), -(-im.height // factor)))
                im.load()
                picture = _from_pil(im, name, long_side)
                picture.frames = int(getattr(im, "n_frames", 1) or 1)
                return picture
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: {_not_a_picture(head)}") from exc
    except Image.DecompressionBombError as exc:
        side = int(max_pixels**0.5)
        raise ImageError(
            f"{name}: the image is too large (far more pixels than at most {side}x{side})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Truncated or corrupt data surfaces as OSError ("image file is truncated"), broken
        # PNG chunks as SyntaxError, odd headers as ValueError.
        raise ImageError(f"{name}: the image data is damaged or incomplete ({exc})") from exc


def _read_stream(stream, name: str | None, max_bytes: int) -> bytes:
    """The bytes of an open binary file or io.BytesIO, at most max_bytes (+1, to tell)."""
    try:
        data = stream.read(max_bytes + 1)
    except (OSError, ValueError) as exc:  # closed, not readable
        raise ImageError(f"{name or 'the file'}: cannot read it ({exc})") from exc
    if not isinstance(data, (bytes, bytearray)):
        raise ImageError(f"{name or 'the file'}: a file opened as text; open it with 'rb'")
    return bytes(data)


def _from_pil(im, name: str, long_side: int | None = None) -> Picture:
    """Every Pillow mode to grey + alpha floats, after applying the EXIF orientation; reduced
    (`_reduced`) when its long side is over READ_MAX_SIDE. `long_side`: the file's, when a
    JPEG was already decoded at a reduced scale."""
    long_side = long_side or max(im.width, im.height)
    orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    mode = im.mode
    im = _reduced(im)
    upright = ImageOps.exif_transpose(im)
    rotated = orientation not in (None, 1)
    im = upright
    alpha = None
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("LA")
    elif im.mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "La":  # premultiplied alpha; Pillow converts La only to LA
        im = im.convert("LA")
    elif im.mode == "RGBa":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(im.getchannel("A"), dtype=np.float64) / 255.0
        im = im.convert("RGB" if im.mode != "LA" else "L")
    rgb = None
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # Scaled by the picture's own range: a 16-bit scan with paper at 52000 and ink at 9000
        # keeps its contrast instead of being clipped to white by an 8-bit conversion.
        grey = _unit(np.asarray(im), np.asarray(im).dtype, name)
    elif im.mode == "L":
        grey = _unit(np.asarray(im), np.uint8, name)
    elif im.mode == "1":
        grey = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    else:  # RGB, CMYK, YCbCr, LAB, HSV...: through RGB to luma
        rgb = _unit(np.asarray(im.convert("RGB")), np.uint8, name)
        grey = rgb @ _LUMA
    scale = long_side / max(grey.shape)
    return Picture(np.clip(grey, 0, 1), _meaningful(alpha), name, mode, rotated, rgb, scale)


def _meaningful(alpha: np.ndarray | None) -> np.ndarray | None:
    """The alpha map, or None when (nearly) every pixel is opaque and it says nothing."""
    if alpha is None or alpha.size == 0 or float(alpha.min()) > 0.98:
        return None
    return alpha


def _reduction(width: int, height: int) -> int:
    """The whole factor that brings the long side to at most READ_MAX_SIDE (1: none)."""
    return -(-max(width, height) // READ_MAX_SIDE)


def _reduced(im: Image.Image) -> Image.Image:
    """`im` box-averaged by `_reduction` (each output pixel the mean of a factor x factor
    block, Pillow's `reduce`), or itself when it is small enough. Palette and 1-bit pictures
    are averaged as RGB(A) and L; a mode `reduce` lacks falls back to a box resize."""
    factor = _reduction(im.width, im.height)
    if factor == 1:
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    try:
        small = im.reduce(factor)
    except ValueError:  # a mode reduce() does not support (I;16 and its kin)
        size = (-(-im.width // factor), -(-im.height // factor))
        small = im.resize(size, Image.Resampling.BOX)
    small.info = im.info  # transparency and the EXIF orientation go on with it
    return small


def _reduced_array(arr: np.ndarray, factor: int) -> np.ndarray:
    """`arr` (H, W[, C]) averaged over factor x factor blocks (the last, partial ones over
    what they hold), in its own dtype (integers rounded: their scale, 0..255 for uint8, is
    how `_unit` reads them), as `_reduced` does for files."""
    if factor == 1:
        return arr
    h, w = arr.shape[:2]
    ph, pw = -h % factor, -w % factor
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 2)
    ones = np.pad(np.ones((h, w), np.float32), pad[:2])
    blocks = (h + ph) // factor, factor, (w + pw) // factor, factor
    count = ones.reshape(blocks).sum((1, 3))
    total = np.pad(arr, pad).reshape(blocks + arr.shape[2:]).sum((1, 3), dtype=np.float64)
    mean = total / (count if arr.ndim == 2 else count[..., None])
    if np.issubdtype(arr.dtype, np.integer):
        return np.round(mean).astype(arr.dtype)
    return mean.astype(arr.dtype)


# ISO base media "ftyp" brands of HEIF stills (an iPhone's photos); AVIF ("avif") Pillow reads.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(64)
    except OSError:
        return b""  # Pillow's own open says what is wrong


def _is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _heif_opener(name: str) -> None:
    """Teach Pillow HEIC/HEIF through the optional pillow-heif plug-in (digitlab[heic]).
    Raises ImageError naming the extra when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        raise ImageError(
            f"{name}: a HEIC/HEIF photo (an iPhone's usual format), which needs the optional "
            "plug-in: pip install 'digitlab[heic]' (pillow-heif), or save the photo as JPEG"
        ) from None
    pillow_heif.register_heif_opener()  # once is enough; again is harmless


# Formats Pillow recognises but decodes only through a program or handler outside it, whose
# failure read "the image data is damaged or incomplete (Unable to locate Ghostscript on
# paths)" for a sound file. EPS is refused even where Ghostscript is installed: the answer
# would then depend on the machine, and running Ghostscript on an uploaded file is an attack
# surface Pillow's documentation warns of. Pillow's stub formats (BUFR, GRIB, HDF5, WMF/EMF)
# need a handler an application registers, which we do not.
_OUTSIDE_HELP = {
    "EPS": "an EPS drawing, not a picture of pixels: export it as PNG (Inkscape can)",
    "WMF": "a Windows metafile (WMF/EMF) drawing, not a picture of pixels: export it as PNG",
}


def _needs_outside_help(im: Image.Image) -> str:
    """Why a picture Pillow has opened cannot be read here ("" when it can)."""
    if im.format in _OUTSIDE_HELP:
        return _OUTSIDE_HELP[im.format]
    if isinstance(im, ImageFile.StubImageFile):
        return (
            f"a {im.format} file, which Pillow reads only through a plug-in that is not "
            "installed here: save the picture as PNG or JPEG"
        )
    return ""


def _not_a_picture(head: bytes) -> str:
    """Why Pillow could not open a file, from its first bytes: what it is when we can tell."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%PDF"):
        return "a PDF document, not a picture: export the page as PNG or JPEG"
    # PostScript Pillow did not take for EPS (no bounding box; a printer's file).
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "a PostScript document, not a picture of pixels: export it as PNG"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return (
            "an SVG drawing, not a picture of pixels: export it as PNG (a browser or Inkscape can)"
        )
    if not head:
        return "an empty file, not an image"
    return "not an image (Pillow cannot identify the file)"
