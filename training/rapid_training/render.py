"""Draws one data-set record as a product shot: a shape (a Fashion-MNIST image or an icon) turned into a
mask and a shading map, filled with a named colour, a pattern and a fabric look, posed on a plain
background. Dishes keep their own colours and are only posed.

Everything a picture depends on is in its record (drawn once by `dataset.py` from the seed), so the
same record renders the same pixels at any size; rendering works at twice the output size and
averages down, which anti-aliases stripes and dots without a resampling library.
"""

import gzip
import io
import json
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from . import vocab

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
ICONS_DIR = Path(__file__).resolve().parents[1] / "node_modules" / "@iconify-json"
ICON_RENDER_SIZE = 256


class DataError(Exception):
    """A source file the data set needs is missing or unreadable; the message names it and the fix."""


@cache
def fmnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images [N, 28, 28] uint8 and labels [N] of `split` ("train" or "t10k")."""
    paths = FMNIST_DIR / f"{split}-images-idx3-ubyte.gz", FMNIST_DIR / f"{split}-labels-idx1-ubyte.gz"
    arrays = []
    for path, offset in zip(paths, (16, 8)):
        try:
            with gzip.open(path, "rb") as file:
                arrays.append(np.frombuffer(file.read(), np.uint8, offset=offset))
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: cannot read ({error}); install it with `apt-get install dataset-fashion-mnist`")
    images, labels = arrays
    if images.size != labels.size * 28 * 28:
        raise DataError(f"{paths[0]}: holds {images.size} bytes of pixels for {labels.size} labels; reinstall it")
    return images.reshape(-1, 28, 28), labels


@cache
def _icon_set(name: str) -> dict:
    path = ICONS_DIR / name / "icons.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read ({error}); run `npm ci` in training/ to install the icon sets")


@cache
def icon_rgba(icon: str) -> np.ndarray:
    """`set:name` rendered to [256, 256, 4] float32 in [0, 1] with cairosvg."""
    import cairosvg

    set_name, name = icon.split(":")
    icons = _icon_set(set_name)
    entry = icons["icons"].get(name)
    if entry is None:
        alias = icons.get("aliases", {}).get(name)
        if alias is None:
            raise DataError(f"{ICONS_DIR / set_name / 'icons.json'}: has no icon `{name}`")
        entry = icons["icons"][alias["parent"]]
    width, height = entry.get("width", icons.get("width", 16)), entry.get("height", icons.get("height", 16))
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{entry.get("left", 0)} {entry.get("top", 0)} '
        f'{width} {height}" width="{ICON_RENDER_SIZE}" height="{ICON_RENDER_SIZE}" color="#000">'
        f'{entry["body"]}</svg>'
    )
    png = cairosvg.svg2png(bytestring=svg.encode())
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), np.float32) / 255.0


def _shape(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """(mask, luminance) of the record's source shape, each [S, S] float32 in [0, 1]."""
    source = record["source"]
    if source.startswith("fmnist:"):
        _, split, index = source.split(":")
        grey = fmnist(split)[0][int(index)].astype(np.float32) / 255.0
        grey = np.pad(grey, 2)
        return np.clip(4.0 * grey, 0.0, 1.0), grey
    rgba = icon_rgba(source)
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return rgba[..., 3], luminance


def _pose(layer: np.ndarray, record: dict, size: int, order=Image.BILINEAR) -> np.ndarray:
    """Places a [h, w, c] float layer on a size×size canvas: scale, rotation, flip and offset of the record."""
    pose = record["pose"]
    channels = layer.shape[2]
    side = max(1, int(round(pose["scale"] * size)))
    out = np.zeros((size, size, channels), np.float32)
    for c in range(channels):
        image = Image.fromarray(layer[..., c].astype(np.float32), mode="F").resize((side, side), order)
        image = image.rotate(pose["rotation"], resample=Image.BILINEAR, expand=False)
        channel = np.asarray(image)
        if pose["flip"]:
            channel = channel[:, ::-1]
        x0 = int(round((size - side) * pose["x"]))
        y0 = int(round((size - side) * pose["y"]))
        out[y0 : y0 + side, x0 : x0 + side, c] = channel
    return out


def _background(record: dict, size: int) -> np.ndarray:
    base = np.array(record["background"], np.float32) / 255.0
    # A soft vertical fall-off, as under studio light.
    ramp = np.linspace(1.0, 0.94, size, dtype=np.float32)[:, None, None]
    return np.broadcast_to(base, (size, size, 3)) * ramp


def _smooth_step(x: np.ndarray, edge: float, width: float) -> np.ndarray:
    return np.clip((x - edge) / width + 0.5, 0.0, 1.0)


def _pattern_mask(record: dict, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Where the contrast colour goes ([size, size] in [0, 1]) and, for flowers, where their centres go."""
    params = record["pattern_params"]
    scale = size / 64.0
    period = params["period"] * scale
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.deg2rad(params["angle"])
    a = u * np.cos(angle) + v * np.sin(angle) + params["phase"] * period
    b = -u * np.sin(angle) + v * np.cos(angle) + params["phase2"] * period
    soft = 0.8 * scale
    pattern = record["pattern"]
    if pattern == "solid":
        return np.zeros((size, size), np.float32), None
    if pattern == "striped":
        distance = np.abs((a / period) % 1.0 - 0.5) * period
        return 1.0 - _smooth_step(distance, params["duty"] * period * 0.5, soft), None
    if pattern == "dotted":
        row = np.floor(b / period)
        shifted = a + (row % 2) * period * 0.5
        du = (shifted / period) % 1.0 - 0.5
        dv = (b / period) % 1.0 - 0.5
        distance = np.hypot(du, dv) * period
        return 1.0 - _smooth_step(distance, params["radius"] * scale, soft), None
    if pattern == "checked":
        band = lambda x: 1.0 - _smooth_step(np.abs((x / period) % 1.0 - 0.5) * period, period * 0.25, soft)
        return np.clip(0.55 * band(a) + 0.55 * band(b), 0.0, 1.0), None
    # Floral: five round petals around a centre on a jittered lattice.
    cell_u, cell_v = np.floor(a / period), np.floor(b / period)
    jitter = np.sin(cell_u * 12.9898 + cell_v * 78.233) * 43758.5453
    jitter = (jitter - np.floor(jitter)) * 2.0 * np.pi
    du = ((a / period) % 1.0 - 0.5) * period
    dv = ((b / period) % 1.0 - 0.5) * period
    petal_radius, ring = 1.6 * scale, 2.0 * scale
    petals = np.zeros((size, size), np.float32)
    for k in range(5):
        theta = jitter + k * 2.0 * np.pi / 5.0
        distance = np.hypot(du - ring * np.cos(theta), dv - ring * np.sin(theta))
        petals = np.maximum(petals, 1.0 - _smooth_step(distance, petal_radius, soft))
    centre = 1.0 - _smooth_step(np.hypot(du, dv), 1.1 * scale, soft)
    return petals, centre


def _contrast_colour(base: np.ndarray) -> np.ndarray:
    luminance = float(base @ np.array([0.299, 0.587, 0.114], np.float32))
    return np.array([0.96, 0.95, 0.92], np.float32) if luminance < 0.55 else np.array([0.12, 0.12, 0.16], np.float32)


def _fabric(record: dict, colour: np.ndarray, shading: np.ndarray, size: int) -> np.ndarray:
    """Applies the fabric look to the coloured item [size, size, 3]."""
    fabric = record["fabric"]
    params = record["fabric_params"]
    rng = np.random.default_rng(params["noise_seed"])
    v, u = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = colour * shading[..., None]

    def sheen(strength: float, width: float) -> np.ndarray:
        angle = np.deg2rad(params["sheen_angle"])
        line = u * np.cos(angle) + v * np.sin(angle) - params["sheen_at"]
        return strength * np.exp(-((line / width) ** 2))[..., None]

    def noise(strength: float, blur: int) -> np.ndarray:
        field = rng.standard_normal((size // blur + 1, size // blur + 1)).astype(np.float32)
        field = np.kron(field, np.ones((blur, blur), np.float32))[:size, :size]
        return 1.0 + strength * field[..., None]

    if fabric in ("silk", "satin", "polyester"):
        strength = {"silk": 0.35, "satin": 0.5, "polyester": 0.18}[fabric]
        highlight = sheen(strength, 0.12 if fabric == "satin" else 0.2)
        out = out * (1.0 - highlight) + highlight
    elif fabric == "linen":
        rows = 1.0 + 0.07 * rng.standard_normal((size, 1)).astype(np.float32)
        cols = 1.0 + 0.07 * rng.standard_normal((1, size)).astype(np.float32)
        out = out * (rows * cols)[..., None]
    elif fabric == "denim":
        twill = 0.9 + 0.1 * np.sin(2.0 * np.pi * (u + v) * size / (4.0 * size / 128.0))
        out = out * twill[..., None] * noise(0.05, 2)
    elif fabric in ("wool", "cashmere"):
        out = out * noise(0.1 if fabric == "wool" else 0.05, max(2, size // 64 * 2))
    elif fabric == "leather":
        highlight = sheen(0.3, 0.1)
        out = out * 0.85 * noise(0.06, 2)
        out = out * (1.0 - highlight) + highlight
    elif fabric == "velvet":
        out = colour * (np.clip(shading, 0.0, 2.0) ** 1.8)[..., None]
    elif fabric == "chiffon":
        # Sheer: part of the background shows through, handled by the caller through this alpha.
        pass
    return np.clip(out, 0.0, 1.0)


def render(record: dict, size: int) -> np.ndarray:
    """The record's picture, [size, size, 3] uint8."""
    work = size * 2
    background = _background(record, work)
    if record["kind"] == "dish":
        rgba = _pose(icon_rgba(record["source"]), record, work)
        alpha = rgba[..., 3:4]
        picture = background * (1.0 - alpha) + rgba[..., :3] * alpha
    else:
        mask, luminance = _shape(record)
        posed = _pose(np.stack([mask, luminance * mask], -1), record, work)
        mask = np.clip(posed[..., 0], 0.0, 1.0)
        luminance = posed[..., 1] / np.maximum(mask, 1e-3)
        inside = mask > 0.5
        mean = float(luminance[inside].mean()) if inside.any() else 1.0
        # Silhouettes are flat: a gentle top-left light keeps them from looking cut out.
        v, u = np.mgrid[0:work, 0:work].astype(np.float32) / work
        shading = np.clip(luminance / max(mean, 1e-3), 0.6, 1.3) * (1.05 - 0.1 * (u + v) / 2)
        base = np.array(vocab.COLOURS[vocab.COLOUR_NAMES.index(record["colour"])].rgb, np.float32) / 255.0
        colour = np.broadcast_to(base, (work, work, 3)).copy()
        petals, centre = _pattern_mask(record, work)
        contrast = _contrast_colour(base)
        colour = colour * (1.0 - petals[..., None]) + contrast * petals[..., None]
        if centre is not None:
            flower_centre = np.array([0.95, 0.75, 0.15], np.float32)
            colour = colour * (1.0 - centre[..., None]) + flower_centre * centre[..., None]
        item = _fabric(record, colour, shading, work)
        alpha = mask[..., None] * (0.7 if record["fabric"] == "chiffon" else 1.0)
        picture = background * (1.0 - alpha) + item * alpha
    picture = picture.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    return np.clip(picture * 255.0 + 0.5, 0, 255).astype(np.uint8)
