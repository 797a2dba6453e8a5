"""``minidl.plotting``: kept as a name; the plots live in ``minidl.experiments.plotting``."""

from .experiments.plotting import plot_comparison, plot_curves

__all__ = ["plot_comparison", "plot_curves"]
