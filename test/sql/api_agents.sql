-- pgTAP: the agents' side of the queue. agent_hello/claim/renew/report/release: a
-- claim takes the oldest queued job of its engine under a lease token of its own;
-- a lost lease makes renew and report return false and record nothing; success
-- completes the backup, failure queues the job again until max_attempts; release
-- gives a job back untried; the agents view; who may call what. Rolled back.
BEGIN;
SELECT plan(67);

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

-- The real backup object test/integration/pgtap.t sealed for agent-t's mysql engine
-- (tenant-backup put) before this file runs: its name, size and key in storage.
CREATE TEMP TABLE obj AS
SELECT 'agent-t/mysql/' || f AS object, (pg_stat_file(d.dir || '/agent-t/mysql/' || f)).size AS bytes,
	   pg_read_file(d.dir || '/agent-t/mysql/' || replace(f, '.tbk', '.json'))::jsonb->>'key_id' AS key_id,
	   pg_read_file(d.dir || '/agent-t/mysql/' || replace(f, '.tbk', '.json'))::jsonb->>'sha256' AS sha256
FROM (SELECT substr(current_setting('tenant_backup.storage'), 8) AS dir) d, pg_ls_dir(d.dir || '/agent-t/mysql') f
WHERE f LIKE '%.tbk';
SELECT is((SELECT count(*) FROM obj), 1::bigint, 'storage holds one real mysql backup object of agent-t');
CREATE FUNCTION pg_temp.report(p_object text, p_bytes bigint, p_key_id text,
								p_sha256 text DEFAULT NULL) RETURNS boolean LANGUAGE sql AS $$
	SELECT tenant_backup.agent_report((SELECT job_id FROM c1), (SELECT lease FROM c1), NULL,
		jsonb_build_object('object', p_object, 'bytes_in', 1000, 'bytes_stored', p_bytes,
						   'sha256', coalesce(p_sha256, (SELECT sha256 FROM obj)),
						   'key_id', p_key_id))
$$;

SELECT throws_ok($$SELECT pg_temp.report('globex/mysql/2026-11-26T000000Z-abc.tbk', 100, repeat('0', 16))$$, '22023',
	'the reported mysql backup of tenant "agent-t" is refused: its object is not a backup object under "agent-t/mysql/"',
	'a report naming another tenant''s object is refused');
SELECT throws_ok($$SELECT pg_temp.report('agent-t/mysql/../../globex/mysql/2026-11-26T000000Z-abc.tbk', 100, repeat('0', 16))$$,
	'22023', NULL, 'a report naming an object out of the job''s prefix with .. is refused');
SELECT throws_ok($$SELECT pg_temp.report('agent-t/mysql/keys/x.tbk', 100, repeat('0', 16))$$,
	'22023', NULL, 'a report naming something that is not a backup object name is refused');
SELECT throws_ok($$SELECT pg_temp.report('agent-t/mysql/2026-11-26T000000Z-abc.tbk', 100, (SELECT key_id FROM obj))$$,
	'22023', 'the reported mysql backup of tenant "agent-t" is refused: the object does not exist in storage',
	'a report naming an object that storage does not hold is refused');
SELECT throws_ok($$SELECT pg_temp.report((SELECT object FROM obj), (SELECT bytes + 1 FROM obj), (SELECT key_id FROM obj))$$,
	'22023', format('the reported mysql backup of tenant "agent-t" is refused: storage holds %s bytes, not the %s reported',
					(SELECT bytes FROM obj), (SELECT bytes + 1 FROM obj)),
	'a report with the wrong size is refused');
SELECT throws_ok($$SELECT pg_temp.report((SELECT object FROM obj), (SELECT bytes FROM obj), repeat('0', 16))$$,
	'22023', 'the reported mysql backup of tenant "agent-t" is refused: its manifest describes another object, size or key',
	'a report with another key id is refused');
SELECT throws_ok($$SELECT pg_temp.report((SELECT object FROM obj), (SELECT bytes FROM obj), (SELECT key_id FROM obj),
										 repeat('a', 64))$$,
	'22023', 'the reported mysql backup of tenant "agent-t" is refused: its manifest names another SHA-256 than the one reported',
	'a report with another SHA-256 is refused');
SELECT is((SELECT j.state || ',' || b.status FROM tenant_backup.jobs j JOIN tenant_backup.backups b ON b.job_id = j.id
		   WHERE j.id = (SELECT job_id FROM c1)), 'running,running',
	'after the refused reports the job and its backup are still running, nothing recorded');

SELECT ok(pg_temp.report((SELECT object FROM obj), (SELECT bytes FROM obj), (SELECT key_id FROM obj)),
	'report success with the lease and the object storage holds: true');
SELECT is((SELECT status || ',' || bytes_in || ',' || object_key FROM tenant_backup.backups
		   WHERE id = (SELECT backup_id FROM c1)),
	'complete,1000,' || (SELECT object FROM obj), 'the backup is complete with its result');
SELECT is((SELECT state || ',' || backup_id FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM c1)),
	'succeeded,' || (SELECT backup_id FROM c1), 'the job succeeded and points at it');
SELECT ok(NOT tenant_backup.agent_report((SELECT job_id FROM c1), (SELECT lease FROM c1), 'late error'),
	'a second report of a finished attempt: false');
SELECT is((SELECT jobs_done FROM tenant_backup.agents WHERE name = 'a1'), 1::bigint, 'the agent''s count went up');
SELECT ok(pg_temp.report((SELECT object FROM obj), (SELECT bytes FROM obj), (SELECT key_id FROM obj)),
	'the same successful report sent again (its answer lost): true, so the agent keeps its object');
SELECT is((SELECT jobs_done FROM tenant_backup.agents WHERE name = 'a1'), 1::bigint, 'and it is not counted twice');
SELECT ok(NOT pg_temp.report('agent-t/mysql/2026-11-26T000000Z-other.tbk', 1, repeat('0', 16)),
	'a success naming another object: false, so that object is deleted');

-- The same object reported by the next backup's agent: one object is one backup.
SELECT tenant_backup.tenant_backup('agent-t', 'mysql');
CREATE TEMP TABLE c6 AS SELECT * FROM tenant_backup.agent_claim('a1', 'mysql');
SELECT throws_ok(format('SELECT tenant_backup.agent_report(%s, %L, NULL, %L)', (SELECT job_id FROM c6), (SELECT lease FROM c6),
	jsonb_build_object('object', (SELECT object FROM obj), 'bytes_in', 1, 'bytes_stored', (SELECT bytes FROM obj),
					   'key_id', (SELECT key_id FROM obj))),
	'22023', 'the reported mysql backup of tenant "agent-t" is refused: its object is already another backup',
	'an object that is already a backup is refused for another job');
-- A PostgreSQL worker's lease, even if known, is not an agent's to report with.
UPDATE tenant_backup.jobs SET lease_owner = 'pg:1700000000:4242' WHERE id = (SELECT job_id FROM c6);
SELECT ok(NOT tenant_backup.agent_report((SELECT job_id FROM c6), 'pg:1700000000:4242', 'forged failure'),
	'agent_report with a worker''s (pg:) lease records nothing');
UPDATE tenant_backup.jobs SET lease_owner = (SELECT lease FROM c6) WHERE id = (SELECT job_id FROM c6);
-- An agent that did not register for the job's engine.
UPDATE tenant_backup.agent_registry SET engines = '{redis}' WHERE name = 'a1';
SELECT throws_ok(format('SELECT tenant_backup.agent_report(%s, %L, %L)', (SELECT job_id FROM c6), (SELECT lease FROM c6), 'x'),
	'42501', 'agent "a1" did not register for mysql jobs', 'an agent not registered for the job''s engine cannot report');
UPDATE tenant_backup.agent_registry SET engines = '{mysql}' WHERE name = 'a1';
SELECT ok(tenant_backup.agent_release((SELECT job_id FROM c6), (SELECT lease FROM c6)), 'the second job is given back');
SELECT ok((SELECT lease FROM c6) ~ '^agent:a1:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$',
	'an agent''s lease token is agent:<name>:<random UUID>');

-- ------------------------------------------------------------ Redis keyspaces and targets

SELECT tenant_backup.tenant_create('redis-a');
SELECT tenant_backup.tenant_create('redis-d', tier => 'dedicated');
SELECT lives_ok($$SELECT tenant_backup.tenant_add_database('redis-a', 'redis', 'redis://cache.example:6379/0',
	'{"key_prefix": "a:"}')$$, 'a Redis tenant by key prefix');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('redis-d', 'redis', 'redis://u:pw@cache.example:6379')$$,
	'42710', NULL,
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

SELECT tenant_backup.agent_hello('a2', '{redis}');
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
