"""Moved to :mod:`postline.state.token_cache`
(the token cache now lives with the rest of postline's state).

This re-export keeps old imports working for one release; new code imports from
:mod:`postline.state.token_cache`.
"""

from postline.state.token_cache import *  # noqa: F401,F403


def __getattr__(name: str) -> object:
    """Any other name (a private one, say) of the moved module, for old importers."""
    import postline.state.token_cache

    return getattr(postline.state.token_cache, name)
