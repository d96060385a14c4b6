"""Moved to :mod:`postline.state.ledger_schema`
(the ledger's schema now lives with the rest of postline's state).

This re-export keeps old imports working for one release; new code imports from
:mod:`postline.state.ledger_schema`.
"""

from postline.state.ledger_schema import *  # noqa: F401,F403


def __getattr__(name: str) -> object:
    """Any other name (a private one, say) of the moved module, for old importers."""
    import postline.state.ledger_schema

    return getattr(postline.state.ledger_schema, name)
