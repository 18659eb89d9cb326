"""Dataset readers, splits, statistics, imbalance tools and the aligned-face cache."""
