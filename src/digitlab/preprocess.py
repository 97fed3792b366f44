"""Image preprocessing: any picture of a digit as MNIST's 28x28; deskewing by image moments;
centring by mass."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from digitlab.errors import ImageError
from digitlab.images import Picture, read_picture


def _image_stack(images, name: str) -> np.ndarray:
    """`images` as a non-empty (n, h, w) array of finite, non-negative pixel values.

    Raises ValueError naming `name` otherwise (NaN pixels were read as blank and a 1-D array
    as numpy's unpacking error)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0 or 0 in images.shape:
        raise ValueError(
            f"{name} expects a non-empty stack of images (n, h, w), got {images.shape}"
        )
    if images.dtype.kind not in "uif":
        raise ValueError(f"{name} expects numeric pixel values, got dtype {images.dtype}")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise ValueError(f"{name}: the images hold NaN or infinite pixel values")
    if images.dtype.kind != "u" and images.size and images.min() < 0:
        raise ValueError(f"{name}: pixel values must not be negative (ink is mass)")
    return images


def deskew(images: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Straighten each digit by its second-order image moments (uint8 in, uint8 out).

    The shear that makes the pixel mass's x/y covariance zero is applied about the centre of
    mass, which is moved to the image centre: the classic preprocessing that takes raw-pixel
    kNN on MNIST from about 97% to over 98%. Output stays uint8 so kNN keeps its exact path.
    All images of a batch are warped at once (bilinear, one `grid_sample` call).
    """
    images = _image_stack(images, "deskew")
    h, w = images.shape[1:]
    c0, c1 = (h - 1) / 2, (w - 1) / 2
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    out = np.empty(images.shape, np.uint8)
    for s in range(0, len(images), batch):
        mass = torch.tensor(images[s : s + batch], dtype=torch.float32)
        total = mass.sum((1, 2)).clamp(min=1e-12)
        cy = (mass * yy).sum((1, 2)) / total
        cx = (mass * xx).sum((1, 2)) / total
        dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
        var_y = (mass * dy**2).sum((1, 2)) / total
        cov = (mass * dy * dx).sum((1, 2)) / total
        alpha = torch.where(var_y > 1e-6, cov / var_y.clamp(min=1e-6), torch.zeros_like(cov))
        blank = mass.sum((1, 2)) == 0
        cy, cx = torch.where(blank, c0, cy), torch.where(blank, c1, cx)
        # Output (y, x) samples input (y + cy - c0, x + alpha*(y - c0) + cx - c1), written in
        # grid_sample's normalised coordinates (align_corners=True: -1 and 1 are pixel centres).
        theta = torch.zeros(len(mass), 2, 3, dtype=torch.float32)
        theta[:, 0, 0] = 1
        theta[:, 0, 1] = alpha * c0 / c1
        theta[:, 0, 2] = (cx - c1) / c1
        theta[:, 1, 1] = 1
        theta[:, 1, 2] = (cy - c0) / c0
        grid = F.affine_grid(theta, (len(mass), 1, h, w), align_corners=True)
        warped = F.grid_sample(
            mass[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )[:, 0]
        out[s : s + len(mass)] = warped.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


# ----- any picture of a digit -> MNIST's 28x28 -------------------------------------------------

# Measured on MNIST's test digits (tests/test_preprocess.py checks these figures):
# strokes are about 2.6 px wide in a 20-px box (ink >= 128 over its skeleton's length), i.e.
# 0.13 of the box's long side (median; 10-90%: 0.10-0.19), and 38% of the ink pixels (> 25)
# are saturated (>= 250).
MNIST_STROKE = 0.13
MNIST_SATURATED = 0.38
_WORK_MAX, _WORK_MIN = 512, 128  # the working picture's long side (area-averaged down to it)
_FINE = 80  # long side of the digit's box while its strokes are normalised
# A mark whose stroke width (area over centre-line length) passes its long side is a filled
# shape, not strokes: MNIST's strokes measure 0.13 (99th percentile 0.26), the fattest markers'
# 0.41 at most, a filled square or disc 25-40 (its centre line is a few pixels long).
SOLID = 1.0
MIN_MARK = 2e-4  # share of the working picture's area under which a mark is a speck
_ZOOM_BELOW = 32  # a digit found smaller than this (working pixels) is read again closer


@dataclass
class Prepared:
    """What `prepare` made of a picture, for a person to see.

    image: (28, 28) uint8, light ink on black as in MNIST. inverted: the picture was dark ink on
    light paper and was turned around. crop_box: (left, top, right, bottom) of the ink found,
    in pixels of the upright picture (after EXIF orientation; right/bottom exclusive), or None
    when the whole picture was used. ink_from_alpha: the ink was read from the alpha channel.
    ink_by_colour: the ink was told from the paper by its colour rather than its brightness.
    stroke_scale: factor the stroke width was changed by (1.0: unchanged). dropped: specks and
    marks left out. warnings: sentences worth showing beside the answer.
    """

    image: np.ndarray
    inverted: bool
    crop_box: tuple[int, int, int, int] | None
    name: str = "the image"
    mode: str = ""
    rotated: bool = False
    ink_from_alpha: bool = False
    ink_by_colour: bool = False
    stroke_scale: float = 1.0
    dropped: int = 0
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: what was done (the app shows it under the answer)."""
        done = []
        if self.rotated:
            done.append("turned upright by its EXIF tag")
        if self.ink_from_alpha:
            done.append("ink read from the alpha channel")
        elif self.ink_by_colour:
            done.append("ink told from the paper by its colour")
        elif self.inverted:
            done.append("dark ink on light paper, inverted")
        else:
            done.append("light ink on a dark background")
        if self.crop_box is not None:
            left, top, right, bottom = self.crop_box
            done.append(f"cropped to {right - left}x{bottom - top} at ({left}, {top})")
        if abs(self.stroke_scale - 1) > 0.05:
            done.append(f"strokes {'thickened' if self.stroke_scale > 1 else 'thinned'}")
        if self.dropped:
            done.append(f"{self.dropped} speck{'s' * (self.dropped > 1)} dropped")
        return "; ".join(done + self.warnings)


def prepare(image, *, recipe: str = "digit", name: str | None = None) -> Prepared:
    """Turn a picture of one digit, as people hand them over, into MNIST's 28x28.

    `image`: a path, bytes, a PIL image of any mode (1, L, LA, P, RGB, RGBA, I;16, I, F, CMYK)
    or an array (H, W) / (H, W, 3|4). Steps:
    1. read it upright (EXIF orientation) as grey + alpha (`digitlab.images.read_picture`);
       where most of the picture is transparent, the ink is the alpha channel;
    2. otherwise estimate the paper by a grey opening/closing far wider than a stroke (a
       top-hat, the standard cure for uneven light and shadows), decide dark-on-light vs
       light-on-dark by which side of the paper holds the stronger marks, and subtract it;
    3. threshold the flattened ink (Otsu, with hysteresis above the noise level), label the
       marks and keep the digit: the largest mark away from the border and the marks near it
       (`skimage.measure.regionprops`); specks and far marks are dropped;
    4. normalise strokes: at a fixed size, thin strokes are dilated and fat ones eroded toward
       MNIST's stroke width, and the contrast is stretched before and after resizing;
    5. MNIST's own recipe (LeCun et al.): fit the digit's box in 20x20 keeping its aspect,
       place it in 28x28 with its centre of mass at the centre.
    `recipe="object"` (Fashion-MNIST, KMNIST) skips the digit-only steps 4 and 5 and fits the
    mark's box in 28x28 centred, as Fashion-MNIST was made.

    Raises `ImageError` (a `DataError` and `ValueError`) naming the picture when it cannot be
    read or holds no mark (a blank page).
    """
    if recipe not in ("digit", "object"):
        raise ValueError(f"recipe must be 'digit' or 'object', got {recipe!r}")
    pic = read_picture(image, name=name)
    # A multi-page TIFF or an animation is read from its first frame: said, not silent (a
    # blank first page with the digit on the second read as "blank" with no word why).
    frames = f"only the first of its {pic.frames} frames (pages) is read"
    try:
        seen = _prepare(pic, recipe)
    except ImageError as exc:
        if pic.frames > 1 and exc.reason != "unreadable":
            raise ImageError(f"{exc}: {frames}", exc.reason) from None
        raise
    if pic.frames > 1:
        seen.warnings.append(frames)
    if pic.scale > 1 and seen.crop_box is not None:  # read reduced: in the file's pixels
        seen.crop_box = tuple(round(v * pic.scale) for v in seen.crop_box)
    return seen


def _prepare(pic: Picture, recipe: str) -> Prepared:
    """`prepare` of a picture already read (`crop_box` in the pixels of `pic`'s maps)."""
    pic = _without_checkerboard(pic)
    inner = _trim_padding(pic)
    if inner is not None:
        return _read_part(pic, inner, recipe)
    H, W = pic.grey.shape
    factor = min(1.0, _WORK_MAX / max(H, W)) if max(H, W) > _WORK_MIN else _WORK_MIN / max(H, W)
    alpha_ink = pic.alpha is not None and float(np.mean(pic.alpha < 0.5)) >= 0.5
    grey, by_colour = (None, False) if alpha_ink else _contrast_grey(pic)
    if grey is not None and pic.alpha is not None:
        grey = _fill_transparent(grey, pic.alpha)
    # The picture's own range of grey, which a blank page's shading spans.
    contrast = 1.0 if grey is None else float(np.ptp(np.percentile(grey, [0.5, 99.5])))
    # Found by brightness: a colour-difference grey (`_contrast_grey`) need not show a light
    # sheet on a darker desk; inside the sheet the ink is read again, by colour if need be.
    on_desk = (
        None
        if grey is None
        else _sheet_on_desk(pic.grey if pic.alpha is None else grey, factor, pic.name)
    )
    if on_desk is not None:
        # A sheet lying on a darker desk: its edges once read as the digit (a 4 as a 7 at
        # 96%, a blank sheet as a 0 at 100%). Read inside it, the desk in its box's corners
        # painted over; nothing there is a blank sheet (the desk holds no digit).
        return _read_part(pic, on_desk[0], recipe, on_desk[1])
    try:
        flat, noise, inverted, tight, warn = _ink_map(pic, grey, factor)
        mask, dropped, rivals = _find_digit(flat, noise, pic.name, MIN_MARK, contrast, tight)
    except ImageError:
        if factor >= 1.0:
            raise
        # Nothing at the working size: a small digit on a big page (40 px in 2000) shrinks
        # to a speck there. Look again at up to four times the detail before calling it blank.
        # The smallest mark kept stays as many pixels as at the working size.
        share = MIN_MARK * (factor / min(1.0, 4 * factor)) ** 2
        factor = min(1.0, 4 * factor)
        flat, noise, inverted, tight, warn = _ink_map(pic, grey, factor)
        mask, dropped, rivals = _find_digit(flat, noise, pic.name, share, contrast, tight)
    shape = flat.shape
    if rivals:
        warn.append(
            f"{rivals} more digit-sized mark{'s' * (rivals > 1)} left out: one digit is read, "
            "the most prominent"
        )
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if recipe == "digit" and c1 - c0 >= 1.4 * (r1 - r0):
        # One joined mark far wider than a digit: digits written touching (a typed or
        # joined-up "2024"), or a digit lying on its side. Read as one, and said so.
        warn.append(
            f"the ink is {(c1 - c0) / (r1 - r0):.1f} times as wide as high: it may be several "
            "digits written together (read as one) or a digit on its side"
        )
    if (r0 == 0 or c0 == 0 or r1 == shape[0] or c1 == shape[1]) and not tight:
        warn.append("the ink touches the edge of the picture: part of it may be cut off")
    box = (
        int(c0 / factor),
        int(r0 / factor),
        min(W, int(np.ceil(c1 / factor))),
        min(H, int(np.ceil(r1 / factor))),
    )
    sheet = None if tight else _sheet(mask)
    if sheet is not None:
        # The "digit" is a sheet, note or canvas smaller than the photo, the digit its hole:
        # read inside it, what surrounds it (the desk in its box's corners) painted over.
        with contextlib.suppress(ImageError):
            return _read_part(pic, _in_picture(sheet[0], factor), recipe, sheet[1])
    if factor < 1 and max(r1 - r0, c1 - c0) < _ZOOM_BELOW:
        # Found on a shrunk page, the digit is a few pixels there (a 40 px digit on a 2000 px
        # page: 10 px, read as a blur). Read it again from the picture's own pixels around it;
        # should that part alone find nothing, what was found here stands.
        with contextlib.suppress(ImageError):
            return _read_closer(pic, box, recipe)
    if max(box[2] - box[0], box[3] - box[1]) < 16:
        warn.append(f"the digit is tiny ({box[2] - box[0]}x{box[3] - box[1]} pixels)")
    from skimage.morphology import dilation, disk  # heavy (~0.3 s): only when reading pictures

    keep = dilation(mask, disk(2))  # the strokes' soft edges, not the specks
    core = float(np.percentile(flat[mask], 90))
    ink = np.clip(np.where(keep, flat, 0.0)[r0:r1, c0:c1] / max(core, 1e-6), 0, 1)
    if noise > 0 and core / noise < 12:
        warn.append("the ink is faint against the paper's noise: the reading may be unreliable")
    result = Prepared(
        image=np.zeros((28, 28), np.uint8),
        inverted=inverted,
        crop_box=box,
        name=pic.name,
        mode=pic.mode,
        rotated=pic.rotated,
        ink_from_alpha=alpha_ink,
        ink_by_colour=by_colour,
        dropped=dropped - rivals,  # specks; the rivals have their own warning
        warnings=warn,
    )
    if recipe == "object":
        result.image = _place(_fit(ink, 28), centre_mass=False)
        return result
    ink, result.stroke_scale = _normalise_strokes(ink, pic.name)
    result.image = _place(_fit(ink, 20), centre_mass=True)
    return result


def _read_closer(pic, box: tuple[int, int, int, int], recipe: str) -> Prepared:
    """`prepare` of the part of `pic` around `box` (left, top, right, bottom; the digit's
    size again on every side), at full resolution, with the crop box in `pic`'s pixels."""
    left, top, right, bottom = box
    size = max(right - left, bottom - top)
    H, W = pic.grey.shape
    part = (max(0, top - size), min(H, bottom + size), max(0, left - size), min(W, right + size))
    return _read_part(pic, part, recipe)


def _read_part(
    pic, part: tuple[int, int, int, int], recipe: str, inside: np.ndarray | None = None
) -> Prepared:
    """`prepare` of rows r0:r1, columns c0:c1 (`part`) of `pic`, its crop box in `pic`'s
    pixels. `inside` (bool, any size, stretched to the part): where the part is the sheet;
    elsewhere it is painted the sheet's own colour."""
    r0, r1, c0, c1 = part
    grey, rgb = pic.grey[r0:r1, c0:c1], None if pic.rgb is None else pic.rgb[r0:r1, c0:c1]
    alpha = None if pic.alpha is None else pic.alpha[r0:r1, c0:c1]
    if inside is not None:
        size = (grey.shape[1], grey.shape[0])
        keep = np.asarray(Image.fromarray(inside).resize(size, Image.Resampling.NEAREST))
        grey = np.where(keep, grey, float(np.median(grey[keep])))
        if rgb is not None:
            rgb = np.where(keep[..., None], rgb, np.median(rgb[keep], axis=0))
    near = Picture(grey, alpha, pic.name, pic.mode, pic.rotated, rgb=rgb)
    return _shifted(_prepare(near, recipe), r0, c0)


def _in_picture(part: tuple[int, int, int, int], factor: float) -> tuple[int, int, int, int]:
    """Rows and columns (r0, r1, c0, c1) at the working size `factor` in the picture's pixels."""
    r0, r1, c0, c1 = part
    return int(r0 / factor), int(np.ceil(r1 / factor)), int(c0 / factor), int(np.ceil(c1 / factor))


def _sheet_on_desk(grey: np.ndarray, factor: float, name: str):
    """(part, inside) for `_read_part` when the picture is a light sheet lying on a darker
    desk with the digit on it; None otherwise.

    Split the picture's grey in two (Otsu, at the working size): the desk is the dark side,
    along nearly all of the border (90%), clearly darker (0.2); the sheet is the light side's
    biggest region, a four-sided one (`_sheet`). A light digit on a dark canvas is no sheet:
    its region is a stroke, or a loop whose hole is the dark canvas (over a quarter of its
    outline). Nothing dark written on it (under 0.05% of it): None, the usual reading, if it
    is long and thin; else, with nothing darker than its shading, ImageError: a blank sheet
    (`name` names the picture)."""
    from skimage.filters import threshold_otsu  # heavy (~0.3 s): only when reading pictures

    H, W = grey.shape
    small = _resize(grey, (max(1, round(H * factor)), max(1, round(W * factor))))
    if min(small.shape) < 16 or float(np.ptp(small)) < 0.2:
        return None
    light = small > threshold_otsu(small)
    desk, sheet = small[~light], small[light]
    if not len(desk) or float(sheet.mean() - desk.mean()) < 0.2:
        return None
    if float(np.mean(~_border(light))) < 0.9:
        return None
    # A sticky note can be 3% of a photo: the desk around it and four sides say enough.
    found = _sheet(light, min_holes=0.0, quadrilateral=True, min_area=0.03)
    if found is None:
        return None
    (r0, r1, c0, c1), inside = found
    if float(np.mean(~light[r0:r1, c0:c1][inside])) < 0.0005:
        if min(r1 - r0, c1 - c0) < 0.4 * max(r1 - r0, c1 - c0):
            return None  # long and thin: rather a fat light stroke (a "1" as a bar)
        # Nothing darker than the sheet's own shading and noise (0.08 below its median,
        # in 3x3 means): a blank sheet. Its shading read as a faint digit (a 1 at 99.9%).
        from scipy.ndimage import uniform_filter

        on_it = uniform_filter(small, 3)[r0:r1, c0:c1][inside]
        if float(np.median(on_it) - on_it.min()) < 0.08:
            raise ImageError(f"{name}: no digit found (a blank sheet)", "blank")
    return _in_picture(found[0], factor), inside


def _sheet(
    mask: np.ndarray, min_holes: float = 0.01, quadrilateral: bool = False, min_area: float = 0.08
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Rows and columns (r0, r1, c0, c1) inside a sheet that `mask` (the marks taken for
    the digit) really is, and where in that box the sheet is (bool, inset from its edge);
    None when it is a digit.

    A sheet of paper, a sticky note or an app's canvas photographed smaller than the photo
    stands out from the desk as one big solid mark, the digit a hole in it: at least
    `min_area` of the picture, holes `min_holes`-25% of its outline (a "0" is mostly hole, a
    stroke has none), and that outline a rectangle (turned any way), not an oval (a fat 0 or 8
    filled in); with `quadrilateral`, any convex four-sided outline (a sheet photographed at an
    angle).
    """
    from scipy.ndimage import binary_fill_holes
    from skimage.measure import label, regionprops  # heavy (~0.3 s): only when reading pictures

    regions = regionprops(label(mask, connectivity=2))
    if not regions:
        return None
    p = max(regions, key=lambda r: r.area)
    filled = binary_fill_holes(p.image)
    holes = 1 - p.area / max(1, int(filled.sum()))
    if p.area < min_area * mask.size or not min_holes <= holes <= 0.25:
        return None
    # A rectangle, turned any way, fills the box turned with it (tried every 3 degrees); a
    # filled-in 0 or 8 (an oval) fills at most pi/4 of any box.
    rows, cols = np.nonzero(filled)
    rows, cols = rows - rows.mean(), cols - cols.mean()
    best = 0.0
    for angle in np.radians(np.arange(0, 90, 3)):
        along = rows * np.cos(angle) + cols * np.sin(angle)
        across = cols * np.cos(angle) - rows * np.sin(angle)
        best = max(best, len(rows) / ((np.ptp(along) + 1) * (np.ptp(across) + 1)))
    if best < 0.88 and not (quadrilateral and _four_sided(filled)):
        return None
    from scipy.ndimage import binary_erosion
    from skimage.morphology import disk

    r0, c0, r1, c1 = p.bbox
    inset = max(2, round(0.04 * min(r1 - r0, c1 - c0)))  # off the sheet's edge
    if r1 - r0 <= 4 * inset or c1 - c0 <= 4 * inset:
        return None
    inside = binary_erosion(filled, structure=disk(inset))
    return (r0, r1, c0, c1), inside


def _four_sided(filled: np.ndarray) -> bool:
    """Whether a filled region (bool) is a convex quadrilateral: its outline simplified to
    within 2% of its size has four corners (Douglas-Peucker, skimage's `approximate_polygon`)
    and it fills 97% of its convex hull. An oval needs many more corners at that tolerance."""
    from skimage.measure import approximate_polygon, find_contours
    from skimage.morphology import convex_hull_image

    if float(filled.sum()) < 0.97 * float(convex_hull_image(filled).sum()):
        return False
    outline = max(find_contours(np.pad(filled, 1).astype(float), 0.5), key=len)
    corners = approximate_polygon(outline, tolerance=0.02 * max(filled.shape))
    # The polygon is closed (its first point comes again) and starts wherever the contour
    # does, often mid-side: one more point. An ellipse gives 13, a circle 16 (measured).
    return len(corners) - 1 in (4, 5)


def _shifted(result: Prepared, top: int, left: int) -> Prepared:
    """`result` of a part of a picture whose top-left corner is at (top, left) in it, with
    its crop box in the whole picture's pixels."""
    if result.crop_box is not None:
        x0, y0, x1, y1 = result.crop_box
        result.crop_box = (x0 + left, y0 + top, x1 + left, y1 + top)
    return result


def _without_checkerboard(pic: Picture) -> Picture:
    """`pic` with a checkerboard background painted one level, or `pic` itself.

    Editors show transparency as grey and white squares, and a screenshot or an export keeps
    them: the squares' edges outnumbered the digit's (read as blank). Told by its two grey
    levels (the commonest two, within 0.02, on over half the picture, 0.05-0.4 apart) laid
    out in squares: a step of one square's side along rows and columns flips the level, two
    steps keep it (90% of the background's pairs each). Both are then the lighter level (the
    darker, for a dark board), in colour too."""
    g = pic.grey
    if min(g.shape) < 32 or pic.alpha is not None:
        return pic
    q = np.round(g * 255).astype(np.int32)
    counts = np.bincount(q.ravel(), minlength=256)
    a, b = np.argsort(counts)[::-1][:2]
    if not 13 <= abs(int(a) - int(b)) <= 102:
        return pic
    # Told from the histogram (the two +-5 windows cannot overlap 13 apart): most pictures
    # leave here, before any picture-sized work.
    near = sum(int(counts[max(0, v - 5) : v + 6].sum()) for v in (a, b))
    if near < 0.5 * q.size:
        return pic
    near_a, near_b = np.abs(q - a) <= 5, np.abs(q - b) <= 5
    side = _square_side(near_a, near_a | near_b)
    if side is None:
        return pic
    background = near_a | near_b
    paper = max(a, b) if (a + b) / 2 > 127 else min(a, b)
    grey = np.where(background, paper / 255.0, g)
    rgb = None
    if pic.rgb is not None:
        colour = np.median(pic.rgb[(q == paper)], axis=0)
        rgb = np.where(background[..., None], colour, pic.rgb)
    return Picture(grey, None, pic.name, pic.mode, pic.rotated, rgb, pic.scale)


def _square_side(level: np.ndarray, known: np.ndarray) -> int | None:
    """The side (pixels) of the squares `level` (bool) is laid out in, where `known`; None
    when it is no checkerboard (see `_without_checkerboard`)."""
    runs = np.diff(np.flatnonzero(np.diff(level[level.shape[0] // 2].astype(np.int8)) != 0))
    if len(runs) < 4:
        return None
    side = int(np.median(runs))
    if side < 2 or side * 4 > min(level.shape):
        return None
    for axis in (0, 1):
        one = np.take(level, range(side, level.shape[axis]), axis)
        two = np.take(level, range(2 * side, level.shape[axis]), axis)
        base = np.take(level, range(level.shape[axis] - side), axis)
        base2 = np.take(level, range(level.shape[axis] - 2 * side), axis)
        k1 = known.take(range(side, level.shape[axis]), axis) & known.take(
            range(level.shape[axis] - side), axis
        )
        k2 = known.take(range(2 * side, level.shape[axis]), axis) & known.take(
            range(level.shape[axis] - 2 * side), axis
        )
        if float((one != base)[k1].mean()) < 0.9 or float((two == base2)[k2].mean()) < 0.9:
            return None
    return side


def _trim_padding(pic: Picture) -> tuple[int, int, int, int] | None:
    """The rows and columns (r0, r1, c0, c1) of the picture without its padding; None when
    it has none.

    Padding is what surrounds a picture rather than belonging to it: fully transparent rows
    and columns around an opaque picture (trimmed only when what is left is opaque: strokes on
    transparency are the ink, not padding), and perfectly uniform bands along an edge whose
    colour differs from the picture inside (letterboxing, a black frame round a white
    drawing). A page's own even margin is the paper's colour and stays. Both once made the
    picture's outline the "digit" (a 0 at 100%, or one filled shape).
    """
    H, W = pic.grey.shape
    r0, r1, c0, c1 = 0, H, 0, W
    if pic.alpha is not None:
        shown = pic.alpha >= 0.02
        rows, cols = np.flatnonzero(shown.any(1)), np.flatnonzero(shown.any(0))
        if len(rows):
            box = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            opaque = float((pic.alpha[box[0] : box[1], box[2] : box[3]] >= 0.5).mean()) >= 0.9
            # A picture inside has paper and ink; one plain block is a stroke (a drawn "1").
            shows = float(np.ptp(pic.grey[box[0] : box[1], box[2] : box[3]])) > 0.1
            if opaque and shows:
                r0, r1, c0, c1 = box
    grey = pic.grey[r0:r1, c0:c1]
    h, w = grey.shape
    paper = float(np.median(grey[h // 4 : h - h // 4, w // 4 : w - w // 4]))  # the middle's
    top, bottom = _band(grey, paper), _band(grey[::-1], paper)
    left, right = _band(grey.T, paper), _band(grey.T[::-1], paper)
    r0, r1, c0, c1 = r0 + top, r1 - bottom, c0 + left, c1 - right
    if (r0, r1, c0, c1) == (0, H, 0, W) or min(r1 - r0, c1 - c0) < 8:
        return None
    return r0, r1, c0, c1


def _band(lines: np.ndarray, paper: float) -> int:
    """How many of `lines` (rows from one edge inward) form a uniform band of padding: rows
    of one colour (within 0.03) meeting a row whose middle half is plain (within 0.1), of the
    paper's colour (`paper`, the middle of the picture's, within 0.25) and over 0.25 from the
    band's: a clean step from the band to the picture's own paper. A page's margin meets the
    digit's strokes instead (a row of ink and paper, or a 7's bar: ink), so it stays; 0 if
    no band."""
    if not len(lines) or float(np.ptp(lines[0])) > 0.03:
        return 0
    colour = float(lines[0].mean())
    spread = np.ptp(lines, axis=1)
    same = (spread <= 0.03) & (np.abs(lines.mean(axis=1) - colour) <= 0.03)
    k = int(np.argmin(same)) if not same.all() else len(lines)
    if not 0 < k < len(lines) // 2:
        return 0
    n = len(lines[k])
    step = lines[k][n // 4 : n - n // 4]  # its middle: bands on the other edges cross its ends
    plain = float(np.ptp(step)) <= 0.1 and abs(float(step.mean()) - paper) <= 0.25
    return k if plain and abs(float(step.mean()) - colour) > 0.25 else 0


def _ink_map(pic, grey: np.ndarray | None, factor: float):
    """Ink as a non-negative map at `factor` of the picture's size, with the noise level,
    whether it was inverted, whether it is a tight crop, and warnings. grey: the grey map to
    read (None: the ink is the alpha channel)."""
    H, W = pic.grey.shape
    shape = (max(1, round(H * factor)), max(1, round(W * factor)))
    warn: list[str] = []
    if grey is None:
        # A canvas export: strokes of any colour on transparency. The opacity is the ink.
        flat = _resize(pic.alpha, shape)
        # Paper that is only partly transparent (40% opaque, say) is paper all the same: the
        # ink is what stands above its level (it once made the whole page one mark).
        return np.clip(flat - float(np.median(flat)), 0, None), 0.0, False, False, warn
    flat, noise, inverted, tight = _flatten(_resize(grey, shape))
    flat, ruled = _drop_rules(flat, noise)
    if ruled:
        warn.append("ruled lines of the paper removed")
    return flat, noise, inverted, tight, warn


def _fill_transparent(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """grey with its (partly) transparent pixels filled in, where under half are transparent.

    - Transparency inside a picture that keeps off its border is the digit cut out of an
      opaque sheet (a stencil, or a shape knocked out of a layer): filled with the opposite
      of the paper, as a viewer shows it over a page (it once read as blank).
    - Paper that is partly transparent all over (ink opaque on a 40%-opaque page) is shown
      over a backdrop: of white and black, the one that leaves the picture the most contrast
      (black ink on half-transparent black paper shows only over white).
    - Otherwise (rounded corners, a rotated photo's fill) the transparency is filled with the
      paper, which hides it.
    """
    clear = alpha < 0.5
    paper = float(np.median(grey[~clear]))
    if float(clear.mean()) >= 0.005 and float(_border(clear).mean()) < 0.02:
        fill = 0.0 if paper > 0.5 else 1.0
        return grey * alpha + fill * (1 - alpha)
    if 0.05 < float(np.median(alpha)) < 0.95:
        shown = [grey * alpha + backdrop * (1 - alpha) for backdrop in (1.0, 0.0)]
        return max(shown, key=lambda g: float(np.ptp(np.percentile(g, [1, 99]))))
    return grey * alpha + paper * (1 - alpha)


def to_mnist(image, *, recipe: str = "digit", name: str | None = None) -> np.ndarray:
    """`prepare(image).image`: any picture of a digit as MNIST's 28x28 uint8 (light on black)."""
    return prepare(image, recipe=recipe, name=name).image


def _resize(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Float image to (h, w): area-averaged when shrinking (no aliasing), bilinear when growing."""
    if arr.shape == shape:
        return arr.astype(np.float64, copy=False)
    shrink = shape[0] < arr.shape[0] and shape[1] < arr.shape[1]
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    return np.asarray(im.resize((shape[1], shape[0]), method), dtype=np.float64)


def _contrast_grey(pic) -> tuple[np.ndarray, bool]:
    """The grey map to read the ink from, and whether it came from colour. A blue or red pen
    on white or yellowish paper can differ from the paper far more in colour than in
    brightness: where the marks that stand furthest from the paper's colour differ from it
    mostly in hue (not along the grey axis), the picture is read along that colour difference
    instead of luma (paper 0.9, the marks 0.1)."""
    if pic.rgb is None:
        return pic.grey, False
    rgb = pic.rgb
    step = max(1, round(max(rgb.shape[:2]) / 128))
    sample = rgb[::step, ::step].reshape(-1, 3)
    paper = np.median(sample, axis=0)
    dist = np.linalg.norm(sample - paper, axis=1)
    far = sample[dist >= np.quantile(dist, 0.98)]
    d = far.mean(axis=0) - paper
    size = float(np.linalg.norm(d))
    if size < 0.05:
        return pic.grey, False
    along_grey = abs(float(d.sum())) / np.sqrt(3)
    hue = float(np.sqrt(max(size**2 - along_grey**2, 0.0)))
    luma_gap = abs(float(d @ np.array([0.299, 0.587, 0.114])))
    if hue < 0.5 * size or luma_gap > 0.6 * size:
        return pic.grey, False
    proj = (rgb - paper) @ d / size**2  # 0 on the paper, 1 on the typical mark
    return np.clip(0.9 - 0.8 * proj, 0, 1), True


def _drop_rules(flat: np.ndarray, noise: float) -> tuple[np.ndarray, bool]:
    """Remove lined or squared paper's rules: straight lines across the whole picture, found as
    rows (columns) whose low percentile is ink. Only when there are at least three of them, so
    a lone long stroke (a "1" from edge to edge) is never taken for paper; with them, a margin
    (one or two thin lines the other way) goes too."""
    found = {}
    for axis in (1, 0):
        profile = np.percentile(flat, 10, axis=axis)
        lines = profile > max(3 * noise, 0.01)
        starts = int(np.count_nonzero(np.diff(lines.astype(np.int8)) == 1) + lines[0])
        found[axis] = profile, starts, float(lines.mean())
    ruled = any(starts >= 3 for _, starts, _ in found.values())
    for axis, (profile, starts, share) in found.items():
        # Ruled paper's margin: one thin line across the rules (it read as a "1" at 99.8%
        # beside a small 9): taken with them, never alone.
        margin = ruled and 1 <= starts <= 2 and share <= 0.03
        if starts >= 3 or margin:
            flat = np.clip(flat - np.expand_dims(profile, axis), 0, None)
    return flat, ruled


def _flatten(grey: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
    """Ink as a non-negative map on a flat zero background, the noise level, whether the
    picture was dark on light (then inverted) and whether it is cropped tight to the digit.
    grey: (H, W) float in [0, 1], 1 = white."""
    from skimage.filters import gaussian, rank  # heavy (~0.3 s): only when reading pictures
    from skimage.morphology import disk, opening  # heavy (~0.3 s): only when reading pictures

    smooth = gaussian(grey, sigma=0.8)  # sensor noise and JPEG ringing
    step = max(1, round(max(grey.shape) / 128))
    small = _resize(smooth, (max(1, grey.shape[0] // step), max(1, grey.shape[1] // step)))
    # Which side of the paper are the marks on? Compare each pixel with the median around it
    # (a median ignores the marks on either side while they cover under half the window) and
    # weigh the marks that stand out above the noise on each side.
    radius = max(2, round(min(small.shape) / 4))
    lo, hi = float(small.min()), float(small.max())
    unit = (small - lo) / (hi - lo) if hi > lo else np.zeros_like(small)
    local = rank.median(np.rint(unit * 255).astype(np.uint8), disk(radius)) / 255.0
    fine = unit - gaussian(unit, sigma=1.5)
    floor = 4 * 1.4826 * float(np.median(np.abs(fine - np.median(fine)))) + 0.02
    light_marks = float(np.clip(unit - local - floor, 0, None).sum())
    dark_marks = float(np.clip(local - unit - floor, 0, None).sum())
    inverted = dark_marks > light_marks
    tight = _tight_crop(unit)
    if tight is not None:
        inverted = tight
    if inverted:
        smooth, small = 1.0 - smooth, 1.0 - small
    # A tight crop's frame is its paper (strokes as wide as its would pass the opening).
    level = float(np.median(_border(small))) if tight is not None else _even_paper(small)
    if level is not None:
        # Evenly lit paper: one level for all of it. An opening would take the inside of a fat
        # marker's closed loop (wider than its reach) for paper and grey it out.
        paper = np.full(grey.shape, level)
    else:
        # The paper under the (now light) marks: a grey opening with a disk wider than any
        # stroke removes them and keeps the light's slow changes and shadows' edges (a top-hat).
        reach = max(2, round(min(small.shape) / 7))
        paper = opening(_continued(small, reach), disk(reach, decomposition="sequence"))
        paper = paper[reach:-reach, reach:-reach]
        paper = _resize(gaussian(paper, sigma=1.0), grey.shape)
    residual = smooth - paper
    # The paper's own spread (a robust MAD). In a tight crop up to half the pixels are ink and
    # would make it the ink's: there the paper is the frame.
    bulk = _border(residual) if tight is not None else residual
    centre = float(np.median(bulk))
    noise = 1.4826 * float(np.median(np.abs(bulk - centre)))
    return np.clip(residual - centre, 0, None), noise, inverted, tight is not None


def _continued(small: np.ndarray, reach: int) -> np.ndarray:
    """`small` padded by `reach` for the paper's opening: mirrored at its edges, except where
    the paper rises gently toward an edge, which is continued along its slope (an odd
    reflection). Light that falls off toward a photo's corners (a vignette; the corners rise
    once the picture is inverted) made them peaks that the opening cut, and the cut corners
    read as the digit beside a small real one. A steep rise is ink touching the edge (a
    tight crop): continued, it would have become paper, so it stays mirrored."""
    even = np.pad(small, reach, mode="reflect")
    odd = np.pad(small, reach, mode="reflect", reflect_type="odd")
    # Ink at the edge rises about twice its contrast (about the picture's range). Measured:
    # at 0.5 of the range 6 of the tester's 50 vignette pages stayed wrong, at 1.0 a chalk
    # board's frame lost one of 40 benchmark pictures; at 0.7 neither.
    gentle = 0.7 * float(np.ptp(small))
    rise = odd - even
    return np.where((rise >= 0) & (rise <= gentle), odd, even)


def _border(a: np.ndarray) -> np.ndarray:
    """The outermost pixels of a 2-D array, each once."""
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def _tight_crop(unit: np.ndarray) -> bool | None:
    """For a digit cropped tight to its box: whether its marks are the dark side; else None.

    Such a crop has ink in up to half of it, so the local medians `_flatten` compares with see
    ink as often as paper (6 of 10 tight crops of dark digits read as light ink). It is told
    by its frame: the border is mostly (3/4) one side of the Otsu split, the paper, while the
    other side reaches within 3.5% of all four edges and covers under 60% of the picture. A
    sheet photographed on a table has its table as the border too, but the sheet is most of
    the picture, or keeps further from the edges.
    """
    from skimage.filters import threshold_otsu  # heavy (~0.3 s): only when reading pictures

    if float(unit.max()) - float(unit.min()) < 1e-6:
        return None
    dark = unit <= threshold_otsu(unit)
    ring = _border(dark)
    paper_dark = float(ring.mean()) >= 0.75
    if not (paper_dark or float(ring.mean()) <= 0.25):
        return None
    marks = ~dark if paper_dark else dark
    rows, cols = np.flatnonzero(marks.any(1)), np.flatnonzero(marks.any(0))
    if not len(rows) or float(marks.mean()) >= 0.6:
        return None
    span = min((rows[-1] - rows[0] + 1) / marks.shape[0], (cols[-1] - cols[0] + 1) / marks.shape[1])
    return (not paper_dark) if span >= 0.93 else None


def _even_paper(small: np.ndarray) -> float | None:
    """The paper's level when the picture is two-level, light marks on evenly lit paper (the
    Otsu split leaves the paper side narrow against the gap to the marks, and the marks keep
    off the border); None otherwise."""
    from skimage.filters import threshold_otsu  # heavy (~0.3 s): only when reading pictures

    if float(small.max()) - float(small.min()) < 1e-6:
        return None
    split = threshold_otsu(small)
    paper, marks = small[small <= split], small[small > split]
    if paper.size < 0.5 * small.size or marks.size == 0:
        return None
    # A shadowed corner or a table top splits off like marks but runs along the border;
    # a digit touches the border, if at all, over a short stretch.
    border = _border(small)
    if float(np.mean(border > split)) > 0.05:
        return None
    lo, mid, hi = np.percentile(paper, [1, 50, 99])
    gap = float(np.median(marks)) - mid
    return float(mid) if gap > 0 and hi - lo < 0.25 * gap else None


def _find_digit(
    flat: np.ndarray,
    noise: float,
    name: str,
    min_share: float = MIN_MARK,
    contrast: float = 1.0,
    tight: bool = False,
) -> tuple[np.ndarray, int, int]:
    """The digit's pixels (bool, flat's shape) and how many other marks were dropped; marks
    under `min_share` of the picture's area (and under 4 pixels) are specks. `contrast`: the
    picture's own range of grey (what a faint mark is faint against); `tight`: the picture is
    cropped tight to its digit, which then touches every edge. Also returns how many marks
    left out are as big as a digit (a second digit beside it).

    The marks (`_marks`) lose the specks, the page's lighting (`_lighting`), printed boxes
    round another mark (`_boxed`) and the page's or screen's own marks
    (`_page_marks_left_out`); the strongest mark away from the border is the digit, and
    the marks near it or big enough to be its parts join it (`_gather`)."""
    # A picture of strong contrast with no digit in it (pure noise, a texture) was called
    # blank; plain paper, even grainy (noise of a tenth of the range), spans under 0.4. An
    # empty canvas (ink in the alpha channel: contrast 1 by definition) has no noise at all.
    busy = contrast >= 0.5 and noise > 0.01
    why = "nothing in it stands out as a digit" if busy else "the picture looks blank"
    blank = ImageError(f"{name}: no digit found ({why})", "no_digit" if busy else "blank")
    marks, props = _marks(flat, noise, blank)
    h, w = flat.shape
    min_area = max(4, min_share * h * w)
    props = [p for p in props if p.area >= min_area and (tight or not _lighting(p, h, w, contrast))]
    props = [p for p in props if not _boxed(p, props)]
    props = _page_marks_left_out(props, h, w, blank)
    if not props:
        raise blank
    biggest = max(p.area for p in props)
    inner = [p for p in props if not _at_border(p, h, w)]
    # Paper edges, table tops and shadows reach the border; the digit usually does not.
    pool = inner if inner and max(p.area for p in inner) >= 0.2 * biggest else props
    main = max(pool, key=lambda p: p.area * p.intensity_mean)
    if noise > 0 and main.intensity_mean < 5 * noise:
        raise blank
    kept = _gather(main, props, h, w)
    mask = np.isin(marks, [p.label for p in kept])
    height = main.bbox[2] - main.bbox[0]
    rivals = [
        p
        for p in props
        if not any(p is k for k in kept)
        and (
            (p.area >= 0.4 * main.area and p.bbox[2] - p.bbox[0] >= 0.6 * height)
            or _beside(p, main)
        )
    ]
    # Tiny marks under min_area count as dropped too.
    return mask, int(marks.max()) - len(kept), len(rivals)


def _page_marks_left_out(props: list, h: int, w: int, blank: ImageError) -> list:
    """`props` without what belongs to the page or the screen rather than the digit: an app's
    solid boxes beside a stroke, thin straight lines from edge to edge beside a mark that
    could be the digit. Raises `blank` when such lines (with at most specks) are all there is."""
    # An app's buttons and colour swatches are solid boxes; a digit's strokes are not (a
    # palette row was read as a 7 at 97% beside a thin 1). Left out beside a stroke a fifth
    # of their size (a fat "1" drawn as a bar, alone or with specks, stays).
    solid = [p for p in props if p.extent >= 0.85 and p.solidity >= 0.85]
    strokes = [p for p in props if not any(p is q for q in solid)]
    if solid and strokes and max(p.area for p in strokes) >= 0.2 * max(q.area for q in solid):
        props = strokes
    # A margin rule, a fold or a table's edge: one thin straight line from edge to edge (it
    # once read as a "1" at 99.8% beside the small 9 written on the page). Left out when
    # something else on the page could be the digit.
    lines = [p for p in props if _edge_line(p, h, w)]
    others = [p for p in props if not any(p is q for q in lines)]
    if lines and others and max(o.area for o in others) >= 0.05 * min(q.area for q in lines):
        props = others
    else:
        # A rule or an edge straight across a blank page, or a fold down it (faint), with at
        # most specks beside it: no digit lies flat, and a "1" from top to bottom is drawn
        # darker (one cropped tight to it meets all four edges: never a line).
        flat_lines = [
            p
            for p in props
            if _edge_line(p, h, w, 0.04) and (p.bbox[3] - p.bbox[1] == w or p.intensity_mean < 0.25)
        ]
        rest = [p for p in props if not any(p is q for q in flat_lines)]
        if flat_lines and all(p.area < 0.05 * max(q.area for q in flat_lines) for p in rest):
            raise blank
    return props


def _marks(flat: np.ndarray, noise: float, blank: ImageError) -> tuple[np.ndarray, list]:
    """(labels, regions) of the ink map's marks: hysteresis between Otsu's threshold (at least
    6x the noise and a tenth of the peak) and half of it. Raises `blank` when even the peak is
    within the noise."""
    from skimage.filters import (
        apply_hysteresis_threshold,
        threshold_otsu,
    )  # heavy (~0.3 s): only when reading pictures
    from skimage.measure import label, regionprops  # heavy (~0.3 s): only when reading pictures

    peak = float(flat.max())
    if peak < max(0.04, 8 * noise):
        raise blank
    high = max(threshold_otsu(flat), 6 * noise, 0.1 * peak)
    low = max(0.5 * high, 3 * noise)
    marks = label(apply_hysteresis_threshold(flat, low, high), connectivity=2)
    return marks, regionprops(marks, intensity_image=flat)


def _at_border(p, h: int, w: int) -> bool:
    r0, c0, r1, c1 = p.bbox
    return r0 == 0 or c0 == 0 or r1 == h or c1 == w


def _lighting(p, h: int, w: int, contrast: float) -> bool:
    """Whether mark `p` of an h x w picture is the page's lighting, not ink.

    A blank page's uneven light or its edge on a table leaves marks too: a ring along all
    four edges (a vignette), a faint band straight across (a gradient, the paper's edge), a
    solid, convex patch lying along an edge (the table beside the sheet) or the straight edge
    of a shadow across a corner. A digit is none of these: a "1" from edge to edge stands out
    strongly, and a digit at the edge meets it over a short stretch or is no solid patch."""
    r0, c0, r1, c1 = p.bbox
    ring = r0 == 0 and c0 == 0 and r1 == h and c1 == w
    across = (r0 == 0 and r1 == h) or (c0 == 0 and c1 == w)
    faint = p.intensity_mean < 0.25 * contrast
    along = max(
        p.image[0].sum() / w if r0 == 0 else 0,
        p.image[-1].sum() / w if r1 == h else 0,
        p.image[:, 0].sum() / h if c0 == 0 else 0,
        p.image[:, -1].sum() / h if c1 == w else 0,
    )
    patch = p.solidity >= 0.9 and along >= 0.25
    # Where a shadow's soft edge meets the border a faint trace is left (under 15% of the
    # picture's own contrast): a 1 at 99.8% on a blank sheet. Ink at the border is stronger.
    trace = (r0 == 0 or c0 == 0 or r1 == h or c1 == w) and p.intensity_mean < 0.15 * contrast
    # A shadow's or a sheet's edge cutting a corner off: a straight line from one edge to the
    # next (a "1" that runs off the page meets opposite edges, or one).
    sides = (r0 == 0, c1 == w, r1 == h, c0 == 0)  # top, right, bottom, left
    corner = sum(sides) == 2 and not (sides[0] and sides[2]) and not (sides[1] and sides[3])
    chord = corner and p.eccentricity >= 0.97
    return ring or patch or chord or trace or (across and p.extent >= 0.8 and faint)


def _edge_line(p, h: int, w: int, thickness: float = 0.02) -> bool:
    """Whether mark `p` of an h x w picture is a thin straight line from one edge to the
    opposite one: as long as the picture, under `thickness` of that thick (area over length), and
    straight (eccentricity of its moments' ellipse at least 0.995). A "1" in a crop tight to
    it meets all four edges: never a line."""
    r0, c0, r1, c1 = p.bbox
    down, across = r0 == 0 and r1 == h, c0 == 0 and c1 == w
    length = h if down and not across else w if across and not down else 0
    return length > 0 and p.area <= thickness * length * length and p.eccentricity >= 0.995


def _encloses(p, q) -> bool:
    return (
        p.bbox[0] <= q.bbox[0]
        and p.bbox[1] <= q.bbox[1]
        and p.bbox[2] >= q.bbox[2]
        and p.bbox[3] >= q.bbox[3]
    )


def _boxed(p, props: list) -> bool:
    """Whether mark `p` is a printed box around another of `props`.

    A printed box around the digit (a form's field, a frame drawn round it) is a thin outline
    (under 15% of its box inked) enclosing a mark of at least half its ink: never the digit
    nor part of it (it once stayed in the 28x28 and a 2 read as 3). A dotted 8's loop of dots
    encloses only smaller clusters. A rectangle's outline (a page's printed border) is left
    out whatever it encloses."""
    outline = _outline(p)
    if not (p.extent < 0.15 or outline):
        return False
    least = 0 if outline else 0.5 * p.area
    return any(q is not p and q.area >= least and _encloses(p, q) for q in props)


def _gather(main, props: list, h: int, w: int) -> list:
    """The digit's marks: `main` and, until none joins, each mark near its box (2% of its
    area, within 15% of its size) or big enough to be a part of it (15%, within half its
    size, off the border); an underline never joins."""
    size = max(main.bbox[2] - main.bbox[0], main.bbox[3] - main.bbox[1])
    kept, box = [main], list(main.bbox)
    grown = True
    while grown:
        grown = False
        for p in props:
            if any(p is k for k in kept):
                continue
            gap = max(
                box[0] - p.bbox[2], p.bbox[0] - box[2], box[1] - p.bbox[3], p.bbox[1] - box[3], 0
            )
            if _underline(p, box, size) or _beside(p, main):
                continue
            near = p.area >= 0.02 * main.area and gap <= 0.15 * size
            part = p.area >= 0.15 * main.area and gap <= 0.5 * size and not _at_border(p, h, w)
            if near or part:
                kept.append(p)
                box = [
                    min(box[0], p.bbox[0]),
                    min(box[1], p.bbox[1]),
                    max(box[2], p.bbox[2]),
                    max(box[3], p.bbox[3]),
                ]
                grown = True
    return kept


def _beside(p, main) -> bool:
    """Whether region `p` is a second digit written beside the digit `main` rather than a part
    of it: at least 60% of its height and 15% of its area, side by side with it (their columns
    overlap by under a quarter of the narrower one's width), the two together at least as
    wide as tall. Two handwritten digits 0-1 digit-widths apart once joined as one mark (an
    8 and a 7 read as a 0 at 99.9%, with no note); a digit's own parts (a 5's top bar, a 4's
    strokes) are shorter, or overlap it, or make a box taller than wide."""
    (pt, pl, pb, pr), (mt, ml, mb, mr) = p.bbox, main.bbox
    if p.area < 0.15 * main.area or pb - pt < 0.6 * (mb - mt):
        return False
    overlap = min(pr, mr) - max(pl, ml)
    if overlap > 0.25 * min(pr - pl, mr - ml):
        return False
    return max(pr, mr) - min(pl, ml) >= max(pb, mb) - min(pt, mt)


def _outline(p) -> bool:
    """Whether region `p` is the outline of a rectangle: under 30% of its box inked, and at
    least 85% of its pixels within 8% of the box's edges (a 0's loop meets its box only near
    four points)."""
    if p.extent >= 0.3:
        return False
    h, w = p.image.shape
    band = max(2, round(0.08 * min(h, w)))
    inner = p.image[band:-band, band:-band]
    return h > 2 * band and w > 2 * band and inner.sum() <= 0.15 * p.area


def _underline(p, box: list[int], size: int) -> bool:
    """Whether region `p` is a line drawn under the digit's box (rows, cols as regionprops'
    bbox): flat (at least 6 times as wide as high), about as wide as the digit or wider, and
    below its lower part. A 5's separate flag or a 7's bar sit higher."""
    r0, c0, r1, c1 = p.bbox
    flat = (c1 - c0) >= 6 * (r1 - r0)
    wide = (c1 - c0) >= 0.6 * (box[3] - box[1])
    return flat and wide and r0 >= box[2] - 0.1 * size


def _normalise_strokes(ink: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """Bring the strokes toward MNIST's width at a fixed size; returns the ink (long side
    `_FINE`, float in [0, 1]) and the factor the stroke width changed by. Raises ImageError
    (naming `name`) for a filled shape, which has no strokes."""
    from skimage.morphology import (
        dilation,
        disk,
        erosion,
        skeletonize,
    )  # heavy (~0.3 s): only when reading pictures

    h, w = ink.shape
    s = _FINE / max(h, w)
    fine = _resize(ink, (max(1, round(h * s)), max(1, round(w * s))))
    fine = _stretch(fine, 0.9)  # a thin pen shrunk to a faint line is ink again
    strokes = fine >= 0.5
    length = int(skeletonize(strokes).sum())
    if length == 0:
        return fine, 1.0
    width = strokes.sum() / length  # area over centre-line length
    if width > SOLID * max(fine.shape):
        # A filled square or disc (a scribbled blob) has no strokes: its "width" is most of its
        # size (an erosion that wide once ran out of memory).
        raise ImageError(f"{name}: the ink is one filled shape, not the strokes of a digit")
    target = MNIST_STROKE * _FINE
    # At most one MNIST stroke width thinner per step (a bound on the erosion's disk).
    radius = max(round((target - width) / 2), -round(target))
    if width < 0.75 * target and radius >= 1:
        fine = dilation(fine, disk(radius))
    elif width > 1.5 * target and radius <= -1:
        thinner = erosion(fine, disk(-radius))
        if (thinner >= 0.5).sum() >= 0.3 * strokes.sum():  # never erode a digit away
            fine = thinner
        else:
            radius = 0
    else:
        radius = 0
    return fine, float((width + 2 * radius) / width)


def _stretch(arr: np.ndarray, q: float) -> np.ndarray:
    """Scale so the q-quantile of the ink (pixels above a tenth of the peak) becomes 1."""
    ink = arr[arr > 0.1 * arr.max()] if arr.max() > 0 else arr
    top = float(np.quantile(ink, q)) if ink.size else 0.0
    return np.clip(arr / top, 0, 1) if top > 0 else arr


def _fit(ink: np.ndarray, side: int) -> np.ndarray:
    """Shrink (or grow) to fit side x side keeping the aspect ratio; contrast stretched after."""
    h, w = ink.shape
    s = side / max(h, w)
    small = _resize(ink, (max(1, round(h * s)), max(1, round(w * s))))
    # After resizing thin strokes are grey: stretch so MNIST's share of ink is saturated.
    return _stretch(np.clip(small, 0, None), 1 - MNIST_SATURATED)


def _place(small: np.ndarray, centre_mass: bool) -> np.ndarray:
    """Put the fitted ink in 28x28: centred by mass (MNIST) or by its box (Fashion-MNIST)."""
    out = np.zeros((28, 28))
    h, w = small.shape
    top, left = (28 - h) // 2, (28 - w) // 2
    out[top : top + h, left : left + w] = small
    out = np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
    return centre_by_mass(out[None])[0] if centre_mass else out


def centre_by_mass(images: np.ndarray) -> np.ndarray:
    """Shift each uint8 image (N, 28, 28) by whole pixels so its centre of mass sits at
    (14, 14), where every MNIST digit has it (to within rounding: spread 0.29 px, that of a
    whole-pixel shift). Pixels pushed past the border are dropped; blank images stay blank.
    Raises ValueError as `deskew` does."""
    images = _image_stack(images, "centre_by_mass")
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    weight = images.astype(np.float64)
    total = weight.sum((1, 2))
    for i in range(len(images)):
        if total[i] == 0:
            continue
        dy = round(float(14.0 - (weight[i] * yy).sum() / total[i]))
        dx = round(float(14.0 - (weight[i] * xx).sum() / total[i]))
        src = images[i, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
        top, left = max(0, dy), max(0, dx)
        out[i, top : top + src.shape[0], left : left + src.shape[1]] = src
    return out
