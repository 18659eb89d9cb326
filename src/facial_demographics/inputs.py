"""Which files a run reads: paths, folders and glob patterns expanded the way ``analyze`` does."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: Extensions picked up when scanning folders (files named explicitly are read whatever their extension).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
#: Extensions of video files: named as an input of ``analyze``, they are pointed to the ``video`` command.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})


@dataclass
class InputScan:
    """What :func:`expand_inputs` found: the files to analyse and what it left out."""

    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files in scanned folders with other extensions
    nested: list[str] = field(default_factory=list)  # folders with no images but subfolders (no --recursive)


def expand_inputs(items: Iterable[str], recursive: bool) -> InputScan:
    """Files as given, folders scanned for images (sorted), globs expanded.

    Unmatched items are kept so that they are reported as errors rather than silently dropped; files
    named explicitly are kept whatever their extension (the reader decides).

    Args:
        items: file paths, folders or glob patterns, as typed.
        recursive: scan folders (and ``**`` globs) recursively.

    Returns:
        The paths to analyse, the files skipped for their extension, and the folders that only hold
        subfolders (a hint to use ``--recursive``).
    """
    scan = InputScan()
    for item in items:
        path = Path(item)
        if path.is_dir():
            entries = sorted(path.glob("**/*" if recursive else "*"))
            files = [p for p in entries if p.is_file()]
            images = [str(p) for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            scan.paths.extend(images)
            scan.skipped.extend(str(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES)
            if not images and not recursive and any(p.is_dir() for p in entries):
                scan.nested.append(item)
        elif _is_glob(item):
            matches = sorted(glob.glob(item, recursive=recursive))
            scan.paths.extend(matches if matches else [item])
        else:
            scan.paths.append(item)
    return scan


def _is_glob(item: str) -> bool:
    return any(ch in item for ch in "*?[") and not Path(item).exists()


def named_input_problems(items: Iterable[str], recursive: bool) -> list[str]:
    """What makes the inputs typed on a command line unusable, one message each (empty when all is well).

    A path that does not exist, a pattern that matches nothing, or a video file is a usage mistake, told
    before any work, not a failed image at the end of a run. (Lists of paths read from a file are not
    checked here: in a long list a few missing files are per-item failures.)

    Args:
        items: the paths, folders and patterns as typed.
        recursive: whether patterns expand ``**``.

    Returns:
        Messages such as ``"photos/x.jpg: no such file or folder"``.
    """
    problems = []
    for item in items:
        if _is_glob(item):
            if not glob.glob(item, recursive=recursive):
                problems.append(f"{item}: no file matches this pattern")
        elif not Path(item).exists():
            problems.append(f"{item}: no such file or folder")
        elif Path(item).is_file() and Path(item).suffix.lower() in VIDEO_SUFFIXES:
            problems.append(f"{item}: a video; analyse it with 'facial-demographics video {item}'")
    return problems
