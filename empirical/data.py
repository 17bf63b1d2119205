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
* :func:`foolbox_photos` - the embedded default: the 20 photos
  ``imagenet_{idx:02d}_{label}.jpg`` shipped in the foolbox wheel (label =
  ImageNet-1k index).

Images are opened lazily by :func:`load_image`; a corrupt file raises
:class:`UnreadableImage`, which the runner records in ``skipped.jsonl`` and
skips (it never aborts the run).
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
    """An image file that cannot be decoded (recorded and skipped by the runner)."""


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


def list_images(imagenet_val=None, labels=None, images=None, n: int | None = None) -> tuple[list[ImageItem], dict]:
    """Listing for the CLI options, plus a description of the source (for the run config)."""
    if imagenet_val is not None and images is not None:
        raise InputError("give either --imagenet-val or --images, not both")
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
    else:
        items = foolbox_photos(n)
        src = {"kind": "foolbox"}
    return items, src


def load_image(path):
    """Open an image as RGB PIL, fully decoded; :class:`UnreadableImage` when it cannot be."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as exc:  # PIL raises many types for corrupt data
        raise UnreadableImage(f"{type(exc).__name__}: {exc}") from None
