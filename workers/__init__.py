"""Outbox workers: RQ jobs that carry the Redis outbox to Postgres and to the data platform."""
