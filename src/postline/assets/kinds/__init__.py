"""Built-in asset kinds. Importing this package registers each of them.

To add a kind: write a module here with a model decorated by ``@register_kind``. Every
module of this package is imported below, so nothing else changes: the loader, validator
and usage graph are generic.
"""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")
