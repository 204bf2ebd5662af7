"""The package's version, from its installed metadata (a source tree without them reads
``0.0.0+unknown``); ``sim.__version__`` re-exports it."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("journey-engine")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
