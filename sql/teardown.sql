-- walhook teardown, for a DBA to read and run by hand. `walhook teardown` does the same.
--
-- A replication slot nobody reads makes Postgres keep WAL forever, until the disk fills.
-- When walhook is retired, drop its slot. Stop walhook first: an active slot cannot be dropped.

-- Is it in use? (active_pid is walhook's walsender while it runs.)
SELECT slot_name, active_pid, confirmed_flush_lsn,
       pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)) AS retained
FROM pg_replication_slots WHERE slot_name = 'walhook';

SELECT pg_drop_replication_slot('walhook');

-- The publication holds no data and costs nothing, but drop it if walhook created it.
DROP PUBLICATION IF EXISTS walhook;

-- The role, if nothing else uses it.
-- REVOKE SELECT ON public.orders, public.customers FROM walhook;
-- DROP ROLE walhook;
