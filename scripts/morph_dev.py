"""Copy the MORPH development images (the files in ../shared/datasets/morph_dev_files.txt) out of a
snapshot of huajh/Age_Estimation_via_fastAAMs into one flat folder, for ``data prepare``/``evaluate``.

Only the listed files are read: the repository's other people are held back to test shipped models.
The snapshot is a bare git directory (what the library's ``fetch`` returns) or a checked-out copy.

    python scripts/morph_dev.py /work/.mirror/huajh+Age_Estimation_via_fastAAMs/repo cache/morph-dev

Prints how many files it copied, skipped (already there) and could not find. The images are MORPH's
(non-commercial academic use): never copy them into the repository.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ALLOWED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "morph_dev_files.txt"
FOLDERS = ("morph_small/Images_ori", "morph_small/trainset", "test_images")


def _git_files(git_dir: Path) -> dict[str, str]:
    """File name -> path inside the snapshot, the first of FOLDERS holding it."""
    listing = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "--name-only", "HEAD"],
                             check=True, capture_output=True, text=True).stdout.split("\n")
    found: dict[str, str] = {}
    for folder in FOLDERS:
        for path in listing:
            if path.startswith(folder + "/"):
                found.setdefault(path.rsplit("/", 1)[-1], path)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", type=Path, help="the fetched repository (bare git directory or checkout)")
    parser.add_argument("out", type=Path, help="folder to copy the listed images into")
    parser.add_argument("--files", type=Path, default=ALLOWED, help="the allowed file names, one per line")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.files.read_text().split() if n.strip()]
    git_dir = args.snapshot / ".git" if (args.snapshot / ".git").exists() else args.snapshot
    found = _git_files(git_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    copied = skipped = 0
    missing = []
    for number, name in enumerate(names, 1):
        target = args.out / name
        if name not in found:
            missing.append(name)
            continue
        if target.exists():
            skipped += 1
            continue
        blob = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"HEAD:{found[name]}"],
                              check=True, capture_output=True).stdout
        partial = target.with_suffix(".part")
        partial.write_bytes(blob)
        partial.replace(target)
        copied += 1
        if number % 500 == 0:
            print(f"{number}/{len(names)}", file=sys.stderr)
    print(f"{args.out}: {copied} copied, {skipped} already there, {len(missing)} not in the snapshot"
          + (f" (first: {missing[0]})" if missing else ""))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
