-- pgTAP: tenant_backup(), tenant_restore() and tenant_backups() as far as they run
-- synchronously: validation (SQLSTATE and message), the jobs that wait => false
-- queues and their audit rows, and the refusal of wait => true inside a transaction
-- block. No job runs: the workers only see committed rows, and this is rolled back.
-- Backup rows are inserted directly to stand for backups that finished.
BEGIN;
SELECT plan(46);

-- The hint of the error sql raises, or NULL if it raises none.
CREATE FUNCTION pg_temp.error_hint(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	hint text;
BEGIN
	EXECUTE sql;
	RETURN NULL;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
	RETURN hint;
END
$$;

DO $$
BEGIN
	PERFORM tenant_backup.tenant_create('jobs-t');
	PERFORM tenant_backup.tenant_add_database('jobs-t', 'postgres', 'tenant_db_a');
	PERFORM tenant_backup.tenant_add_database('jobs-t', 'mysql', 'mysql://app:secret@db.example/jobs');
	PERFORM tenant_backup.tenant_create('empty-t');
	PERFORM tenant_backup.tenant_create('other-t');
	PERFORM tenant_backup.tenant_add_database('other-t', 'postgres', 'tenant_db_b');
END
$$;

-- ------------------------------------------------------------ tenant_backup: validation

SELECT throws_ok($$SELECT tenant_backup.tenant_backup('jobs-t', 'oracle')$$,
	'22023', 'unknown engine "oracle"', 'tenant_backup: unknown engine is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_backup('jobs-t', 'redis')$$,
	'P0002', 'tenant "jobs-t" has no redis database to back up',
	'tenant_backup: an engine the tenant has no database of is refused with no_data_found');
-- Fails today, as does the same case of tenant_restore below: the message has two
-- spaces where an engine would be named.
SELECT throws_ok($$SELECT tenant_backup.tenant_backup('empty-t')$$,
	'P0002', 'tenant "empty-t" has no database to back up',
	'tenant_backup: a tenant with no databases is refused with no_data_found');
SELECT throws_ok($$SELECT tenant_backup.tenant_backup('jobs-t', wait => true)$$,
	'25001', 'wait => true cannot be used inside a transaction block',
	'tenant_backup: wait => true inside a transaction block is refused with active_sql_transaction');
SELECT alike(pg_temp.error_hint($$SELECT tenant_backup.tenant_backup('jobs-t', wait => true)$$),
	'Call it outside BEGIN/COMMIT, or use wait => false%',
	'tenant_backup: the refusal hints at running it outside BEGIN/COMMIT or with wait => false');
SELECT is_empty($$SELECT * FROM tenant_backup.jobs WHERE tenant IN ('jobs-t', 'empty-t')$$,
	'refused backups queued no job');
SELECT is_empty($$SELECT * FROM tenant_backup.audit WHERE tenant IN ('jobs-t', 'empty-t') AND action = 'backup requested'$$,
	'refused backups were not audited');

-- ------------------------------------------------------------ tenant_backup: queued jobs

CREATE TEMP TABLE all_engines AS SELECT * FROM tenant_backup.tenant_backup('jobs-t') AS id;
SELECT is((SELECT count(*) FROM all_engines), 2::bigint,
	'tenant_backup returns one job id per source');
SELECT set_eq($$SELECT source_id FROM tenant_backup.jobs WHERE id IN (SELECT id FROM all_engines)$$,
	$$SELECT id FROM tenant_backup.sources WHERE tenant = 'jobs-t'$$,
	'the jobs are for the tenant''s sources');
SELECT set_eq($$SELECT j.engine FROM tenant_backup.jobs j JOIN tenant_backup.sources s ON s.id = j.source_id
				WHERE j.id IN (SELECT id FROM all_engines) AND j.engine = s.engine$$,
	ARRAY['postgres', 'mysql'],
	'each job carries its source''s engine');
SELECT is_empty($$SELECT * FROM tenant_backup.jobs WHERE id IN (SELECT id FROM all_engines)
				  AND NOT (kind = 'backup' AND state = 'queued' AND tenant = 'jobs-t' AND attempts = 0
						   AND backup_id IS NULL AND restore_target IS NULL AND request IS NULL
						   AND lease_owner IS NULL AND started IS NULL AND finished IS NULL)$$,
	'the jobs are queued backups, not yet attempted or leased');
SELECT is((SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'jobs-t'), 2::bigint,
	'no other job was queued');

CREATE TEMP TABLE one_engine AS SELECT * FROM tenant_backup.tenant_backup('jobs-t', 'mysql') AS id;
SELECT is((SELECT count(*) FROM one_engine), 1::bigint,
	'tenant_backup with engine => mysql returns one job id');
SELECT is((SELECT j.engine || ' ' || s.locator FROM tenant_backup.jobs j JOIN tenant_backup.sources s ON s.id = j.source_id
		   WHERE j.id = (SELECT id FROM one_engine)),
	'mysql mysql://app@db.example/jobs',
	'that job is for the mysql source');
SELECT results_eq($$SELECT detail FROM tenant_backup.audit WHERE tenant = 'jobs-t' AND action = 'backup requested' ORDER BY id$$,
	$$VALUES ('{"engine": null, "target": null, "backup_id": null}'::jsonb),
			 ('{"engine": "mysql", "target": null, "backup_id": null}')$$,
	'each queued backup request writes one audit row naming the engine');
SELECT is_empty($$SELECT * FROM tenant_backup.jobs WHERE tenant = 'other-t'$$,
	'another tenant''s sources were not queued');

-- ------------------------------------------------------------ tenant_restore: validation

SELECT throws_ok($$SELECT tenant_backup.tenant_restore('jobs-t', 'oracle', wait => false)$$,
	'22023', 'unknown engine "oracle"', 'tenant_restore: unknown engine is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('jobs-t', wait => false)$$,
	'P0002', 'tenant "jobs-t" has no complete backup to restore',
	'tenant_restore: a tenant with no complete backup is refused with no_data_found');
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('jobs-t', 'postgres', wait => false)$$,
	'P0002', 'tenant "jobs-t" has no complete postgres backup to restore',
	'tenant_restore: no complete backup of that engine is refused with no_data_found');
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('jobs-t')$$,
	'25001', 'wait => true cannot be used inside a transaction block',
	'tenant_restore: wait => true (the default) inside a transaction block is refused');
SELECT alike(pg_temp.error_hint($$SELECT tenant_backup.tenant_restore('jobs-t')$$),
	'Call it outside BEGIN/COMMIT, or use wait => false%',
	'tenant_restore: the refusal has the same hint');
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('jobs-t', target => '', wait => false)$$,
	'22023', 'invalid target database name ""', 'tenant_restore: empty target is refused');
SELECT throws_ok(format('SELECT tenant_backup.tenant_restore(%L, target => %L, wait => false)', 'jobs-t', repeat('x', 64)),
	'22023', format('invalid target database name "%s"', repeat('x', 64)),
	'tenant_restore: target of 64 characters is refused');
SELECT throws_ok(format('SELECT tenant_backup.tenant_restore(%L, target => %L, wait => false)', 'jobs-t', repeat('x', 63)),
	'P0002', NULL,
	'tenant_restore: target of 63 characters passes the name check');
SELECT throws_ok(format('SELECT tenant_backup.tenant_restore(%L, target => %L, wait => true)', 'jobs-t', repeat('x', 64)),
	'22023', format('invalid target database name "%s"', repeat('x', 64)),
	'tenant_restore: the target is checked before wait => true is refused');
-- Fails today: the length is checked in characters, not bytes.
SELECT throws_ok(format('SELECT tenant_backup.tenant_restore(%L, target => %L, wait => false)', 'jobs-t', repeat('é', 32)),
	'22023', format('invalid target database name "%s"', repeat('é', 32)),
	'tenant_restore: target of 32 two-byte characters (64 bytes, over NAMEDATALEN) is refused');

-- ------------------------------------------------------------ tenant_restore: queued jobs

INSERT INTO tenant_backup.backups (id, tenant, engine, source_id, status, started, finished, sha256, object_key, error)
SELECT v.id, v.tenant, 'postgres', s.id, v.status, now() - v.age, now() - v.age + interval '1 minute',
	   CASE WHEN v.status = 'complete' THEN repeat('0', 64) END,
	   CASE WHEN v.status = 'complete' THEN v.tenant || '/postgres/' || v.id || '.tbk' END,
	   CASE WHEN v.status = 'failed' THEN 'pg_dump exited with status 1' END
FROM (VALUES (-1, 'jobs-t', 'complete', interval '3 hours'),
			 (-2, 'jobs-t', 'complete', interval '2 hours'),
			 (-3, 'jobs-t', 'failed', interval '1 hour'),
			 (-4, 'other-t', 'complete', interval '1 hour')) AS v(id, tenant, status, age)
JOIN tenant_backup.sources s ON s.tenant = v.tenant AND s.engine = 'postgres';

SELECT results_eq($$SELECT id, status FROM tenant_backup.tenant_backups('jobs-t')$$,
	$$VALUES (-3::bigint, 'failed'), (-2, 'complete'), (-1, 'complete')$$,
	'tenant_backups lists the tenant''s backups only, newest first');
SELECT is((SELECT error FROM tenant_backup.tenant_backups('jobs-t') WHERE id = -3), 'pg_dump exited with status 1',
	'tenant_backups shows why a backup failed');
SELECT is_empty($$SELECT * FROM tenant_backup.tenant_backups('empty-t')$$,
	'tenant_backups of a tenant without backups is empty');

SELECT throws_ok($$SELECT tenant_backup.tenant_restore('jobs-t', backup_id => -3, wait => false)$$,
	'55000', 'backup -3 of tenant "jobs-t" is failed, not complete',
	'tenant_restore: a failed backup is refused with object_not_in_prerequisite_state');
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('jobs-t', backup_id => -4, wait => false)$$,
	'42704', 'backup -4 of tenant "jobs-t" does not exist',
	'tenant_restore: another tenant''s backup is refused with undefined_object');
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('jobs-t', backup_id => 424242, wait => false)$$,
	'42704', 'backup 424242 of tenant "jobs-t" does not exist',
	'tenant_restore: an unknown backup id is refused with undefined_object');
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('jobs-t', 'mysql', wait => false)$$,
	'P0002', 'tenant "jobs-t" has no complete mysql backup to restore',
	'tenant_restore: complete backups of another engine do not count');

CREATE TEMP TABLE latest AS SELECT * FROM tenant_backup.tenant_restore('jobs-t', wait => false) AS id;
SELECT is((SELECT count(*) FROM latest), 1::bigint,
	'tenant_restore with wait => false returns one job id');
SELECT is((SELECT backup_id FROM tenant_backup.jobs WHERE id = (SELECT id FROM latest)), -2::bigint,
	'by default it restores the latest complete backup');
SELECT ok((SELECT kind = 'restore' AND state = 'queued' AND engine = 'postgres' AND restore_target IS NULL
				  AND max_attempts = 1 AND attempts = 0 AND request IS NULL
				  AND source_id = (SELECT source_id FROM tenant_backup.backups WHERE id = -2)
		   FROM tenant_backup.jobs WHERE id = (SELECT id FROM latest)),
	'the job is a queued in-place restore of that backup''s source, attempted at most once');

CREATE TEMP TABLE chosen AS
SELECT * FROM tenant_backup.tenant_restore('jobs-t', backup_id => -1, target => 'jobs_copy', wait => false) AS id;
SELECT is((SELECT backup_id FROM tenant_backup.jobs WHERE id = (SELECT id FROM chosen)), -1::bigint,
	'backup_id chooses the backup to restore');
SELECT is((SELECT restore_target FROM tenant_backup.jobs WHERE id = (SELECT id FROM chosen)), 'jobs_copy',
	'target is stored with the job');
SELECT results_eq($$SELECT detail FROM tenant_backup.audit WHERE tenant = 'jobs-t' AND action = 'restore requested' ORDER BY id$$,
	$$VALUES ('{"engine": null, "target": null, "backup_id": -2}'::jsonb),
			 ('{"engine": null, "target": "jobs_copy", "backup_id": -1}')$$,
	'each queued restore request writes one audit row naming the backup and target');

DELETE FROM tenant_backup.sources WHERE tenant = 'other-t';
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('other-t', backup_id => -4, wait => false)$$,
	'55000', 'backup -4 of tenant "other-t" belongs to a database that was removed',
	'tenant_restore: a backup whose database was removed is refused');

-- ------------------------------------------------------------ status view with jobs and backups

SELECT is((SELECT last_success FROM tenant_backup.status WHERE tenant = 'jobs-t' AND engine = 'postgres'),
	now() - interval '2 hours' + interval '1 minute',
	'status shows the last successful backup of a source');
SELECT is((SELECT last_error FROM tenant_backup.status WHERE tenant = 'jobs-t' AND engine = 'postgres'), NULL,
	'status shows no error while no job failed');
UPDATE tenant_backup.jobs SET state = 'failed', error = 'pg_dump exited with status 1', finished = now()
WHERE id IN (SELECT id FROM all_engines) AND engine = 'postgres';
UPDATE tenant_backup.jobs SET state = 'running', bytes_done = 4096, started = now()
WHERE id IN (SELECT id FROM all_engines) AND engine = 'mysql';
SELECT is((SELECT last_error FROM tenant_backup.status WHERE tenant = 'jobs-t' AND engine = 'postgres'),
	'pg_dump exited with status 1',
	'status shows a job that failed after the last success');
SELECT is((SELECT running_job FROM tenant_backup.status WHERE tenant = 'jobs-t' AND engine = 'mysql'),
	(SELECT id FROM tenant_backup.jobs WHERE id IN (SELECT id FROM all_engines) AND engine = 'mysql'),
	'status shows the running job of a source');
SELECT is((SELECT running_kind || ' ' || running_bytes FROM tenant_backup.status WHERE tenant = 'jobs-t' AND engine = 'mysql'),
	'backup 4096',
	'status shows the running job''s kind and bytes done');
SELECT is((SELECT count(*) FROM tenant_backup.status WHERE tenant = 'jobs-t'), 2::bigint,
	'status still has one row per source');

SELECT * FROM finish();
ROLLBACK;
