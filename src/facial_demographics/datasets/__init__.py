"""The data layer: dataset readers, splits, statistics and the aligned-face cache (one reader each)."""
