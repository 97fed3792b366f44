"""Seeded pictures of MNIST digits as people hand them over: photos, scans, canvas exports.

`render(digit, kind, rng)` draws one 28x28 MNIST digit into a file of the given kind and returns
its bytes (PNG or JPEG, exactly what a user would upload). The kinds are those issue 14 lists:
dark and light ink, ink in the alpha channel, 16-bit scans, uneven light, a shadowed corner,
dim grey paper, sensor noise and JPEG, specks, thin pens (the digit's skeleton), fat markers,
small off-centre digits, EXIF rotations, Pillow's other modes, a phone photo that has
several of these at once, coloured ink that differs from its paper more in colour than in
brightness (blue, red, green... on white or tinted paper), and lined or squared paper whose
faint rules cross the digit; then (issue: pictures in the wild, second round) a digit cropped
to its own box, a small digit on a big page, ink on partly transparent paper, a digit cut
out of an opaque sheet (a stencil), a digit in a printed box, an underlined digit, and chalk
on a board with a lighter frame; then (a third round) a sheet lying on a desk, straight or
photographed at an angle, a small digit on ruled paper with a red margin, and a photo of a
screen (a dark bezel, moire stripes). New kinds are added at the end, so the pictures of the earlier
kinds for a seed stay the same. Used by benchmarks/bench_images.py and the tests; the same seed
gives the same bytes. PNGs are written with zlib's fastest level: the pixels are what the
pictures are for, and level 6 took about 40% of drawing a big page.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

KINDS = (
    "dark_on_light",
    "light_on_dark",
    "alpha_ink",
    "scan_16bit",
    "uneven_light",
    "shadow",
    "grey_paper",
    "noise_jpeg",
    "specks",
    "thin_pen",
    "thick_marker",
    "small_off_centre",
    "exif_rotated",
    "other_modes",
    "phone_photo",
    "coloured_ink",
    "ruled_paper",
    "tight_crop",
    "tiny_in_big",
    "alpha_paper",
    "stencil",
    "form_box",
    "underlined",
    "framed_board",
    "sheet_on_desk",
    "notebook_margin",
    "screen_photo",
)

# Pens: pure colours, lightened toward the paper until their brightness is close to it.
_PENS = np.array(
    [[0.1, 0.2, 1.0], [1.0, 0.05, 0.05], [0.0, 0.6, 0.1], [0.7, 0.0, 0.9], [1.0, 0.45, 0.0]]
)
_PAPERS = np.array([[1.0, 1.0, 1.0], [1.0, 0.96, 0.78], [0.93, 0.97, 1.0], [0.98, 0.9, 0.9]])
_LUMA = np.array([0.299, 0.587, 0.114])


def render(digit: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    """One (28, 28) uint8 MNIST digit as a picture file of `kind`; returns the file's bytes."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    side = int(rng.integers(200, 1001))
    canvas = (side, int(np.clip(side * rng.uniform(0.7, 1.4), 200, 1000)))
    fraction = rng.uniform(0.08, 0.2) if kind == "small_off_centre" else rng.uniform(0.35, 0.85)
    if kind in _LATER:
        return _later(digit, kind, rng)
    if kind in _THIRD:
        return _third(digit, kind, rng)
    pen = {"thin_pen": "skeleton", "thick_marker": "fat"}.get(kind, "normal")
    ink = _ink(digit, canvas, fraction, pen, rng, corner=kind == "small_off_centre")
    h, w = canvas
    paper, colour = rng.uniform(0.8, 1.0), rng.uniform(0.0, 0.2)
    light = np.ones(canvas)
    if kind == "grey_paper":
        paper, colour = rng.uniform(0.22, 0.48), rng.uniform(0.0, 0.1)
    if kind in ("uneven_light", "phone_photo"):
        light = _uneven_light(canvas, rng)
    if kind in ("shadow", "phone_photo"):
        light = light * _shadow(canvas, rng)
    if kind == "phone_photo":
        paper, colour = rng.uniform(0.3, 0.75), rng.uniform(0.0, 0.12)
    grey = (paper + (colour - paper) * ink) * light
    if kind == "specks":
        grey = _specks(grey, ink, colour, rng)
    if kind in ("noise_jpeg", "phone_photo"):
        grey = grey + rng.normal(0, rng.uniform(0.02, 0.06), canvas)
    grey = np.clip(grey, 0, 1)
    buf = io.BytesIO()
    if kind == "coloured_ink":
        _coloured(ink, canvas, rng, buf)
        return buf.getvalue()
    if kind == "ruled_paper":
        _ruled(ink, canvas, rng, buf)
        return buf.getvalue()
    if kind == "light_on_dark":
        Image.fromarray(_u8(1 - grey)).save(buf, "PNG", compress_level=1)
    elif kind == "alpha_ink":
        rgb = rng.integers(0, 256, 3) if rng.random() < 0.5 else (255, 255, 255)
        under = (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255)
        px = np.empty((h, w, 4), np.uint8)
        px[..., :3] = np.where(ink[..., None] > 0, np.array(rgb), np.array(under))
        px[..., 3] = _u8(ink)
        Image.fromarray(px, "RGBA").save(buf, "PNG", compress_level=1)
    elif kind == "scan_16bit":
        lo, hi = rng.uniform(3000, 15000), rng.uniform(40000, 60000)
        scan = lo + (hi - lo) * (grey - grey.min()) / max(np.ptp(grey), 1e-6)
        Image.fromarray(np.round(scan).astype(np.uint16)).save(buf, "PNG", compress_level=1)
    elif kind in ("noise_jpeg", "phone_photo", "exif_rotated"):
        rgb = _tint(grey, rng)
        im = Image.fromarray(rgb, "RGB")
        exif = None
        if kind != "noise_jpeg":
            orientation = int(rng.choice([2, 3, 4, 5, 6, 7, 8]))
            im = _store_turned(im, orientation)
            exif = Image.Exif()
            exif[0x0112] = orientation
        im.save(buf, "JPEG", quality=int(rng.integers(30, 80)), exif=exif or b"")
    elif kind == "other_modes":
        _save_other_mode(grey, rng, buf)
    else:
        Image.fromarray(_tint(grey, rng), "RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


_LATER = ("tight_crop", "tiny_in_big", "alpha_paper", "stencil", "form_box", "underlined")
_LATER += ("framed_board",)


def _later(digit: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    """The kinds of the second round, each drawn whole here (their canvases differ)."""
    buf = io.BytesIO()
    if kind == "tiny_in_big":  # a 28-64 px digit somewhere on a 1,400-2,400 px page
        side = int(rng.integers(1400, 2401))
        canvas = (side, int(side * rng.uniform(0.75, 1.33)))
        ink = _ink(digit, canvas, rng.uniform(28, 64) / min(canvas), "normal", rng)
        grey = rng.uniform(0.8, 1.0) + (rng.uniform(0.0, 0.2) - 0.9) * ink
        grey = grey + rng.normal(0, 0.01, canvas)
        # Made 8-bit before it is made RGB: the same pixels, an eighth of the memory to copy.
        _save_rgb(np.repeat(_u8(np.clip(grey, 0, 1))[..., None], 3, 2), rng, buf)
        return buf.getvalue()
    side = int(rng.integers(250, 801))
    canvas = (side, int(side * rng.uniform(0.8, 1.25)))
    ink = _ink(digit, canvas, rng.uniform(0.45, 0.7), "normal", rng)
    rows, cols = np.flatnonzero(ink.max(1) > 0.3), np.flatnonzero(ink.max(0) > 0.3)
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    size = max(r1 - r0, c1 - c0)
    paper, colour = rng.uniform(0.82, 1.0), rng.uniform(0.0, 0.2)
    grey = paper + (colour - paper) * ink
    if kind == "tight_crop":  # cropped to the ink's box, 0-2% of margin
        m = int(rng.uniform(0, 0.02) * size)
        grey = grey[max(0, r0 - m) : r1 + m, max(0, c0 - m) : c1 + m]
        if rng.random() < 0.3:  # a white digit on black, cropped as tight
            grey = 1 - grey
        Image.fromarray(_u8(grey)).save(buf, "PNG", compress_level=1)
    elif kind == "alpha_paper":  # opaque ink on paper of 20-60% opacity
        px = np.empty((*canvas, 4), np.uint8)
        pen = (0, 0, 0) if rng.random() < 0.5 else tuple(int(v) for v in rng.integers(0, 120, 3))
        under = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
        px[..., :3] = np.where(ink[..., None] > 0.5, np.array(pen), np.array(under))
        px[..., 3] = _u8(np.maximum(rng.uniform(0.2, 0.6), ink))
        Image.fromarray(px, "RGBA").save(buf, "PNG", compress_level=1)
    elif kind == "stencil":  # an opaque sheet, the digit cut out as transparency
        px = np.empty((*canvas, 4), np.uint8)
        px[..., :3] = rng.integers(0, 90, 3) if rng.random() < 0.7 else rng.integers(170, 256, 3)
        px[..., 3] = _u8(1 - ink)
        Image.fromarray(px, "RGBA").save(buf, "PNG", compress_level=1)
    elif kind in ("form_box", "underlined"):
        h, w = canvas
        line = int(rng.integers(2, 6))
        if kind == "form_box":  # a printed box 5-20% of the digit's size around it
            m = int(rng.uniform(0.05, 0.2) * size)
            t, b, left, right = max(0, r0 - m), min(h, r1 + m), max(0, c0 - m), min(w, c1 + m)
            box = np.zeros(canvas, bool)
            box[t:b, left:right] = True
            box[t + line : b - line, left + line : right - line] = False
        else:  # a line 3-10% of the digit's size below it, 1-1.4 times its width
            top = min(h - line, r1 + int(rng.uniform(0.03, 0.1) * size))
            half = int((c1 - c0) * rng.uniform(1.0, 1.4) / 2)
            mid = (c0 + c1) // 2
            box = np.zeros(canvas, bool)
            box[top : top + line, max(0, mid - half) : mid + half] = True
        grey = np.where(box, rng.uniform(0.0, 0.3), grey)
        _save_rgb(np.repeat(grey[..., None], 3, 2), rng, buf)
    else:  # framed_board: chalk on a dark board inside a lighter frame along every edge
        board = np.array([0.1, 0.25, 0.15]) * rng.uniform(0.6, 1.4)
        frame = np.array([0.55, 0.4, 0.2]) * rng.uniform(0.8, 1.3)
        chalk = np.array([0.9, 0.9, 0.85])
        rgb = board + (chalk - board) * (0.8 * ink)[..., None]
        room = min(r0, c0, canvas[0] - r1, canvas[1] - c1) - 2  # the frame keeps off the digit
        band = max(2, min(int(rng.uniform(0.04, 0.1) * min(canvas)), room))
        rgb[:band], rgb[-band:], rgb[:, :band], rgb[:, -band:] = frame, frame, frame, frame
        rgb = rgb + rng.normal(0, 0.02, rgb.shape)
        im = Image.fromarray(_u8(np.clip(rgb, 0, 1)), "RGB")
        im.save(buf, "JPEG", quality=int(rng.integers(60, 95)))
    return buf.getvalue()


_THIRD = ("sheet_on_desk", "notebook_margin", "screen_photo")
_DESKS = np.array([[0.42, 0.28, 0.16], [0.3, 0.3, 0.32], [0.62, 0.5, 0.36], [0.18, 0.17, 0.16]])


def _third(digit: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    """The kinds of the third round: what is around the page, drawn whole here."""
    buf = io.BytesIO()
    h = int(rng.integers(600, 1001))
    canvas = (h, int(h * rng.uniform(1.0, 1.4)))
    if kind == "notebook_margin":  # a digit 1.2-2.5 rules tall beside a red margin
        gap = max(12, int(h * rng.uniform(0.035, 0.06)))
        ink = _ink(digit, canvas, gap * rng.uniform(1.2, 2.5) / min(canvas), "normal", rng)
        _ruled(ink, canvas, rng, buf, lined=True, margin=True)
        return buf.getvalue()
    if kind == "sheet_on_desk":
        sheet = _sheet_picture(digit, canvas, rng)
        desk = _DESKS[rng.integers(len(_DESKS))] * rng.uniform(0.85, 1.15)
        grain = rng.normal(0, rng.uniform(0.01, 0.04), (*canvas, 1))
        rgb = np.clip(desk + grain, 0, 1) * np.ones(3)
        paste, mask = sheet
        rgb = np.where(mask[..., None] > 0.5, paste, rgb)
    else:  # screen_photo: a light screen in a dark bezel, moire stripes across it
        rgb = np.full((*canvas, 3), rng.uniform(0.02, 0.1))
        m = (rng.uniform(0.06, 0.16, 2) * canvas).astype(int)
        inner = (canvas[0] - 2 * m[0], canvas[1] - 2 * m[1])
        ink = _ink(digit, inner, rng.uniform(0.4, 0.7), "normal", rng)
        yy, xx = np.mgrid[: inner[0], : inner[1]]
        f = rng.uniform(0.05, 0.15, 2)
        stripes = 1 + rng.uniform(0.03, 0.12) * np.sin(2 * np.pi * (f[0] * yy + f[1] * xx))
        screen = rng.uniform(0.8, 1.0) * np.array([0.88, 0.93, 1.0]) * (1 - 0.9 * ink)[..., None]
        rgb[m[0] : m[0] + inner[0], m[1] : m[1] + inner[1]] = screen * stripes[..., None]
        rgb = rgb + rng.normal(0, 0.015, rgb.shape)
    im = Image.fromarray(_u8(np.clip(rgb, 0, 1)), "RGB")
    im.save(buf, "JPEG", quality=int(rng.integers(60, 93)))
    return buf.getvalue()


def _sheet_picture(digit, canvas, rng) -> tuple[np.ndarray, np.ndarray]:
    """A sheet (25-55% of the picture) with the digit on it, straight or seen at an angle
    (each corner moved by up to 12% of the sheet's size): its RGB on the canvas and where it
    is (float mask)."""
    h, w = canvas
    sh = int(h * rng.uniform(0.5, 0.75))
    sw = int(min(w * 0.8, sh * rng.uniform(0.75, 1.3)))
    ink = _ink(digit, (sh, sw), rng.uniform(0.35, 0.65), "normal", rng)
    paper = _PAPERS[rng.integers(len(_PAPERS))] * rng.uniform(0.88, 1.0)
    pen = np.array([0.05, 0.05, 0.15])
    sheet = Image.fromarray(_u8(paper + (pen - paper) * ink[..., None]), "RGB")
    # All of it in the photo, some desk on every side (3% at least).
    top = int(rng.integers(0.03 * h, 0.97 * h - sh))
    left = int(rng.integers(0.03 * w, 0.97 * w - sw))
    rect = np.array([[left, top], [left + sw, top], [left + sw, top + sh], [left, top + sh]])
    tilt = rng.uniform(0, 0.12) if rng.random() < 0.6 else 0.0
    quad = rect + rng.uniform(-tilt, tilt, (4, 2)) * (sw, sh)
    quad = np.clip(quad, 0, (w - 1, h - 1))
    coeffs = _perspective(quad, np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]]))
    warped = sheet.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
    mask = Image.new("L", (sw, sh), 255).transform(
        (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
    )
    return np.asarray(warped, np.float64) / 255, np.asarray(mask, np.float64) / 255


def _perspective(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """Pillow's PERSPECTIVE coefficients taking each output point `dst[i]` (x, y) to the
    input point `src[i]`: the 8 unknowns of a homography from four point pairs."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return tuple(np.linalg.solve(np.array(rows, float), np.array(rhs, float)))


def _u8(a: np.ndarray) -> np.ndarray:
    # In place after the first product: a big page's float copies cost more than the maths.
    b = a * 255
    np.rint(b, out=b)
    np.clip(b, 0, 255, out=b)
    return b.astype(np.uint8)


def _ink(digit, canvas, fraction, pen, rng, corner=False) -> np.ndarray:
    """The digit's ink (canvas, float in [0, 1]) drawn crisply at a random size and place."""
    from skimage.morphology import (
        dilation,
        disk,
        skeletonize,
    )  # heavy (~0.3 s): only when reading pictures

    h, w = canvas
    size = max(24, int(min(h, w) * fraction))
    big = np.asarray(
        Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64
    )
    # A pen's edge is sharp: a soft threshold of the upscaled grey digit.
    strokes = np.clip((big - 70) / 90, 0, 1)
    if pen == "skeleton":
        width = int(rng.integers(1, 4))
        skel = skeletonize(big > 110)
        strokes = dilation(skel, disk(width // 2)) if width > 1 else skel
        strokes = strokes.astype(np.float64)
    elif pen == "fat":
        strokes = dilation(big > 100, disk(max(1, round(size * rng.uniform(0.02, 0.05)))))
        strokes = strokes.astype(np.float64)
    out = np.zeros(canvas)
    if corner:
        top = int(rng.choice([rng.integers(0, max(1, h // 4)), rng.integers(h // 2, h - size)]))
        left = int(rng.choice([rng.integers(0, max(1, w // 4)), rng.integers(w // 2, w - size)]))
    else:
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    out[top : top + size, left : left + size] = strokes
    return out


def _uneven_light(canvas, rng) -> np.ndarray:
    h, w = canvas
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * yy + np.sin(angle) * xx
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    cy, cx = rng.uniform(0, h / max(h, w)), rng.uniform(0, w / max(h, w))
    spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(0.1, 0.5))
    low = rng.uniform(0.35, 0.7)
    return low + (1 - low) * (0.6 * ramp + 0.4 * spot)


def _shadow(canvas, rng) -> np.ndarray:
    """A corner in shadow: a half-plane cutting a corner off, darkened, with a soft edge."""
    from skimage.filters import gaussian  # heavy (~0.3 s): only when reading pictures

    h, w = canvas
    yy, xx = np.mgrid[:h, :w]
    a, b = rng.uniform(0.25, 0.6) * w, rng.uniform(0.25, 0.6) * h
    flip_x, flip_y = rng.random() < 0.5, rng.random() < 0.5
    x = w - 1 - xx if flip_x else xx
    y = h - 1 - yy if flip_y else yy
    inside = (x / a + y / b) < 1
    depth = rng.uniform(0.35, 0.65)
    return gaussian(np.where(inside, depth, 1.0), sigma=rng.uniform(1, 8))


def _specks(grey, ink, colour, rng) -> np.ndarray:
    """Dust and dots (radius 1-4 px) away from the digit."""
    h, w = grey.shape
    grey = grey.copy()
    yy, xx = np.mgrid[:h, :w]
    far = ink == 0
    for _ in range(int(rng.integers(5, 30))):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.uniform(0.8, 4)
        if not far[cy, cx]:
            continue
        y0, y1, x0, x1 = max(0, cy - 5), min(h, cy + 6), max(0, cx - 5), min(w, cx + 6)
        dot = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        grey[y0:y1, x0:x1][dot] = colour
    return grey


def _tint(grey, rng) -> np.ndarray:
    """Grey to RGB with a slight colour cast, as paper under lamp light."""
    cast = 1 + rng.uniform(-0.08, 0.08, 3)
    return _u8(np.clip(grey[..., None] * cast, 0, 1))


def _store_turned(im, orientation: int):
    """The pixels as a camera stores them when the EXIF tag says `orientation`: the inverse of
    what `ImageOps.exif_transpose` will apply."""
    T = Image.Transpose
    undo = {
        2: [T.FLIP_LEFT_RIGHT],
        3: [T.ROTATE_180],
        4: [T.FLIP_TOP_BOTTOM],
        5: [T.TRANSPOSE],
        6: [T.ROTATE_90],
        7: [T.TRANSVERSE],
        8: [T.ROTATE_270],
    }[orientation]
    for step in undo:
        im = im.transpose(step)
    return im


def _save_other_mode(grey, rng, buf) -> None:
    """The same page saved in one of Pillow's less common modes."""
    mode = str(rng.choice(["1", "P", "P_transparent", "LA", "CMYK", "I", "F"]))
    rgb = Image.fromarray(_tint(grey, rng), "RGB")
    if mode == "1":
        rgb.convert("L").point(lambda v: 255 if v > 128 else 0).convert("1").save(
            buf, "PNG", compress_level=1
        )
    elif mode == "P":
        rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(
            buf, "PNG", compress_level=1
        )
    elif mode == "P_transparent":
        p = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        p.info["transparency"] = int(np.asarray(p)[0, 0])  # the paper's colour is transparent
        p.save(buf, "PNG", compress_level=1, transparency=p.info["transparency"])
    elif mode == "LA":
        la = Image.merge("LA", (rgb.convert("L"), Image.new("L", rgb.size, 255)))
        la.save(buf, "PNG", compress_level=1)
    elif mode == "CMYK":
        rgb.convert("CMYK").save(buf, "JPEG", quality=90)
    elif mode == "I":
        Image.fromarray((grey * 1_000_000).astype(np.int32), "I").save(buf, "TIFF")
    else:
        Image.fromarray(grey.astype(np.float32) * 7.5, "F").save(buf, "TIFF")


def _save_rgb(rgb: np.ndarray, rng, buf) -> None:
    """An RGB page (float in [0, 1], or uint8) as PNG or as a JPEG of middling quality (colour
    subsampled, as phones do)."""
    im = Image.fromarray(rgb if rgb.dtype == np.uint8 else _u8(rgb), "RGB")
    if rng.random() < 0.5:
        im.save(buf, "JPEG", quality=int(rng.integers(60, 95)))
    else:
        im.save(buf, "PNG", compress_level=1)


def _coloured(ink, canvas, rng, buf) -> None:
    """A coloured pen on white or tinted paper, its brightness only 0.04-0.2 below the
    paper's (luma), far less than its colour difference; mild uneven light, slight noise."""
    paper = _PAPERS[rng.integers(len(_PAPERS))] * rng.uniform(0.9, 1.0)
    pure = _PENS[rng.integers(len(_PENS))]
    target = float(paper @ _LUMA) - rng.uniform(0.04, 0.2)
    lift = np.clip((target - pure @ _LUMA) / (1 - pure @ _LUMA), 0, 1)
    pen = pure + lift * (1 - pure)  # mixed with white up to the target brightness
    rgb = paper + (pen - paper) * ink[..., None]
    if rng.random() < 0.5:
        low = _uneven_light(canvas, rng)
        rgb = rgb * (0.75 + 0.25 * low)[..., None]
    rgb = rgb + rng.normal(0, rng.uniform(0.005, 0.02), rgb.shape)
    _save_rgb(np.clip(rgb, 0, 1), rng, buf)


def _ruled(ink, canvas, rng, buf, lined: bool = False, margin: bool = False) -> None:
    """Lined or squared exercise-book paper: rules (1-3 px, blue or grey, 25-70% of the way
    from the paper to that colour) every 4-9% of the height, sometimes a red margin line, and
    a dark pen on top. `lined`: never squared; `margin`: always the margin."""
    h, w = canvas
    paper = _PAPERS[rng.integers(len(_PAPERS))] * rng.uniform(0.88, 1.0)
    rule_colour = np.array([0.45, 0.6, 0.9]) if rng.random() < 0.6 else np.array([0.5] * 3)
    depth = rng.uniform(0.25, 0.7)  # how much of the way from paper to rule colour
    rules = np.zeros(canvas)
    gap = max(8, int(h * rng.uniform(0.04, 0.09)))
    width = int(rng.integers(1, 4))
    for r in range(int(rng.integers(0, gap)), h, gap):
        rules[r : r + width] = 1
    if rng.random() < 0.5 and not lined:  # squared paper
        for c in range(int(rng.integers(0, gap)), w, gap):
            rules[:, c : c + width] = 1
    rgb = paper + (rule_colour - paper) * (depth * rules)[..., None]
    if rng.random() < 0.3 or margin:  # a red margin
        c = int(rng.integers(w // 12, w // 6))
        rgb[:, c : c + width + 1] = paper + (np.array([0.95, 0.3, 0.3]) - paper) * 0.5
    pen = np.array([0.05, 0.05, 0.2]) if rng.random() < 0.5 else np.array([0.1, 0.1, 0.1])
    rgb = rgb + (pen - rgb) * ink[..., None]
    rgb = rgb + rng.normal(0, rng.uniform(0.005, 0.02), rgb.shape)
    _save_rgb(np.clip(rgb, 0, 1), rng, buf)
