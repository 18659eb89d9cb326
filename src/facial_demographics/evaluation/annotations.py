"""Face boxes drawn by people, read from the common annotation formats for ``evaluate-detection``.

Formats (chosen by the path; see :func:`read_annotations`):

- **PASCAL VOC**: a folder of per-image ``.xml`` files (or one such file), ``<annotation>`` with
  ``<object><name>face</name><bndbox>``. Only objects whose name contains "face" count; VOC's pixel
  indices start at 1, so ``xmin - 1, ymin - 1, xmax, ymax`` is the box in pixel-edge coordinates.
  ``<difficult>1</difficult>`` marks a box as ignored (VOC's convention: neither required nor an error).
- **dlib imglab** xml (``<dataset><images><image file=...><box top= left= width= height=/>``), as in dlib's
  ``examples/faces``; ``ignore='1'`` marks an ignored box.
- **COCO** json: ``images``, ``annotations`` (``bbox`` = x, y, width, height) and ``categories``; boxes of the
  categories named like "face" count (every category when there is only one). ``iscrowd`` 1 (COCO's
  convention) or ``ignore`` 1 (used by several face sets) marks an ignored region. Images without a box are
  kept: they are face-free images.
- **WIDER FACE** ``wider_face_*_bbx_gt.txt``: a path, a count, then per face ``x y w h blur expression
  illumination invalid occlusion pose``; ``invalid`` 1 marks an ignored box. An image with no face has
  a count of 0 followed by one line of zeros.

Box coordinates are floats in image pixels ``(x1, y1, x2, y2)``. Every error names the file and the reason.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError

Box = tuple[float, float, float, float]


class AnnotationError(UserError, ValueError):
    """An annotation file that cannot be read: its message names the file and the reason."""


@dataclass(frozen=True)
class AnnotatedBox:
    """One face drawn by a person; ``ignore`` faces are neither required nor counted against a box on them."""

    box: Box
    ignore: bool = False

    @property
    def size(self) -> float:
        """The face's size in pixels: the geometric mean of width and height."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)) ** 0.5


@dataclass(frozen=True)
class AnnotatedImage:
    """One photo and its faces; ``file`` is relative to the images folder."""

    file: str
    boxes: tuple[AnnotatedBox, ...]


@dataclass(frozen=True)
class Annotations:
    """What was read from one annotation file or folder."""

    source: Path
    format: str  # "voc" | "imglab" | "coco" | "wider"
    images: tuple[AnnotatedImage, ...]

    @property
    def faces(self) -> int:
        return sum(1 for im in self.images for b in im.boxes if not b.ignore)


def read_annotations(path: Path) -> Annotations:
    """Read face boxes from ``path``, its format told by what it is.

    A folder is a set of PASCAL VOC files; a ``.json`` file is COCO; a ``.txt`` file is WIDER FACE; an
    ``.xml`` file is dlib imglab (root ``<dataset>``) or one PASCAL VOC file (root ``<annotation>``).

    Args:
        path: the annotation file or folder.

    Returns:
        The images and their boxes, in the file's order (VOC: sorted by file name).

    Raises:
        AnnotationError: the path is missing, of no known format, or malformed (the message says where).
    """
    path = Path(path)
    if path.is_dir():
        return _read_voc_folder(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file or folder")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _read_coco(path)
    if suffix == ".txt":
        return _read_wider(path)
    if suffix == ".xml":
        root = _parse_xml(path)
        if root.tag == "dataset":
            return _read_imglab(path, root)
        if root.tag == "annotation":
            return Annotations(path, "voc", (_voc_image(path, root),))
        raise AnnotationError(f"{path}: root element <{root.tag}> is neither dlib's <dataset> nor VOC's <annotation>")
    raise AnnotationError(f"{path}: unknown annotation format (expected a VOC folder, .xml, .json or .txt)")


# -- xml: PASCAL VOC and dlib imglab ----------------------------------------------------------------
def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise AnnotationError(f"{path}: not readable XML ({exc})") from None


def _number(path: Path, element: ET.Element, name: str, attribute: bool = False) -> float:
    """A numeric child (or attribute) of ``element``, or an error naming the file and the field."""
    raw = element.get(name) if attribute else element.findtext(name)
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        where = element.get("file") or element.findtext("filename") or element.tag
        raise AnnotationError(f"{path}: <{element.tag}> in {where!r} has no numeric {name!r} "
                              f"(got {raw!r})") from None


def _read_voc_folder(folder: Path) -> Annotations:
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise AnnotationError(f"{folder}: no .xml files (expected a folder of PASCAL VOC annotations)")
    images = []
    for file in files:
        root = _parse_xml(file)
        if root.tag != "annotation":
            raise AnnotationError(f"{file}: root element <{root.tag}> is not VOC's <annotation>")
        images.append(_voc_image(file, root))
    return Annotations(folder, "voc", tuple(images))


def _voc_image(path: Path, root: ET.Element) -> AnnotatedImage:
    name = (root.findtext("filename") or "").strip()
    if not name:
        raise AnnotationError(f"{path}: <annotation> has no <filename>")
    boxes = []
    for obj in root.iter("object"):
        if "face" not in (obj.findtext("name") or "").lower():
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{path}: a face <object> has no <bndbox>")
        x1, y1, x2, y2 = (_number(path, bndbox, k) for k in ("xmin", "ymin", "xmax", "ymax"))
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        boxes.append(_checked(path, name, (x1 - 1.0, y1 - 1.0, x2, y2), difficult))
    return AnnotatedImage(name, tuple(boxes))


def _read_imglab(path: Path, root: ET.Element) -> Annotations:
    images = []
    for image in root.iter("image"):
        name = image.get("file")
        if not name:
            raise AnnotationError(f"{path}: an <image> has no file attribute")
        boxes = []
        for box in image.iter("box"):
            left, top, width, height = (_number(path, box, k, attribute=True)
                                        for k in ("left", "top", "width", "height"))
            ignore = box.get("ignore", "0").strip() == "1"
            boxes.append(_checked(path, name, (left, top, left + width, top + height), ignore))
        images.append(AnnotatedImage(name, tuple(boxes)))
    if not images:
        raise AnnotationError(f"{path}: dlib imglab file with no <image>")
    return Annotations(path, "imglab", tuple(images))


# -- COCO json --------------------------------------------------------------------------------------
def _read_coco(path: Path) -> Annotations:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(
            doc.get("annotations"), list):
        raise AnnotationError(f"{path}: not COCO json (needs 'images' and 'annotations' lists)")
    names: dict[Any, str] = {}
    for im in doc["images"]:
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise AnnotationError(f"{path}: an entry of 'images' has no 'file_name'")
        names[im.get("id")] = im["file_name"]
    faces = _coco_face_categories(path, doc.get("categories"))
    boxes: dict[Any, list[AnnotatedBox]] = {k: [] for k in names}
    for k, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in names:
            raise AnnotationError(f"{path}: annotation {k} refers to no image in 'images'")
        if faces is not None and ann.get("category_id") not in faces:
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise AnnotationError(f"{path}: annotation {k} has no 'bbox' [x, y, width, height]")
        ignore = bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0))
        x, y, w, h = (float(v) for v in bbox)
        boxes[ann["image_id"]].append(_checked(path, names[ann["image_id"]], (x, y, x + w, y + h), ignore))
    images = tuple(AnnotatedImage(names[k], tuple(v)) for k, v in boxes.items())
    return Annotations(path, "coco", images)


def _coco_face_categories(path: Path, categories: Any) -> set[Any] | None:
    """The ids of the face categories; None (take every box) when there is at most one category."""
    if not isinstance(categories, list) or len(categories) <= 1:
        return None
    ids = {c.get("id") for c in categories if isinstance(c, dict) and "face" in str(c.get("name", "")).lower()}
    if not ids:
        raise AnnotationError(f"{path}: none of the {len(categories)} categories is named like 'face'")
    return ids


# -- WIDER FACE txt ---------------------------------------------------------------------------------
def _read_wider(path: Path) -> Annotations:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not readable text ({exc})") from None
    lines = [line for line in lines if line]
    images = list(_wider_images(path, iter(enumerate(lines, 1))))
    if not images:
        raise AnnotationError(f"{path}: no images (expected WIDER FACE's path / count / boxes lines)")
    return Annotations(path, "wider", tuple(images))


def _wider_images(path: Path, lines: Iterator[tuple[int, str]]) -> Iterator[AnnotatedImage]:
    for number, name in lines:
        count_at, count = next(lines, (number + 1, ""))
        if not count.isdigit():
            raise AnnotationError(f"{path}:{count_at}: expected the face count of {name!r}, got {count!r}")
        rows = [next(lines, (count_at + 1, "")) for _ in range(max(int(count), 1))]
        boxes = [_wider_box(path, name, at, row) for at, row in rows]
        yield AnnotatedImage(name, tuple(b for b in boxes if b is not None) if int(count) else ())


def _wider_box(path: Path, name: str, at: int, row: str) -> AnnotatedBox | None:
    fields = row.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        values = []
    if len(values) < 4:
        raise AnnotationError(f"{path}:{at}: expected 'x y w h ...' for {name!r}, got {row!r}")
    x, y, w, h = values[:4]
    if w <= 0 or h <= 0:  # WIDER has a few zero-size boxes (and the zero line of a face-free image)
        return None
    invalid = len(values) > 7 and values[7] == 1
    return _checked(path, name, (x, y, x + w, y + h), invalid)


def _checked(path: Path, name: str, box: Sequence[float], ignore: bool) -> AnnotatedBox:
    """A box with its corners in order, or an error naming the file and the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise AnnotationError(f"{path}: box {[x1, y1, x2, y2]} of {name!r} is empty or reversed")
    return AnnotatedBox((x1, y1, x2, y2), ignore)
