"""Moved to :mod:`postline.state.ledger`
(the ledger now lives with the rest of postline's state).

This re-export keeps old imports working for one release; new code imports from
:mod:`postline.state.ledger`.
"""

from postline.state.ledger import *  # noqa: F401,F403


def __getattr__(name: str) -> object:
    """Any other name (a private one, say) of the moved module, for old importers."""
    import postline.state.ledger

    return getattr(postline.state.ledger, name)
