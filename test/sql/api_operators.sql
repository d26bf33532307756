-- pgTAP: what operators see and control. The views tenant_overview, job_log and
-- audit_log (readable by tenant_backup_operator, without secrets), the status view's
-- overdue / errors by kind / progress / queue / missing agents, the agents view's one-day
-- window, tenant_cancel (queued and agent-held jobs), tenant_pause / tenant_resume,
-- tenant_set_schedule(tenant, 'off'), and the first backup of a new database being due
-- soon. Roles are switched with SET ROLE; everything is rolled back.
BEGIN;
SELECT plan(69);

CREATE ROLE tbt_ops;
GRANT tenant_backup_operator TO tbt_ops;
CREATE ROLE tbt_stranger;
GRANT USAGE ON SCHEMA tenant_backup TO tbt_stranger;
CREATE ROLE tbt_agent;
GRANT tenant_backup_agent TO tbt_agent;

DO $$
BEGIN
	PERFORM tenant_backup.tenant_create('ops-t');
	PERFORM tenant_backup.tenant_add_database('ops-t', 'postgres', 'tenant_db_a');
	PERFORM tenant_backup.tenant_add_database('ops-t', 'mysql', 'mysql://app:S3cret-pw@db.example/ops');
END
$$;

-- ------------------------------------------------------------ privileges

SELECT table_privs_are('tenant_backup', v, 'tenant_backup_operator', ARRAY['SELECT'],
	format('tenant_backup_operator may only SELECT %s', v))
FROM unnest(ARRAY['tenant_overview', 'job_log', 'audit_log']) v;
SELECT table_privs_are('tenant_backup', v, 'public', ARRAY[]::text[], format('PUBLIC has no privilege on %s', v))
FROM unnest(ARRAY['tenant_overview', 'job_log', 'audit_log']) v;
SELECT ok((SELECT bool_and(coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
									  WHERE option_name = 'security_barrier'), 'false')::boolean)
		   FROM pg_class c WHERE c.oid IN ('tenant_backup.tenant_overview'::regclass, 'tenant_backup.job_log'::regclass,
										   'tenant_backup.audit_log'::regclass, 'tenant_backup.status'::regclass)),
	'the operators'' views are security barriers');
SELECT hasnt_column('tenant_backup', 'job_log', 'lease_owner', 'job_log shows no lease token column');
SELECT hasnt_column('tenant_backup', 'tenant_overview', 'key_command', 'tenant_overview shows no key command');

SET ROLE tbt_stranger;
SELECT throws_ok(format('SELECT * FROM tenant_backup.%I', v), '42501', format('permission denied for view %s', v),
	format('without tenant_backup_operator: %s is refused', v))
FROM unnest(ARRAY['tenant_overview', 'job_log', 'audit_log']) v;
SELECT throws_ok($$SELECT tenant_backup.tenant_cancel(1)$$, '42501', 'permission denied for function tenant_cancel',
	'without tenant_backup_operator: tenant_cancel is refused');
RESET ROLE;

-- ------------------------------------------------------------ an operator reads

DO $$ BEGIN PERFORM tenant_backup.tenant_backup('ops-t'); END $$;
SET ROLE tbt_ops;
SELECT is((SELECT tier || ' ' || schedule_state || ' ' || key_source || ' ' || retention_origin || ' ' ||
				  jsonb_array_length(databases)
		   FROM tenant_backup.tenant_overview WHERE tenant = 'ops-t'),
	'shared on master built-in 2', 'tenant_overview: tier, schedule state, key source, retention origin, databases');
SELECT is((SELECT retention->>'keep_last' FROM tenant_backup.tenant_overview WHERE tenant = 'ops-t'), '7',
	'tenant_overview shows the retention policy');
SELECT ok((SELECT active_key_id ~ '^[0-9a-f]{16}$' FROM tenant_backup.tenant_overview WHERE tenant = 'ops-t'),
	'tenant_overview names the active key by id');
SELECT is((SELECT count(*) FROM tenant_backup.job_log WHERE tenant = 'ops-t' AND kind = 'backup' AND state = 'queued'),
	2::bigint, 'job_log: an operator sees the queued backups');
SELECT is((SELECT queued_by FROM tenant_backup.job_log WHERE tenant = 'ops-t' LIMIT 1), session_user::text,
	'job_log says who queued a job');
SELECT ok(EXISTS (SELECT 1 FROM tenant_backup.audit_log WHERE tenant = 'ops-t' AND action = 'backup requested'),
	'audit_log: an operator reads the audit trail');
SELECT unalike((SELECT string_agg(o::text, ' ') FROM tenant_backup.tenant_overview o WHERE tenant = 'ops-t'),
	'%S3cret-pw%', 'tenant_overview holds no source password');
SELECT unalike((SELECT string_agg(o::text, ' ') FROM tenant_backup.tenant_overview o WHERE tenant = 'ops-t'),
	'%tbs1:%', 'nor a sealed one');
SELECT throws_ok($$SELECT * FROM tenant_backup.jobs$$, '42501', 'permission denied for table jobs',
	'the jobs table itself stays closed');
RESET ROLE;

-- ------------------------------------------------------------ cancel

CREATE TEMP TABLE ops_jobs AS SELECT job_id, engine FROM tenant_backup.job_log WHERE tenant = 'ops-t';
GRANT SELECT ON ops_jobs TO tbt_ops, tbt_agent;
SET ROLE tbt_ops;
SELECT is((SELECT state || ' ' || cancelled_by FROM tenant_backup.tenant_cancel(
				(SELECT job_id FROM ops_jobs WHERE engine = 'postgres'))),
	'failed ' || session_user, 'an operator cancels a queued job: it ends failed, cancelled by its session user');
SELECT throws_ok(format('SELECT tenant_backup.tenant_cancel(%s)', (SELECT job_id FROM ops_jobs WHERE engine = 'postgres')),
	'55000', format('job %s (backup of tenant "ops-t") already failed', (SELECT job_id FROM ops_jobs WHERE engine = 'postgres')),
	'a finished job cannot be cancelled');
SELECT throws_ok($$SELECT tenant_backup.tenant_cancel(-42)$$, '42704', 'job -42 does not exist',
	'an unknown job is named');
RESET ROLE;
SELECT is((SELECT error FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM ops_jobs WHERE engine = 'postgres')),
	'cancelled by ' || session_user, 'the job''s error says who cancelled it');
SELECT is((SELECT detail->>'was' FROM tenant_backup.audit WHERE action = 'job cancelled'
		   AND (detail->>'job')::bigint = (SELECT job_id FROM ops_jobs WHERE engine = 'postgres')), 'queued',
	'the cancel is audited with what the job was doing');

-- An agent's job: the cancel takes its lease away.
SET ROLE tbt_agent;
SELECT lives_ok($$SELECT tenant_backup.agent_hello('ops-a1', '{mysql}', 'host-1', '0.2.0')$$, 'an agent says hello');
CREATE TEMP TABLE ops_claim AS SELECT job_id, lease, backup_id FROM tenant_backup.agent_claim('ops-a1', 'mysql');
SELECT is((SELECT job_id FROM ops_claim), (SELECT job_id FROM ops_jobs WHERE engine = 'mysql'),
	'the agent claims the mysql job');
RESET ROLE;
GRANT SELECT ON ops_claim TO tbt_ops;
SET ROLE tbt_ops;
SELECT unalike((SELECT string_agg(l::text, ' ') FROM tenant_backup.job_log l), '%' || (SELECT lease FROM ops_claim) || '%',
	'job_log never shows a lease token');
SELECT is((SELECT running_on FROM tenant_backup.job_log WHERE job_id = (SELECT job_id FROM ops_claim)), 'ops-a1',
	'job_log names the agent running the job');
SELECT is((SELECT state FROM tenant_backup.tenant_cancel((SELECT job_id FROM ops_claim))), 'failed',
	'the operator cancels the running job');
RESET ROLE;
SET ROLE tbt_agent;
SELECT ok(NOT tenant_backup.agent_renew((SELECT job_id FROM ops_claim), (SELECT lease FROM ops_claim), 100),
	'the agent''s next renewal answers false: it stops');
SELECT ok(NOT tenant_backup.agent_report((SELECT job_id FROM ops_claim), (SELECT lease FROM ops_claim),
										 'stopped: the lease was lost'),
	'and its report records nothing');
RESET ROLE;
SELECT is((SELECT status || ' ' || error FROM tenant_backup.backups WHERE id = (SELECT backup_id FROM ops_claim)),
	'failed cancelled by ' || session_user, 'the agent''s backup row is failed, never complete');
SELECT is((SELECT state || ' ' || cancelled::text FROM tenant_backup.job_log WHERE job_id = (SELECT job_id FROM ops_claim)),
	'failed true', 'job_log shows the job cancelled');

-- ------------------------------------------------------------ pause, resume, off

SET ROLE tbt_ops;
SELECT is((SELECT schedule_state || ' ' || paused_by FROM tenant_backup.tenant_pause('ops-t')), 'paused ' || session_user,
	'an operator pauses a tenant''s schedule');
RESET ROLE;
SELECT is((SELECT next_due FROM tenant_backup.tenants WHERE name = 'ops-t'), 'infinity'::timestamptz,
	'a paused tenant is never due');
UPDATE tenant_backup.tenants SET next_due = now() WHERE name = 'ops-t';
SELECT is((SELECT next_due FROM tenant_backup.tenants WHERE name = 'ops-t'), 'infinity'::timestamptz,
	'not even when the launcher moves its next_due on');
SELECT throws_ok($$SELECT tenant_backup.tenant_pause('ops-t')$$, '55000', NULL, 'pausing twice is refused');
SELECT is((SELECT schedule_state FROM tenant_backup.status WHERE tenant = 'ops-t' LIMIT 1), 'paused',
	'status shows the schedule paused');
SET ROLE tbt_ops;
SELECT is((SELECT schedule_state FROM tenant_backup.tenant_resume('ops-t')), 'on', 'an operator resumes it');
RESET ROLE;
SELECT ok((SELECT next_due <= now() FROM tenant_backup.tenants WHERE name = 'ops-t'),
	'a resumed tenant that was never backed up is due at once');
SELECT throws_ok($$SELECT tenant_backup.tenant_resume('ops-t')$$, '55000', 'the schedule of tenant "ops-t" is not paused',
	'resuming a running schedule is refused');
SELECT ok(EXISTS (SELECT 1 FROM tenant_backup.audit WHERE tenant = 'ops-t' AND action = 'schedule paused')
		  AND EXISTS (SELECT 1 FROM tenant_backup.audit WHERE tenant = 'ops-t' AND action = 'schedule resumed'),
	'pause and resume are audited');

SET ROLE tbt_ops;
SELECT is((SELECT schedule_off FROM tenant_backup.tenant_set_schedule('ops-t', 'off')), true,
	'tenant_set_schedule(tenant, ''off''): no built-in schedule');
RESET ROLE;
SELECT is((SELECT schedule_state || ' ' || coalesce(next_due::text, 'none') FROM tenant_backup.tenant_overview
		   WHERE tenant = 'ops-t'), 'off none', 'an ''off'' tenant is never due');
SELECT is((SELECT detail->>'every' FROM tenant_backup.audit WHERE tenant = 'ops-t' AND action = 'schedule set'
		   ORDER BY id DESC LIMIT 1), 'off', 'and the audit says so');
SELECT is((SELECT schedule FROM tenant_backup.tenant_set_schedule('ops-t', '6 hours')), interval '6 hours',
	'an interval in text form switches it back on');
SELECT ok((SELECT NOT schedule_off AND next_due <= now() + interval '6 hours' FROM tenant_backup.tenants
		   WHERE name = 'ops-t'), 'due within the new period');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_schedule('ops-t', 'sometimes')$$, '22023',
	'invalid schedule for tenant "ops-t"', 'a schedule that is neither an interval nor off is refused');
SELECT is((SELECT schedule FROM tenant_backup.tenant_set_schedule('ops-t', NULL)), NULL::interval,
	'NULL is the default schedule');

-- ------------------------------------------------------------ the first backup is due soon

DO $$ BEGIN PERFORM tenant_backup.tenant_create('ops-new'); END $$;
UPDATE tenant_backup.tenants SET next_due = now() + interval '1000 years' WHERE name = 'ops-new';
DO $$ BEGIN PERFORM tenant_backup.tenant_add_database('ops-new', 'postgres', 'tenant_db_b'); END $$;
SELECT is((SELECT next_due FROM tenant_backup.tenants WHERE name = 'ops-new'),
	now() + coalesce(nullif(current_setting('tenant_backup.first_backup_delay', true), ''), '5 minutes')::interval,
	'a new database makes its tenant due first_backup_delay after it was added, not at its next regular slot');

-- ------------------------------------------------------------ status, as an operator reads it

-- A fabricated history: ops-t's postgres database backed up three days ago (schedule 1 day),
-- a failed drill since; mysql running with half of last time's bytes; a queued retry.
UPDATE tenant_backup.tenants SET schedule = interval '1 day' WHERE name = 'ops-t';
INSERT INTO tenant_backup.backups (tenant, engine, source_id, status, started, finished, bytes_in, sha256, object_key)
SELECT 'ops-t', s.engine, s.id, 'complete', now() - interval '3 days', now() - interval '3 days', 1000, repeat('0', 64),
	   format('ops-t/%s/old.tbk', s.engine)
FROM tenant_backup.sources s WHERE s.tenant = 'ops-t';
INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, state, error, started, finished, max_attempts)
SELECT 'drill', 'ops-t', s.id, s.engine, 'failed', 'drill: rows differ', now() - interval '1 hour',
	   now() - interval '1 hour', 1
FROM tenant_backup.sources s WHERE s.tenant = 'ops-t' AND s.engine = 'postgres';
INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, state, attempts, started, lease_owner, lease_expires,
								bytes_done)
SELECT 'backup', 'ops-t', s.id, s.engine, 'running', 1, now() - interval '10 seconds', 'agent:ops-a1:x',
	   now() + interval '1 minute', 500
FROM tenant_backup.sources s WHERE s.tenant = 'ops-t' AND s.engine = 'mysql';
INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, state, attempts, error, not_before)
SELECT 'backup', 'ops-t', s.id, s.engine, 'queued', 1, 'pg_dump exited with status 1', now() + interval '10 minutes'
FROM tenant_backup.sources s WHERE s.tenant = 'ops-t' AND s.engine = 'postgres';
SET ROLE tbt_ops;
SELECT is((SELECT overdue FROM tenant_backup.status WHERE tenant = 'ops-t' AND engine = 'postgres'), true,
	'status: a database last backed up three days ago on a daily schedule is overdue');
SELECT is((SELECT overdue FROM tenant_backup.status WHERE tenant = 'ops-new'), false,
	'a database added just now and not backed up yet is not overdue');
SELECT is((SELECT coalesce(last_error, 'none') || ' / ' || last_drill_error FROM tenant_backup.status
		   WHERE tenant = 'ops-t' AND engine = 'postgres'),
	'none / drill: rows differ', 'a failed drill is a drill error, not a backup error');
SELECT is((SELECT retry_error || ' / ' || (next_retry > now()) FROM tenant_backup.status
		   WHERE tenant = 'ops-t' AND engine = 'postgres'),
	'pg_dump exited with status 1 / true', 'a queued retry shows its last error and when it runs next');
SELECT is((SELECT running_on || ' ' || running_bytes || ' of ' || expected_bytes FROM tenant_backup.status
		   WHERE tenant = 'ops-t' AND engine = 'mysql'),
	'ops-a1 500 of 1000', 'a running job: who runs it, bytes done of the previous backup''s bytes');
SELECT ok((SELECT rate_bytes_per_second BETWEEN 40 AND 60 AND eta BETWEEN interval '8 seconds' AND interval '13 seconds'
		   FROM tenant_backup.status WHERE tenant = 'ops-t' AND engine = 'mysql'),
	'with its rate and ETA');
SELECT is((SELECT last_error FROM tenant_backup.status WHERE tenant = 'ops-t' AND engine = 'mysql'), NULL,
	'the cancelled mysql backup is no backup error');
RESET ROLE;
-- The newest complete backup goes (a retention pass, say): the one before it is the last success.
INSERT INTO tenant_backup.backups (tenant, engine, source_id, status, started, finished, bytes_in, sha256, object_key)
SELECT 'ops-t', 'postgres', s.id, 'complete', now() - interval '1 hour', now() - interval '1 hour', 2000, repeat('0', 64),
	   'ops-t/postgres/newer.tbk'
FROM tenant_backup.sources s WHERE s.tenant = 'ops-t' AND s.engine = 'postgres';
SELECT is((SELECT last_success FROM tenant_backup.status WHERE tenant = 'ops-t' AND engine = 'postgres'),
	now() - interval '1 hour', 'a newer complete backup is the last success');
DELETE FROM tenant_backup.backups WHERE object_key = 'ops-t/postgres/newer.tbk';
SELECT is((SELECT last_success FROM tenant_backup.status WHERE tenant = 'ops-t' AND engine = 'postgres'),
	now() - interval '3 days', 'once it is deleted, the one before it is again');
DO $$ BEGIN PERFORM tenant_backup.tenant_backup('ops-new'); END $$;
INSERT INTO tenant_backup.sources (tenant, engine, locator, created)
VALUES ('ops-new', 'mongodb', 'mongodb://docs.example/ops', now() - interval '2 hours');
INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine)
SELECT 'backup', 'ops-new', s.id, 'mongodb' FROM tenant_backup.sources s WHERE s.engine = 'mongodb' AND s.tenant = 'ops-new';
SELECT is((SELECT overdue::text || ' ' || waiting_for_agent FROM tenant_backup.status WHERE tenant = 'ops-new' AND engine = 'mongodb'),
	'true no agent for mongodb has ever been seen',
	'a database never backed up two hours after it was added is overdue, its queued job flagged as waiting for an agent');
INSERT INTO tenant_backup.agent_registry (name, engines, last_seen) VALUES ('ops-m1', '{mongodb}', now() - interval '20 minutes');
SELECT is((SELECT waiting_for_agent FROM tenant_backup.status WHERE tenant = 'ops-new' AND engine = 'mongodb'),
	'no agent for mongodb has been seen for 20 min', 'an agent silent for 20 minutes is named so');
UPDATE tenant_backup.agent_registry SET last_seen = now() WHERE name = 'ops-m1';
SELECT is((SELECT waiting_for_agent FROM tenant_backup.status WHERE tenant = 'ops-new' AND engine = 'mongodb'), NULL,
	'a live agent clears the flag');
SELECT is((SELECT waiting_for_agent FROM tenant_backup.status WHERE tenant = 'ops-new' AND engine = 'postgres'), NULL,
	'postgres jobs need no agent');

-- ------------------------------------------------------------ agents silent for a day

INSERT INTO tenant_backup.agent_registry (name, engines, last_seen) VALUES ('ops-gone', '{redis}', now() - interval '2 days');
SELECT is((SELECT count(*) FROM tenant_backup.agents WHERE name = 'ops-gone'), 0::bigint,
	'an agent silent for two days is not in the agents view');
SELECT is((SELECT count(*) FROM tenant_backup.agent_registry WHERE name = 'ops-gone'), 1::bigint,
	'but stays in agent_registry');
SELECT is((SELECT count(*) FROM tenant_backup.agents WHERE name = 'ops-m1'), 1::bigint, 'a live one is');

SELECT * FROM finish();
ROLLBACK;
