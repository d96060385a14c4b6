"""Where a project keeps its state: the ledger, the outbox, the token cache, and (on
PostgreSQL) the leases of a fleet.

SQLite files in the project's state directory are the embedded default. A ``StateStore``
asset of ``type: postgresql`` puts the state into one database shared by every instance
(docs/cluster.md): :mod:`postline.state.postgres` opens connections and words every failure
as one line naming the StateStore and the fix; :mod:`postline.state.migrations` creates and
upgrades postline's tables, versioned, and refuses a schema newer than this postline.
"""
