"""Moved to :mod:`postline.state.outbox`
(the outbox now lives with the rest of postline's state).

This re-export keeps old imports working for one release; new code imports from
:mod:`postline.state.outbox`.
"""

from postline.state.outbox import *  # noqa: F401,F403


def __getattr__(name: str) -> object:
    """Any other name (a private one, say) of the moved module, for old importers."""
    import postline.state.outbox

    return getattr(postline.state.outbox, name)
