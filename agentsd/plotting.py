"""Headless matplotlib for the plots agentsd writes as files (histograms, eval and experiment reports).

`pyplot()` selects the Agg backend (no display) and imports matplotlib.pyplot on first use, so
modules that plot stay cheap to import. Not guaranteed: that a backend another library selected
earlier in the process is kept (Agg is forced).
"""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib  # deferred: matplotlib is heavy and only report writers need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
