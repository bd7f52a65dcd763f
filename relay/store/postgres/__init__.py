"""The PostgreSQL backend: the same store as relay/store/sqlite, for any number of replicas on one database.

SQL by concern as in the SQLite package (`callbacks`, `subscribers`, `deliveries`, `attempts`, `queries`),
versioned migrations under an advisory lock (`migrations`, `schema`), asyncpg on a loop thread of its own
(`connection`), and the store class (`store`).
"""
