"""Population summaries: how many people of each age band and gender, with intervals.

- :mod:`.bands`: :class:`AgeBands` (the audience brackets by default, ``--bands`` edges or a preset);
- :mod:`.calibration`: :class:`PopulationCalibration`, the model's behaviour on validation faces, stored
  in the bundle's manifest under ``population``;
- :mod:`.estimator`: :func:`estimate` (EM prior adjustment with bootstrap intervals) and the typed
  :class:`PopulationSummary` whose ``to_dict`` is the ``summary.json`` contract;
- :mod:`.records`: reading ``analyze``'s JSON Lines back into :class:`Evidence`;
- :mod:`.report`: ``summary.json``, ``summary.csv``, ``pyramid.png`` and ``report.html``.
"""

from __future__ import annotations

from .bands import AgeBands
from .calibration import CalibrationError, PopulationCalibration
from .estimator import DEFAULT_INTERVAL, METHODS, Evidence, PopulationSummary, Share, estimate
from .records import RecordsError, read_results, summarize

__all__ = ["AgeBands", "CalibrationError", "PopulationCalibration", "DEFAULT_INTERVAL", "METHODS", "Evidence",
           "PopulationSummary", "RecordsError", "Share", "estimate", "read_results", "summarize"]
