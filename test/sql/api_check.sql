-- pgTAP: tenant_backup.check(). On the test cluster (file storage and a 0600 master key
-- that wraps every tenant key) every check is ok but the agents of engines without an
-- agent; a tenant key wrapped by another master key is caught; no row shows the master
-- key; an operator may run it, a role without tenant_backup_operator may not. Unwritable
-- storage and a wrong key file are in test/integration/pg_operate.t. Rolled back.
BEGIN;
SELECT plan(19);

CREATE ROLE tbt_check_ops;
GRANT tenant_backup_operator TO tbt_check_ops;
CREATE ROLE tbt_check_stranger;
GRANT USAGE ON SCHEMA tenant_backup TO tbt_check_stranger;

DO $$
BEGIN
	PERFORM tenant_backup.tenant_create('check-t');
	PERFORM tenant_backup.tenant_add_database('check-t', 'redis', 'redis://cache.example/7');
END
$$;
CREATE TEMP TABLE checked AS SELECT * FROM tenant_backup.check();

SELECT bag_has($$SELECT name FROM checked$$,
	$$SELECT unnest(ARRAY['storage', 'storage write', 'storage read', 'storage list', 'storage delete', 'master key', 'storage keys',
		  'catalog keys', 'pg_dump version', 'pg_restore version', 'shared_preload_libraries', 'max_workers',
		  'lease_timeout', 'agents redis'])$$,
	'check() reports storage, its round trip, the master key, keys, tools, settings and agents');
SELECT is_empty($$SELECT name, status, detail FROM checked WHERE status <> 'ok' AND name NOT LIKE 'agents %'$$,
	'on a working installation every check but the agents is ok');
SELECT ok((SELECT bool_and(status IN ('ok', 'warning', 'error')) FROM checked), 'each status is ok, warning or error');
SELECT is((SELECT status || ': ' || detail FROM checked WHERE name = 'agents redis'),
	'error: no agent for redis has ever been seen', 'a redis database without any redis agent is an error');
SELECT alike((SELECT hint FROM checked WHERE name = 'agents redis'), 'Start tenant-backup-agent-redis%',
	'with a hint saying which agent to start');
SELECT is_empty($$SELECT * FROM checked WHERE status <> 'ok' AND hint IS NULL$$, 'every problem comes with a hint');
SELECT alike((SELECT detail FROM checked WHERE name = 'storage keys'), 'the active keys of % tenants in storage open with master key %',
	'the tenant keys in storage open with the configured master key');
SELECT alike((SELECT detail FROM checked WHERE name = 'pg_dump version'), '%/pg_dump: pg_dump (PostgreSQL) 15%',
	'pg_dump is found and its version shown');
SELECT is((SELECT count(*) FROM tenant_backup.audit WHERE tenant IS NULL AND action LIKE '%check%'), 0::bigint,
	'check() changes nothing in the catalog');

-- The master key never shows: not its hex digits, not in a detail or a hint.
SELECT unalike((SELECT string_agg(c::text, ' ') FROM checked c),
	'%' || btrim(pg_read_file(current_setting('tenant_backup.master_key_file')), E' \n') || '%',
	'no row holds the master key');

DO $$ BEGIN PERFORM tenant_backup.agent_hello('check-r1', '{redis}', 'host-1', '0.2.0'); END $$;
SELECT is((SELECT status FROM tenant_backup.check() WHERE name = 'agents redis'), 'ok',
	'once a redis agent said hello, the agents check is ok');

-- A tenant key that another master key wraps (a key file swapped, a rotation half done).
UPDATE tenant_backup.key_store SET wrapped = jsonb_set(wrapped, '{master_key_id}', '"0123456789abcdef"')
WHERE tenant = 'check-t';
SELECT is((SELECT status FROM tenant_backup.check() WHERE name = 'catalog keys'), 'error',
	'a catalog key wrapped by another master key is an error');
SELECT alike((SELECT detail FROM tenant_backup.check() WHERE name = 'catalog keys'),
	'1 tenant keys are wrapped by another master key than %', 'saying how many');

-- A dedicated PostgreSQL tenant: its cluster's WAL archiving is looked at too.
DO $$
BEGIN
	PERFORM tenant_backup.tenant_create('check-d', 'dedicated');
	PERFORM tenant_backup.tenant_add_database('check-d', 'postgres', 'tenant_db_b');
END
$$;
SELECT is((SELECT status FROM tenant_backup.check() WHERE name = 'wal archive'), 'warning',
	'a dedicated tenant on a cluster that does not archive with tenant_backup is a warning');
SELECT alike((SELECT detail || ' / ' || hint FROM tenant_backup.check() WHERE name = 'wal archive'),
	'archive_mode = off, archive_library = % / %archive_library = ''tenant_backup''%', 'naming the settings to change');

-- Who may run it.
SET ROLE tbt_check_ops;
SELECT ok((SELECT count(*) > 10 FROM tenant_backup.check()), 'an operator runs check()');
RESET ROLE;
SET ROLE tbt_check_stranger;
SELECT throws_ok($$SELECT * FROM tenant_backup.check()$$, '42501', 'permission denied for function check',
	'a role without tenant_backup_operator cannot');
RESET ROLE;
SET ROLE tbt_check_ops;
SELECT throws_ok($$SELECT * FROM tenant_backup._check_storage()$$, '42501', 'permission denied for function _check_storage',
	'an operator cannot call the C parts directly');
SELECT throws_ok($$SELECT * FROM tenant_backup._check_master_key(NULL, NULL)$$, '42501',
	'permission denied for function _check_master_key', 'nor the master key check');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
