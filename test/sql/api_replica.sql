-- pgTAP: replica storage per tenant. tenant_set_replica() and _replica_url(), the URLs
-- refused (invalid, overlapping the primary storage, an operator's endpoint or
-- directory the superuser did not configure), the backups' replica columns and the
-- trigger that makes a completed backup pending. pgtap.t's server has file storage and
-- no tenant_backup.replica_storage. Everything is rolled back.
BEGIN;
SELECT plan(39);

CREATE ROLE tbt_replica_ops;
GRANT tenant_backup_operator TO tbt_replica_ops;
SELECT tenant_backup.tenant_create('rep-a') IS NOT NULL AS created;
SELECT tenant_backup.tenant_create('rep-b') IS NOT NULL AS created;

-- ------------------------------------------------------------ the catalog's names

SELECT has_column('tenant_backup', 'tenants', 'replica_storage', 'tenants have a replica_storage column');
SELECT columns_are('tenant_backup', 'backups',
	ARRAY['id', 'tenant', 'engine', 'source_id', 'job_id', 'status', 'started', 'finished', 'bytes_in', 'bytes_stored',
		  'sha256', 'object_key', 'key_id', 'error', 'start_lsn', 'stop_lsn', 'timeline', 'contents', 'replica_state',
		  'replicated_at', 'replica_error', 'replica_attempts', 'replica_next_attempt', 'replica_url'],
	'backups have the replica columns');
SELECT is(current_setting('tenant_backup.replica_storage'), '', 'tenant_backup.replica_storage is empty by default');
SELECT is(tenant_backup._replica_url('rep-a'), NULL, 'without the setting or a URL of its own a tenant has no replica');
SELECT function_privs_are('tenant_backup', '_replica_url', ARRAY['text'], 'public', ARRAY[]::text[],
	'PUBLIC may not call _replica_url');
SELECT function_privs_are('tenant_backup', '_replica_url', ARRAY['text'], 'tenant_backup_operator', ARRAY[]::text[],
	'operators may not call _replica_url');
SELECT function_privs_are('tenant_backup', 'tenant_set_replica', ARRAY['text', 'text'], 'tenant_backup_operator',
	ARRAY['EXECUTE'], 'operators may call tenant_set_replica');
SELECT function_privs_are('tenant_backup', 'tenant_set_replica', ARRAY['text', 'text'], 'public', ARRAY[]::text[],
	'PUBLIC may not call tenant_set_replica');

-- ------------------------------------------------------------ a superuser sets a tenant's replica

SELECT is(tenant_backup.tenant_set_replica('rep-a', 'file:///srv/replica-a'), 'file:///srv/replica-a',
	'a superuser gives rep-a a file:// replica; the effective URL is returned');
SELECT is((SELECT replica_storage FROM tenant_backup.tenants WHERE name = 'rep-a'), 'file:///srv/replica-a',
	'the tenant row holds the URL');
SELECT is(tenant_backup._replica_url('rep-a'), 'file:///srv/replica-a', '_replica_url returns it');
SELECT is(tenant_backup.tenant_set_replica('rep-b',
	's3://other-bucket/copies?endpoint=http://127.0.0.1:1&region=eu-west-1'),
	's3://other-bucket/copies?endpoint=http://127.0.0.1:1&region=eu-west-1',
	'a superuser may name any S3 endpoint');
SELECT is((SELECT detail->>'url' FROM tenant_backup.audit WHERE action = 'replica set' AND tenant = 'rep-a'
		   ORDER BY id DESC LIMIT 1), 'file:///srv/replica-a', 'setting a replica is audited with the URL');
SELECT is(tenant_backup.tenant_set_replica('rep-b', 'none'), NULL, '''none'': rep-b has no replica');
SELECT is(tenant_backup._replica_url('rep-b'), NULL, 'and _replica_url says so');

-- ------------------------------------------------------------ refused URLs

SELECT throws_ok($$SELECT tenant_backup.tenant_set_replica('nobody', 'file:///srv/x')$$,
	'42704', 'tenant "nobody" does not exist', 'an unknown tenant is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_replica('rep-a', 'ftp://host/x')$$,
	'22023', 'the replica storage URL for tenant "rep-a" is refused', 'an unsupported scheme is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_replica('rep-a', 'file://relative/dir')$$,
	'22023', 'the replica storage URL for tenant "rep-a" is refused', 'a relative directory is refused');
SELECT throws_ok(format('SELECT tenant_backup.tenant_set_replica(%L, %L)', 'rep-a',
						current_setting('tenant_backup.storage')),
	'22023', 'the replica storage URL for tenant "rep-a" is refused', 'the primary storage itself is refused');
SELECT throws_ok(format('SELECT tenant_backup.tenant_set_replica(%L, %L)', 'rep-a',
						current_setting('tenant_backup.storage') || '/rep-a/copies'),
	'22023', 'the replica storage URL for tenant "rep-a" is refused', 'a directory inside the primary storage is refused');
SELECT throws_ok(format('SELECT tenant_backup.tenant_set_replica(%L, %L)', 'rep-a',
						regexp_replace(current_setting('tenant_backup.storage'), '/[^/]+$', '')),
	'22023', 'the replica storage URL for tenant "rep-a" is refused', 'the directory above the primary storage is refused');
SELECT throws_ok(format('SELECT tenant_backup.tenant_set_replica(%L, %L)', 'rep-a',
						current_setting('tenant_backup.storage') || '/x/../../elsewhere'),
	'22023', 'the replica storage URL for tenant "rep-a" is refused', 'a directory with ".." parts is refused');
SELECT is(tenant_backup._replica_url('rep-a'), 'file:///srv/replica-a', 'refusals left rep-a''s replica as it was');
SELECT throws_like($$SELECT tenant_backup.tenant_set_replica('rep-b', 'file:///srv/replica-a/rep-b')$$,
	'%replica storage URL for tenant "rep-b" is refused%', 'nobody may name a directory inside another tenant''s replica');
SELECT throws_like($$SELECT tenant_backup.tenant_set_replica('rep-b', 'file:///srv')$$,
	'%replica storage URL for tenant "rep-b" is refused%', 'nor the directory above it');
SELECT is((SELECT replica_set_by_superuser FROM tenant_backup.tenants WHERE name = 'rep-a'), true,
	'a superuser''s URL is recorded as such');

SET SESSION AUTHORIZATION tbt_replica_ops;
SELECT throws_ok($$SELECT tenant_backup.tenant_set_replica('rep-a', 's3://bucket/x?endpoint=http://attacker.example:9000')$$,
	'22023', 'the replica storage URL for tenant "rep-a" is refused',
	'an operator cannot point a replica at an S3 endpoint the superuser did not configure');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_replica('rep-a', 's3://bucket/x?endpoint=http%3A%2F%2Fattacker.example')$$,
	'22023', 'the replica storage URL for tenant "rep-a" is refused', 'nor with the endpoint percent-encoded');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_replica('rep-a', 'file:///tmp/operator-dir')$$,
	'22023', 'the replica storage URL for tenant "rep-a" is refused',
	'an operator cannot name a directory while replica_storage is not a file:// directory');
SELECT throws_like($$SELECT tenant_backup.tenant_set_replica('rep-a', 'file:///srv/replica-a')$$,
	'%replica storage URL for tenant "rep-a" is refused%',
	'an operator cannot name even a superuser''s URL that is not tenant_backup.replica_storage');
SELECT is(tenant_backup.tenant_set_replica('rep-a', 'none'), NULL, 'an operator may opt a tenant out');
SELECT is(tenant_backup.tenant_set_replica('rep-a', NULL), NULL, 'and back to the setting (empty here)');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT actor FROM tenant_backup.audit WHERE action = 'replica set' ORDER BY id DESC LIMIT 1),
	'tbt_replica_ops', 'the audit names the operator');

-- ------------------------------------------------------------ a completed backup becomes pending

SELECT tenant_backup.tenant_set_replica('rep-a', 'file:///srv/replica-a') IS NOT NULL AS set;
INSERT INTO tenant_backup.backups (tenant, engine, status) VALUES ('rep-a', 'mysql', 'running'), ('rep-b', 'mysql', 'running');
SELECT is((SELECT count(*) FROM tenant_backup.backups WHERE tenant IN ('rep-a', 'rep-b') AND replica_state IS NOT NULL),
	0::bigint, 'a running backup is not pending replication');
UPDATE tenant_backup.backups SET status = 'complete', finished = now(), object_key = tenant || '/mysql/x.tbk',
	sha256 = repeat('0', 64) WHERE tenant IN ('rep-a', 'rep-b');
SELECT is((SELECT replica_state FROM tenant_backup.backups WHERE tenant = 'rep-a'), 'pending',
	'a backup of a tenant with a replica is pending once complete');
SELECT is((SELECT replica_state FROM tenant_backup.backups WHERE tenant = 'rep-b'), NULL,
	'a backup of a tenant without one (''none'') is not');
SELECT is((SELECT replica_state || ' ' || coalesce(replica_url, '-') FROM tenant_backup.tenant_backups('rep-a')),
	'pending -', 'tenant_backups() shows the replica state');
SELECT is(tenant_backup.tenant_set_replica('rep-a', 'none'), NULL, 'rep-a opts out');
SELECT is((SELECT replica_state FROM tenant_backup.backups WHERE tenant = 'rep-a'), NULL,
	'its backup not yet replicated is no longer pending');

SELECT * FROM finish();
ROLLBACK;
