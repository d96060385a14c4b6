"""Moved to :mod:`postline.state.locks`
(the process locks now live with the rest of postline's state).

This re-export keeps old imports working for one release; new code imports from
:mod:`postline.state.locks`.
"""

from postline.state.locks import *  # noqa: F401,F403


def __getattr__(name: str) -> object:
    """Any other name (a private one, say) of the moved module, for old importers."""
    import postline.state.locks

    return getattr(postline.state.locks, name)
