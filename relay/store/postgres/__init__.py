"""The PostgreSQL backend: the same store as relay/store/sqlite, for any number of replicas on one database.

The operations are `relay.store.ops`' (their PostgreSQL side through `relay.store.db.Dialect`); here are
versioned migrations under an advisory lock (`migrations`, `schema`), asyncpg on a loop thread of its own
(`connection`), the copy from SQLite (`copy`), and the store class (`store`).
"""
