"""Image listings for the convergence experiment: the first N images of a folder.

Sources (all sorted by file name, then the first ``n`` taken, as the paper takes
"the first 1000 images of the ImageNet validation set"):

* :func:`imagenet_val_flat` - the flat ILSVRC2012 validation folder
  (``ILSVRC2012_val_00000001.JPEG`` ...) with labels from the devkit ground-truth
  file ``ILSVRC2012_validation_ground_truth.txt`` (1-based ILSVRC2012 ids, one
  per image in file-name order).  The ids are mapped to torchvision's 0..999
  order (the sorted-wnid order) through the devkit's ``meta.mat`` (read with
  ``scipy.io.loadmat``; scipy is a core dependency), looked up next to the
  labels file or in ``../data/meta.mat`` as in the devkit layout.  Without a
  readable ``meta.mat`` the mapping is impossible and :class:`InputError` says so.
* :func:`imagenet_val_wnid` - class sub-folders named by wnid (``n01440764/``
  ...); label = index of the wnid among the sorted wnids (= torchvision order).
* :func:`plain_folder` - any folder of images; label unknown (the experiment
  then explains the top prediction on the clean image).
* :func:`single_files` - image files given one by one (``--image FILE``); label unknown.
* :func:`foolbox_photos` - the embedded default: the 20 photos
  ``imagenet_{idx:02d}_{label}.jpg`` shipped in the foolbox wheel (label =
  ImageNet-1k index).

Images are opened lazily by :func:`load_image`, which gives 8-bit RGB for every
PIL mode (16-bit and float gray scaled by their range, alpha composited over
white, see :func:`to_rgb`); an empty, truncated, non-image or decompression-bomb
file raises :class:`UnreadableImage` with a one-line reason, which the runner
records in ``skipped.jsonl`` and skips (it never aborts the run).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from boundcheck.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class ImageItem:
    """One image: a stable id (path relative to the source folder), its file and label.

    ``index`` is the position in the sorted listing (used for sharding and order).
    ``label`` is the torchvision ImageNet index or ``None`` when unknown.
    """

    index: int
    id: str
    path: str
    label: int | None

    def to_dict(self) -> dict:
        return asdict(self)


class UnreadableImage(Exception):
    """An image file that cannot be decoded (recorded and skipped by every command).

    ``reason`` is the cause without the file name (records hold the id and path beside it);
    ``str(exc)`` is ``"<file name>: <reason>"``, the name said once.
    """

    def __init__(self, path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path.name}: {reason}")


def no_readable_image(skipped) -> InputError:
    """The one wording of "every image was unreadable": the count and the first cause.

    ``skipped``: records with ``path`` (or ``id``) and ``error``.
    """
    first = skipped[0] if skipped else {}
    where = first.get("path") or first.get("id") or "?"
    return InputError(f"no readable image ({len(skipped)} skipped; first: {where}: {first.get('error', 'unreadable')})")


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def _take(paths_labels: list[tuple[Path, int | None]], root: Path, n: int | None) -> list[ImageItem]:
    if n is not None:
        paths_labels = paths_labels[:n]
    return [
        ImageItem(index=i, id=p.relative_to(root).as_posix(), path=str(p), label=lab)
        for i, (p, lab) in enumerate(paths_labels)
    ]


def foolbox_data_dir() -> Path:
    """Folder ``foolbox/data`` of the installed foolbox wheel (foolbox is not imported)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("foolbox is not installed: pip install --no-deps foolbox==3.3.4 (it ships the 20 default photos)")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not d.is_dir():
        raise InputError(f"foolbox data folder missing: {d}")
    return d


def foolbox_photos(n: int | None = None) -> list[ImageItem]:
    """The 20 ImageNet photos shipped with foolbox, sorted, label from the file name."""
    d = foolbox_data_dir()
    rx = re.compile(r"^imagenet_(\d+)_(\d+)\.jpg$")
    found = []
    for p in sorted(d.iterdir(), key=lambda q: q.name):
        mt = rx.match(p.name)
        if mt:
            found.append((p, int(mt.group(2))))
    if not found:
        raise InputError(f"no imagenet_*.jpg photos in {d}")
    return _take(found, d, n)


def plain_folder(root, n: int | None = None) -> list[ImageItem]:
    """Every image file directly in ``root`` (sorted by name), label unknown."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--images folder not found: {root}")
    files = sorted((p for p in root.iterdir() if _is_image(p)), key=lambda q: q.name)
    if not files:
        raise InputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    return _take([(p, None) for p in files], root, n)


def ilsvrc_id_to_torchvision(meta_mat) -> dict[int, int]:
    """Map 1-based ILSVRC2012 ids (devkit ``meta.mat``) to torchvision's 0..999 indices.

    torchvision orders the 1000 classes by sorted wnid; the devkit numbers them
    ``ILSVRC2012_ID`` 1..1000 in a different order.  Read with ``scipy.io.loadmat``.
    """
    try:
        from scipy.io import loadmat

        synsets = loadmat(str(meta_mat), squeeze_me=True)["synsets"]
    except Exception as exc:  # unreadable / missing / wrong file
        raise InputError(f"cannot read devkit meta.mat {meta_mat}: {type(exc).__name__}: {exc}") from None
    pairs = []
    for s in synsets:
        ilsvrc_id, wnid, num_children = int(s["ILSVRC2012_ID"]), str(s["WNID"]), int(s["num_children"])
        if num_children == 0 and 1 <= ilsvrc_id <= 1000:
            pairs.append((ilsvrc_id, wnid))
    if len(pairs) != 1000:
        raise InputError(f"{meta_mat}: expected 1000 leaf synsets, found {len(pairs)}")
    order = {wnid: i for i, wnid in enumerate(sorted(w for _, w in pairs))}
    return {ilsvrc_id: order[wnid] for ilsvrc_id, wnid in pairs}


def _find_meta(labels_file: Path) -> Path:
    for cand in (labels_file.parent / "meta.mat", labels_file.parent.parent / "data" / "meta.mat"):
        if cand.is_file():
            return cand
    raise InputError(
        f"devkit meta.mat not found next to {labels_file} (needed to map ILSVRC2012 ids to torchvision order); "
        "keep the ILSVRC2012 devkit layout (data/meta.mat beside the ground-truth file)"
    )


def imagenet_val_flat(root, labels_file, n: int | None = None) -> list[ImageItem]:
    """Flat ``ILSVRC2012_val_*.JPEG`` folder with the devkit ground-truth labels."""
    root, labels_file = Path(root), Path(labels_file)
    if not labels_file.is_file():
        raise InputError(f"--labels file not found: {labels_file}")
    files = sorted((p for p in root.iterdir() if p.is_file() and p.name.startswith("ILSVRC2012_val_")),
                   key=lambda q: q.name)
    if not files:
        raise InputError(f"no ILSVRC2012_val_* files in {root}")
    ids = [int(t) for t in labels_file.read_text().split()]
    mapping = ilsvrc_id_to_torchvision(_find_meta(labels_file))
    out = []
    for p in files:
        num = int(re.sub(r"\D", "", p.stem.split("_")[-1]))  # ILSVRC2012_val_00000001 -> 1
        if not 1 <= num <= len(ids):
            raise InputError(f"{p.name}: no ground-truth line {num} in {labels_file}")
        out.append((p, mapping[ids[num - 1]]))
    return _take(out, root, n)


def imagenet_val_wnid(root, n: int | None = None) -> list[ImageItem]:
    """Class sub-folders named by wnid; label = sorted-wnid index (torchvision order)."""
    root = Path(root)
    wnids = sorted(p.name for p in root.iterdir() if p.is_dir() and _WNID.match(p.name))
    if not wnids:
        raise InputError(f"no wnid class folders (n########) in {root}")
    order = {w: i for i, w in enumerate(wnids)}
    files = [(p, order[w]) for w in wnids for p in (root / w).iterdir() if _is_image(p)]
    files.sort(key=lambda t: t[0].name)  # the ImageNet order: by file name
    return _take(files, root, n)


def single_files(paths, n: int | None = None) -> list[ImageItem]:
    """Image files given one by one (``--image FILE``, repeatable), in the order given, label unknown.

    The id is the file name, or the path as given when two files share a name.
    Decoding is left to :func:`load_image` (a corrupt file is skipped, not refused here).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("--image needs at least one file")
    for p in paths:
        if not p.is_file():
            raise InputError(f"--image file not found: {p}")
    names = [p.name for p in paths]
    unique = len(set(names)) == len(names)
    if n is not None:
        paths = paths[:n]
    return [ImageItem(index=i, id=p.name if unique else p.as_posix(), path=str(p), label=None)
            for i, p in enumerate(paths)]


def list_images(imagenet_val=None, labels=None, images=None, n: int | None = None,
                image_files=None) -> tuple[list[ImageItem], dict]:
    """Listing for the CLI options, plus a description of the source (for the run config).

    At most one of ``imagenet_val`` (with optional ``labels``), ``images`` (a folder)
    and ``image_files`` (a list of files); none gives the foolbox photos.
    """
    given = [opt for opt, v in (("--imagenet-val", imagenet_val), ("--images", images), ("--image", image_files))
             if v is not None]
    if len(given) > 1:
        raise InputError(f"give one of --imagenet-val, --images, --image, not {' and '.join(given)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InputError(f"--n-images must be an integer >= 1, got {n!r}")
    if labels is not None and imagenet_val is None:
        raise InputError("--labels needs --imagenet-val DIR")
    if imagenet_val is not None:
        root = Path(imagenet_val)
        if not root.is_dir():
            raise InputError(f"--imagenet-val folder not found: {root}")
        if labels is not None:
            items = imagenet_val_flat(root, labels, n)
            src = {"kind": "imagenet-val-flat", "root": str(root.resolve()), "labels": str(Path(labels).resolve())}
        elif any(p.is_dir() and _WNID.match(p.name) for p in root.iterdir()):
            items = imagenet_val_wnid(root, n)
            src = {"kind": "imagenet-val-wnid", "root": str(root.resolve())}
        else:
            raise InputError(
                f"{root} is a flat folder: pass --labels ILSVRC2012_validation_ground_truth.txt (devkit), "
                "or use --images DIR for unlabelled images"
            )
    elif images is not None:
        items = plain_folder(images, n)
        src = {"kind": "folder", "root": str(Path(images).resolve())}
    elif image_files is not None:
        items = single_files(image_files, n)
        src = {"kind": "files", "files": [str(Path(it.path).resolve()) for it in items]}
    else:
        items = foolbox_photos(n)
        src = {"kind": "foolbox"}
    return items, src


def _to_uint8(arr, mode: str):
    """Gray integer/float pixels (PIL modes I;16*, I, F) -> uint8 by the range of their bit depth.

    16-bit data (I;16*) is divided by 257 (65535 -> 255), not clipped at 255.
    Modes I and F carry no bit depth: the smallest of the ranges [0, 1] (F only),
    [0, 255], [0, 65535] holding every value is taken as the full range.  Negative,
    larger or non-finite values are refused (ValueError, reported as one line).
    """
    import numpy as np

    a = np.asarray(arr, dtype=np.float64)
    if a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"mode {mode} image with non-finite or no pixel values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0:
        raise ValueError(f"mode {mode} image with negative pixel values (min {lo:g})")
    if mode.startswith("I;16"):
        top = 65535.0
    elif mode == "F" and hi <= 1.0:
        top = 1.0
    elif hi <= 255.0:
        top = 255.0
    elif hi <= 65535.0:
        top = 65535.0
    else:
        raise ValueError(f"mode {mode} image with pixel values beyond 16 bits (max {hi:g})")
    return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)


def _flatten_alpha(im):
    """RGBA -> RGB composited over white (what an image viewer shows), not the hidden colours under alpha 0."""
    from PIL import Image

    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(im):
    """Any PIL image -> 8-bit RGB with the same picture.

    * RGB: unchanged; 1, L, P (without transparency), CMYK, YCbCr, RGBX: PIL's conversion.
    * RGBA, LA, PA, La, RGBa, P with transparency: composited over white.
    * I;16 / I;16B / I;16L / I;16N, I, F (16-bit, 32-bit integer and float gray): scaled
      by the range of their bit depth (:func:`_to_uint8`), then gray -> RGB.

    Raises
    ------
    ValueError
        A mode with no RGB meaning (LAB, HSV, ...), or I/F pixel values outside 0..65535.
    """
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(im, mode), mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        return _flatten_alpha(im)
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "RGBX"):
        return im.convert("RGB")
    raise ValueError(f"image mode {mode} has no RGB conversion")


def load_image(path):
    """Open an image as 8-bit RGB PIL (:func:`to_rgb`), fully decoded.

    Raises
    ------
    UnreadableImage
        One-line reason: missing, empty, not an image, truncated, a header that
        claims more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (decompression
        bomb; checked before decoding), or a mode with no RGB meaning.  Callers
        record and skip it.
    """
    import warnings

    from PIL import Image

    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise UnreadableImage(p, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and w * h > limit:
                    raise UnreadableImage(
                        p, f"header claims {w}x{h} pixels, over the {limit} pixel limit (decompression bomb?)"
                    )
                im.load()
                return to_rgb(im)
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(p, f"decompression bomb ({_first_line(exc, p)})") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise UnreadableImage(p, f"{type(exc).__name__}: {_first_line(exc, p)}") from None


def _first_line(exc, path=None) -> str:
    """First line of an exception's message, without the file's path (the caller names the file once)."""
    text = str(exc)
    if path is not None:
        text = text.replace(f" '{path}'", "").replace(f' "{path}"', "").replace(str(path), Path(path).name)
    lines = [t.strip() for t in text.splitlines() if t.strip()]
    return lines[0][:300] if lines else "unreadable"


#: where each source's labels come from (said when a label does not fit the model)
_LABEL_ORIGIN = {
    "foolbox": "the shipped photo's file name (imagenet_<k>_<label>.jpg)",
    "imagenet-val-flat": "the --labels file",
    "imagenet-val-wnid": "the image's wnid folder",
}


def check_labels(items, num_classes: int, source: dict | None = None) -> None:
    """Refuse, before any work, an image label outside ``[0, num_classes)`` (one line).

    The attribution target is an image's label when it has one, else the model's prediction;
    the message names where the label came from and how to get a target the model has.
    """
    kind = (source or {}).get("kind", "")
    for it in items:
        if it.label is not None and not 0 <= it.label < num_classes:
            origin = _LABEL_ORIGIN.get(kind, "the image source")
            raise InputError(
                f"image {it.id}: its label {it.label} (from {origin}) is outside the model's {num_classes} classes; "
                "give unlabelled images (--images DIR or --image FILE), whose target is the model's prediction"
            )
