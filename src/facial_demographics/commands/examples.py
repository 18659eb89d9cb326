"""The examples at the end of each command's ``--help``: one or two commands a user can copy."""

from __future__ import annotations

_EXAMPLES: dict[str, tuple[str, ...]] = {
    "analyze": ("facial-demographics analyze photos/ -f csv -o faces.csv",
                "facial-demographics analyze party.jpg --annotate annotated/ --min-face 40"),
    "summarize": ("facial-demographics summarize faces.jsonl --out summary/",),
    "demo": ("facial-demographics demo", "facial-demographics demo my_photo.jpg -o out/mine.png"),
    "data prepare": ("facial-demographics data prepare my_photos/labels.csv --out cache/mine",
                     "facial-demographics data prepare UTKFace/ morph-dev/ --out cache/utkface-morph-112"),
    "data descriptors": ("facial-demographics data descriptors cache/utkface-112",),
    "data stats": ("facial-demographics data stats my_photos/labels.csv",),
    "data split": ("facial-demographics data split my_photos/labels.csv --out my_split.csv",),
    "evaluate": ("facial-demographics evaluate --dataset my_photos/labels.csv --split-file my_split.csv "
                 "--model my_model/",
                 "facial-demographics evaluate --dataset UTKFace/ --cropped --split val --domain morph-dev/ "
                 "--compare fp32"),
    "evaluate-detection": ("facial-demographics evaluate-detection --dataset UTKFace/ --scenes 50",),
    "robustness": ("facial-demographics robustness --cache cache/utkface-112 --model default",),
    "serve": ("facial-demographics serve", "FD_API_KEY=secret facial-demographics serve --host 0.0.0.0"),
    "train": ("facial-demographics train --config tiny --cache cache/mine --split my_split.csv --out runs/mine",),
    "export": ("facial-demographics export runs/mine/best.pt --cache cache/mine --split my_split.csv "
               "--out my_model/",),
    "calibrate": ("facial-demographics calibrate my_model/ --cache cache/mine --split my_split.csv",),
    "models": ("facial-demographics models",),
    "compare-runs": ("facial-demographics compare-runs runs/a runs/b --out comparison/",),
    "video": ("facial-demographics video clip.mp4 -o clip_out/",
              "facial-demographics video 0 -o camera_out/ --no-video   # the first camera"),
}


def examples(command: str) -> str:
    """The ``epilog`` of ``command`` (e.g. ``"data split"``): an "Examples:" block.

    Raises:
        KeyError: no examples are written for ``command`` (a test checks every command has some).
    """
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in _EXAMPLES[command])
