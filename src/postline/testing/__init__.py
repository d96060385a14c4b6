"""The local mail stack (Dovecot, Postfix, oidc-provider on 127.0.0.1) for tests, demos and users.

``from postline.testing import Stack, StackInfo, MailUser`` -- see :mod:`postline.testing.stack`
and docs/dev-stack.md. Names are loaded lazily so that importing a sibling module (for example
the fault-injection servers) does not pull in the stack's dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Stack": "postline.testing.stack",
    "StackStatus": "postline.testing.stack",
    "StackInfo": "postline.testing.info",
    "MailUser": "postline.testing.info",
    "StackError": "postline.testing.errors",
    "StackUnavailable": "postline.testing.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'postline.testing' has no attribute {name!r}")
