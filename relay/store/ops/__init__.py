"""The store's operations, each written once for both backends: ``async def op(db: Db, ...)`` over
`relay.store.db.Db`, SQL with ``?`` placeholders, and `relay.store.db.Dialect` where the backends really differ.

By concern: `callbacks` (ingest and the quarantine), `subscribers`, `deliveries` (claims, requeues), `attempts`
(finishing a batch), `queries` and `console` (reads), `retention` (pruning), `backlog` (shedding), `secrets`
and `tokens`.
"""
