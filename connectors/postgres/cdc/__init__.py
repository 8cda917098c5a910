"""Change data capture from PostgreSQL: a table's snapshot, then its changes, from a logical
replication slot (pgoutput), with the position committed by the loads and the slot advanced
only after (see `source`)."""
