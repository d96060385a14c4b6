"""Moved to :mod:`postline.trace` (below both :mod:`postline.auth` and :mod:`postline.protocols`,
so neither imports the other for it).

This re-export keeps old imports working for one release; new code imports from
:mod:`postline.trace`.
"""

from postline.trace import *  # noqa: F401,F403


def __getattr__(name: str) -> object:
    """Any other name (a private one, say) of the moved module, for old importers."""
    import postline.trace

    return getattr(postline.trace, name)
