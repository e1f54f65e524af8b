"""``open_source``: a ``--data`` spec (``synthetic[:SEED]``, ``dsec:PATH``, ``m3ed:PATH``,
``mvsec:PATH``) to a :class:`~eventspd_export.data.windows.WindowSource`. The readers are
imported only when their scheme is asked for (h5py, hdf5plugin and Pillow load then)."""

from __future__ import annotations

import os

from eventspd_export.data.windows import DataError, WindowSource

SOURCE_SCHEMES = ("synthetic", "dsec", "m3ed", "mvsec")
SPEC_HELP = "synthetic[:SEED], dsec:PATH, m3ed:PATH, mvsec:PATH"  # what the CLI's --data help lists


def check_spec(spec: str) -> tuple[str, str, str]:
    """(scheme, ":" or "", rest) of a ``--data`` spec; DataError for an empty spec, an unknown
    scheme (with a hint when it is a bare path) or a dataset scheme without a path."""
    # (the same --data option feeds calibrate, evaluate, train, check and write-events: the
    # messages name the option, not one command's use of it)
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(
            "empty --data spec: use synthetic, synthetic:SEED, dsec:PATH, "
            "m3ed:PATH or mvsec:PATH")
    spec = spec.strip()
    scheme, sep, rest = spec.partition(":")
    scheme = scheme.lower()
    if scheme not in SOURCE_SCHEMES:
        hint = ""
        if os.path.exists(spec):
            hint = (f" ({spec!r} is a path: say which dataset it is, e.g. dsec:{spec}, "
                    f"m3ed:{spec} or mvsec:{spec})")
        raise DataError(
            f"unknown event data source {spec!r} in --data{hint}; use synthetic, synthetic:SEED, "
            "dsec:PATH, m3ed:PATH or mvsec:PATH")
    if scheme != "synthetic" and not rest:
        raise DataError(f"{scheme}: no path given in {spec!r}; use {scheme}:PATH")
    return scheme, sep, rest


def is_synthetic(spec: str) -> bool:
    """Whether a ``--data`` spec names the built-in simulator (the one source that takes
    ``num_windows`` / ``windows_per_scene``); the scheme is parsed as ``open_source`` does."""
    return spec.strip().partition(":")[0].lower() == "synthetic"


def open_source(spec: str, width: int, height: int, window_s: float, **options) -> WindowSource:
    """Open an event data source from a spec string.

    ``synthetic`` / ``synthetic:SEED``: the built-in event simulator (options: ``num_windows``,
    ``windows_per_scene``, ``sim=SimulatorConfig(...)``).
    ``dsec:PATH``: a DSEC sequence folder or its ``events.h5`` (options: ``baseline_focal``,
    ``disparity_dir``, ``disparity_timestamps``, ``rectify``, ``mode``, ``depth_tolerance_s``).
    ``m3ed:PATH``: an M3ED ``*_data.h5`` (or its folder) (options: ``depth_path``, ``mode``,
    ``depth_tolerance_s``).
    ``mvsec:PATH``: an MVSEC ``*_data.hdf5`` (or its folder) (options: ``depth_path``,
    ``mode``, ``depth_tolerance_s``).

    The sensor size of a dataset must equal ``width`` x ``height`` (the model configuration);
    a mismatch names the file, the key, the shape found and the one expected.
    """
    scheme, sep, rest = check_spec(spec)
    spec = spec.strip()
    if scheme == "synthetic":
        from eventspd_export.data.simulator import SyntheticSource

        if sep and "seed" in options:
            raise DataError(
                f"{spec!r}: give the seed in the spec or as the seed option, not both")
        seed = options.pop("seed", 0)
        if sep:
            try:
                seed = int(rest)
            except ValueError:
                raise DataError(
                    f"synthetic source seed must be an integer, got {rest!r} in {spec!r}"
                ) from None
            if seed < 0:
                raise DataError(f"synthetic source seed must be >= 0, got {seed}")
        _check_options("synthetic", SyntheticSource, options)
        return SyntheticSource(width, height, window_s, seed=seed, **options)

    if scheme == "dsec":
        from eventspd_export.data.dsec import DsecSource as opener
    elif scheme == "m3ed":
        from eventspd_export.data.m3ed import M3edSource as opener
    else:
        from eventspd_export.data.mvsec import MvsecSource as opener
    _check_options(scheme, opener, options)
    return opener(rest, width, height, window_s, **options)


def _check_options(scheme: str, cls: type, options: dict) -> None:
    """Name unknown options instead of letting a TypeError from the constructor escape."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    known = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(
            f"{scheme}: unknown option(s) {', '.join(unknown)}; "
            f"this source accepts: {', '.join(known) or 'none'}")
