"""Moved to :mod:`postline.state.locks` (the process locks now lives with the rest of postline's state).

This re-export keeps old imports working for one release; new code imports from
:mod:`postline.state.locks`.
"""

from postline.state.locks import *  # noqa: F401,F403
