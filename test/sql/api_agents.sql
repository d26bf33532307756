-- pgTAP: the agents' side of the queue. agent_hello/claim/renew/report/release: a
-- claim takes the oldest queued job of its engine under a lease token of its own;
-- a lost lease makes renew and report return false and record nothing; success
-- completes the backup, failure queues the job again until max_attempts; release
-- gives a job back untried; the agents view; who may call what. Rolled back.
BEGIN;
SELECT plan(53);

DO $$
BEGIN
	PERFORM tenant_backup.tenant_create('agent-t');
	PERFORM tenant_backup.tenant_add_database('agent-t', 'mysql', 'mysql://app:pw@db.example/agent');
	PERFORM tenant_backup.tenant_add_database('agent-t', 'redis', 'redis://cache.example/3');
END
$$;

-- ------------------------------------------------------------ validation

SELECT throws_ok($$SELECT * FROM tenant_backup.agent_claim('a1', 'postgres')$$,
	'22023', 'agents take mysql, mongodb or redis jobs, not "postgres"', 'agents cannot claim postgres jobs');
SELECT throws_ok($$SELECT * FROM tenant_backup.agent_claim('bad name', 'mysql')$$,
	'22023', 'invalid agent name "bad name"', 'agent names are checked');
SELECT throws_ok($$SELECT * FROM tenant_backup.agent_claim('a1', 'mysql', 1)$$,
	'22023', 'lease_seconds must be 5 to 86400', 'lease length is checked');
SELECT lives_ok($$SELECT tenant_backup.agent_hello('a1', '{mysql}', 'host-1', '0.1.0')$$, 'agent_hello registers');
SELECT is((SELECT host || ',' || array_to_string(engines, '+') FROM tenant_backup.agents WHERE name = 'a1'),
	'host-1,mysql', 'the agents view lists it');

-- ------------------------------------------------------------ claiming

SELECT is((SELECT count(*) FROM tenant_backup.agent_claim('a1', 'mysql')), 0::bigint,
	'nothing queued: a claim returns no row');
SELECT tenant_backup.tenant_backup('agent-t');
CREATE TEMP TABLE c1 AS SELECT * FROM tenant_backup.agent_claim('a1', 'mysql');
SELECT is((SELECT count(*) FROM c1), 1::bigint, 'a claim takes one job');
SELECT is((SELECT kind || ',' || tenant || ',' || locator || ',' || attempt FROM c1),
	'backup,agent-t,mysql://app@db.example/agent,1', 'with its kind, tenant, locator (no password) and attempt');
SELECT alike((SELECT sealed_password FROM c1), 'tbs1:%', 'the password only in sealed form');
SELECT is((SELECT tier FROM c1), 'shared', 'and the tenant''s tier');
SELECT is((SELECT key_doc->>'tenant' FROM c1), 'agent-t', 'and the tenant key only wrapped');
SELECT alike((SELECT lease FROM c1), 'agent:a1:%', 'under a lease token naming the agent');
SELECT is((SELECT state FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM c1)), 'running', 'the job is running');
SELECT is((SELECT status FROM tenant_backup.backups WHERE id = (SELECT backup_id FROM c1)), 'running',
	'a backup row is running for it');
SELECT is((SELECT count(*) FROM tenant_backup.agent_claim('a2', 'mysql')), 0::bigint,
	'another agent does not get the same job');
SELECT is((SELECT running_jobs FROM tenant_backup.agents WHERE name = 'a1'), 1::bigint, 'the view counts it');
SELECT is((SELECT running_on FROM tenant_backup.status WHERE running_job = (SELECT job_id FROM c1)), 'a1',
	'tenant_backup.status names the agent running the job');
SELECT is((SELECT running_bytes FROM tenant_backup.status WHERE running_job = (SELECT job_id FROM c1)), 0::bigint,
	'with its bytes done so far');

-- ------------------------------------------------------------ renew and lost leases

SELECT ok(tenant_backup.agent_renew((SELECT job_id FROM c1), (SELECT lease FROM c1), 12345),
	'renew with the lease: true');
SELECT is((SELECT bytes_done FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM c1)), 12345::bigint,
	'and records the bytes done');
SELECT ok(NOT tenant_backup.agent_renew((SELECT job_id FROM c1), 'agent:a1:forged', 1), 'renew with another token: false');
SELECT ok(NOT tenant_backup.agent_report((SELECT job_id FROM c1), 'agent:a1:forged', NULL,
	'{"object": "x", "bytes_in": 1, "bytes_stored": 1, "sha256": "00", "key_id": "k"}'),
	'report with another token: false');
SELECT is((SELECT status FROM tenant_backup.backups WHERE id = (SELECT backup_id FROM c1)), 'running',
	'and nothing was recorded');
SELECT throws_ok(format('SELECT tenant_backup.agent_report(%s, %L)', (SELECT job_id FROM c1), (SELECT lease FROM c1)),
	'22023', 'a successful backup report needs its result (object, bytes_in, bytes_stored, sha256, key_id)',
	'a successful backup report without its result is refused');

-- ------------------------------------------------------------ success

SELECT ok(tenant_backup.agent_report((SELECT job_id FROM c1), (SELECT lease FROM c1), NULL,
	jsonb_build_object('object', 'agent-t/mysql/2026-11-26T000000Z-abc.tbk', 'bytes_in', 1000, 'bytes_stored', 100,
					   'sha256', repeat('a', 64), 'key_id', (SELECT key_doc->>'key_id' FROM c1))),
	'report success with the lease: true');
SELECT is((SELECT status || ',' || bytes_in || ',' || object_key FROM tenant_backup.backups
		   WHERE id = (SELECT backup_id FROM c1)),
	'complete,1000,agent-t/mysql/2026-11-26T000000Z-abc.tbk', 'the backup is complete with its result');
SELECT is((SELECT state || ',' || backup_id FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM c1)),
	'succeeded,' || (SELECT backup_id FROM c1), 'the job succeeded and points at it');
SELECT ok(NOT tenant_backup.agent_report((SELECT job_id FROM c1), (SELECT lease FROM c1), 'late error'),
	'a second report of a finished attempt: false');
SELECT is((SELECT jobs_done FROM tenant_backup.agents WHERE name = 'a1'), 1::bigint, 'the agent''s count went up');
SELECT ok(tenant_backup.agent_report((SELECT job_id FROM c1), (SELECT lease FROM c1), NULL,
	jsonb_build_object('object', 'agent-t/mysql/2026-11-26T000000Z-abc.tbk', 'bytes_in', 1000, 'bytes_stored', 100,
					   'sha256', repeat('a', 64), 'key_id', (SELECT key_doc->>'key_id' FROM c1))),
	'the same successful report sent again (its answer lost): true, so the agent keeps its object');
SELECT is((SELECT jobs_done FROM tenant_backup.agents WHERE name = 'a1'), 1::bigint, 'and it is not counted twice');
SELECT ok(NOT tenant_backup.agent_report((SELECT job_id FROM c1), (SELECT lease FROM c1), NULL,
	jsonb_build_object('object', 'agent-t/mysql/2026-11-26T000000Z-other.tbk', 'bytes_in', 1, 'bytes_stored', 1,
					   'sha256', repeat('b', 64), 'key_id', 'k')),
	'a success naming another object: false, so that object is deleted');

-- ------------------------------------------------------------ Redis keyspaces and targets

SELECT tenant_backup.tenant_create('redis-a');
SELECT tenant_backup.tenant_create('redis-d', tier => 'dedicated');
SELECT lives_ok($$SELECT tenant_backup.tenant_add_database('redis-a', 'redis', 'redis://cache.example:6379/0',
	'{"key_prefix": "a:"}')$$, 'a Redis tenant by key prefix');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('redis-d', 'redis', 'redis://u:pw@cache.example:6379')$$,
	'42710', 'the Redis keys of tenant "redis-d" would overlap those of tenant "redis-a" on cache.example:6379 (database 0, prefix "a:")',
	'a dedicated tenant on a server that holds another tenant''s keys is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('redis-a', 'redis', 'redis://cache.example:6379/1',
	'{"key_prefix": ""}')$$, '22023', 'key_prefix of tenant "redis-a" must be a non-empty string',
	'an empty key_prefix is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('redis-a', 'redis', 'cache.example:6379/0')$$,
	'22023', 'the locator of tenant "redis-a" is not a redis:// URI', 'a Redis locator must be a redis:// URI');
SELECT lives_ok($$SELECT tenant_backup.tenant_add_database('redis-d', 'redis', 'redis://cache9.example:6379')$$,
	'a dedicated tenant on its own server');
SELECT throws_ok(format('SELECT tenant_backup.tenant_restore(%L, %L, target => %L, wait => false)', 'redis-d', 'redis',
	'/' || repeat('d', 1023)), '22023', NULL, 'a Redis target longer than 1023 bytes is refused');
SELECT throws_ok(format('SELECT tenant_backup.tenant_restore(%L, %L, target => %L, wait => false)', 'redis-d', 'redis',
	'/var/lib/redis-restore/' || repeat('d', 100)), 'P0002', NULL,
	'a Redis target (an RDB directory) may be longer than a database name');

-- ------------------------------------------------------------ failure, retries, release

CREATE TEMP TABLE c2 AS SELECT * FROM tenant_backup.agent_claim('a2', 'redis');
SELECT ok(tenant_backup.agent_report((SELECT job_id FROM c2), (SELECT lease FROM c2), 'redis refused AUTH'),
	'report a failure');
SELECT is((SELECT state || ',' || error FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM c2)),
	'queued,redis refused AUTH', 'the job is queued again with the error');
SELECT is((SELECT status FROM tenant_backup.backups WHERE id = (SELECT backup_id FROM c2)), 'failed',
	'the attempt''s backup is failed');
CREATE TEMP TABLE c3 AS SELECT * FROM tenant_backup.agent_claim('a2', 'redis');
SELECT is((SELECT attempt FROM c3), 2, 'the next claim is attempt 2');
SELECT isnt((SELECT lease FROM c3), (SELECT lease FROM c2), 'under a new lease token');
SELECT ok(NOT tenant_backup.agent_renew((SELECT job_id FROM c2), (SELECT lease FROM c2)),
	'the old attempt''s token no longer renews');
SELECT ok(tenant_backup.agent_release((SELECT job_id FROM c3), (SELECT lease FROM c3)), 'release gives it back');
SELECT is((SELECT state || ',' || attempts FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM c3)), 'queued,1',
	'queued, and the released attempt does not count');
CREATE TEMP TABLE c4 AS SELECT * FROM tenant_backup.agent_claim('a2', 'redis');
SELECT ok(tenant_backup.agent_report((SELECT job_id FROM c4), (SELECT lease FROM c4), 'still refused'), 'attempt 2 fails');
CREATE TEMP TABLE c5 AS SELECT * FROM tenant_backup.agent_claim('a2', 'redis');
SELECT ok(tenant_backup.agent_report((SELECT job_id FROM c5), (SELECT lease FROM c5), 'refused for good'),
	'attempt 3 fails');
SELECT is((SELECT state || ',' || attempts FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM c5)), 'failed,3',
	'after max_attempts the job is failed');

-- ------------------------------------------------------------ who may call what

CREATE ROLE tb_test_agent_role;
GRANT tenant_backup_agent TO tb_test_agent_role;
CREATE ROLE tb_test_operator_role;
GRANT tenant_backup_operator TO tb_test_operator_role;
SET LOCAL ROLE tb_test_agent_role;
SELECT lives_ok($$SELECT tenant_backup.agent_hello('a3', '{redis}')$$, 'an agent role can say hello');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('by-agent')$$, '42501', NULL,
	'an agent role cannot call the operator API');
RESET ROLE;
SET LOCAL ROLE tb_test_operator_role;
SELECT throws_ok($$SELECT * FROM tenant_backup.agent_claim('a3', 'redis')$$, '42501', NULL,
	'an operator role cannot claim jobs');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
