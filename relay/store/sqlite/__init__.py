"""The SQLite backend: one file, one writer thread, reader connections.

The store's operations are written once (`relay.store.ops`); this package runs them on sqlite3 connections
(`connection.SqliteDb`): writes on the single writer thread (`relay.store.sqlite.writer`), inside its transaction;
reads on reader connections. What only a file has (pragmas, free pages, backups) stays here.
"""
