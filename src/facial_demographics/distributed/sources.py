"""Where the images of a distributed run come from: local files, folders and globs, text files listing
paths, and object-store URIs that pyarrow's filesystems understand (``s3://``, ``gs://``, ``hdfs://``,
``file://``, ...).

Local items are expanded exactly as ``analyze`` does for the local engine (same order, same skipped
files, same "use --recursive" hint), so both engines see the same list. Listing needs only pyarrow
(for URIs); nothing here imports Ray.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..inputs import IMAGE_SUFFIXES, expand_inputs

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_GLOB_CHARS = "*?["


class SourceError(UserError, ValueError):
    """A list of paths or a URI that cannot be read or listed at all (a single bad image is not one)."""


@dataclass(frozen=True)
class InputList:
    """What :func:`list_inputs` found: the inputs to analyse, in order, and what it left out."""

    paths: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # files in scanned folders with other extensions
    nested: tuple[str, ...] = ()  # folders with no images but subfolders (no --recursive)


def is_uri(item: str) -> bool:
    """``scheme://...`` (two letters at least, so a Windows drive such as ``C:/`` is a path)."""
    return bool(_URI.match(item))


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _local(item: str, recursive: bool, out: _Found) -> None:
    """One command-line item, expanded by the local engine's own ``expand_inputs``."""
    scan = expand_inputs([item], recursive)
    out.paths.extend(scan.paths)
    out.skipped.extend(scan.skipped)
    out.nested.extend(scan.nested)


@dataclass
class _Found:
    paths: list[str]
    skipped: list[str]
    nested: list[str]


def _filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` for a URI."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # unknown scheme, missing credentials, bad bucket name ...
        raise SourceError(f"{uri}: pyarrow cannot open this location ({exc})") from None


def _uri_prefix(uri: str, path: str) -> str:
    """The ``scheme://authority`` part that turns a filesystem path back into the URI the user gave."""
    scheme = uri.split("://", 1)[0]
    if scheme == "file":
        return "file://"
    rest = uri.split("://", 1)[1]
    bucket = rest.split("/", 1)[0]
    # S3/GCS paths start with the bucket; HDFS-like ones are absolute paths under the authority.
    return f"{scheme}://" if path.startswith(bucket) else f"{scheme}://{bucket}"


def _uri(item: str, recursive: bool, out: _Found) -> None:
    """One URI: a file, a "folder" (prefix) or a glob over the last parts of a prefix."""
    from pyarrow import fs

    has_glob = any(ch in item for ch in _GLOB_CHARS)
    base_uri = item
    if has_glob:
        cut = min(item.index(ch) for ch in _GLOB_CHARS if ch in item)
        base_uri = item[: item.rindex("/", 0, cut)]
    filesystem, base = _filesystem(base_uri)
    prefix = _uri_prefix(base_uri, base)
    if filesystem.get_file_info(base).type != fs.FileType.Directory:
        out.paths.append(item)  # a file, or missing (then the reader reports it, as for a local path)
        return
    deep = recursive or "**" in item
    entries = sorted(filesystem.get_file_info(fs.FileSelector(base, recursive=deep)), key=lambda e: e.path)
    files = [e.path for e in entries if e.type == fs.FileType.File]
    if has_glob:
        pattern = base + item[len(base_uri):]
        matches = [f for f in files if fnmatch.fnmatchcase(f, pattern) or fnmatch.fnmatchcase(f, pattern.replace(
            "**/", ""))]
        out.paths.extend([prefix + f for f in matches] or [item])
        return
    out.paths.extend(prefix + f for f in files if _is_image(f))
    out.skipped.extend(prefix + f for f in files if not _is_image(f))
    if not deep and not any(_is_image(f) for f in files) and any(e.type == fs.FileType.Directory for e in entries):
        out.nested.append(item)


def read_path_list(source: str) -> list[str]:
    """The paths in a text file (local or a URI): one a line; blank lines and ``#`` comments skipped.

    Raises:
        SourceError: the file cannot be read or is not UTF-8 text.
    """
    try:
        if is_uri(source):
            filesystem, path = _filesystem(source)
            with filesystem.open_input_stream(path) as stream:
                data = stream.read()
        else:
            data = Path(source).read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{source}: cannot read this list of paths ({exc})") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def list_inputs(items: Iterable[str], recursive: bool = False, path_lists: Iterable[str] = ()) -> InputList:
    """Expand command-line items and lists of paths into the inputs of one run.

    Args:
        items: files, folders or glob patterns, local or URIs.
        recursive: scan folders (and ``**`` globs) recursively.
        path_lists: text files naming one input per line; each line is taken as a file (not expanded),
            so a list of millions of paths costs no listing calls.

    Returns:
        The inputs in order (items first, then each list's lines), the skipped files and the folders
        that only hold subfolders.

    Raises:
        SourceError: a URI's filesystem cannot be opened, or a list cannot be read.
    """
    found = _Found([], [], [])
    for item in items:
        (_uri if is_uri(item) else _local)(item, recursive, found)
    for source in path_lists:
        found.paths.extend(read_path_list(source))
    return InputList(tuple(found.paths), tuple(found.skipped), tuple(found.nested))


def read_bytes(uri: str) -> bytes:
    """The bytes of one object-store input.

    Raises:
        FileNotFoundError, IsADirectoryError, OSError: as pyarrow reports them (the caller turns them
        into the per-image error the local reader gives).
    """
    filesystem, path = _filesystem(uri)
    with filesystem.open_input_stream(path) as stream:
        return bytes(stream.read())
