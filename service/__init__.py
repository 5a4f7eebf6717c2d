"""smecredit: SME credit scoring from operating data."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smecredit")  # one source: pyproject.toml, as installed
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0.0.0+unknown"
