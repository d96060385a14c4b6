"""Built-in asset kinds. Importing this package registers each of them.

To add a kind: write a module here with a model decorated by ``@register_kind`` and import it
below. Nothing else changes: the loader, validator and usage graph are generic.
"""

from postline.assets.kinds import connection, environment, secret  # noqa: F401
