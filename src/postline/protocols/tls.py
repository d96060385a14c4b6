"""Moved to :mod:`postline.tls` (below both :mod:`postline.auth` and :mod:`postline.protocols`,
so neither imports the other for it).

This re-export keeps old imports working for one release; new code imports from
:mod:`postline.tls`.
"""

from postline.tls import *  # noqa: F401,F403


def __getattr__(name: str) -> object:
    """Any other name (a private one, say) of the moved module, for old importers."""
    import postline.tls

    return getattr(postline.tls, name)
