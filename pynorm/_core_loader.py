"""Imports the compiled extension once, with an error that says how to rebuild it."""

from __future__ import annotations

import functools
import os
import warnings


@functools.lru_cache(maxsize=None)
def core():
    """The compiled CPU module ``pynorm._core`` (SIMD level chosen by PYNORM_SIMD if set)."""
    try:
        from . import _core
    except ImportError as e:  # pragma: no cover - only on a broken install
        raise ImportError(
            f"pynorm's compiled module could not be imported ({e}). If you are running from a "
            "source checkout, install it first: `pip install .` (or, for development, "
            "`pip install --no-build-isolation -e .`), and run pytest from the repo root "
            "(it uses --import-mode=importlib so that the installed package is tested)."
        ) from e
    level = os.environ.get("PYNORM_SIMD", "").strip().lower()
    if level:
        try:
            _core.set_simd_level(level)
        except ValueError as e:
            warnings.warn(f"PYNORM_SIMD={level!r} ignored: {e}", RuntimeWarning, stacklevel=2)
    return _core
