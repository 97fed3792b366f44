"""Image preprocessing: any picture of a digit as MNIST's 28x28; deskewing by image moments;
centring by mass."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from digitlab.errors import ImageError
from digitlab.images import read_picture


def deskew(images: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Straighten each digit by its second-order image moments (uint8 in, uint8 out).

    The shear that makes the pixel mass's x/y covariance zero is applied about the centre of
    mass, which is moved to the image centre: the classic preprocessing that takes raw-pixel
    kNN on MNIST from about 97% to over 98%. Output stays uint8 so kNN keeps its exact path.
    All images of a batch are warped at once (bilinear, one `grid_sample` call).
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(
            f"deskew expects a non-empty stack of images (n, h, w), got {images.shape}"
        )
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
        """One line: what was done, e.g. for the app or `cnn predict --verbose`."""
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
    H, W = pic.grey.shape
    factor = min(1.0, _WORK_MAX / max(H, W)) if max(H, W) > _WORK_MIN else _WORK_MIN / max(H, W)
    shape = (max(1, round(H * factor)), max(1, round(W * factor)))
    warn: list[str] = []
    alpha_ink = pic.alpha is not None and float(np.mean(pic.alpha < 0.5)) >= 0.5
    by_colour = False
    if alpha_ink:
        # A canvas export: strokes of any colour on transparency. The opacity is the ink.
        flat = _resize(pic.alpha, shape)
        noise, inverted = 0.0, False
    else:
        grey, by_colour = _contrast_grey(pic)
        if pic.alpha is not None:  # a few transparent pixels: fill them with the paper
            fill = float(np.median(grey[pic.alpha >= 0.5]))
            grey = grey * pic.alpha + fill * (1 - pic.alpha)
        flat, noise, inverted = _flatten(_resize(grey, shape))
        flat, ruled = _drop_rules(flat, noise)
        if ruled:
            warn.append("ruled lines of the paper removed")
    mask, dropped = _find_digit(flat, noise, pic.name)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if r0 == 0 or c0 == 0 or r1 == shape[0] or c1 == shape[1]:
        warn.append("the ink touches the edge of the picture: part of it may be cut off")
    box = (
        int(c0 / factor),
        int(r0 / factor),
        min(W, int(np.ceil(c1 / factor))),
        min(H, int(np.ceil(r1 / factor))),
    )
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
        dropped=dropped,
        warnings=warn,
    )
    if recipe == "object":
        result.image = _place(_fit(ink, 28), centre_mass=False)
        return result
    ink, result.stroke_scale = _normalise_strokes(ink)
    result.image = _place(_fit(ink, 20), centre_mass=True)
    return result


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
    a lone long stroke (a "1" from edge to edge) is never taken for paper."""
    ruled = False
    for axis in (1, 0):
        profile = np.percentile(flat, 10, axis=axis)
        lines = profile > max(3 * noise, 0.01)
        starts = int(np.count_nonzero(np.diff(lines.astype(np.int8)) == 1) + lines[0])
        if starts >= 3:
            flat = np.clip(flat - np.expand_dims(profile, axis), 0, None)
            ruled = True
    return flat, ruled


def _flatten(grey: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Ink as a non-negative map on a flat zero background, the noise level, and whether the
    picture was dark on light (then inverted). grey: (H, W) float in [0, 1], 1 = white."""
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
    if inverted:
        smooth, small = 1.0 - smooth, 1.0 - small
    level = _even_paper(small)
    if level is not None:
        # Evenly lit paper: one level for all of it. An opening would take the inside of a fat
        # marker's closed loop (wider than its reach) for paper and grey it out.
        paper = np.full(grey.shape, level)
    else:
        # The paper under the (now light) marks: a grey opening with a disk wider than any
        # stroke removes them and keeps the light's slow changes and shadows' edges (a top-hat).
        reach = max(2, round(min(small.shape) / 7))
        paper = opening(small, disk(reach, decomposition="sequence"))  # fast, near-same shape
        paper = _resize(gaussian(paper, sigma=1.0), grey.shape)
    residual = smooth - paper
    noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    return np.clip(residual - np.median(residual), 0, None), noise, inverted


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
    border = np.concatenate([small[0], small[-1], small[1:-1, 0], small[1:-1, -1]])
    if float(np.mean(border > split)) > 0.05:
        return None
    lo, mid, hi = np.percentile(paper, [1, 50, 99])
    gap = float(np.median(marks)) - mid
    return float(mid) if gap > 0 and hi - lo < 0.25 * gap else None


def _find_digit(flat: np.ndarray, noise: float, name: str) -> tuple[np.ndarray, int]:
    """The digit's pixels (bool, flat's shape) and how many other marks were dropped."""
    from skimage.filters import (
        apply_hysteresis_threshold,
        threshold_otsu,
    )  # heavy (~0.3 s): only when reading pictures
    from skimage.measure import label, regionprops  # heavy (~0.3 s): only when reading pictures

    peak = float(flat.max())
    blank = ImageError(f"{name}: no digit found (the picture looks blank)")
    if peak < max(0.04, 8 * noise):
        raise blank
    high = max(threshold_otsu(flat), 6 * noise, 0.1 * peak)
    low = max(0.5 * high, 3 * noise)
    marks = label(apply_hysteresis_threshold(flat, low, high), connectivity=2)
    props = regionprops(marks, intensity_image=flat)
    h, w = flat.shape
    min_area = max(4, 2e-4 * h * w)
    props = [p for p in props if p.area >= min_area]
    if not props:
        raise blank

    def at_border(p) -> bool:
        r0, c0, r1, c1 = p.bbox
        return r0 == 0 or c0 == 0 or r1 == h or c1 == w

    biggest = max(p.area for p in props)
    inner = [p for p in props if not at_border(p)]
    # Paper edges, table tops and shadows reach the border; the digit usually does not.
    pool = inner if inner and max(p.area for p in inner) >= 0.2 * biggest else props
    main = max(pool, key=lambda p: p.area * p.intensity_mean)
    if noise > 0 and main.intensity_mean < 5 * noise:
        raise blank
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
            near = p.area >= 0.02 * main.area and gap <= 0.15 * size
            part = p.area >= 0.15 * main.area and gap <= 0.5 * size and not at_border(p)
            if near or part:
                kept.append(p)
                box = [
                    min(box[0], p.bbox[0]),
                    min(box[1], p.bbox[1]),
                    max(box[2], p.bbox[2]),
                    max(box[3], p.bbox[3]),
                ]
                grown = True
    mask = np.isin(marks, [p.label for p in kept])
    return mask, int(marks.max()) - len(kept)  # tiny marks under min_area count too


def _normalise_strokes(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """Bring the strokes toward MNIST's width at a fixed size; returns the ink (long side
    `_FINE`, float in [0, 1]) and the factor the stroke width changed by."""
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
    target = MNIST_STROKE * _FINE
    radius = round((target - width) / 2)
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
    whole-pixel shift). Pixels pushed past the border are dropped; blank images stay blank."""
    images = np.asarray(images)
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
