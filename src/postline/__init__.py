"""postline: email in and out of data pipelines.

>>> import postline
>>> project = postline.open_project("examples/local")       # doctest: +SKIP
>>> project.service("Notify").Send({"To": [...], ...})      # doctest: +SKIP
"""

from postline.errors import Ignore  # a processor's `raise Ignore(reason)`
from postline.version import __version__

__all__ = ["Ignore", "__version__", "open_project"]


def open_project(path=".", **kwargs):
    """Load and validate the project at ``path``; returns a :class:`postline.project.Project`.

    Raises :class:`postline.errors.ValidationFailed` listing every problem.
    """
    from postline.project import open_project as _open

    return _open(path, **kwargs)
