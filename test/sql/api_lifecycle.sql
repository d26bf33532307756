-- pgTAP: the compliance lifecycle in the catalog. GFS retention over a synthetic
-- history with fixed timestamps, legal holds, key rotation and the keys view, drop
-- and its certificate, the compliance report. Storage is the cluster's file storage;
-- the synthetic backups name objects that do not exist (deleting them frees 0 bytes).
BEGIN;
SELECT plan(40);

SELECT tenant_backup.tenant_create('gfs');
SELECT tenant_backup.tenant_add_database('gfs', 'postgres', 'tenant_db_a');
SELECT tenant_backup.tenant_add_database('gfs', 'postgres', 'tenant_db_b');

-- Backups of tenant_db_a: n => started (UTC); 0 and 10 failed. Of tenant_db_b: one, old.
CREATE TEMP TABLE history (n int, started timestamptz, status text, source text);
INSERT INTO history VALUES
	(0, '2026-01-05 03:00+00', 'failed', 'tenant_db_a'),
	(1, '2026-01-10 03:00+00', 'complete', 'tenant_db_a'),
	(2, '2026-01-20 03:00+00', 'complete', 'tenant_db_a'),
	(3, '2026-01-31 22:00+00', 'complete', 'tenant_db_a'),
	(4, '2026-02-02 03:00+00', 'complete', 'tenant_db_a'),
	(5, '2026-02-09 03:00+00', 'complete', 'tenant_db_a'),
	(6, '2026-02-10 03:00+00', 'complete', 'tenant_db_a'),
	(10, '2026-02-10 10:00+00', 'failed', 'tenant_db_a'),
	(7, '2026-02-10 15:00+00', 'complete', 'tenant_db_a'),
	(8, '2026-02-11 03:00+00', 'complete', 'tenant_db_a'),
	(9, '2026-02-11 15:00+00', 'complete', 'tenant_db_a'),
	(20, '2025-06-01 03:00+00', 'complete', 'tenant_db_b');
CREATE TEMP TABLE synthetic AS
WITH ins AS (
	INSERT INTO tenant_backup.backups (tenant, engine, source_id, status, started, finished, object_key, sha256, key_id,
									   error)
	SELECT 'gfs', 'postgres', s.id, h.status, h.started, h.started + interval '10 minutes',
		   CASE WHEN h.status = 'complete' THEN format('gfs/postgres/synthetic-%s.tbk', h.n) END,
		   CASE WHEN h.status = 'complete' THEN repeat('0', 64) END,
		   (SELECT key_id FROM tenant_backup.key_store WHERE tenant = 'gfs'),
		   CASE WHEN h.status = 'failed' THEN 'synthetic failure' END
	FROM history h JOIN tenant_backup.sources s ON s.tenant = 'gfs' AND s.locator = h.source
	ORDER BY h.started
	RETURNING id, started)
SELECT h.n, ins.id FROM ins JOIN history h USING (started);

CREATE FUNCTION pg_temp.ns(ids bigint[]) RETURNS int[] LANGUAGE sql AS
	$$SELECT array_agg(n ORDER BY n) FROM synthetic WHERE id = ANY (ids)$$;

-- ------------------------------------------------------------ policies

SELECT is((SELECT origin FROM tenant_backup._retention_policy('gfs')), 'built-in',
	'a tenant without a policy gets the built-in default');
SELECT is(tenant_backup.tenant_set_retention(NULL, keep_last => 3, keep_daily => 0, keep_weekly => 0,
											 keep_monthly => 0),
	'{"keep_last": 3, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0, "max_age": null}'::jsonb,
	'tenant_set_retention(NULL, ...) sets the default policy');
SELECT is((SELECT origin FROM tenant_backup._retention_policy('gfs')), 'default',
	'which then applies to tenants without their own');
SELECT is(pg_temp.ns(ARRAY(SELECT backup_id FROM tenant_backup._retention_plan('gfs', '2026-02-12') WHERE keep)),
	ARRAY[7, 8, 9, 10, 20], 'default keep_last 3: the three newest of each database (and the failure of two days ago)');
SELECT is(pg_temp.ns(ARRAY(SELECT backup_id FROM tenant_backup._retention_plan('gfs', '2026-03-12') WHERE keep)),
	ARRAY[7, 8, 9, 20], 'a failure older than the oldest kept backup goes once it is a week old');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_retention('gfs', keep_last => 0)$$, '22023',
	'keep_last must be at least 1', 'keep_last 0 is refused: the newest backup always stays');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_retention('gfs', keep_daily => -1)$$, '22023', NULL,
	'negative counts are refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_retention('nobody', 1)$$, '42704', NULL,
	'an unknown tenant is refused');
SELECT is((SELECT retention FROM tenant_backup.tenants WHERE name = 'gfs'), NULL,
	'refused calls changed nothing');

SELECT lives_ok($$SELECT tenant_backup.tenant_set_retention('gfs', keep_last => 2, keep_daily => 3, keep_weekly => 2,
															keep_monthly => 2)$$,
	'tenant_set_retention sets a GFS policy');
SELECT is((SELECT origin FROM tenant_backup._retention_policy('gfs')), 'tenant', 'the tenant''s own policy applies');

-- last 2: 9 8; daily (3 days): 9 7 5; weekly (2 ISO weeks): 9 4; monthly (2): 9 3; db_b's only one: 20.
SELECT is(pg_temp.ns(ARRAY(SELECT backup_id FROM tenant_backup._retention_plan('gfs', '2026-02-12') WHERE keep)),
	ARRAY[3, 4, 5, 7, 8, 9, 10, 20], 'GFS keeps exactly the expected set (and the failure newer than the oldest kept)');
SELECT is((SELECT reasons FROM tenant_backup._retention_plan('gfs', '2026-02-12') p JOIN synthetic s ON s.id = p.backup_id
		   WHERE s.n = 9), ARRAY['last', 'daily', 'weekly', 'monthly'], 'the newest is kept by every rule');
SELECT is((SELECT reasons FROM tenant_backup._retention_plan('gfs', '2026-02-12') p JOIN synthetic s ON s.id = p.backup_id
		   WHERE s.n = 3), ARRAY['monthly'], 'January''s last backup is kept as the monthly one');
SELECT lives_ok($$SELECT tenant_backup.tenant_set_retention('gfs', 2, 3, 2, 2, interval '5 days')$$,
	'max_age added');
SELECT is(pg_temp.ns(ARRAY(SELECT backup_id FROM tenant_backup._retention_plan('gfs', '2026-02-12') WHERE keep)),
	ARRAY[3, 4, 5, 6, 7, 8, 9, 10, 20], 'max_age 5 days keeps the backup younger than that too');
SELECT lives_ok($$SELECT tenant_backup.tenant_set_retention('gfs', 2, 3, 2, 2)$$, 'max_age removed again');

-- ------------------------------------------------------------ dry run, hold, expire

SELECT set_eq($$SELECT backup_id, action FROM tenant_backup.tenant_expire('gfs')$$,
	$$SELECT id, 'would delete' FROM synthetic WHERE n IN (0, 1, 2, 6)$$,
	'tenant_expire dry run (the default) lists what would go');
SELECT is((SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'gfs'), 12::bigint, 'and deletes nothing');

SELECT lives_ok($$SELECT tenant_backup.tenant_hold('gfs', 'case 2026-17')$$, 'tenant_hold places a legal hold');
SELECT throws_ok($$SELECT tenant_backup.tenant_hold('gfs', '')$$, '22023', 'a hold needs a reason',
	'a hold without a reason is refused');
SELECT set_eq($$SELECT backup_id, action FROM tenant_backup.tenant_expire('gfs')$$,
	$$SELECT id, 'held' FROM synthetic WHERE n IN (0, 1, 2, 6)$$, 'under hold the dry run says held');
SELECT throws_ok($$SELECT * FROM tenant_backup.tenant_expire('gfs', dry_run => false)$$, '55000', NULL,
	'under hold tenant_expire refuses to delete');
SELECT is(tenant_backup._retention_run(), 0::bigint, 'the worker''s retention pass deletes nothing of a held tenant');
SELECT throws_ok($$SELECT tenant_backup.tenant_drop('gfs', confirm => 'gfs')$$, '55000', NULL,
	'under hold tenant_drop refuses');
SELECT is((SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'gfs'), 12::bigint, 'all backups are still there');
SELECT lives_ok($$SELECT tenant_backup.tenant_release('gfs')$$, 'tenant_release ends the hold');
SELECT throws_ok($$SELECT tenant_backup.tenant_release('gfs')$$, '55000', NULL, 'releasing twice is refused');

SELECT set_eq($$SELECT backup_id, action FROM tenant_backup.tenant_expire('gfs', dry_run => false)$$,
	$$SELECT id, 'deleted' FROM synthetic WHERE n IN (0, 1, 2, 6)$$, 'tenant_expire(dry_run => false) deletes them');
SELECT is(pg_temp.ns(ARRAY(SELECT id FROM tenant_backup.backups WHERE tenant = 'gfs')), ARRAY[3, 4, 5, 7, 8, 9, 10, 20],
	'exactly the kept set remains');
SELECT set_eq($$SELECT (detail->>'backup_id')::bigint FROM tenant_backup.audit WHERE action = 'backup expired'
				AND tenant = 'gfs'$$,
	$$SELECT id FROM synthetic WHERE n IN (0, 1, 2, 6)$$, 'each deletion has its audit row');
SELECT is_empty($$SELECT * FROM tenant_backup.tenant_expire('gfs')$$, 'nothing more would go');

-- ------------------------------------------------------------ keys

SELECT tenant_backup.tenant_create('rot');
CREATE TEMP TABLE first_key AS SELECT key_id FROM tenant_backup.key_store WHERE tenant = 'rot';
SELECT matches(tenant_backup.tenant_rotate_key('rot'), '^[0-9a-f]{16}$', 'tenant_rotate_key returns the new key id');
SELECT results_eq($$SELECT state, source FROM tenant_backup.keys WHERE tenant = 'rot' ORDER BY state DESC$$,
	$$VALUES ('retired', 'master'), ('active', 'master')$$, 'the keys view: the old key retired, the new one active');
SELECT is_empty($$SELECT 1 FROM information_schema.columns WHERE table_schema = 'tenant_backup'
				  AND table_name = 'keys' AND column_name ~ 'wrap'$$, 'the keys view has no key material');
SELECT ok((SELECT retired IS NOT NULL FROM tenant_backup.keys WHERE key_id = (SELECT key_id FROM first_key)),
	'and says when the old key was retired');
SELECT lives_ok($$SELECT * FROM tenant_backup.tenant_expire('rot', dry_run => false)$$, 'retention on a tenant with no backups');
SELECT results_eq($$SELECT state, wrapped IS NULL FROM tenant_backup.key_store WHERE key_id = (SELECT key_id FROM first_key)$$,
	$$VALUES ('destroyed', true)$$, 'a retired key no backup uses is destroyed, its wrapped form gone');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_key_source('rot', E'a\nb')$$, '22023', NULL,
	'a key command of more than one line is refused');

-- ------------------------------------------------------------ drop

SELECT throws_ok($$SELECT tenant_backup.tenant_drop('gfs', confirm => 'gf')$$, '22023', NULL,
	'tenant_drop needs the name repeated');
SELECT * FROM finish();
ROLLBACK;
