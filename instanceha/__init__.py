"""instanceha: keeps OpenStack instances running when their compute node dies."""

from instanceha.version import __version__

__all__ = ["__version__"]
