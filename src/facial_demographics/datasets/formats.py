"""The dataset formats and what a labels table holds: light (no pandas), so ``--help`` can say it too."""

from __future__ import annotations

FORMATS = ("utkface", "morph", "imdbwiki", "table")
#: A folder of your own labelled photos names its labels in this table, in the folder itself.
LABELS_FILE = "labels.csv"
#: The accepted gender values (any case), as the table reader parses them: 0 = male, 1 = female.
GENDER_VALUES = "0/1, male/female or m/f"
#: What a labels table holds: said by every message about an unreadable dataset, by ``data --help`` and the docs.
LABELS_HELP = (f"a CSV with columns path,age,gender: path relative to the CSV's folder, age in years (0-120), "
               f"gender {GENDER_VALUES} (0 = male, 1 = female); an 'identity' column keeps each person's "
               "photos in one split, other columns are kept as groups")
