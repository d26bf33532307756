-- pgTAP: who may do what. A role without tenant_backup_operator can neither call the
-- API nor touch the catalog, even when it was given USAGE on the schema; a member of
-- tenant_backup_operator can call the API and read the status view, but cannot
-- write the catalog or call the internal functions. Roles are switched with SET ROLE
-- and created in the transaction, which is rolled back.
BEGIN;
SELECT plan(77);

CREATE ROLE tbt_nobody;
CREATE ROLE tbt_outsider;
GRANT USAGE ON SCHEMA tenant_backup TO tbt_outsider;
CREATE ROLE tbt_operator;
GRANT tenant_backup_operator TO tbt_operator;

DO $$
BEGIN
	PERFORM tenant_backup.tenant_create('perm-t');
	PERFORM tenant_backup.tenant_add_database('perm-t', 'postgres', 'tenant_db_a');
END
$$;

-- The API, one call each, named by function.
CREATE TEMP TABLE api_calls (name text, call text);
INSERT INTO api_calls VALUES
	('tenant_create', $$SELECT tenant_backup.tenant_create('perm-x')$$),
	('tenant_add_database', $$SELECT tenant_backup.tenant_add_database('perm-t', 'redis', 'redis://cache/0')$$),
	('tenant_backup', $$SELECT tenant_backup.tenant_backup('perm-t')$$),
	('tenant_restore', $$SELECT tenant_backup.tenant_restore('perm-t', wait => false)$$),
	('tenant_backups', $$SELECT * FROM tenant_backup.tenant_backups('perm-t')$$),
	('tenant_set_schedule', $$SELECT tenant_backup.tenant_set_schedule('perm-t', '1 hour')$$);

-- Direct writes to the catalog, named by table.
CREATE TEMP TABLE catalog_writes (name text, sql text);
INSERT INTO catalog_writes VALUES
	('tenants', $$UPDATE tenant_backup.tenants SET tier = 'dedicated'$$),
	('key_store', $$UPDATE tenant_backup.key_store SET state = 'destroyed'$$),
	('settings', $$DELETE FROM tenant_backup.settings$$),
	('drills', $$DELETE FROM tenant_backup.drills$$),
	('sources', $$INSERT INTO tenant_backup.sources (tenant, engine, locator) VALUES ('perm-t', 'postgres', 'tenant_db_b')$$),
	('jobs', $$INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine)
			   SELECT 'backup', 'perm-t', id, 'postgres' FROM tenant_backup.sources LIMIT 1$$),
	('backups', $$INSERT INTO tenant_backup.backups (tenant, engine, status) VALUES ('perm-t', 'postgres', 'failed')$$),
	('audit', $$DELETE FROM tenant_backup.audit$$);

-- The internal functions, one call each.
CREATE TEMP TABLE internal_calls (name text, call text);
INSERT INTO internal_calls VALUES
	('_audit', $$SELECT tenant_backup._audit('forged', 'perm-t', '{}')$$),
	('_tenant_check', $$SELECT tenant_backup._tenant_check('perm-t')$$),
	('_engine_check', $$SELECT tenant_backup._engine_check('postgres')$$),
	('_next_due', $$SELECT tenant_backup._next_due('perm-t', '1 hour', now())$$),
	('_enqueue', $$SELECT tenant_backup._enqueue('backup', 'perm-t', NULL, NULL, NULL, NULL)$$),
	('_key_create', $$SELECT tenant_backup._key_create('perm-t', NULL)$$),
	('_storage_delete_prefix', $$SELECT tenant_backup._storage_delete_prefix('perm-t/')$$),
	('_expire', $$SELECT tenant_backup._expire('perm-t', 'me')$$),
	('_seal_secret', $$SELECT tenant_backup._seal_secret('source password', 'secret')$$),
	('_require_worker', $$SELECT tenant_backup._require_worker()$$),
	('_request', $$SELECT tenant_backup._request('backup', 'perm-t', NULL, NULL, NULL, false)$$),
	('_run_request', $$SELECT tenant_backup._run_request('backup', 'perm-t', NULL, NULL, NULL)$$);

GRANT SELECT ON api_calls, catalog_writes, internal_calls TO tbt_nobody, tbt_outsider, tbt_operator;

-- ------------------------------------------------------------ privileges as granted

SELECT table_privs_are('tenant_backup', t, 'public', ARRAY[]::text[], format('PUBLIC has no privilege on table %s', t))
FROM unnest(ARRAY['tenants', 'key_store', 'sources', 'jobs', 'backups', 'audit', 'settings', 'drills']) AS t;
SELECT ok(NOT has_table_privilege('tenant_backup_operator', 'tenant_backup.' || t,
								  'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'),
	format('tenant_backup_operator holds no write privilege on table %s', t))
FROM unnest(ARRAY['tenants', 'key_store', 'sources', 'jobs', 'backups', 'audit', 'settings', 'drills']) AS t;
SELECT table_privs_are('tenant_backup', 'status', 'tenant_backup_operator', ARRAY['SELECT'],
	'tenant_backup_operator may only SELECT the status view');
SELECT set_eq($$SELECT proname::text FROM pg_proc WHERE pronamespace = 'tenant_backup'::regnamespace
				AND has_function_privilege('tenant_backup_operator', oid, 'EXECUTE')$$,
	ARRAY['tenant_create', 'tenant_add_database', 'tenant_backup', 'tenant_restore', 'tenant_backups',
		  'tenant_set_schedule', 'tenant_rotate_key', 'tenant_set_key_source', 'tenant_rotate_master_key',
		  'tenant_set_retention', 'tenant_hold', 'tenant_release', 'tenant_expire', 'tenant_drop',
		  'tenant_audit_verify', 'tenant_restore_drill', 'tenant_compliance_report', '_wal_archive_lag',
		  'tenant_cancel', 'tenant_pause', 'tenant_resume', 'check', '_default_schedule', '_agent_missing',
		  '_builtin_retention', 'tenant_remove_database', 'tenant_remove_scratch', '_metrics', 'tenant_set_replica', '_scratch_directories'],
	'tenant_backup_operator may execute the API functions, and the read-only helpers the operators'' views call, and nothing else in the schema');
SELECT table_privs_are('tenant_backup', 'keys', 'tenant_backup_operator', ARRAY['SELECT'],
	'tenant_backup_operator may only SELECT the keys view');
SELECT is_empty($$SELECT proname FROM pg_proc WHERE pronamespace = 'tenant_backup'::regnamespace
				  AND has_function_privilege('public', oid, 'EXECUTE')$$,
	'PUBLIC may execute no function in the schema');

-- ------------------------------------------------------------ no role at all

SET ROLE tbt_nobody;
SELECT throws_ok($$SELECT tenant_backup.tenant_create('perm-x')$$,
	'42501', 'permission denied for schema tenant_backup', 'a plain role cannot call tenant_create');
SELECT throws_ok($$SELECT * FROM tenant_backup.status$$,
	'42501', 'permission denied for schema tenant_backup', 'a plain role cannot read the status view');
RESET ROLE;

-- ------------------------------------------------------------ schema usage, not operator

SET ROLE tbt_outsider;
SELECT throws_ok(call, '42501', format('permission denied for function %s', name),
	format('without tenant_backup_operator: %s is refused', name))
FROM api_calls ORDER BY name;
SELECT throws_ok(format('SELECT * FROM tenant_backup.%I', t), '42501', format('permission denied for table %s', t),
	format('without tenant_backup_operator: SELECT from %s is refused', t))
FROM unnest(ARRAY['tenants', 'key_store', 'sources', 'jobs', 'backups', 'audit', 'settings', 'drills']) AS t;
SELECT throws_ok(sql, '42501', format('permission denied for table %s', name),
	format('without tenant_backup_operator: writing %s is refused', name))
FROM catalog_writes ORDER BY name;
SELECT throws_ok($$SELECT * FROM tenant_backup.status$$, '42501', 'permission denied for view status',
	'without tenant_backup_operator: the status view is refused');
RESET ROLE;

-- ------------------------------------------------------------ operator

SET ROLE tbt_operator;
SELECT is((SELECT name FROM tenant_backup.tenant_create('perm-op')), 'perm-op',
	'an operator can create a tenant');
SELECT is((SELECT locator FROM tenant_backup.tenant_add_database('perm-op', 'postgres', 'tenant_db_b')), 'tenant_db_b',
	'an operator can add a database');
SELECT is((SELECT schedule FROM tenant_backup.tenant_set_schedule('perm-op', '1 hour')), interval '1 hour',
	'an operator can set a schedule');
SELECT is((SELECT count(*) FROM tenant_backup.tenant_backup('perm-op')), 1::bigint,
	'an operator can queue a backup');
SELECT is_empty($$SELECT * FROM tenant_backup.tenant_backups('perm-op')$$,
	'an operator can list backups');
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('perm-op', 'postgres', wait => false)$$,
	'P0002', 'tenant "perm-op" has no complete postgres backup to restore',
	'an operator can request a restore (refused here only for want of a backup)');
SELECT set_eq($$SELECT tenant, locator FROM tenant_backup.status WHERE tenant LIKE 'perm-%'$$,
	$$VALUES ('perm-t', 'tenant_db_a'), ('perm-op', 'tenant_db_b')$$,
	'an operator can read the status view');
SELECT throws_ok(sql, '42501', format('permission denied for table %s', name),
	format('an operator cannot write %s directly', name))
FROM catalog_writes ORDER BY name;
SELECT throws_ok(call, '42501', format('permission denied for function %s', name),
	format('an operator cannot call %s', name))
FROM internal_calls ORDER BY name;
SELECT throws_ok($$SELECT nextval('tenant_backup.jobs_id_seq')$$, '42501', 'permission denied for sequence jobs_id_seq',
	'an operator cannot advance the catalog''s sequences');
RESET ROLE;

SELECT is((SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'perm-t'), 0::bigint,
	'nothing the refused roles tried was queued');
SELECT is((SELECT count(*) FROM tenant_backup.key_store WHERE tenant = 'perm-t' AND state = 'active'), 1::bigint,
	'the tenant''s key is untouched');
SELECT is_empty($$SELECT * FROM tenant_backup.audit WHERE action = 'forged'$$,
	'no forged audit row got in');
SELECT is((SELECT count(*) FROM tenant_backup.sources WHERE tenant = 'perm-t'), 1::bigint,
	'no source was added behind the API');

SELECT * FROM finish();
ROLLBACK;
