"""Project-wide helpers: ``EasyDict`` and cache/download utilities (see :mod:`dnnlib.util`)."""

from dnnlib.util import DownloadError, EasyDict, cache_dir, cached_download, download

__all__ = ["EasyDict", "DownloadError", "cache_dir", "cached_download", "download"]
