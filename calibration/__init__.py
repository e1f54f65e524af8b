"""Calibration data for the precision pipeline: event-window sources and the query sampler.

``open_source("synthetic" | "synthetic:SEED" | "dsec:PATH" | "m3ed:PATH" | "mvsec:PATH",
width, height, window_s)`` gives a :class:`WindowSource` of :class:`EventWindow` objects in
the model's event layout; :class:`QuerySampler` draws query pixels as the seed's §4.3 does.
Only numpy is needed at import time (h5py/hdf5plugin/Pillow load when a dataset is opened).
"""

from .datasets import DsecSource, M3edSource, MvsecSource
from .sampler import CATEGORIES, DEFAULT_WEIGHTS, HardExampleMap, QuerySampler
from .simulator import EventSimulator, Scene, SimulatorConfig, SyntheticSource
from .windows import (CalibrationDataError, EventWindow, WindowSource, open_source,
                      window_boundaries_us)

__all__ = [
    "CATEGORIES",
    "DEFAULT_WEIGHTS",
    "CalibrationDataError",
    "DsecSource",
    "EventSimulator",
    "EventWindow",
    "HardExampleMap",
    "M3edSource",
    "MvsecSource",
    "QuerySampler",
    "Scene",
    "SimulatorConfig",
    "SyntheticSource",
    "WindowSource",
    "open_source",
    "window_boundaries_us",
]

