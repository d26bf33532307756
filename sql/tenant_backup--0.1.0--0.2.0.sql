-- tenant_backup 0.1.0 -> 0.2.0: hardening against hostile tenants, operators, agents
-- and storage. CREATE EXTENSION installs 0.1.0 and runs this script, so every test
-- runs it; test/integration/pg_upgrade.t updates an installed 0.1.0 with data.

\echo Use "ALTER EXTENSION tenant_backup UPDATE" to load this file. \quit

-- ---------------------------------------------------------------- catalog checks: database identity

-- One database (by what the server says it is, not by how it is reached) belongs to at
-- most one tenant; a dedicated tenant's server holds no other tenant.
ALTER TABLE tenant_backup.sources ADD COLUMN identity text;
COMMENT ON COLUMN tenant_backup.sources.identity IS
	'What the database is, judged by its server: postgres <system identifier>/<database oid>, mysql <server uuid or id+host:port>/<schema>, mongodb <replica set or host>/<db>, redis <run_id>/<db>. NULL until first computed.';

-- Records a source's identity after the checks; for the API's own callers (not granted).
CREATE FUNCTION tenant_backup._source_identity_record(p_source bigint, p_identity text)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s tenant_backup.sources;
	mine tenant_backup.tenants;
	other record;
BEGIN
	IF p_identity IS NULL OR p_identity !~ '^[^/\s]+/\S*$' OR length(p_identity) > 512 THEN
		RAISE EXCEPTION 'invalid database identity for source %', p_source
			USING ERRCODE = 'invalid_parameter_value', HINT = 'An identity is <server identity>/<database>.';
	END IF;
	-- Claims are serialised: two tenants adding the same database at once cannot both win.
	LOCK TABLE tenant_backup.sources IN SHARE ROW EXCLUSIVE MODE;
	SELECT * INTO s FROM tenant_backup.sources WHERE id = p_source;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'source % does not exist', p_source USING ERRCODE = 'undefined_object';
	END IF;
	SELECT * INTO mine FROM tenant_backup.tenants WHERE name = s.tenant;
	IF s.engine <> 'redis' THEN
		SELECT o.tenant INTO other FROM tenant_backup.sources o
		WHERE o.engine = s.engine AND o.id <> s.id AND o.identity = p_identity
		LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'the % database "%" of tenant "%" is already a database of tenant "%"', s.engine,
				s.locator, s.tenant, other.tenant
				USING ERRCODE = 'duplicate_object', DETAIL = format('Both reach the database %s.', p_identity),
					  HINT = 'One database belongs to one tenant: remove it from the other tenant first, or give this tenant its own database.';
		END IF;
		-- A dedicated tenant's server (the part before '/') is its own.
		SELECT o.tenant, t.tier INTO other
		FROM tenant_backup.sources o JOIN tenant_backup.tenants t ON t.name = o.tenant
		WHERE o.engine = s.engine AND o.tenant <> s.tenant
		  AND split_part(o.identity, '/', 1) = split_part(p_identity, '/', 1)
		  AND (mine.tier = 'dedicated' OR t.tier = 'dedicated')
		LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'the % server of database "%" of tenant "%" also holds a database of tenant "%", and tenant "%" is dedicated',
				s.engine, s.locator, s.tenant, other.tenant,
				CASE WHEN mine.tier = 'dedicated' THEN s.tenant ELSE other.tenant END
				USING ERRCODE = 'duplicate_object', DETAIL = format('Server %s.', split_part(p_identity, '/', 1)),
					  HINT = 'A dedicated tenant''s server holds no other tenant''s database: give it a server of its own.';
		END IF;
	END IF;
	UPDATE tenant_backup.sources SET identity = p_identity WHERE id = p_source;
END
$$;
COMMENT ON FUNCTION tenant_backup._source_identity_record(bigint, text) IS
	'Records what a source''s database is; refuses (42710) a database another source of the engine already is, and a server shared with another tenant when either is dedicated (not for redis: key prefixes decide there).';

CREATE FUNCTION tenant_backup._source_identity_claim(p_source bigint, p_identity text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- An agent speaks only for the database of a job it is running.
	IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
	   AND NOT EXISTS (SELECT 1 FROM tenant_backup.jobs j WHERE j.source_id = p_source AND j.state = 'running'
					   AND j.lease_owner LIKE 'agent:%') THEN
		RAISE EXCEPTION 'source % has no job running on an agent', p_source
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'An agent records a database''s identity while it holds a job of that database.';
	END IF;
	PERFORM tenant_backup._source_identity_record(p_source, p_identity);
END
$$;
COMMENT ON FUNCTION tenant_backup._source_identity_claim(bigint, text) IS
	'Records what a source''s database is (<server>/<database>, as its server says) for the agent running one of its jobs. Refuses (42710) when another source of the engine already is that database, or the server is shared with another tenant and either is dedicated; redis overlap is judged on key prefixes instead.';
REVOKE ALL ON FUNCTION tenant_backup._source_identity_record(bigint, text),
	tenant_backup._source_identity_claim(bigint, text) FROM PUBLIC;

-- ---- agents report only what storage holds, under unguessable leases

CREATE FUNCTION tenant_backup._backup_object_check(p_tenant text, p_engine text, p_object text, p_bytes_stored bigint,
												   p_key_id text, p_key_command text)
RETURNS void LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_backup_object_check';
COMMENT ON FUNCTION tenant_backup._backup_object_check(text, text, text, bigint, text, text) IS
	'Raises unless storage holds p_object and its manifest with p_bytes_stored bytes and key p_key_id, and the object''s header, authenticated with the tenant''s key (p_key_command: the tenant''s own key command), names p_tenant, p_engine and the backup id of its name.';

-- The result of a successful agent backup, checked before anything is recorded: a
-- backup object name under the job's own <tenant>/<engine>/, not already a backup of
-- the catalog, and what storage holds under that name.
CREATE FUNCTION tenant_backup._agent_result_check(p_job tenant_backup.jobs, p_result jsonb)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	prefix text := p_job.tenant || '/' || p_job.engine || '/';
	obj text := p_result->>'object';
BEGIN
	IF jsonb_typeof(p_result) <> 'object' OR obj IS NULL OR NOT starts_with(obj, prefix)
	   OR substr(obj, length(prefix) + 1) !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{6}Z-[a-z0-9_-]{1,64}\.tbk$' THEN
		RAISE EXCEPTION 'the reported % backup of tenant "%" is refused: its object is not a backup object under "%"',
			p_job.engine, p_job.tenant, prefix
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Report the object this job stored; nothing was recorded.';
	END IF;
	IF coalesce(p_result->>'bytes_stored', '') !~ '^[0-9]{1,18}$' OR coalesce(p_result->>'key_id', '') !~ '^[0-9a-f]{16}$' THEN
		RAISE EXCEPTION 'the reported % backup of tenant "%" is refused: bytes_stored and key_id are required',
			p_job.engine, p_job.tenant
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Report the object this job stored; nothing was recorded.';
	END IF;
	IF EXISTS (SELECT 1 FROM tenant_backup.backups b WHERE b.object_key = obj) THEN
		RAISE EXCEPTION 'the reported % backup of tenant "%" is refused: its object is already another backup',
			p_job.engine, p_job.tenant
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Report the object this job stored; nothing was recorded.';
	END IF;
	PERFORM tenant_backup._backup_object_check(p_job.tenant, p_job.engine, obj, (p_result->>'bytes_stored')::bigint,
											   p_result->>'key_id',
											   (SELECT t.key_command FROM tenant_backup.tenants t WHERE t.name = p_job.tenant));
END
$$;

CREATE OR REPLACE FUNCTION tenant_backup.agent_report(job_id bigint, lease text, error text DEFAULT NULL,
													   result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs;
	agent text := split_part(lease, ':', 2);
BEGIN
	SELECT * INTO j FROM tenant_backup.jobs x WHERE x.id = agent_report.job_id AND x.lease_owner = agent_report.lease
		AND x.state = 'running' AND agent_report.lease LIKE 'agent:%';
	IF NOT FOUND THEN
		-- A report sent again after its answer was lost (the connection dropped): the job
		-- already names this very object as complete, so it was this report that landed.
		RETURN error IS NULL AND result ? 'object' AND
			   EXISTS (SELECT 1 FROM tenant_backup.backups b WHERE b.job_id = agent_report.job_id
					   AND b.status = 'complete' AND b.object_key = result->>'object');
	END IF;
	IF NOT EXISTS (SELECT 1 FROM tenant_backup.agent_registry r WHERE r.name = agent AND j.engine = ANY (r.engines)) THEN
		RAISE EXCEPTION 'agent "%" did not register for % jobs', agent, j.engine
			USING ERRCODE = 'insufficient_privilege', HINT = 'An agent says agent_hello() with its engines before it reports.';
	END IF;
	IF error IS NULL AND j.kind = 'backup' THEN
		IF result IS NULL THEN
			RAISE EXCEPTION 'a successful backup report needs its result (object, bytes_in, bytes_stored, sha256, key_id)'
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		PERFORM tenant_backup._agent_result_check(j, result);
	END IF;
	IF NOT tenant_backup._job_finish(job_id, lease, error, result) THEN
		RETURN false;
	END IF;
	UPDATE tenant_backup.agent_registry SET last_seen = now(),
		jobs_done = jobs_done + (error IS NULL)::int, jobs_failed = jobs_failed + (error IS NOT NULL)::int
	WHERE name = agent;
	RETURN true;
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_report(bigint, text, text, jsonb) IS
	'Ends the attempt its lease holds: error NULL is success (a backup needs result: object, bytes_in, bytes_stored, sha256, key_id; the object must be under the job''s <tenant>/<engine>/, in storage with that size and key, its authenticated header naming the tenant and engine); an error queues the job again until max_attempts. Refuses an agent not registered for the job''s engine, and any lie, recording nothing. False if the lease was lost. Sending the same successful report again answers true.';

CREATE OR REPLACE FUNCTION tenant_backup.agent_claim(agent text, engine text, lease_seconds int DEFAULT 60)
RETURNS TABLE (job_id bigint, lease text, kind text, tenant text, locator text, sealed_password text,
			   options jsonb, key_doc jsonb, backup_id bigint, object_key text, restore_target text, attempt int,
			   tier text, key_command text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs;
	s tenant_backup.sources;
	token text;
	bid bigint;
	obj text;
BEGIN
	PERFORM tenant_backup._agent_check(agent, engine);
	IF lease_seconds IS NULL OR lease_seconds < 5 OR lease_seconds > 86400 THEN
		RAISE EXCEPTION 'lease_seconds must be 5 to 86400' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	UPDATE tenant_backup.agent_registry SET last_seen = now() WHERE name = agent;
	-- Random: a token that could be derived would let anyone report for the attempt.
	token := format('agent:%s:%s', agent, gen_random_uuid());
	UPDATE tenant_backup.jobs SET state = 'running', attempts = attempts + 1, started = now(), lease_owner = token,
		lease_expires = now() + make_interval(secs => lease_seconds), error = NULL, bytes_done = 0
	WHERE id = (SELECT q.id FROM tenant_backup.jobs q WHERE q.state = 'queued' AND q.engine = agent_claim.engine
				ORDER BY q.id LIMIT 1 FOR UPDATE SKIP LOCKED)
	RETURNING * INTO j;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT * INTO s FROM tenant_backup.sources WHERE id = j.source_id;
	IF j.kind = 'backup' THEN
		INSERT INTO tenant_backup.backups (tenant, engine, source_id, job_id, status)
		VALUES (j.tenant, j.engine, j.source_id, j.id, 'running') RETURNING id INTO bid;
	ELSE
		bid := j.backup_id;
		SELECT b.object_key INTO obj FROM tenant_backup.backups b WHERE b.id = bid;
	END IF;
	RETURN QUERY SELECT j.id, token, j.kind, j.tenant, s.locator, s.sealed_password, s.options,
		(SELECT k.wrapped FROM tenant_backup.key_store k WHERE k.tenant = j.tenant AND k.state = 'active'
		 ORDER BY k.created DESC, k.key_id DESC LIMIT 1),
		bid, obj, j.restore_target, j.attempts, t.tier, t.key_command
	FROM tenant_backup.tenants t WHERE t.name = j.tenant;
END
$$;
REVOKE ALL ON FUNCTION tenant_backup._backup_object_check(text, text, text, bigint, text, text),
	tenant_backup._agent_result_check(tenant_backup.jobs, jsonb) FROM PUBLIC;

-- ---------------------------------------------------------------- job engine: fairness, retries, audit
-- A queued job is not started before not_before (a retry's back-off); NULL: at once.
ALTER TABLE tenant_backup.jobs ADD COLUMN not_before timestamptz;
COMMENT ON COLUMN tenant_backup.jobs.not_before IS
	'A queued job is not started before this time (the next retry after a failed attempt); NULL: as soon as a worker is free.';
CREATE INDEX jobs_claimable ON tenant_backup.jobs (engine, not_before, id) WHERE state = 'queued';
