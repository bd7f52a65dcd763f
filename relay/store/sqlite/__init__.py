"""The SQLite backend: every SQL statement cos-relay runs lives in this package.

Functions take an open connection so the caller decides where they run: writes on the single writer
thread (`relay.store.writer`), inside its transaction; reads on reader connections. A PostgreSQL
backend implements the same functions in its own package.
"""
