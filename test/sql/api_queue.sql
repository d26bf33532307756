-- pgTAP: the job queue. A backup request for a database with a queued backup returns
-- that job (a waiting request takes it over); _job_next() serves tenants round-robin,
-- skips a job before its not_before and a database with a running job; a failed
-- attempt is queued again or, the last one, fails saying it gave up. mysql jobs, which
-- the launcher leaves to agents. Rolled back.
BEGIN;
SELECT plan(14);

DO $$
BEGIN
	PERFORM tenant_backup.tenant_create('queue-a');
	PERFORM tenant_backup.tenant_create('queue-b');
	PERFORM tenant_backup.tenant_add_database('queue-a', 'mysql', 'mysql://app@db.example/a1');
	PERFORM tenant_backup.tenant_add_database('queue-a', 'mysql', 'mysql://app@db.example/a2');
	PERFORM tenant_backup.tenant_add_database('queue-b', 'mysql', 'mysql://app@db.example/b1');
END
$$;

CREATE TEMP TABLE first_request AS SELECT tenant_backup.tenant_backup('queue-a', 'mysql') AS id;
CREATE TEMP TABLE again AS SELECT tenant_backup.tenant_backup('queue-a', 'mysql') AS id FROM generate_series(1, 50);
SELECT is((SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'queue-a'), 2::bigint,
	'51 requests of a tenant with two databases queue two jobs');
SELECT set_eq('SELECT DISTINCT id FROM again', 'SELECT id FROM first_request',
	'every later request returns the queued jobs');
SELECT is((SELECT array_agg(j) FROM tenant_backup._enqueue('backup', 'queue-a', 'mysql', NULL, NULL, 'waiter-1') j),
	(SELECT array_agg(id ORDER BY id) FROM first_request), 'a waiting request (wait => true) gets the queued jobs');
SELECT is((SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'queue-a' AND request = 'waiter-1'), 2::bigint,
	'and takes them over, to wait for them');
DO $$ BEGIN PERFORM tenant_backup.tenant_backup('queue-b', 'mysql'); END $$;

-- Round-robin: the tenant whose newest start is oldest goes first.
CREATE TEMP TABLE a_first AS SELECT tenant_backup._job_next('mysql') AS id;
SELECT is((SELECT tenant FROM tenant_backup.jobs WHERE id = (SELECT id FROM a_first)), 'queue-a',
	'with no start yet, the oldest job goes first');
UPDATE tenant_backup.jobs SET state = 'running', started = now(), attempts = 1 WHERE id = (SELECT id FROM a_first);
SELECT is((SELECT tenant FROM tenant_backup.jobs WHERE id = tenant_backup._job_next('mysql')), 'queue-b',
	'then the other tenant, although queue-a has an older queued job');
UPDATE tenant_backup.jobs SET not_before = now() + interval '1 hour' WHERE tenant = 'queue-b';
SELECT is((SELECT tenant FROM tenant_backup.jobs WHERE id = tenant_backup._job_next('mysql')), 'queue-a',
	'a job before its not_before is skipped');
INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, backup_id, max_attempts)
SELECT 'restore', tenant, source_id, engine, NULL, 1 FROM tenant_backup.jobs WHERE id = (SELECT id FROM a_first);
UPDATE tenant_backup.jobs SET not_before = now() + interval '1 hour'
WHERE tenant = 'queue-a' AND state = 'queued' AND kind = 'backup';
SELECT is(tenant_backup._job_next('mysql'), NULL::bigint,
	'a database with a running job gets no second one (its restore waits)');

-- A failed attempt: queued again, or failed saying it gave up.
SELECT is((SELECT row(r.state, r.error)::text FROM tenant_backup.jobs j, tenant_backup._job_retry(j, 'refused') r
		   WHERE j.id = (SELECT id FROM a_first)), '(queued,refused)', 'attempt 1 of 3 that failed is queued again');
SELECT ok((SELECT r.not_before >= now() FROM tenant_backup.jobs j, tenant_backup._job_retry(j, 'refused') r
		   WHERE j.id = (SELECT id FROM a_first)), 'with its next retry in not_before');
UPDATE tenant_backup.jobs SET attempts = 3 WHERE id = (SELECT id FROM a_first);
SELECT is((SELECT row(r.state, r.not_before, r.error)::text FROM tenant_backup.jobs j,
		   tenant_backup._job_retry(j, 'refused') r WHERE j.id = (SELECT id FROM a_first)),
	'(failed,,"gave up after 3 attempts: refused")', 'attempt 3 of 3 fails the job and says it gave up');
SELECT is((SELECT r.error FROM tenant_backup.jobs j, tenant_backup._job_retry(j, 'refused') r
		   WHERE j.kind = 'restore' AND j.tenant = 'queue-a'), 'refused', 'a job of one attempt keeps its error as it is');
SELECT ok(tenant_backup._retry_delay(7) IS NOT NULL AND tenant_backup._retry_delay(7) = tenant_backup._retry_delay(1),
	'the last of tenant_backup.retry_delays repeats for later attempts');

SELECT is_empty($$SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'tenant_backup'::regnamespace
				  AND p.proname IN ('_job_next', '_job_retry', '_job_reclaim', '_retry_delay', '_audit_mac',
									'_audit_head_put', '_audit_head_get', '_audit_head_store')
				  AND has_function_privilege('tenant_backup_operator', p.oid, 'EXECUTE')$$,
	'operators cannot call the queue''s or the audit chain''s internals');

SELECT * FROM finish();
ROLLBACK;
