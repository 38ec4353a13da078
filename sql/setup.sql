-- walhook setup, for a DBA to read and run by hand (psql -f sql/setup.sql), as a superuser or
-- the owner of the tables. `walhook setup` prints the same publication and slot SQL for the
-- tables in your config; `walhook check` verifies the result.
--
-- Replace: walhook (role, publication, slot), the password, and the table list.

-- 1. Logical decoding must be on. This needs a restart of Postgres to take effect.
--    (Managed services: set the parameter group's rds.logical_replication / cloudsql.logical_decoding.)
ALTER SYSTEM SET wal_level = logical;

-- 2. A role for walhook: REPLICATION lets it stream from a slot; it needs no other write rights.
CREATE ROLE walhook WITH LOGIN REPLICATION PASSWORD 'change-me';

-- 3. SELECT on the mapped tables: for type lookups and backfills.
GRANT USAGE ON SCHEMA public TO walhook;
GRANT SELECT ON public.orders, public.customers TO walhook;

-- 4. Updates and deletes carry the old row's key only when the table has a primary key; for a
--    table without one, send the whole old row instead:
-- ALTER TABLE public.some_table REPLICA IDENTITY FULL;

-- 5. The publication: which tables' changes the slot decodes. The comment marks it as
--    walhook's, so `walhook teardown` may drop it.
CREATE PUBLICATION walhook FOR TABLE public.orders, public.customers
    WITH (publish = 'insert, update, delete, truncate');
COMMENT ON PUBLICATION walhook IS 'walhook: created by walhook setup; walhook teardown drops it';

-- 6. The slot: Postgres keeps WAL from its position until walhook confirms it. walhook creates
--    it on first run if missing; create it here to start capturing changes now.
SELECT pg_create_logical_replication_slot('walhook', 'pgoutput');
