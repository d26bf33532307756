-- pgTAP: jobs.phase as agents report it. agent_phase() records the phase of the job the
-- lease holds (job_log and status show it); with another job's id, a forged or an old
-- lease it returns false and changes nothing; an unknown phase is refused; a failed
-- attempt leaves its last phase; only agent logins may call it. Rolled back.
BEGIN;
SELECT plan(14);

DO $$
BEGIN
	PERFORM tenant_backup.tenant_create('phase-a');
	PERFORM tenant_backup.tenant_add_database('phase-a', 'mysql', 'mysql://app:pw@db.example/phase_a');
	PERFORM tenant_backup.tenant_create('phase-b');
	PERFORM tenant_backup.tenant_add_database('phase-b', 'mysql', 'mysql://app:pw@db.example/phase_b');
	PERFORM tenant_backup.agent_hello('phaser', '{mysql}', 'host-1', '0.2.0');
END
$$;
SELECT tenant_backup.tenant_backup('phase-a');
SELECT tenant_backup.tenant_backup('phase-b');
CREATE TEMP TABLE a AS SELECT * FROM tenant_backup.agent_claim('phaser', 'mysql');
CREATE TEMP TABLE b AS SELECT * FROM tenant_backup.agent_claim('phaser', 'mysql');
SELECT is((SELECT count(*) FROM a) + (SELECT count(*) FROM b), 2::bigint, 'the agent holds two jobs');

SELECT ok(tenant_backup.agent_phase((SELECT job_id FROM a), (SELECT lease FROM a), 'dump'),
	'agent_phase with the job''s lease: true');
SELECT is((SELECT phase FROM tenant_backup.job_log WHERE job_id = (SELECT job_id FROM a)), 'dump',
	'job_log shows the phase');
SELECT is((SELECT running_phase FROM tenant_backup.status WHERE running_job = (SELECT job_id FROM a)), 'dump',
	'status shows it for the running job');

SELECT ok(NOT tenant_backup.agent_phase((SELECT job_id FROM b), (SELECT lease FROM a), 'commit'),
	'another job''s id with this lease: false');
SELECT is((SELECT phase FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM b)), NULL,
	'and that job''s phase is unchanged');
SELECT ok(NOT tenant_backup.agent_phase((SELECT job_id FROM a), 'agent:phaser:forged', 'commit'),
	'a forged lease: false');
SELECT is((SELECT phase FROM tenant_backup.jobs WHERE id = (SELECT job_id FROM a)), 'dump', 'and nothing changed');
SELECT throws_ok(format('SELECT tenant_backup.agent_phase(%s, %L, %L)', (SELECT job_id FROM a), (SELECT lease FROM a),
	'pwned <script>'), '23514', NULL, 'a phase jobs.phase does not know is refused');

SELECT ok(tenant_backup.agent_report((SELECT job_id FROM a), (SELECT lease FROM a), 'mysqldump failed'),
	'the job fails');
SELECT is((SELECT phase FROM tenant_backup.job_log WHERE job_id = (SELECT job_id FROM a)), 'dump',
	'after its attempt failed the job keeps the phase it reached');
SELECT ok(NOT tenant_backup.agent_phase((SELECT job_id FROM a), (SELECT lease FROM a), 'commit'),
	'the lease of an ended attempt sets no phase');

SELECT ok(NOT has_function_privilege('tenant_backup_operator', 'tenant_backup.agent_phase(bigint, text, text)', 'EXECUTE'),
	'an operator cannot set a phase');
SELECT ok(has_function_privilege('tenant_backup_agent', 'tenant_backup.agent_phase(bigint, text, text)', 'EXECUTE'),
	'an agent login can');

SELECT * FROM finish();
ROLLBACK;
