"""``steps.csv``: the training loss of every optimiser step (the per-epoch means are in ``metrics.csv``).

Written by the process that writes the run's other files (rank 0 in a multi-process run, where each row
is the loss of the whole global batch), flushed row by row; a resumed run first drops the rows after
the checkpoint it resumes from, since those steps are done again.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .loop import StepState

COLUMNS = ("round", "epoch", "global_step", "lr", "loss", "age_loss", "gender_loss", "images")


class StepLog:
    """An ``on_step`` callback appending one CSV row per step."""

    def __init__(self, path: Path, resume_round: str | None = None, resume_step: int = 0) -> None:
        """Args:
            path: the CSV to write (created with its header when missing).
            resume_round, resume_step: keep only rows up to this round's step (a resumed run); None
                starts a new file.
        """
        kept: list[dict[str, str]] = []
        if resume_round is not None and path.is_file():
            with open(path, newline="", encoding="utf-8") as stream:
                rows = list(csv.DictReader(stream))
            cut = next((i for i, row in enumerate(rows)
                        if row["round"] == resume_round and int(row["global_step"]) > resume_step), len(rows))
            kept = rows[:cut]
        path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(path, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._stream, fieldnames=COLUMNS)
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._stream.flush()

    def __call__(self, step: StepState) -> None:
        self._writer.writerow({"round": step.round_name, "epoch": step.epoch, "global_step": step.global_step,
                               "lr": step.lr, "loss": step.loss, "age_loss": step.age_loss,
                               "gender_loss": step.gender_loss, "images": step.images})
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()
