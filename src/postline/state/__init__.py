"""Where a project keeps its state: everything durable, in one place.

The embedded default is SQLite files in the project's state directory
(:mod:`postline.state.paths` names them): :mod:`postline.state.ledger` (what happened to
every mail; tables in :mod:`postline.state.ledger_schema`) and :mod:`postline.state.outbox`
(the SendAndForget queue), both on the one store helper :mod:`postline.state.sqlite`
(read-only or read-write, WAL + ``synchronous=FULL``, a write that keeps the cause, rows by
name, chunked IN lists, one version scheme); their states are the StrEnums of
:mod:`postline.state.states`. Beside them: :mod:`postline.state.token_cache` (sealed
OAuth token caches) and :mod:`postline.state.locks` (one process per source / outbox).
The old module paths (``postline.source.ledger``, ``postline.service.outbox``,
``postline.auth.token_cache``, ``postline.locks``) re-export these for one release.

A ``StateStore`` asset of ``type: postgresql`` puts the state into one database shared by
every instance (docs/cluster.md): :mod:`postline.state.postgres` opens connections and words
every failure as one line naming the StateStore and the fix; :mod:`postline.state.migrations`
creates and upgrades postline's tables, versioned, and refuses a schema newer than this
postline.
"""
