"""Postgres, the durable system of record: models, migrations and one repository per
aggregate. Only the outbox workers write here; rebuild and audit read."""
