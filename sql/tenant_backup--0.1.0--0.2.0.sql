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
		-- Another tenant's only: two sources of one tenant may reach its database two ways.
		SELECT o.tenant INTO other FROM tenant_backup.sources o
		WHERE o.engine = s.engine AND o.tenant <> s.tenant AND o.identity = p_identity
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
												   p_key_id text, p_sha256 text, p_key_command text)
RETURNS void LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_backup_object_check';
COMMENT ON FUNCTION tenant_backup._backup_object_check(text, text, text, bigint, text, text, text) IS
	'Raises unless storage holds p_object and its manifest with p_bytes_stored bytes, key p_key_id and SHA-256 p_sha256, and the object''s header, authenticated with the tenant''s key (p_key_command: the tenant''s own key command), names p_tenant, p_engine and the backup id of its name.';

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
											   p_result->>'key_id', p_result->>'sha256',
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
	WHERE id = (SELECT tenant_backup._job_next(agent_claim.engine))
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
		(tenant_backup._active_key(j.tenant)).wrapped,
		bid, obj, j.restore_target, j.attempts, t.tier, t.key_command
	FROM tenant_backup.tenants t WHERE t.name = j.tenant;
END
$$;
REVOKE ALL ON FUNCTION tenant_backup._backup_object_check(text, text, text, bigint, text, text, text),
	tenant_backup._agent_result_check(tenant_backup.jobs, jsonb) FROM PUBLIC;

-- ---- operators: locators, database identity, secrets

CREATE FUNCTION tenant_backup._pg_locator_check(p_tenant text, p_locator text)
RETURNS void LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_pg_locator_check';
COMMENT ON FUNCTION tenant_backup._pg_locator_check(text, text) IS
	'Raises (42501) unless a PostgreSQL conninfo names exactly one host (name or IP, no list, no socket directory) and port, with only dbname, user, password, sslmode, connect_timeout, application_name and keepalives*: the rule for databases added by a non-superuser, checked again at every connection.';

-- What tenant_add_database returns: the source without its sealed password.
CREATE TYPE tenant_backup.database_added AS (id bigint, tenant text, engine text, locator text, options jsonb,
											 added_by_superuser boolean, created timestamptz, identity text);
COMMENT ON TYPE tenant_backup.database_added IS
	'A database just added to a tenant, as tenant_add_database() returns it (never its password, not even sealed).';

DROP FUNCTION tenant_backup.tenant_add_database(text, text, text, jsonb);
CREATE FUNCTION tenant_backup.tenant_add_database(tenant text, engine text, locator text,
												  options jsonb DEFAULT '{}')
RETURNS tenant_backup.database_added LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic  -- a refused call's statement holds the password
AS $$
DECLARE
	s tenant_backup.sources;
	clean text := locator;
	password text;
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	PERFORM tenant_backup._engine_check(engine);
	IF engine IS NULL OR locator IS NULL OR locator = '' THEN
		RAISE EXCEPTION 'engine and locator are required' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- A password never stays in the locator. PostgreSQL conninfos and URIs are split by
	-- libpq's own parser; other URIs lose user:password@ (up to the last '@') and a
	-- query's password=.
	IF engine = 'postgres' AND (clean ~ '=' OR clean ~ '^postgres(ql)?://') THEN
		SELECT c.locator, c.password INTO clean, password FROM tenant_backup._split_conninfo(clean) c;
	ELSIF clean ~ '^[a-z][a-z0-9+.-]*://[^:@/?#]*:.*@' THEN
		password := substring(clean FROM '^[a-z][a-z0-9+.-]*://[^:@/?#]*:(.*)@[^@]*$');
		clean := regexp_replace(clean, '^([a-z][a-z0-9+.-]*://[^:@/?#]*):.*@([^@]*)$', '\1@\2');
	END IF;
	IF clean ~ '^[a-z][a-z0-9+.-]*://' AND clean ~ '[?&]password=' THEN
		IF password IS NOT NULL THEN
			RAISE EXCEPTION 'the locator of tenant "%" has two passwords', tenant USING ERRCODE = 'invalid_parameter_value';
		END IF;
		password := substring(clean FROM '[?&]password=([^&#]*)');
		clean := regexp_replace(regexp_replace(clean, '([?&])password=[^&#]*&?', '\1'), '[?&]$', '');
	ELSIF clean !~ '^[a-z][a-z0-9+.-]*://' AND clean ~ '(^|\s)password\s*=' THEN
		password := substring(clean FROM '(?:^|\s)password\s*=\s*(''(?:[^''\\]|\\.)*''|\S+)');
		password := regexp_replace(regexp_replace(password, '^''(.*)''$', '\1'), '\\(.)', '\1', 'g');
		clean := btrim(regexp_replace(clean, '(^|\s)password\s*=\s*(''(?:[^''\\]|\\.)*''|\S+)', ' ', 'g'));
	END IF;
	IF engine = 'postgres' AND clean !~ '=' AND clean !~ '^postgres(ql)?://' THEN
		IF NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = clean) THEN
			RAISE EXCEPTION 'database "%" does not exist on this cluster', clean
				USING ERRCODE = 'invalid_catalog_name',
					  HINT = 'Give the name of a database on this cluster, or a conninfo for another one.';
		END IF;
		IF clean = current_database() OR clean IN ('template0', 'template1') THEN
			RAISE EXCEPTION 'database "%" cannot be a tenant database', clean
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'The control database and the templates belong to no tenant.';
		END IF;
	ELSIF engine = 'postgres' AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
		IF password IS NULL THEN
			-- As with dblink: without a password, pg_dump would connect with the server's own identity.
			RAISE EXCEPTION 'a conninfo without a password can only be added by a superuser'
				USING ERRCODE = 'insufficient_privilege',
					  HINT = 'Include the password of the role to connect as; it is sealed with the master key.';
		END IF;
		-- One host, no file, service or fall-through: checked again for every connection.
		PERFORM tenant_backup._pg_locator_check(tenant, clean);
	END IF;
	IF EXISTS (SELECT 1 FROM tenant_backup.sources existing
			   WHERE existing.tenant = tenant_add_database.tenant AND existing.engine = tenant_add_database.engine
			   AND existing.locator = clean) THEN
		RAISE EXCEPTION 'tenant "%" already has % database "%"', tenant, engine, clean
			USING ERRCODE = 'duplicate_object';
	END IF;
	IF engine = 'redis' THEN
		PERFORM tenant_backup._redis_overlap_check(tenant, clean, options);
	END IF;
	INSERT INTO tenant_backup.sources (tenant, engine, locator, sealed_password, options, added_by_superuser)
	VALUES (tenant, engine, clean,
			CASE WHEN password IS NOT NULL THEN tenant_backup._seal_secret('source password', password) END,
			options, (SELECT rolsuper FROM pg_roles WHERE rolname = session_user))
	RETURNING * INTO s;
	-- A database of this cluster is known now: one tenant's, and not on a dedicated tenant's cluster.
	IF engine = 'postgres' AND clean !~ '=' AND clean !~ '^postgres(ql)?://' THEN
		PERFORM tenant_backup._source_identity_record(s.id,
			(SELECT c.system_identifier::text FROM pg_control_system() c) || '/' ||
			(SELECT d.oid::text FROM pg_database d WHERE d.datname = clean));
		SELECT * INTO s FROM tenant_backup.sources x WHERE x.id = s.id;
	END IF;
	PERFORM tenant_backup._audit('database added', tenant,
								 jsonb_build_object('engine', engine, 'locator', clean, 'source_id', s.id));
	RETURN ROW(s.id, s.tenant, s.engine, s.locator, s.options, s.added_by_superuser, s.created, s.identity)::tenant_backup.database_added;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_add_database(text, text, text, jsonb) IS
	'Adds a database of the tenant. postgres: a database on this cluster or a conninfo; other engines: a URI for the agents. A password in the locator is sealed with the master key, never stored in clear nor returned. Pass the locator as a bound parameter (psql \bind, PQexecParams, a driver placeholder): the text of a failing statement is logged, its parameters are not. A non-superuser''s conninfo names one host and port and only the keywords _pg_locator_check() allows. A database of this cluster that another tenant has, or on a cluster a dedicated tenant has, is refused (42710).';
REVOKE ALL ON FUNCTION tenant_backup.tenant_add_database(text, text, text, jsonb),
	tenant_backup._pg_locator_check(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.tenant_add_database(text, text, text, jsonb) TO tenant_backup_operator;

CREATE OR REPLACE FUNCTION tenant_backup.tenant_rotate_master_key(new_key_file text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old_id text;
	new_id text;
	k record;
	src record;
	rewrapped int := 0;
	resealed int := 0;
	result jsonb;
BEGIN
	IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
		RAISE EXCEPTION 'only a superuser can rotate the master key' USING ERRCODE = 'insufficient_privilege';
	END IF;
	-- Only now is the file read: before the check, its errors would tell anyone about server files.
	old_id := tenant_backup._master_key_id();
	new_id := tenant_backup._master_key_id(new_key_file);
	LOCK TABLE tenant_backup.key_store, tenant_backup.sources IN SHARE ROW EXCLUSIVE MODE;
	FOR k IN SELECT * FROM tenant_backup.key_store
			 WHERE source = 'master' AND state <> 'destroyed' AND wrapped->>'master_key_id' IS DISTINCT FROM new_id
	LOOP
		UPDATE tenant_backup.key_store SET wrapped = tenant_backup._key_rewrap(k.tenant, k.wrapped, new_key_file)
		WHERE tenant = k.tenant AND key_id = k.key_id;
		rewrapped := rewrapped + 1;
	END LOOP;
	FOR src IN SELECT * FROM tenant_backup.sources
			   WHERE sealed_password IS NOT NULL AND split_part(sealed_password, ':', 2) <> new_id
	LOOP
		UPDATE tenant_backup.sources SET sealed_password =
			tenant_backup._secret_reseal('source password', src.sealed_password, new_key_file)
		WHERE id = src.id;
		resealed := resealed + 1;
	END LOOP;
	result := jsonb_build_object('old_master_key_id', old_id, 'new_master_key_id', new_id,
								 'tenant_keys_rewrapped', rewrapped, 'passwords_resealed', resealed);
	PERFORM tenant_backup._audit('master key rotated', NULL, result);
	RETURN result;
END
$$;

-- ---------------------------------------------------------------- job engine: fairness, retries, audit
-- A queued job is not started before not_before (a retry's back-off); NULL: at once.
ALTER TABLE tenant_backup.jobs ADD COLUMN not_before timestamptz;
COMMENT ON COLUMN tenant_backup.jobs.not_before IS
	'A queued job is not started before this time (the next retry after a failed attempt); NULL: as soon as a worker is free.';
CREATE INDEX jobs_claimable ON tenant_backup.jobs (engine, not_before, id) WHERE state = 'queued';
-- The claim orders by each tenant's newest start: the index finds it per tenant.
CREATE INDEX jobs_tenant_started ON tenant_backup.jobs (tenant, started);

-- How long a failed attempt waits before the next one: the attempt-th interval of
-- tenant_backup.retry_delays (the last one repeats), e.g. '1 min, 5 min, 25 min'.
CREATE FUNCTION tenant_backup._retry_delay(p_attempt int)
RETURNS interval LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT d[least(greatest(p_attempt, 1), cardinality(d))]::interval
	FROM (SELECT regexp_split_to_array(btrim(coalesce(nullif(current_setting('tenant_backup.retry_delays', true), ''),
														 '1 min, 5 min, 25 min')), '\s*,\s*') AS d) s
$$;
COMMENT ON FUNCTION tenant_backup._retry_delay(int) IS
	'The wait after failed attempt p_attempt before the next: the p_attempt-th of tenant_backup.retry_delays, the last repeating.';

-- The next job a worker or agent of p_engine may start, locked for the caller's
-- transaction, or NULL. Fair: the tenant whose newest start is oldest goes first
-- (round-robin between tenants), then the oldest job; never a job before its
-- not_before, never a second running job of one source. The source row is locked
-- while the claim commits, so two claimers cannot start two jobs of one source.
CREATE FUNCTION tenant_backup._job_next(p_engine text)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	candidate record;
BEGIN
	FOR candidate IN
		SELECT q.id, q.source_id FROM tenant_backup.jobs q
		WHERE q.state = 'queued' AND q.engine = p_engine AND (q.not_before IS NULL OR q.not_before <= now())
		  AND NOT EXISTS (SELECT 1 FROM tenant_backup.jobs r WHERE r.source_id = q.source_id AND r.state = 'running')
		ORDER BY (SELECT max(t.started) FROM tenant_backup.jobs t WHERE t.tenant = q.tenant) NULLS FIRST, q.id
	LOOP
		CONTINUE WHEN NOT EXISTS (SELECT 1 FROM tenant_backup.sources s WHERE s.id = candidate.source_id
								  FOR NO KEY UPDATE SKIP LOCKED);
		CONTINUE WHEN NOT EXISTS (SELECT 1 FROM tenant_backup.jobs q WHERE q.id = candidate.id AND q.state = 'queued'
								  FOR UPDATE SKIP LOCKED);
		-- Seen afresh now that the source is ours: a claim that committed meanwhile counts.
		CONTINUE WHEN EXISTS (SELECT 1 FROM tenant_backup.jobs r WHERE r.source_id = candidate.source_id
							  AND r.state = 'running');
		RETURN candidate.id;
	END LOOP;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenant_backup._job_next(text) IS
	'The job the launcher (postgres) or an agent claims next, locked: round-robin between tenants by their newest start, then by id; not before not_before; at most one running job per source. NULL if none may start.';

-- Queues the jobs of one request. A backup of a database that already has a queued
-- backup is that job (200 calls queue one job), taken over by a waiting request.
CREATE OR REPLACE FUNCTION tenant_backup._enqueue(p_kind text, p_tenant text, p_engine text, p_backup_id bigint,
												  p_target text, p_request text, p_actor text DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	src record;
	b tenant_backup.backups;
	job bigint;
	queued boolean := false;
BEGIN
	PERFORM tenant_backup._tenant_check(p_tenant);
	PERFORM tenant_backup._engine_check(p_engine);
	IF p_kind = 'backup' THEN
		FOR src IN SELECT * FROM tenant_backup.sources
				   WHERE tenant = p_tenant AND (p_engine IS NULL OR engine = p_engine) ORDER BY id
		LOOP
			-- Requests of one source one after the other: the second sees the first's job.
			PERFORM pg_advisory_xact_lock(hashtext('tenant_backup._enqueue'), hashtext(src.id::text));
			UPDATE tenant_backup.jobs j SET request = coalesce(j.request, p_request)
			WHERE j.id = (SELECT q.id FROM tenant_backup.jobs q WHERE q.source_id = src.id AND q.kind = 'backup'
						  AND q.state = 'queued' AND (p_request IS NULL OR q.request IS NULL) ORDER BY q.id LIMIT 1)
			RETURNING j.id INTO job;
			IF NOT FOUND THEN
				INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, request)
				VALUES ('backup', p_tenant, src.id, src.engine, p_request) RETURNING id INTO job;
			END IF;
			queued := true;
			RETURN NEXT job;
		END LOOP;
		IF NOT queued THEN
			RAISE EXCEPTION 'tenant "%" has no %database to back up', p_tenant, coalesce(p_engine || ' ', '')
				USING ERRCODE = 'no_data_found', HINT = 'Add one with tenant_backup.tenant_add_database().';
		END IF;
	ELSIF p_kind = 'drill' THEN
		-- The newest complete backup of each of the tenant's databases, loaded into scratch.
		FOR b IN SELECT DISTINCT ON (x.source_id) x.* FROM tenant_backup.backups x
				 WHERE x.tenant = p_tenant AND x.status = 'complete' AND x.source_id IS NOT NULL
				 AND (p_engine IS NULL OR x.engine = p_engine) AND (p_backup_id IS NULL OR x.id = p_backup_id)
				 ORDER BY x.source_id, x.finished DESC, x.id DESC
		LOOP
			INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, backup_id, request, max_attempts)
			VALUES ('drill', p_tenant, b.source_id, b.engine, b.id, p_request, 1) RETURNING id INTO job;
			RETURN NEXT job;
		END LOOP;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'tenant "%" has no complete backup to drill', p_tenant
				USING ERRCODE = 'no_data_found', HINT = 'Back it up first: tenant_backup.tenant_backup().';
		END IF;
		b := NULL;
	ELSE
		IF p_backup_id IS NOT NULL THEN
			SELECT * INTO b FROM tenant_backup.backups WHERE id = p_backup_id AND tenant = p_tenant;
			IF NOT FOUND THEN
				RAISE EXCEPTION 'backup % of tenant "%" does not exist', p_backup_id, p_tenant
					USING ERRCODE = 'undefined_object';
			END IF;
			IF b.status <> 'complete' THEN
				RAISE EXCEPTION 'backup % of tenant "%" is %, not complete', p_backup_id, p_tenant, b.status
					USING ERRCODE = 'object_not_in_prerequisite_state';
			END IF;
		ELSE
			SELECT * INTO b FROM tenant_backup.backups
			WHERE tenant = p_tenant AND status = 'complete' AND (p_engine IS NULL OR engine = p_engine)
			ORDER BY finished DESC, id DESC LIMIT 1;
			IF NOT FOUND THEN
				RAISE EXCEPTION 'tenant "%" has no complete %backup to restore', p_tenant, coalesce(p_engine || ' ', '')
					USING ERRCODE = 'no_data_found';
			END IF;
		END IF;
		IF b.source_id IS NULL THEN
			RAISE EXCEPTION 'backup % of tenant "%" belongs to a database that was removed', b.id, p_tenant
				USING ERRCODE = 'object_not_in_prerequisite_state';
		END IF;
		INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, backup_id, restore_target, request,
										max_attempts)
		VALUES ('restore', p_tenant, b.source_id, b.engine, b.id, p_target, p_request, 1) RETURNING id INTO job;
		RETURN NEXT job;
	END IF;
	PERFORM tenant_backup._audit(p_kind || ' requested', p_tenant,
								 jsonb_build_object('engine', p_engine, 'backup_id', b.id, 'target', p_target), p_actor);
	PERFORM pg_notify('tenant_backup_jobs', coalesce(p_engine, ''));
END
$$;
COMMENT ON FUNCTION tenant_backup._enqueue(text, text, text, bigint, text, text, text) IS
	'Queues a request''s jobs (used directly, and by the request worker of wait => true). A backup of a database that already has one queued returns that job instead of queueing another.';

-- Where an attempt that failed with p_error leaves its job: queued again after the
-- back-off, or failed for good with a message that says it gave up.
CREATE FUNCTION tenant_backup._job_retry(p_job tenant_backup.jobs, p_error text,
										 OUT state text, OUT not_before timestamptz, OUT error text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN p_job.attempts < p_job.max_attempts THEN 'queued' ELSE 'failed' END,
		   CASE WHEN p_job.attempts < p_job.max_attempts THEN now() + tenant_backup._retry_delay(p_job.attempts) END,
		   CASE WHEN p_job.attempts < p_job.max_attempts OR p_job.max_attempts = 1 THEN p_error
				ELSE format('gave up after %s attempts: %s', p_job.attempts, p_error) END
$$;
COMMENT ON FUNCTION tenant_backup._job_retry(tenant_backup.jobs, text) IS
	'The state, next retry (not_before) and error of a job whose attempt failed: queued after tenant_backup.retry_delays, or failed ("gave up after N attempts: ...").';

-- Ends an attempt of a job, only while p_lease still holds it. Locks the job first,
-- then its backup: the order of every path (reclaim, release, claim), so none deadlock.
CREATE OR REPLACE FUNCTION tenant_backup._job_finish(p_job bigint, p_lease text, p_error text,
													 p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs;
	retry record;
	done_backup bigint;
BEGIN
	SELECT * INTO j FROM tenant_backup.jobs x WHERE x.id = p_job AND x.lease_owner = p_lease AND x.state = 'running'
	FOR UPDATE;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	-- A drill succeeds only if what it loaded is what the backup recorded at dump time.
	IF p_error IS NULL AND j.kind = 'drill' THEN
		p_error := tenant_backup._drill_mismatch(j.backup_id, p_result);
	END IF;
	IF p_error IS NULL AND p_result IS NOT NULL THEN
		UPDATE tenant_backup.backups SET status = 'complete', finished = now(),
			bytes_in = (p_result->>'bytes_in')::bigint, bytes_stored = (p_result->>'bytes_stored')::bigint,
			sha256 = p_result->>'sha256', object_key = p_result->>'object', key_id = p_result->>'key_id',
			start_lsn = (p_result->>'start_lsn')::pg_lsn, stop_lsn = (p_result->>'stop_lsn')::pg_lsn,
			timeline = (p_result->>'timeline')::int, contents = p_result->'contents'
		WHERE job_id = p_job AND status = 'running'
		RETURNING id INTO done_backup;
	END IF;
	IF p_error IS NULL THEN
		UPDATE tenant_backup.jobs SET state = 'succeeded', finished = now(), error = NULL, not_before = NULL,
			lease_owner = NULL, lease_expires = NULL, backup_id = coalesce(done_backup, backup_id), result = p_result
		WHERE id = p_job RETURNING * INTO j;
	ELSE
		retry := tenant_backup._job_retry(j, p_error);
		UPDATE tenant_backup.jobs SET state = retry.state, not_before = retry.not_before, error = retry.error,
			finished = CASE WHEN retry.state = 'failed' THEN now() END, lease_owner = NULL, lease_expires = NULL,
			result = p_result
		WHERE id = p_job RETURNING * INTO j;
		UPDATE tenant_backup.backups SET status = 'failed', finished = now(), error = p_error
		WHERE job_id = p_job AND status = 'running';
	END IF;
	PERFORM tenant_backup._audit(j.kind || CASE WHEN p_error IS NULL THEN ' succeeded' ELSE ' failed' END, j.tenant,
								 jsonb_build_object('job', j.id, 'engine', j.engine, 'attempt', j.attempts,
													'backup_id', j.backup_id, 'error', j.error,
													'next_attempt', j.not_before),
								 'tenant_backup worker');
	RETURN true;
END
$$;
COMMENT ON FUNCTION tenant_backup._job_finish(bigint, text, text, jsonb) IS
	'Ends the attempt p_lease holds (false if it no longer does): success completes the job''s backup with p_result; a failure queues the job again after tenant_backup.retry_delays (jobs.not_before) or, after max_attempts, fails it saying it gave up. Locks the job, then its backup.';

-- Puts the jobs of dead workers back: lease expired, or leased by a job worker of an
-- earlier postmaster (p_live_prefix is this one's). Jobs first, then their backups.
CREATE FUNCTION tenant_backup._job_reclaim(p_live_prefix text)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs;
	retry record;
	reclaimed bigint := 0;
BEGIN
	FOR j IN SELECT * FROM tenant_backup.jobs x
			 WHERE x.state = 'running' AND (x.lease_expires < now()
				   OR (x.lease_owner LIKE 'pg:%' AND NOT starts_with(x.lease_owner, p_live_prefix)))
			 ORDER BY x.id FOR UPDATE SKIP LOCKED
	LOOP
		-- A dead worker says nothing about the source: the next attempt may start at once.
		retry := tenant_backup._job_retry(j, format('attempt %s stopped: its worker died or stopped answering', j.attempts));
		UPDATE tenant_backup.jobs SET state = retry.state, error = retry.error,
			finished = CASE WHEN retry.state = 'failed' THEN now() END, lease_owner = NULL, lease_expires = NULL
		WHERE id = j.id;
		UPDATE tenant_backup.backups SET status = 'failed', finished = now(),
			error = 'interrupted: the worker died before the backup was stored'
		WHERE status = 'running' AND job_id = j.id;
		reclaimed := reclaimed + 1;
	END LOOP;
	RETURN reclaimed;
END
$$;
COMMENT ON FUNCTION tenant_backup._job_reclaim(text) IS
	'Queues again (or fails after max_attempts) the running jobs whose lease expired or whose job worker belonged to an earlier postmaster, and fails their backups; locks each job, then its backup. Returns how many.';

REVOKE ALL ON FUNCTION tenant_backup._retry_delay(int), tenant_backup._job_next(text),
	tenant_backup._job_retry(tenant_backup.jobs, text), tenant_backup._job_reclaim(text) FROM PUBLIC;

-- ---- the audit log: a keyed chain per tenant, its heads in storage

-- Rows of 0.1.0 keep their unkeyed SHA-256 (mac_key_id NULL) in one chain by id. New
-- rows carry an HMAC (_audit_mac) under a key derived from the master key, chained per
-- tenant (and one chain for rows of no tenant): an audited action locks only its own
-- chain's head, so an idle transaction after acme's call stalls only acme's actions.
ALTER TABLE tenant_backup.audit ADD COLUMN mac_key_id text;
COMMENT ON COLUMN tenant_backup.audit.mac_key_id IS
	'The id of the master key whose derived key made hash (an HMAC-SHA256); NULL: a row of 0.1.0, hash is its unkeyed SHA-256.';
COMMENT ON COLUMN tenant_backup.audit.prev_hash IS
	'hash of the previous row of the same chain (the tenant''s, or that of rows without a tenant); a chain''s first keyed row points at the last unkeyed row.';
CREATE INDEX audit_unkeyed ON tenant_backup.audit (id) WHERE mac_key_id IS NULL;
CREATE INDEX audit_chain ON tenant_backup.audit ((coalesce(tenant, '')), id) WHERE mac_key_id IS NOT NULL;
COMMENT ON TABLE tenant_backup.audit IS
	'Append-only audit trail, a keyed hash chain per tenant: each row''s HMAC (key derived from the master key) covers the previous row of its chain, so edits and deletions show; the chain heads are stored sealed in storage (_audit/head-<master key id>.json), so removing the newest rows shows too (tenant_audit_verify()).';

CREATE TABLE tenant_backup.audit_heads (
	chain text PRIMARY KEY,
	last_id bigint,
	last_hash text
);
COMMENT ON TABLE tenant_backup.audit_heads IS
	'The newest row of each audit chain (chain: the tenant, '''' for rows of no tenant); its row is locked while an audited action commits.';

CREATE TABLE tenant_backup.audit_head_stored (
	heads_sum numeric NOT NULL,
	stored timestamptz NOT NULL,
	master_key_id text NOT NULL
);
COMMENT ON TABLE tenant_backup.audit_head_stored IS
	'When the chain heads were last written to storage (_audit/head-<master_key_id>.json), and their sum of ids then (unchanged: nothing to write).';

CREATE FUNCTION tenant_backup._audit_mac(p_id bigint, p_chain text, p_prev text, p_at timestamptz, p_actor text,
										 p_action text, p_tenant text, p_detail jsonb,
										 OUT mac text, OUT master_key_id text)
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_audit_mac';
COMMENT ON FUNCTION tenant_backup._audit_mac(bigint, text, text, timestamptz, text, text, text, jsonb) IS
	'An audit row''s HMAC-SHA256 (hex) over its length-prefixed fields, under a key derived by HKDF from the master key, and that master key''s id. The key never leaves the server process.';

CREATE FUNCTION tenant_backup._audit_head_put(p_doc text)
RETURNS void LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_audit_head_put';
COMMENT ON FUNCTION tenant_backup._audit_head_put(text) IS
	'Writes the audit chain heads (JSON) to storage as _audit/head-<master key id>.json, sealed with the master key.';

CREATE FUNCTION tenant_backup._audit_head_get()
RETURNS text LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_audit_head_get';
COMMENT ON FUNCTION tenant_backup._audit_head_get() IS
	'The audit chain heads last written to storage under the configured master key (NULL if none); raises if _audit/head-<master key id>.json does not open with it.';

-- Appends an audit row to its tenant's chain. p_actor: who asked (default: the session user).
CREATE OR REPLACE FUNCTION tenant_backup._audit(p_action text, p_tenant text, p_detail jsonb, p_actor text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_chain text := coalesce(p_tenant, '');
	head tenant_backup.audit_heads;
	row_id bigint;
	now_ts timestamptz;
	who text := coalesce(p_actor, session_user);
	m record;
BEGIN
	-- A new chain begins at the last unkeyed row; a second session starting it waits here.
	INSERT INTO tenant_backup.audit_heads (chain, last_id, last_hash)
	SELECT v_chain, NULL, (SELECT a.hash FROM tenant_backup.audit a WHERE a.mac_key_id IS NULL ORDER BY a.id DESC LIMIT 1)
	WHERE NOT EXISTS (SELECT 1 FROM tenant_backup.audit_heads h WHERE h.chain = v_chain)
	ON CONFLICT DO NOTHING;
	SELECT * INTO STRICT head FROM tenant_backup.audit_heads h WHERE h.chain = v_chain FOR UPDATE;
	-- Drawn under the chain's lock: a chain's ids rise in the order its rows were written.
	row_id := nextval('tenant_backup.audit_id_seq');
	now_ts := clock_timestamp();
	m := tenant_backup._audit_mac(row_id, v_chain, head.last_hash, now_ts, who, p_action, p_tenant, p_detail);
	INSERT INTO tenant_backup.audit (id, at, actor, action, tenant, detail, prev_hash, hash, mac_key_id)
	VALUES (row_id, now_ts, who, p_action, p_tenant, p_detail, head.last_hash, m.mac, m.master_key_id);
	UPDATE tenant_backup.audit_heads SET last_id = row_id, last_hash = m.mac WHERE chain = v_chain;
END
$$;
COMMENT ON FUNCTION tenant_backup._audit(text, text, jsonb, text) IS
	'Appends an audit row to the chain of p_tenant (NULL: the chain of rows without a tenant), MAC''d with the key derived from the master key; locks only that chain''s head until commit.';

-- Why the chain heads stored in storage do not match the table (NULL: they do): a head
-- names a row that is missing or changed, or storage lost the heads the catalog says
-- were written under this master key (after a rotation there are none yet, rightly).
-- Both verification and the next write of the heads ask it, so that removed rows are
-- never sealed over.
CREATE FUNCTION tenant_backup._audit_head_mismatch(OUT row_id bigint, OUT problem text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stored jsonb := tenant_backup._audit_head_get()::jsonb;
	head record;
BEGIN
	IF stored IS NULL THEN
		SELECT format('the audit chain heads were written to storage at %s but storage has none: they were removed',
					  s.stored) INTO problem
		FROM tenant_backup.audit_head_stored s WHERE s.master_key_id = tenant_backup._master_key_id();
		RETURN;
	END IF;
	FOR head IN SELECT h.key AS chain, (h.value->>'id')::bigint AS id, h.value->>'mac' AS mac
				FROM jsonb_each(coalesce(stored->'chains', '{}')) h ORDER BY 2 LOOP
		IF NOT EXISTS (SELECT 1 FROM tenant_backup.audit x WHERE x.id = head.id AND x.hash = head.mac
					   AND coalesce(x.tenant, '') = head.chain) THEN
			row_id := head.id;
			problem := format('row %s of the chain of %s, stored as its head at %s, is missing or changed: the newest rows were removed',
							  head.id, CASE WHEN head.chain = '' THEN 'rows without a tenant' ELSE 'tenant "' || head.chain || '"' END,
							  stored->>'written');
			RETURN;
		END IF;
	END LOOP;
END
$$;
COMMENT ON FUNCTION tenant_backup._audit_head_mismatch() IS
	'Compares the audit chain heads stored in storage with the table: the first head whose row is missing or changed, or that storage lost heads the catalog says it wrote; NULL when they agree. Raises if the stored heads do not open with the master key.';

-- Writes the chain heads to storage when they changed since the last write; run by the
-- launcher in a transaction of its own, so that it names committed rows only. A
-- failure is a warning: the next round tries again.
CREATE FUNCTION tenant_backup._audit_head_store()
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	heads_now numeric;
	mismatch record;
BEGIN
	SELECT sum(last_id) INTO heads_now FROM tenant_backup.audit_heads;
	-- Unchanged heads: nothing to do, and the master key is not even loaded (a key
	-- command would run every round). A rotated key gets its head file with the next row.
	IF heads_now IS NULL OR heads_now = (SELECT s.heads_sum FROM tenant_backup.audit_head_stored s) THEN
		RETURN false;
	END IF;
	SELECT * INTO mismatch FROM tenant_backup._audit_head_mismatch();
	IF mismatch.problem IS NOT NULL THEN
		RAISE WARNING 'tenant_backup: the audit chain heads are not written over: %', mismatch.problem
			USING HINT = 'tenant_audit_verify() reports it. Once investigated, a superuser may DELETE FROM tenant_backup.audit_head_stored to seal the chains as they are now.';
		RETURN false;
	END IF;
	PERFORM tenant_backup._audit_head_put(jsonb_build_object(
		'written', now(),
		'chains', (SELECT jsonb_object_agg(h.chain, jsonb_build_object('id', h.last_id, 'mac', h.last_hash))
				   FROM tenant_backup.audit_heads h WHERE h.last_id IS NOT NULL))::text);
	DELETE FROM tenant_backup.audit_head_stored;
	INSERT INTO tenant_backup.audit_head_stored (heads_sum, stored, master_key_id)
	VALUES (heads_now, now(), tenant_backup._master_key_id());
	RETURN true;
EXCEPTION WHEN OTHERS THEN
	RAISE WARNING 'tenant_backup: the audit chain heads could not be written to storage: %', SQLERRM
		USING HINT = 'The launcher tries again next round; tenant_audit_verify() checks against the heads written last.';
	RETURN false;
END
$$;
COMMENT ON FUNCTION tenant_backup._audit_head_store() IS
	'Writes every audit chain''s newest row (id and MAC) to storage, sealed with the master key, when they changed since the last write, unless rows the stored heads named went missing; true if it wrote. Called by the launcher each round.';

-- Same result columns as 0.1.0's. Unkeyed rows (0.1.0) are accepted up to the first
-- keyed row and verified as before; after it, only keyed rows, whose MACs are checked
-- when their master key is the configured one (rows under an earlier master key: their
-- links only, and problem says how many). Then every chain head in storage must be a
-- row of the table with that MAC: removing the newest rows shows.
CREATE OR REPLACE FUNCTION tenant_backup.tenant_audit_verify(OUT ok boolean, OUT rows_checked bigint,
															 OUT first_broken_id bigint, OUT problem text)
LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a tenant_backup.audit;
	prev tenant_backup.audit;
	legacy_tail text;
	first_keyed bigint := (SELECT min(x.id) FROM tenant_backup.audit x WHERE x.mac_key_id IS NOT NULL);
	current_key text := tenant_backup._master_key_id();
	chain_of_prev text;
	current_key_seen boolean;
	old_key_rows bigint := 0;
	mismatch record;
BEGIN
	ok := true;
	rows_checked := 0;
	FOR a IN SELECT * FROM tenant_backup.audit x WHERE x.mac_key_id IS NULL ORDER BY x.id LOOP
		rows_checked := rows_checked + 1;
		IF a.id > first_keyed THEN
			ok := false; first_broken_id := a.id;
			problem := format('row %s has the unkeyed form of 0.1.0 after keyed row %s: it was written or rewritten without the key',
							  a.id, first_keyed);
			RETURN;
		END IF;
		IF a.prev_hash IS DISTINCT FROM prev.hash THEN
			ok := false; first_broken_id := a.id;
			problem := CASE WHEN prev.id IS NULL THEN format('row %s is the first but points at an earlier row', a.id)
							ELSE format('row %s does not follow row %s: a row between them was removed, or row %s was changed',
										a.id, prev.id, prev.id) END;
			RETURN;
		END IF;
		IF a.hash IS DISTINCT FROM tenant_backup._audit_hash(a.prev_hash, a.at, a.actor, a.action, a.tenant, a.detail) THEN
			ok := false; first_broken_id := a.id;
			problem := format('row %s was changed after it was written (its hash does not match its contents)', a.id);
			RETURN;
		END IF;
		prev := a;
	END LOOP;
	legacy_tail := prev.hash;
	prev := NULL;
	FOR a IN SELECT * FROM tenant_backup.audit x WHERE x.mac_key_id IS NOT NULL ORDER BY coalesce(x.tenant, ''), x.id LOOP
		rows_checked := rows_checked + 1;
		IF prev.id IS NULL OR chain_of_prev IS DISTINCT FROM coalesce(a.tenant, '') THEN
			prev := NULL;
			prev.hash := legacy_tail;
			current_key_seen := false;
		END IF;
		IF a.prev_hash IS DISTINCT FROM prev.hash THEN
			ok := false; first_broken_id := a.id;
			problem := CASE WHEN prev.id IS NULL
							THEN format('row %s begins the chain of %s but does not follow the last unkeyed row: a row was removed',
										a.id, coalesce('tenant "' || a.tenant || '"', 'rows without a tenant'))
							ELSE format('row %s does not follow row %s: a row between them was removed, or row %s was changed',
										a.id, prev.id, prev.id) END;
			RETURN;
		END IF;
		IF a.mac_key_id = current_key THEN
			IF a.hash IS DISTINCT FROM (tenant_backup._audit_mac(a.id, coalesce(a.tenant, ''), a.prev_hash, a.at, a.actor,
																 a.action, a.tenant, a.detail)).mac THEN
				ok := false; first_broken_id := a.id;
				problem := format('row %s was changed after it was written (its MAC does not match its contents)', a.id);
				RETURN;
			END IF;
			current_key_seen := true;
		ELSIF current_key_seen THEN
			ok := false; first_broken_id := a.id;
			problem := format('row %s claims master key %s after rows of the current master key: it was not written by tenant_backup',
							  a.id, a.mac_key_id);
			RETURN;
		ELSE
			old_key_rows := old_key_rows + 1;
		END IF;
		prev := a;
		chain_of_prev := coalesce(a.tenant, '');
	END LOOP;
	BEGIN
		SELECT * INTO mismatch FROM tenant_backup._audit_head_mismatch();
	EXCEPTION WHEN OTHERS THEN
		ok := false;
		problem := format('the audit chain heads in storage cannot be read: %s', SQLERRM);
		RETURN;
	END;
	IF mismatch.problem IS NOT NULL THEN
		ok := false; first_broken_id := mismatch.row_id; problem := mismatch.problem;
		RETURN;
	END IF;
	IF old_key_rows > 0 THEN
		problem := format('%s rows were written under an earlier master key: their links are checked, their MACs cannot be',
						  old_key_rows);
	END IF;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_audit_verify() IS
	'Walks the audit chains: the unkeyed rows of 0.1.0 (SHA-256), then each tenant''s keyed chain (HMAC under a key derived from the master key), then the chain heads stored in storage. ok, rows checked, and the first row that was edited, removed or forged, with what is wrong.';

REVOKE ALL ON FUNCTION tenant_backup._audit_mac(bigint, text, text, timestamptz, text, text, text, jsonb),
	tenant_backup._audit_head_put(text), tenant_backup._audit_head_get(), tenant_backup._audit_head_store(),
	tenant_backup._audit_head_mismatch(),
	tenant_backup._audit(text, text, jsonb, text) FROM PUBLIC;

-- ---- the control plane's own backup: pg_dump keeps every catalog row

-- One call per statement: each call rewrites the extension's catalog row.
DO $$
DECLARE
	rel regclass;
BEGIN
	FOR rel IN SELECT c.oid FROM pg_catalog.pg_class c
			   WHERE c.relnamespace = 'tenant_backup'::regnamespace AND c.relkind IN ('r', 'S')
				 AND c.relname IN ('tenants', 'settings', 'key_store', 'sources', 'jobs', 'backups', 'audit', 'drills',
								   'agent_registry', 'audit_heads', 'audit_head_stored', 'sources_id_seq', 'jobs_id_seq',
								   'backups_id_seq', 'audit_id_seq', 'drills_id_seq')
	LOOP
		PERFORM pg_catalog.pg_extension_config_dump(rel, '');
	END LOOP;
END
$$;

-- ---------------------------------------------------------------- agents: nothing on trust

-- The job whose running attempt p_lease holds; raises (42501) otherwise. An agent
-- speaks only for the job it holds.
CREATE FUNCTION tenant_backup._agent_held_job(p_job bigint, p_lease text)
RETURNS tenant_backup.jobs LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs;
BEGIN
	SELECT * INTO j FROM tenant_backup.jobs WHERE id = p_job AND lease_owner = p_lease AND state = 'running';
	IF NOT FOUND THEN
		RAISE EXCEPTION 'job % is not held by this lease', p_job
			USING ERRCODE = 'insufficient_privilege', HINT = 'The lease was lost to another attempt: stop the job.';
	END IF;
	RETURN j;
END
$$;

CREATE FUNCTION tenant_backup.agent_job_trust(job_id bigint, lease text)
RETURNS TABLE (locator_trusted boolean, backup_sha256 text, backup_key_id text)
LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs := tenant_backup._agent_held_job(job_id, lease);
BEGIN
	RETURN QUERY
		SELECT s.added_by_superuser,
			   CASE WHEN j.kind <> 'backup' THEN b.sha256 END,
			   CASE WHEN j.kind <> 'backup' THEN b.key_id END
		FROM tenant_backup.sources s LEFT JOIN tenant_backup.backups b ON b.id = j.backup_id
		WHERE s.id = j.source_id;
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_job_trust(bigint, text) IS
	'What an agent must not take from the locator or from storage, for the job its lease holds: whether a superuser added the locator (if not, it must carry its own credentials), and for a restore or drill the SHA-256 and key id the catalog recorded for the backup.';

-- Redis: the server's run_id and the database number, as the agent saw them on its
-- connection; the prefix comes from the source's options, what the agent uses.
CREATE FUNCTION tenant_backup._redis_identity_check(p_source tenant_backup.sources, p_identity text)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	mine_dedicated boolean := (SELECT t.tier = 'dedicated' FROM tenant_backup.tenants t WHERE t.name = p_source.tenant);
	mine_prefix text := coalesce(p_source.options->>'key_prefix', '');
	other record;
BEGIN
	IF p_identity !~ '^[0-9a-f]{40}/[0-9]+$' THEN
		RAISE EXCEPTION 'invalid Redis identity for tenant "%"', p_source.tenant
			USING ERRCODE = 'invalid_parameter_value', HINT = 'A Redis identity is <run_id>/<database number>.';
	END IF;
	LOCK TABLE tenant_backup.sources IN SHARE ROW EXCLUSIVE MODE;
	SELECT o.tenant, split_part(o.identity, '/', 2) AS db, coalesce(o.options->>'key_prefix', '') AS prefix,
		   t.tier = 'dedicated' AS dedicated INTO other
	FROM tenant_backup.sources o JOIN tenant_backup.tenants t ON t.name = o.tenant
	WHERE o.engine = 'redis' AND o.tenant <> p_source.tenant
	  AND split_part(o.identity, '/', 1) = split_part(p_identity, '/', 1)
	  AND (mine_dedicated OR t.tier = 'dedicated' OR split_part(o.identity, '/', 2) = split_part(p_identity, '/', 2))
	  AND (mine_dedicated OR t.tier = 'dedicated' OR starts_with(coalesce(o.options->>'key_prefix', ''), mine_prefix)
		   OR starts_with(mine_prefix, coalesce(o.options->>'key_prefix', '')))
	LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'the Redis keys of tenant "%" overlap those of tenant "%" on the same server (database %, prefix "%")',
			p_source.tenant, other.tenant, other.db, other.prefix
			USING ERRCODE = 'duplicate_object',
				  DETAIL = format('Both locators reach the Redis server with run_id %s.', split_part(p_identity, '/', 1)),
				  HINT = CASE WHEN mine_dedicated OR other.dedicated
							  THEN 'A dedicated tenant''s server holds no other tenant: give it a server of its own.'
							  ELSE 'Give each tenant its own database number, or key prefixes of which none begins another.' END;
	END IF;
END
$$;

CREATE FUNCTION tenant_backup.agent_source_identity(job_id bigint, lease text, identity text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs := tenant_backup._agent_held_job(job_id, lease);
	s tenant_backup.sources;
BEGIN
	SELECT * INTO s FROM tenant_backup.sources WHERE id = j.source_id;
	IF s.engine = 'redis' THEN
		PERFORM tenant_backup._redis_identity_check(s, identity);
	END IF;
	PERFORM tenant_backup._source_identity_claim(s.id, identity);
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_source_identity(bigint, text, text) IS
	'An agent, before it reads or writes anything for the job its lease holds, reports what its connection reached (<server identity>/<database>; redis: <run_id>/<db>). Refuses (42710) a database another tenant''s source already is, a server shared with a dedicated tenant, and Redis keys overlapping another tenant''s on the same server.';

-- A restore into a target writes where no other tenant is: the agent reports the
-- target's identity (and for Redis its key prefix, '' for a whole database).
CREATE FUNCTION tenant_backup.agent_restore_target(job_id bigint, lease text, identity text, key_prefix text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs := tenant_backup._agent_held_job(job_id, lease);
	s tenant_backup.sources;
	other text;
BEGIN
	IF j.kind <> 'restore' OR j.restore_target IS NULL THEN
		RAISE EXCEPTION 'job % restores into no target', job_id USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT * INTO s FROM tenant_backup.sources WHERE id = j.source_id;
	IF s.engine = 'redis' THEN
		s.options := jsonb_set(s.options, '{key_prefix}', to_jsonb(coalesce(key_prefix, '')));
		PERFORM tenant_backup._redis_identity_check(s, identity);
		RETURN;
	END IF;
	SELECT o.tenant INTO other FROM tenant_backup.sources o
	WHERE o.engine = s.engine AND o.tenant <> s.tenant AND o.identity = agent_restore_target.identity LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'the restore target "%" of tenant "%" is a database of tenant "%"', j.restore_target, s.tenant, other
			USING ERRCODE = 'duplicate_object', HINT = 'Restore into a database that belongs to no other tenant.';
	END IF;
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_restore_target(bigint, text, text, text) IS
	'An agent, before a restore writes into its target, reports what the target is (<server identity>/<database>; redis: <run_id>/<db> and the key prefix,  for a whole database). Refuses (42710) a target that is another tenant''s database, or Redis keys overlapping another tenant''s.';
REVOKE ALL ON FUNCTION tenant_backup.agent_restore_target(bigint, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.agent_restore_target(bigint, text, text, text) TO tenant_backup_agent;

-- Add-time check of Redis locators on their text, normalised so that the spellings of
-- one address meet: host lowercased, without brackets or a trailing dot, IPv4-mapped
-- IPv6 as IPv4, every loopback spelling as one; the default port; the db without
-- leading zeros. An alias the text cannot show (another DNS name) is caught by the
-- agent's report of the server's run_id (agent_source_identity).
CREATE OR REPLACE FUNCTION tenant_backup._redis_keyspace(p_tenant text, p_locator text, p_options jsonb,
														  OUT server text, OUT db text, OUT prefix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN h.host IN ('localhost', '::1', '0.0.0.0', '::', '') OR h.host ~ '^127\.' THEN 'loopback'
				ELSE h.host END || ':' || h.port,
		   CASE WHEN (SELECT t.tier FROM tenant_backup.tenants t WHERE t.name = p_tenant) = 'dedicated' THEN '*'
				ELSE coalesce(nullif(ltrim(substring(p_locator FROM '^[a-z]+://[^/]*/([0-9]+)'), '0'), ''), '0') END,
		   coalesce(p_options->>'key_prefix', '')
	FROM (SELECT regexp_replace(rtrim(lower(coalesce(substring(a.hostport FROM '^\[([^]]*)\]'),
														  substring(a.hostport FROM '^([^:]*)'))), '.'),
								'^::ffff:([0-9.]+)$', '\1') AS host,
				 coalesce(substring(a.hostport FROM '^(?:\[[^]]*\]|[^:]*):([0-9]+)$')::int, 6379) AS port
		  FROM (SELECT substring(p_locator FROM '^[a-zA-Z]+://(?:[^@/]*@)?([^/?]*)') AS hostport) a) h
$$;

-- Restore targets are checked by engine when the job is queued, before any agent sees
-- them: a MySQL target is a schema name (MariaDB's own rules, and never '-' first, which
-- a tool could read as an option), a MongoDB target a database name outside admin,
-- local and config.
CREATE FUNCTION tenant_backup._restore_target_check(p_engine text, p_target text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_target IS NULL THEN
		RETURN;
	END IF;
	IF p_engine = 'mysql' AND (char_length(p_target) NOT BETWEEN 1 AND 64 OR p_target ~ '^-' OR p_target ~ '[/\\.]'
							   OR p_target ~ ' $' OR p_target ~ '[[:cntrl:]]') THEN
		RAISE EXCEPTION 'invalid MySQL target database name "%"', p_target
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = '1 to 64 characters, not beginning with "-", without "/", "\", "." or control characters, not ending with a space.';
	END IF;
	IF p_engine = 'mongodb' AND (octet_length(p_target) NOT BETWEEN 1 AND 63 OR p_target ~ '[/\\. "$*<>:|?[:cntrl:]]'
								 OR lower(p_target) IN ('admin', 'local', 'config')) THEN
		RAISE EXCEPTION 'invalid MongoDB target database name "%"', p_target
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = '1 to 63 bytes, without / \ . " $ * < > : | ? spaces or control characters; not admin, local or config.';
	END IF;
END
$$;

DROP FUNCTION tenant_backup.tenant_restore(text, text, bigint, text, boolean);
CREATE FUNCTION tenant_backup.tenant_restore(tenant text, engine text DEFAULT NULL,
											 backup_id bigint DEFAULT NULL, target text DEFAULT NULL,
											 wait boolean DEFAULT true, database text DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	-- A database name unless the engine says otherwise (redis: a number, a key prefix or
	-- the directory for an RDB snapshot, each checked by the agent).
	IF target IS NOT NULL AND (target = '' OR octet_length(target) > CASE WHEN engine = 'redis' THEN 1023 ELSE 63 END) THEN
		RAISE EXCEPTION 'invalid target database name "%"', target USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- Of a tenant with several databases: the one named (tenant_backup._restore_backup).
	backup_id := tenant_backup._restore_backup(tenant, engine, backup_id, target, database);
	-- The engine of the backup that will be restored: the named one, else the newest.
	PERFORM tenant_backup._restore_target_check(
		coalesce(engine,
				 (SELECT b.engine FROM tenant_backup.backups b WHERE b.id = tenant_restore.backup_id),
				 (SELECT b.engine FROM tenant_backup.backups b WHERE b.tenant = tenant_restore.tenant
				  AND b.status = 'complete' ORDER BY b.finished DESC, b.id DESC LIMIT 1)),
		target);
	RETURN QUERY SELECT tenant_backup._request('restore', tenant, engine, backup_id, target, wait);
END
$$;

REVOKE ALL ON FUNCTION tenant_backup._agent_held_job(bigint, text), tenant_backup._redis_identity_check(tenant_backup.sources, text),
	tenant_backup._restore_target_check(text, text), tenant_backup.agent_job_trust(bigint, text),
	tenant_backup.agent_source_identity(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.agent_job_trust(bigint, text),
	tenant_backup.agent_source_identity(bigint, text, text) TO tenant_backup_agent;

-- ---------------------------------------------------------------- operators: views, check, control

-- A tenant's schedule can be paused (tenant_pause) or switched off for tenants driven by
-- pg_cron only (tenant_set_schedule(tenant, 'off')); either keeps next_due at infinity,
-- which the launcher never reaches.
ALTER TABLE tenant_backup.tenants ADD COLUMN paused_since timestamptz, ADD COLUMN paused_by text,
	ADD COLUMN schedule_off boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN tenant_backup.tenants.paused_since IS
	'Set by tenant_pause(): the built-in schedule queues no backup of the tenant until tenant_resume().';
COMMENT ON COLUMN tenant_backup.tenants.schedule_off IS
	'tenant_set_schedule(tenant, ''off''): no built-in schedule at all (backups come from pg_cron or the application).';

-- What operators see of a job: who queued it, who cancelled it, what it is doing now.
ALTER TABLE tenant_backup.jobs ADD COLUMN IF NOT EXISTS phase text, ADD COLUMN queued_by text,
	ADD COLUMN cancelled_by text;
COMMENT ON COLUMN tenant_backup.jobs.phase IS
	'What a running job is doing (dump, upload, load, index, swap), as its worker or agent reports it; NULL when not reported.';
COMMENT ON COLUMN tenant_backup.jobs.queued_by IS
	'Who queued the job: the session user of the request, or "schedule" for the launcher''s scheduled backups.';
COMMENT ON COLUMN tenant_backup.jobs.cancelled_by IS 'Who cancelled the job with tenant_cancel(); NULL if it was not cancelled.';

-- What the status view needs of each database's history, kept up to date by triggers
-- so that it reads one row per database instead of searching backups and jobs: with
-- 10,000 tenants and their history, index probes per database take a second.
CREATE TABLE tenant_backup.source_backup_state (
	source_id bigint PRIMARY KEY REFERENCES tenant_backup.sources ON DELETE CASCADE,
	last_success timestamptz,
	last_success_bytes bigint,
	last_job_finished timestamptz,
	last_job_state text,
	last_job_error text
);
COMMENT ON TABLE tenant_backup.source_backup_state IS
	'Per database: the newest complete backup (finished, bytes_in) and the newest finished backup job that was not cancelled (finished, state, error). Kept by triggers on backups and jobs; read by tenant_backup.status.';
-- Derived, but restored with the rest: a restore in replica mode fires no trigger to rebuild it.
SELECT pg_catalog.pg_extension_config_dump('tenant_backup.source_backup_state', '');
-- The active jobs and the restores and drills are few: the status view reads them by these.
CREATE INDEX backups_source_complete ON tenant_backup.backups (source_id, finished DESC) WHERE status = 'complete';
CREATE INDEX jobs_active ON tenant_backup.jobs (source_id) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_restore_drill_finished ON tenant_backup.jobs (source_id, kind, finished DESC)
	WHERE kind <> 'backup' AND state IN ('succeeded', 'failed') AND cancelled_by IS NULL;

-- A complete backup becomes its database's last success if it is the newest; when the
-- last success stops being complete or is deleted, the next newest takes its place.
CREATE FUNCTION tenant_backup._source_state_backups()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP <> 'DELETE' AND NEW.status = 'complete' AND NEW.source_id IS NOT NULL THEN
		INSERT INTO tenant_backup.source_backup_state AS x (source_id, last_success, last_success_bytes)
		VALUES (NEW.source_id, NEW.finished, NEW.bytes_in)
		ON CONFLICT (source_id) DO UPDATE SET last_success = excluded.last_success,
			last_success_bytes = excluded.last_success_bytes
		WHERE x.last_success IS NULL OR x.last_success <= excluded.last_success;
	ELSIF TG_OP <> 'INSERT' AND OLD.status = 'complete' AND OLD.source_id IS NOT NULL THEN
		UPDATE tenant_backup.source_backup_state x
		SET (last_success, last_success_bytes) =
			(SELECT b.finished, b.bytes_in FROM tenant_backup.backups b
			 WHERE b.source_id = OLD.source_id AND b.status = 'complete' ORDER BY b.finished DESC LIMIT 1)
		WHERE x.source_id = OLD.source_id AND x.last_success IS NOT DISTINCT FROM OLD.finished;
	END IF;
	RETURN NULL;
END
$$;
CREATE TRIGGER backups_source_state_insert AFTER INSERT ON tenant_backup.backups
	FOR EACH ROW WHEN (NEW.status = 'complete') EXECUTE FUNCTION tenant_backup._source_state_backups();
CREATE TRIGGER backups_source_state_update AFTER UPDATE OF status, finished, bytes_in ON tenant_backup.backups
	FOR EACH ROW WHEN (NEW.status = 'complete' OR OLD.status = 'complete')
	EXECUTE FUNCTION tenant_backup._source_state_backups();
CREATE TRIGGER backups_source_state_delete AFTER DELETE ON tenant_backup.backups
	FOR EACH ROW WHEN (OLD.status = 'complete') EXECUTE FUNCTION tenant_backup._source_state_backups();

-- A backup job that ended (after its attempts; a cancel is no backup error) becomes its
-- database's last backup result if it is the newest.
CREATE FUNCTION tenant_backup._source_state_jobs()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO tenant_backup.source_backup_state AS x (source_id, last_job_finished, last_job_state, last_job_error)
	VALUES (NEW.source_id, NEW.finished, NEW.state, NEW.error)
	ON CONFLICT (source_id) DO UPDATE SET last_job_finished = excluded.last_job_finished,
		last_job_state = excluded.last_job_state, last_job_error = excluded.last_job_error
	WHERE x.last_job_finished IS NULL OR x.last_job_finished <= excluded.last_job_finished;
	RETURN NULL;
END
$$;
CREATE TRIGGER jobs_source_state AFTER INSERT OR UPDATE OF state, finished, error, cancelled_by ON tenant_backup.jobs
	FOR EACH ROW WHEN (NEW.kind = 'backup' AND NEW.state IN ('succeeded', 'failed') AND NEW.finished IS NOT NULL
					   AND NEW.cancelled_by IS NULL)
	EXECUTE FUNCTION tenant_backup._source_state_jobs();

INSERT INTO tenant_backup.source_backup_state (source_id, last_success, last_success_bytes, last_job_finished,
												last_job_state, last_job_error)
SELECT s.id, ok.finished, ok.bytes_in, j.finished, j.state, j.error
FROM tenant_backup.sources s
LEFT JOIN LATERAL (SELECT b.finished, b.bytes_in FROM tenant_backup.backups b
				   WHERE b.source_id = s.id AND b.status = 'complete' ORDER BY b.finished DESC LIMIT 1) ok ON true
LEFT JOIN LATERAL (SELECT x.finished, x.state, x.error FROM tenant_backup.jobs x
				   WHERE x.source_id = s.id AND x.kind = 'backup' AND x.state IN ('succeeded', 'failed')
				   AND x.finished IS NOT NULL ORDER BY x.finished DESC LIMIT 1) j ON true
WHERE ok.finished IS NOT NULL OR j.finished IS NOT NULL;

CREATE FUNCTION tenant_backup._jobs_queued_by()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.queued_by IS NULL THEN
		NEW.queued_by := CASE WHEN (SELECT a.backend_type FROM pg_stat_get_activity(pg_backend_pid()) a)
									= 'tenant_backup launcher' THEN 'schedule' ELSE session_user END;
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER jobs_queued_by BEFORE INSERT ON tenant_backup.jobs
	FOR EACH ROW EXECUTE FUNCTION tenant_backup._jobs_queued_by();

-- The schedule's own default, as tenant_set_schedule() and the launcher read it.
CREATE FUNCTION tenant_backup._default_schedule()
RETURNS interval LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(nullif(current_setting('tenant_backup.default_schedule', true), ''), '1 day')::interval
$$;

-- Paused or off: next_due stays at infinity whoever writes the row (the launcher too).
CREATE FUNCTION tenant_backup._tenants_schedule_hold()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.paused_since IS NOT NULL OR NEW.schedule_off THEN
		NEW.next_due := 'infinity';
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER tenants_schedule_hold BEFORE INSERT OR UPDATE ON tenant_backup.tenants
	FOR EACH ROW EXECUTE FUNCTION tenant_backup._tenants_schedule_hold();

-- A database that was never backed up is due within tenant_backup.first_backup_delay
-- of being added (default 5 minutes), not at the tenant's next daily slot.
CREATE FUNCTION tenant_backup._sources_first_backup()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	first_due timestamptz := now() + coalesce(nullif(current_setting('tenant_backup.first_backup_delay', true), ''),
											  '5 minutes')::interval;
BEGIN
	UPDATE tenant_backup.tenants t SET next_due = first_due
	WHERE t.name = NEW.tenant AND NOT t.schedule_off AND t.paused_since IS NULL
	  AND (t.next_due IS NULL OR t.next_due > first_due);
	RETURN NULL;
END
$$;
CREATE TRIGGER sources_first_backup AFTER INSERT ON tenant_backup.sources
	FOR EACH ROW EXECUTE FUNCTION tenant_backup._sources_first_backup();

-- ---- the operator's read access: views owned by the extension, without secrets

-- The built-in retention policy, in one place: _retention_policy() and tenant_overview
-- (whose readers may not read the catalog) both take it from here.
CREATE FUNCTION tenant_backup._builtin_retention()
RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$
	SELECT '{"keep_last": 7, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "max_age": null}'::jsonb
$$;

CREATE OR REPLACE FUNCTION tenant_backup._retention_policy(p_tenant text, OUT policy jsonb, OUT origin text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(t.retention, d.value, tenant_backup._builtin_retention()),
		   CASE WHEN t.retention IS NOT NULL THEN 'tenant' WHEN d.value IS NOT NULL THEN 'default' ELSE 'built-in' END
	FROM (SELECT p_tenant AS name) n
	LEFT JOIN tenant_backup.tenants t ON t.name = n.name
	LEFT JOIN tenant_backup.settings d ON d.name = 'default_retention'
$$;

CREATE VIEW tenant_backup.tenant_overview WITH (security_barrier) AS
SELECT t.name AS tenant, t.tier,
	   coalesce(t.schedule, tenant_backup._default_schedule()) AS schedule,
	   t.schedule IS NULL AS default_schedule,
	   CASE WHEN t.schedule_off THEN 'off' WHEN t.paused_since IS NOT NULL THEN 'paused' ELSE 'on' END AS schedule_state,
	   CASE WHEN t.next_due < 'infinity' THEN t.next_due END AS next_due,
	   t.paused_since, t.paused_by,
	   coalesce(t.retention, dflt.value, tenant_backup._builtin_retention()) AS retention,
	   CASE WHEN t.retention IS NOT NULL THEN 'tenant' WHEN dflt.value IS NOT NULL THEN 'default' ELSE 'built-in' END
		   AS retention_origin,
	   t.hold_reason, t.hold_since, t.hold_by,
	   CASE WHEN t.key_command IS NULL THEN 'master' ELSE 'command' END AS key_source,
	   k.active_key_id, k.active_key_created, k.keys_retired, k.keys_destroyed,
	   coalesce(d.databases, '[]') AS databases,
	   t.created
FROM tenant_backup.tenants t
LEFT JOIN tenant_backup.settings dflt ON dflt.name = 'default_retention'
LEFT JOIN LATERAL (SELECT max(x.key_id) FILTER (WHERE x.state = 'active') AS active_key_id,
						  max(x.created) FILTER (WHERE x.state = 'active') AS active_key_created,
						  count(*) FILTER (WHERE x.state = 'retired') AS keys_retired,
						  count(*) FILTER (WHERE x.state = 'destroyed') AS keys_destroyed
				   FROM tenant_backup.key_store x WHERE x.tenant = t.name) k ON true
LEFT JOIN LATERAL (SELECT jsonb_agg(jsonb_build_object('source_id', s.id, 'engine', s.engine, 'database', s.locator,
													   'options', s.options, 'added', s.created) ORDER BY s.id) AS databases
				   FROM tenant_backup.sources s WHERE s.tenant = t.name) d ON true;
COMMENT ON VIEW tenant_backup.tenant_overview IS
	'One row per tenant: tier, schedule (and whether it is the default), schedule_state on / paused / off, next due, retention policy and where it comes from, legal hold, key source and key states, its databases (locators never hold passwords). No key material, no key command, no sealed password.';

CREATE VIEW tenant_backup.job_log WITH (security_barrier) AS
SELECT j.id AS job_id, j.kind, j.tenant, j.engine, j.source_id, s.locator AS database, j.state,
	   j.cancelled_by IS NOT NULL AS cancelled, j.phase, j.attempts, j.max_attempts, j.error,
	   j.queued_by, j.cancelled_by,
	   CASE WHEN j.lease_owner LIKE 'agent:%' THEN split_part(j.lease_owner, ':', 2)
			WHEN j.lease_owner IS NOT NULL THEN 'background worker' END AS running_on,
	   j.created AS queued_at, j.not_before, j.started, j.finished,
	   CASE WHEN j.started IS NOT NULL THEN coalesce(j.finished, now()) - j.started END AS duration,
	   j.bytes_done, j.backup_id, b.bytes_in, b.bytes_stored, j.restore_target
FROM tenant_backup.jobs j
LEFT JOIN tenant_backup.sources s ON s.id = j.source_id
LEFT JOIN tenant_backup.backups b ON b.id = j.backup_id;
COMMENT ON VIEW tenant_backup.job_log IS
	'Every job (backup, restore, drill): state, whether it was cancelled and by whom, phase, attempts, last error, who queued it, where it runs (an agent''s name or the background worker), timings, bytes done and the backup''s sizes. Never a lease token, password or key.';

CREATE VIEW tenant_backup.audit_log WITH (security_barrier) AS
SELECT a.id, a.at, a.actor, a.action, a.tenant, a.detail, a.prev_hash, a.hash
FROM tenant_backup.audit a;
COMMENT ON VIEW tenant_backup.audit_log IS
	'The append-only audit trail with its hash chain (tenant_audit_verify() checks it).';

-- Agents that said nothing for a day drop out of the view; agent_registry keeps them.
CREATE OR REPLACE VIEW tenant_backup.agents AS
SELECT r.name, r.host, r.engines, r.version, r.started, r.last_seen, now() - r.last_seen AS silent_for,
	   (SELECT count(*) FROM tenant_backup.jobs j WHERE j.state = 'running'
		AND j.lease_owner LIKE 'agent:' || r.name || ':%') AS running_jobs,
	   r.jobs_done, r.jobs_failed
FROM tenant_backup.agent_registry r
WHERE r.last_seen > now() - interval '1 day';
COMMENT ON VIEW tenant_backup.agents IS
	'Agents seen in the last day: their last heartbeat, running jobs and totals (older ones stay in agent_registry).';

-- Why the queued jobs of an engine may wait for ever: no agent for it seen lately. NULL
-- for postgres (the extension's own workers) or while an agent was seen in 5 minutes.
CREATE FUNCTION tenant_backup._agent_missing(p_engine text, p_last_seen timestamptz)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN p_engine = 'postgres' THEN NULL
				WHEN p_last_seen IS NULL THEN format('no agent for %s has ever been seen', p_engine)
				WHEN p_last_seen < now() - interval '5 minutes'
				THEN format('no agent for %s has been seen for %s min', p_engine,
							floor(extract(epoch FROM now() - p_last_seen) / 60)) END
$$;

DROP VIEW tenant_backup.status;
CREATE VIEW tenant_backup.status WITH (security_barrier) AS
-- MATERIALIZED: once per query, not a function call per row
WITH dflt AS MATERIALIZED (SELECT tenant_backup._default_schedule() AS every),
agent_seen AS (SELECT e.engine, max(r.last_seen) AS last_seen
					FROM tenant_backup.agent_registry r, unnest(r.engines) e(engine) GROUP BY e.engine),
active AS (SELECT j.source_id,
				  count(*) FILTER (WHERE j.state = 'queued') AS queued_jobs,
				  min(j.created) FILTER (WHERE j.state = 'queued') AS oldest_queued,
				  min(j.not_before) FILTER (WHERE j.state = 'queued' AND j.not_before > now()) AS next_retry,
				  (array_agg(j.error ORDER BY j.id) FILTER (WHERE j.state = 'queued' AND j.error IS NOT NULL))[1]
					  AS retry_error,
				  (array_agg(j ORDER BY j.id) FILTER (WHERE j.state = 'running'))[1] AS running,
				  -- what a running restore or drill reads: its backup's size
				  (array_agg(rb.bytes_in ORDER BY j.id) FILTER (WHERE j.state = 'running'))[1] AS running_backup_bytes
		   FROM tenant_backup.jobs j LEFT JOIN tenant_backup.backups rb ON rb.id = j.backup_id AND j.kind <> 'backup'
		   WHERE j.state IN ('queued', 'running') GROUP BY j.source_id),
-- The newest finished restore and drill of each database: few rows, joined by hash.
other_last AS (SELECT DISTINCT ON (j.source_id, j.kind) j.source_id, j.kind, j.state, j.error
			   FROM tenant_backup.jobs j
			   WHERE j.kind <> 'backup' AND j.state IN ('succeeded', 'failed') AND j.cancelled_by IS NULL
			   ORDER BY j.source_id, j.kind, j.finished DESC),
other_failures AS (SELECT o.source_id,
						  max(o.error) FILTER (WHERE o.kind = 'restore' AND o.state = 'failed') AS restore_error,
						  max(o.error) FILTER (WHERE o.kind = 'drill' AND o.state = 'failed') AS drill_error
				   FROM other_last o GROUP BY o.source_id)
SELECT t.name AS tenant,
	   s.engine,
	   s.id AS source_id,
	   s.locator,
	   st.last_success,
	   now() - st.last_success AS age,
	   t.next_due,
	   CASE WHEN st.last_job_state = 'failed' THEN st.last_job_error END AS last_error,
	   (a.running).id AS running_job,
	   (a.running).kind AS running_kind,
	   (a.running).bytes_done AS running_bytes,
	   CASE WHEN (a.running).lease_owner LIKE 'agent:%' THEN split_part((a.running).lease_owner, ':', 2)
			WHEN (a.running).lease_owner IS NOT NULL THEN 'background worker' END AS running_on,
	   wal.pending AS wal_pending,
	   wal.oldest_pending AS wal_oldest_pending,
	   wal.last_archived AS wal_last_archived,
	   wal.last_failure AS wal_last_failure,
	   wal.gap AS wal_gap,
	   CASE WHEN t.schedule_off THEN 'off' WHEN t.paused_since IS NOT NULL THEN 'paused' ELSE 'on' END AS schedule_state,
	   -- ages compared as intervals: timestamptz minus an interval of days converts time zones, per row
	   CASE WHEN st.last_success IS NULL THEN now() - s.created > interval '1 hour'
			ELSE now() - st.last_success > 2 * coalesce(t.schedule, dflt.every) END AS overdue,
	   CASE WHEN st.last_job_state = 'failed' THEN st.last_job_finished END AS last_error_at,
	   other.restore_error AS last_restore_error,
	   other.drill_error AS last_drill_error,
	   (a.running).phase AS running_phase,
	   (a.running).started AS running_since,
	   CASE WHEN (a.running).kind = 'backup' THEN st.last_success_bytes ELSE a.running_backup_bytes END AS expected_bytes,
	   rate.bytes_per_second AS rate_bytes_per_second,
	   CASE WHEN rate.bytes_per_second > 0 AND (a.running).kind = 'backup' AND st.last_success_bytes > (a.running).bytes_done
			THEN make_interval(secs => (st.last_success_bytes - (a.running).bytes_done) / rate.bytes_per_second) END AS eta,
	   coalesce(a.queued_jobs, 0) AS queued_jobs,
	   a.oldest_queued,
	   a.next_retry,
	   a.retry_error,
	   CASE WHEN a.queued_jobs > 0 THEN tenant_backup._agent_missing(s.engine, seen.last_seen) END AS waiting_for_agent
FROM tenant_backup.tenants t
JOIN tenant_backup.sources s ON s.tenant = t.name
CROSS JOIN dflt
LEFT JOIN tenant_backup.source_backup_state st ON st.source_id = s.id
LEFT JOIN active a ON a.source_id = s.id
LEFT JOIN other_failures other ON other.source_id = s.id
LEFT JOIN agent_seen seen ON seen.engine = s.engine
LEFT JOIN LATERAL (SELECT (a.running).bytes_done / nullif(extract(epoch FROM now() - (a.running).started), 0)
						  AS bytes_per_second) rate ON true
LEFT JOIN tenant_backup._wal_archive_lag() wal ON wal.tenant = t.name AND s.engine = 'postgres';
COMMENT ON VIEW tenant_backup.status IS
	'Per tenant database: last successful backup and its age, next due, schedule_state, overdue (the last success is older than twice the schedule, or there is none and the database was added over an hour ago), the last backup error (a failed newest backup job) kept apart from the last restore and drill errors, the running job with its phase, bytes done, expected total (the previous backup''s bytes), rate and ETA and who runs it, queued jobs with the next retry and the last attempt''s error, and waiting_for_agent when no agent for the engine was seen lately; for the dedicated tenant whose WAL this cluster archives, the WAL archiver''s state.';

GRANT SELECT ON tenant_backup.status, tenant_backup.tenant_overview, tenant_backup.job_log, tenant_backup.audit_log
	TO tenant_backup_operator;
-- A view's functions run with its reader's rights: these read no table.
REVOKE ALL ON FUNCTION tenant_backup._default_schedule(), tenant_backup._agent_missing(text, timestamptz),
	tenant_backup._builtin_retention() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup._default_schedule(), tenant_backup._agent_missing(text, timestamptz),
	tenant_backup._builtin_retention() TO tenant_backup_operator;

-- ---- control: cancel a job, pause a schedule, switch it off

CREATE FUNCTION tenant_backup.tenant_cancel(job_id bigint)
RETURNS tenant_backup.job_log LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs;
	why text := format('cancelled by %s', session_user);
	result tenant_backup.job_log;
BEGIN
	SELECT * INTO j FROM tenant_backup.jobs x WHERE x.id = tenant_cancel.job_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'job % does not exist', job_id
			USING ERRCODE = 'undefined_object', HINT = 'tenant_backup.job_log lists the jobs.';
	END IF;
	IF j.state NOT IN ('queued', 'running') THEN
		RAISE EXCEPTION 'job % (% of tenant "%") already %', job_id, j.kind, j.tenant, j.state
			USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Only a queued or running job can be cancelled.';
	END IF;
	-- The lease goes with the state: the worker or agent holding it finds out at its
	-- next renewal, stops, and can record nothing any more.
	UPDATE tenant_backup.jobs x SET state = 'failed', error = why, cancelled_by = session_user, finished = now(),
		lease_owner = NULL, lease_expires = NULL
	WHERE x.id = j.id;
	UPDATE tenant_backup.backups b SET status = 'failed', finished = now(), error = why
	WHERE b.job_id = j.id AND b.status = 'running';
	PERFORM tenant_backup._audit('job cancelled', j.tenant,
		jsonb_build_object('job', j.id, 'kind', j.kind, 'engine', j.engine, 'was', j.state, 'attempt', j.attempts,
						   'running_on', CASE WHEN j.lease_owner LIKE 'agent:%' THEN split_part(j.lease_owner, ':', 2)
											  WHEN j.lease_owner IS NOT NULL THEN 'background worker' END));
	SELECT * INTO result FROM tenant_backup.job_log l WHERE l.job_id = j.id;
	RETURN result;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_cancel(bigint) IS
	'Cancels a job: a queued one at once; a running one loses its lease, so its worker or agent stops at its next renewal (within seconds) and its unfinished object is never recorded. The job ends failed ("cancelled by <user>"), its running backup failed; audited. Returns the job as tenant_backup.job_log shows it.';

-- When a tenant whose schedule comes back is next due: at once if it is overdue by its
-- schedule, else at its next slot.
CREATE FUNCTION tenant_backup._schedule_resume_due(p_tenant text, p_every interval)
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN EXISTS (SELECT 1 FROM tenant_backup.sources s WHERE s.tenant = p_tenant
							 AND coalesce((SELECT max(b.finished) FROM tenant_backup.backups b
										   WHERE b.source_id = s.id AND b.status = 'complete'), '-infinity')
								 < now() - p_every)
				THEN now() ELSE tenant_backup._next_due(p_tenant, p_every, now()) END
$$;

CREATE FUNCTION tenant_backup.tenant_pause(tenant text)
RETURNS tenant_backup.tenant_overview LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants := tenant_backup._tenant_check(tenant);
	result tenant_backup.tenant_overview;
BEGIN
	IF t.paused_since IS NOT NULL THEN
		RAISE EXCEPTION 'the schedule of tenant "%" is already paused (since %, by %)', tenant, t.paused_since, t.paused_by
			USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'tenant_backup.tenant_resume() resumes it.';
	END IF;
	UPDATE tenant_backup.tenants x SET paused_since = now(), paused_by = session_user WHERE x.name = tenant;
	PERFORM tenant_backup._audit('schedule paused', tenant, jsonb_build_object('next_due_was', t.next_due));
	SELECT * INTO result FROM tenant_backup.tenant_overview o WHERE o.tenant = tenant_pause.tenant;
	RETURN result;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_pause(text) IS
	'Pauses the tenant''s built-in schedule: no scheduled backup is queued until tenant_resume(). Jobs already queued or running go on (tenant_cancel() stops them); tenant_backup() still works. Audited.';

CREATE FUNCTION tenant_backup.tenant_resume(tenant text)
RETURNS tenant_backup.tenant_overview LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants := tenant_backup._tenant_check(tenant);
	result tenant_backup.tenant_overview;
BEGIN
	IF t.paused_since IS NULL THEN
		RAISE EXCEPTION 'the schedule of tenant "%" is not paused', tenant
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	UPDATE tenant_backup.tenants x SET paused_since = NULL, paused_by = NULL,
		next_due = tenant_backup._schedule_resume_due(x.name, coalesce(x.schedule, tenant_backup._default_schedule()))
	WHERE x.name = tenant;
	PERFORM tenant_backup._audit('schedule resumed', tenant,
								 jsonb_build_object('paused_since', t.paused_since, 'paused_by', t.paused_by));
	SELECT * INTO result FROM tenant_backup.tenant_overview o WHERE o.tenant = tenant_resume.tenant;
	RETURN result;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_resume(text) IS
	'Resumes a paused schedule: due at once if a database of the tenant is older than its schedule, else at its next slot. Audited.';

CREATE OR REPLACE FUNCTION tenant_backup.tenant_set_schedule(tenant text, every interval)
RETURNS tenant_backup.tenants LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants;
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	IF every IS NOT NULL AND every < interval '1 second' THEN
		RAISE EXCEPTION 'schedule interval % is too short', every
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Use at least 1 second; NULL means the default, ''off'' none.';
	END IF;
	UPDATE tenant_backup.tenants SET schedule = every, schedule_off = false,
		next_due = tenant_backup._next_due(tenants.name, coalesce(every, tenant_backup._default_schedule()), now())
	WHERE name = tenant RETURNING * INTO t;
	PERFORM tenant_backup._audit('schedule set', tenant, jsonb_build_object('every', every));
	RETURN t;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_set_schedule(text, interval) IS
	'Backs the tenant up every interval (NULL: tenant_backup.default_schedule), starting at an offset derived from its name; switches an ''off'' schedule back on (a pause stays until tenant_resume()).';

CREATE FUNCTION tenant_backup.tenant_set_schedule(tenant text, every text)
RETURNS tenant_backup.tenants LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants;
	period interval;
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	IF lower(btrim(every)) = 'off' THEN
		UPDATE tenant_backup.tenants x SET schedule_off = true WHERE x.name = tenant RETURNING * INTO t;
		PERFORM tenant_backup._audit('schedule set', tenant, jsonb_build_object('every', 'off'));
		RETURN t;
	END IF;
	BEGIN
		period := every::interval;
	EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
		RAISE EXCEPTION 'invalid schedule for tenant "%"', tenant
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give an interval such as ''6 hours'', NULL for tenant_backup.default_schedule, or ''off'' for tenants backed up by pg_cron only.';
	END;
	RETURN tenant_backup.tenant_set_schedule(tenant, period);
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_set_schedule(text, text) IS
	'The text form: an interval (''6 hours''), NULL for tenant_backup.default_schedule, or ''off'': no built-in schedule, for tenants whose backups pg_cron (or the application) starts with tenant_backup().';

-- ---- check(): is this installation able to back up and restore, now

CREATE FUNCTION tenant_backup._check_storage()
RETURNS TABLE (name text, status text, detail text, hint text) LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_check_storage';
COMMENT ON FUNCTION tenant_backup._check_storage() IS
	'check(): tenant_backup.storage opens, and a write, read, list and delete of a probe object _check-<random>.probe at its root succeed as the server''s own user.';

CREATE FUNCTION tenant_backup._check_master_key(p_tenants text[], p_key_ids text[])
RETURNS TABLE (name text, status text, detail text, hint text) LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_check_master_key';
COMMENT ON FUNCTION tenant_backup._check_master_key(text[], text[]) IS
	'check(): the master key is configured and loads (a key file is 0600 and the server''s), and it opens the tenant keys <tenant>/keys/<key id>.json in storage (p_tenants and p_key_ids side by side; NULL: none).';

CREATE FUNCTION tenant_backup._check_tools()
RETURNS TABLE (name text, status text, detail text, hint text) LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_check_tools';
COMMENT ON FUNCTION tenant_backup._check_tools() IS
	'check(): pg_dump and pg_restore in tenant_backup.bin_dir run, and are not older than this server.';

CREATE FUNCTION tenant_backup.check()
RETURNS TABLE (name text, status text, detail text, hint text) LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e record;
	wrong_master bigint;
	master_id text;
BEGIN
	IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
	   AND NOT pg_has_role(session_user, 'tenant_backup_operator', 'MEMBER') THEN
		RAISE EXCEPTION 'only a superuser or a member of tenant_backup_operator can run tenant_backup.check()'
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	RETURN QUERY SELECT * FROM tenant_backup._check_storage();
	-- The catalog's master-wrapped keys name the master key that wraps them; storage's
	-- copies of the newest of them are read back and compared (a sample: one per tenant, 20 tenants).
	master_id := (SELECT c.detail FROM tenant_backup._check_master_key(NULL, NULL) c WHERE c.name = 'master key id');
	SELECT count(*) INTO wrong_master FROM tenant_backup.key_store k
	WHERE k.source = 'master' AND k.state <> 'destroyed' AND k.wrapped->>'master_key_id' IS DISTINCT FROM master_id;
	RETURN QUERY SELECT c.* FROM
		(SELECT coalesce(array_agg(k.tenant), '{}') AS tenants, coalesce(array_agg(k.key_id), '{}') AS key_ids
		 FROM (SELECT DISTINCT ON (x.tenant) x.tenant, x.key_id FROM tenant_backup.key_store x
			   WHERE x.source = 'master' AND x.state = 'active' ORDER BY x.tenant, x.created DESC LIMIT 20) k) sample,
		LATERAL tenant_backup._check_master_key(sample.tenants, sample.key_ids) c WHERE c.name <> 'master key id';
	IF master_id IS NOT NULL THEN
		RETURN QUERY SELECT 'catalog keys'::text, CASE WHEN wrong_master = 0 THEN 'ok' ELSE 'error' END,
			CASE WHEN wrong_master = 0 THEN format('every tenant key wrapped by a master key is wrapped by %s', master_id)
				 ELSE format('%s tenant keys are wrapped by another master key than %s', wrong_master, master_id) END,
			CASE WHEN wrong_master > 0 THEN 'tenant_backup.master_key_file points at another key than the one that wrapped them: point it at the right file, or finish tenant_rotate_master_key().' END;
	END IF;
	RETURN QUERY SELECT * FROM tenant_backup._check_tools();
	-- settings
	RETURN QUERY SELECT 'shared_preload_libraries'::text,
		CASE WHEN current_setting('shared_preload_libraries') ~ '(^|[\s,])tenant_backup($|[\s,])' THEN 'ok' ELSE 'error' END,
		format('shared_preload_libraries = ''%s''', current_setting('shared_preload_libraries')),
		CASE WHEN current_setting('shared_preload_libraries') !~ '(^|[\s,])tenant_backup($|[\s,])'
			 THEN 'Add tenant_backup to shared_preload_libraries and restart: without its workers nothing runs.' END;
	RETURN QUERY SELECT 'max_workers'::text,
		CASE WHEN current_setting('tenant_backup.max_workers')::int + 2 > current_setting('max_worker_processes')::int
			 THEN 'warning' ELSE 'ok' END,
		format('tenant_backup.max_workers = %s, max_worker_processes = %s', current_setting('tenant_backup.max_workers'),
			   current_setting('max_worker_processes')),
		CASE WHEN current_setting('tenant_backup.max_workers')::int + 2 > current_setting('max_worker_processes')::int
			 THEN 'Raise max_worker_processes to at least tenant_backup.max_workers + 2 (the launcher and a request worker), or jobs wait for a free slot.' END;
	RETURN QUERY SELECT 'lease_timeout'::text,
		CASE WHEN current_setting('tenant_backup.lease_timeout')::interval < 2 * current_setting('tenant_backup.naptime')::interval
			 THEN 'warning' ELSE 'ok' END,
		format('tenant_backup.lease_timeout = %s, naptime = %s', current_setting('tenant_backup.lease_timeout'),
			   current_setting('tenant_backup.naptime')),
		CASE WHEN current_setting('tenant_backup.lease_timeout')::interval < 2 * current_setting('tenant_backup.naptime')::interval
			 THEN 'A lease shorter than two launcher rounds expires before it is looked at: raise tenant_backup.lease_timeout.' END;
	-- archive_library for the dedicated tenants' PostgreSQL clusters
	IF EXISTS (SELECT 1 FROM tenant_backup.tenants t JOIN tenant_backup.sources s ON s.tenant = t.name
			   WHERE t.tier = 'dedicated' AND s.engine = 'postgres') THEN
		RETURN QUERY
			SELECT 'wal archive'::text,
				CASE WHEN current_setting('archive_library') <> 'tenant_backup' OR current_setting('archive_mode') = 'off'
						  OR w.tenant IS NULL THEN 'warning'
					 WHEN w.gap IS NOT NULL OR w.last_failure IS NOT NULL THEN 'error' ELSE 'ok' END,
				CASE WHEN current_setting('archive_library') <> 'tenant_backup' OR current_setting('archive_mode') = 'off'
					 THEN format('archive_mode = %s, archive_library = ''%s''', current_setting('archive_mode'),
								 current_setting('archive_library'))
					 WHEN w.tenant IS NULL THEN 'tenant_backup.archive_tenant is not set'
					 ELSE format('archiving tenant "%s": %s files waiting%s%s', w.tenant, w.pending,
								 coalesce(', last failure ' || w.last_failure, ''), coalesce(', gap: ' || w.gap, '')) END,
				CASE WHEN current_setting('archive_library') <> 'tenant_backup' OR current_setting('archive_mode') = 'off'
						  OR w.tenant IS NULL
					 THEN 'A dedicated tenant''s cluster archives its WAL with archive_mode = on, archive_library = ''tenant_backup'' and tenant_backup.archive_tenant on that cluster; if this cluster is not one, ignore this.'
					 WHEN w.gap IS NOT NULL THEN 'Take a base backup of the tenant (tenant_backup()): WAL before the gap cannot be replayed past it.'
					 WHEN w.last_failure IS NOT NULL THEN 'See the server log for why archiving failed.' END
			FROM (SELECT 1) one LEFT JOIN tenant_backup._wal_archive_lag() w ON true;
	END IF;
	-- an agent alive for every engine in use other than postgres
	FOR e IN SELECT DISTINCT s.engine,
					(SELECT max(r.last_seen) FROM tenant_backup.agent_registry r WHERE s.engine = ANY (r.engines)) AS seen
			 FROM tenant_backup.sources s WHERE s.engine <> 'postgres' ORDER BY s.engine
	LOOP
		RETURN QUERY SELECT 'agents ' || e.engine,
			CASE WHEN tenant_backup._agent_missing(e.engine, e.seen) IS NULL THEN 'ok' ELSE 'error' END,
			coalesce(tenant_backup._agent_missing(e.engine, e.seen),
					 format('an agent for %s was seen %s ago', e.engine, date_trunc('second', now() - e.seen))),
			CASE WHEN tenant_backup._agent_missing(e.engine, e.seen) IS NOT NULL
				 THEN format('Start tenant-backup-agent-%s for the %s databases: their jobs wait until one claims them.',
							 e.engine, e.engine) END;
	END LOOP;
END
$$;
COMMENT ON FUNCTION tenant_backup.check() IS
	'Like pgbackrest check: one row per check (name, ok / warning / error, detail, hint) — settings, a storage write/read/list/delete round trip as the server''s user, the master key (present, 0600, the one wrapping the tenant keys in the catalog and in storage), pg_dump and pg_restore in bin_dir, the WAL archiver for dedicated tenants, an agent alive per engine in use. Superuser or tenant_backup_operator; never shows a secret.';

REVOKE ALL ON FUNCTION tenant_backup._jobs_queued_by(), tenant_backup._source_state_backups(),
	tenant_backup._source_state_jobs(), tenant_backup._tenants_schedule_hold(), tenant_backup._sources_first_backup(), tenant_backup._schedule_resume_due(text, interval),
	tenant_backup.tenant_cancel(bigint), tenant_backup.tenant_pause(text), tenant_backup.tenant_resume(text),
	tenant_backup.tenant_set_schedule(text, text), tenant_backup._check_storage(),
	tenant_backup._check_master_key(text[], text[]), tenant_backup._check_tools(), tenant_backup.check() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.tenant_cancel(bigint), tenant_backup.tenant_pause(text),
	tenant_backup.tenant_resume(text), tenant_backup.tenant_set_schedule(text, text), tenant_backup.check()
	TO tenant_backup_operator;

-- ---------------------------------------------------------------- metrics

-- Failed backup jobs per database, for the failure counts of every scrape: failures
-- are few, so this stays small however long the job history grows.
CREATE INDEX jobs_backup_failed ON tenant_backup.jobs (source_id, finished)
	WHERE kind = 'backup' AND state = 'failed' AND cancelled_by IS NULL;

-- A label value of the Prometheus text format, quoted: backslash, double quote and
-- line feed escaped (tenant and agent names are validated already; escaped anyway).
CREATE FUNCTION tenant_backup._metrics_label(p_value text)
RETURNS text LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT '"' || replace(replace(replace(p_value, '\', '\\'), '"', '\"'), E'\n', '\n') || '"'
$$;
COMMENT ON FUNCTION tenant_backup._metrics_label(text) IS
	'A label value in the Prometheus text exposition format: double-quoted, with \, " and line feeds escaped.';

-- One query over the base tables (not the status view): per database (tenant, engine,
-- source id; never a locator), per archived tenant, per agent and per engine served by
-- agents. audit_ok and audit_verified_at come from the caller's cached
-- tenant_audit_verify() (the metrics worker runs it every few minutes): NULL leaves the
-- audit metrics out.
CREATE FUNCTION tenant_backup._metrics(audit_ok boolean DEFAULT NULL, audit_verified_at timestamptz DEFAULT NULL)
RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH active AS (
		SELECT j.source_id, count(*) FILTER (WHERE j.state = 'queued') AS queued,
			   count(*) FILTER (WHERE j.state = 'running') AS running
		FROM tenant_backup.jobs j WHERE j.state IN ('queued', 'running') GROUP BY j.source_id),
	per_source AS (
		SELECT '{tenant=' || tenant_backup._metrics_label(s.tenant) || ',engine=' || tenant_backup._metrics_label(s.engine)
				   || ',source_id="' || s.id || '"}' AS labels,
			   last_ok.started, last_ok.finished, last_ok.bytes_in, last_ok.bytes_stored,
			   coalesce(t.schedule, tenant_backup._default_schedule()) AS schedule,
			   -- the status view's rule: older than twice the schedule, or never and added over an hour ago
			   CASE WHEN last_ok.finished IS NULL THEN s.created < now() - interval '1 hour'
					ELSE last_ok.finished < now() - 2 * coalesce(t.schedule, tenant_backup._default_schedule()) END
				   AS overdue,
			   failures.total AS failures_total, failures.since_success AS consecutive_failures,
			   coalesce(a.queued, 0) AS queued, coalesce(a.running, 0) AS running
		FROM tenant_backup.sources s
		JOIN tenant_backup.tenants t ON t.name = s.tenant
		LEFT JOIN LATERAL (SELECT b.started, b.finished, b.bytes_in, b.bytes_stored FROM tenant_backup.backups b
						   WHERE b.source_id = s.id AND b.status = 'complete'
						   ORDER BY b.finished DESC LIMIT 1) last_ok ON true
		CROSS JOIN LATERAL (SELECT count(*) AS total,
								   count(*) FILTER (WHERE j.finished > coalesce(last_ok.finished, '-infinity'))
									   AS since_success
							FROM tenant_backup.jobs j
							WHERE j.source_id = s.id AND j.kind = 'backup' AND j.state = 'failed'
							AND j.cancelled_by IS NULL) failures
		LEFT JOIN active a ON a.source_id = s.id),
	wal AS (
		SELECT '{tenant=' || tenant_backup._metrics_label(w.tenant) || ',engine="postgres"}' AS labels, w.*
		FROM tenant_backup._wal_archive_lag() w WHERE w.tenant IS NOT NULL),
	agents AS (
		SELECT '{agent=' || tenant_backup._metrics_label(r.name) || '}' AS labels, r.last_seen, r.jobs_done,
			   r.jobs_failed,
			   (SELECT count(*) FROM tenant_backup.jobs j WHERE j.state = 'running'
				AND j.lease_owner LIKE 'agent:' || r.name || ':%') AS running
		FROM tenant_backup.agent_registry r WHERE r.last_seen > now() - interval '1 day'),
	engines AS (
		SELECT '{engine=' || tenant_backup._metrics_label(e.engine) || '}' AS labels,
			   (SELECT max(r.last_seen) FROM tenant_backup.agent_registry r WHERE e.engine = ANY (r.engines)) AS last_seen
		FROM (SELECT DISTINCT s.engine FROM tenant_backup.sources s WHERE s.engine <> 'postgres') e),
	samples(metric, labels, value) AS (
		SELECT v.metric, p.labels, v.value
		FROM per_source p CROSS JOIN LATERAL (VALUES
			('last_success_timestamp_seconds', extract(epoch FROM p.finished)),
			('last_success_age_seconds', extract(epoch FROM now() - p.finished)),
			('last_backup_duration_seconds', extract(epoch FROM p.finished - p.started)),
			('last_backup_input_bytes', p.bytes_in::numeric),
			('last_backup_stored_bytes', p.bytes_stored::numeric),
			('schedule_seconds', extract(epoch FROM p.schedule)),
			('backup_overdue', p.overdue::int::numeric),
			('backup_failures_total', p.failures_total::numeric),
			('backup_consecutive_failures', p.consecutive_failures::numeric),
			('jobs_queued', p.queued::numeric),
			('jobs_running', p.running::numeric)) v(metric, value)
		WHERE v.value IS NOT NULL
		UNION ALL
		SELECT v.metric, w.labels, v.value
		FROM wal w CROSS JOIN LATERAL (VALUES
			('wal_pending_files', w.pending::numeric),
			('wal_archive_lag_seconds', coalesce(extract(epoch FROM now() - w.oldest_pending), 0)),
			('wal_last_archived_timestamp_seconds', extract(epoch FROM w.last_archived)),
			('wal_archive_failing', (w.last_failure IS NOT NULL)::int::numeric),
			('wal_gap', (w.gap IS NOT NULL)::int::numeric)) v(metric, value)
		WHERE v.value IS NOT NULL
		UNION ALL
		SELECT v.metric, g.labels, v.value
		FROM agents g CROSS JOIN LATERAL (VALUES
			('agent_last_seen_timestamp_seconds', extract(epoch FROM g.last_seen)),
			('agent_jobs_done_total', g.jobs_done::numeric),
			('agent_jobs_failed_total', g.jobs_failed::numeric),
			('agent_jobs_running', g.running::numeric)) v(metric, value)
		UNION ALL
		SELECT 'engine_agent_last_seen_timestamp_seconds', e.labels, coalesce(extract(epoch FROM e.last_seen), 0)
		FROM engines e
		UNION ALL
		SELECT v.metric, '', v.value
		FROM (VALUES ('audit_chain_ok', audit_ok::int::numeric),
					 ('audit_chain_verified_timestamp_seconds', extract(epoch FROM audit_verified_at))) v(metric, value)
		WHERE audit_ok IS NOT NULL AND v.value IS NOT NULL),
	families(ord, metric, type, help) AS (VALUES
		(1, 'last_success_timestamp_seconds', 'gauge', 'When the newest complete backup of the database finished (Unix time).'),
		(2, 'last_success_age_seconds', 'gauge', 'Seconds since the newest complete backup of the database finished.'),
		(3, 'last_backup_duration_seconds', 'gauge', 'How long the newest complete backup took.'),
		(4, 'last_backup_input_bytes', 'gauge', 'Bytes dumped by the newest complete backup, before compression.'),
		(5, 'last_backup_stored_bytes', 'gauge', 'Bytes stored by the newest complete backup, compressed and encrypted.'),
		(6, 'schedule_seconds', 'gauge', 'The tenant''s backup interval (its schedule or tenant_backup.default_schedule).'),
		(7, 'backup_overdue', 'gauge', '1 when the newest complete backup is older than twice the schedule, or there is none an hour after the database was added.'),
		(8, 'backup_failures_total', 'counter', 'Backup jobs of the database that failed after all their attempts (cancelled ones not counted).'),
		(9, 'backup_consecutive_failures', 'gauge', 'Backup jobs of the database that failed since its newest complete backup.'),
		(10, 'jobs_queued', 'gauge', 'Jobs (backup, restore, drill) of the database waiting to start.'),
		(11, 'jobs_running', 'gauge', 'Jobs of the database running now.'),
		(12, 'wal_pending_files', 'gauge', 'WAL files of the archived dedicated tenant waiting to be archived.'),
		(13, 'wal_archive_lag_seconds', 'gauge', 'Age of the oldest WAL file waiting to be archived (0: none waiting).'),
		(14, 'wal_last_archived_timestamp_seconds', 'gauge', 'When the archiver last archived a WAL file (Unix time).'),
		(15, 'wal_archive_failing', 'gauge', '1 when the archiver''s last attempt failed.'),
		(16, 'wal_gap', 'gauge', '1 when the archive has a gap in the tenant''s WAL (until its next base backup).'),
		(17, 'agent_last_seen_timestamp_seconds', 'gauge', 'When the agent was last heard from (Unix time); agents silent for a day are left out.'),
		(18, 'agent_jobs_done_total', 'counter', 'Jobs the agent finished successfully.'),
		(19, 'agent_jobs_failed_total', 'counter', 'Jobs the agent reported as failed.'),
		(20, 'agent_jobs_running', 'gauge', 'Jobs the agent holds now.'),
		(21, 'engine_agent_last_seen_timestamp_seconds', 'gauge', 'When any agent for an engine in use was last heard from (Unix time; 0: never).'),
		(22, 'audit_chain_ok', 'gauge', '1 when tenant_audit_verify() last found the audit chain intact, 0 when broken.'),
		(23, 'audit_chain_verified_timestamp_seconds', 'gauge', 'When the audit chain was last verified (Unix time).'))
	SELECT string_agg(block, '' ORDER BY ord)
	FROM (SELECT f.ord,
				 format(E'# HELP tenant_backup_%s %s\n# TYPE tenant_backup_%s %s\n', f.metric, f.help, f.metric, f.type)
				 || coalesce(string_agg(format(E'tenant_backup_%s%s %s\n', s.metric, s.labels, s.value::float8), ''
										ORDER BY s.labels), '') AS block
		  FROM families f JOIN samples s ON s.metric = f.metric
		  GROUP BY f.ord, f.metric, f.type, f.help) b
$$;
COMMENT ON FUNCTION tenant_backup._metrics(boolean, timestamptz) IS
	'The Prometheus text exposition served at tenant_backup.metrics_address: per database (labels tenant, engine, source_id) the last success, its age, size and duration, the schedule, overdue, failures, queued and running jobs; the WAL archiver''s lag and gap; per agent last seen and jobs done; per engine the newest agent heartbeat; the audit chain state passed in by the caller. No locator, password or key.';

REVOKE ALL ON FUNCTION tenant_backup._metrics(boolean, timestamptz), tenant_backup._metrics_label(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup._metrics(boolean, timestamptz) TO tenant_backup_operator;

-- ---------------------------------------------------------------- restores: properties, journal, leftovers, databases
-- An in-place PostgreSQL restore journals each step here, committed before the step is
-- taken (extension/pg_swap.c): loading (a fresh database is being created and loaded),
-- swapping (live closed to connections, then both renames in one transaction), and how
-- it ended. A worker that died leaves its row at loading or swapping; the launcher
-- finishes it (_restore_swaps_recover).
CREATE TABLE tenant_backup.restore_swaps (
	job_id bigint PRIMARY KEY,
	tenant text NOT NULL,
	source_id bigint,
	local boolean NOT NULL,
	live text NOT NULL,
	fresh text NOT NULL,
	old text,
	step text NOT NULL CHECK (step IN ('loading', 'swapping', 'swapped', 'failed', 'rolled back', 'interrupted')),
	started timestamptz NOT NULL DEFAULT now(),
	updated timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenant_backup.restore_swaps IS
	'The journal of in-place PostgreSQL restores: per job the live database, the fresh one loaded beside it, the name the live one is kept under (old; NULL: it had been dropped and is recreated), and the last step begun (loading, swapping) or how it ended (swapped, failed, rolled back, interrupted: its worker died and the launcher found it).';
SELECT pg_catalog.pg_extension_config_dump('tenant_backup.restore_swaps', '');

-- What a dead worker left: its live database open to connections again, holding the old
-- data or the restored data (the renames are one transaction), and the journal saying
-- which. Runs in the launcher (a superuser), for databases of this cluster; a remote
-- server's row says interrupted and docs/restore.md says what to check there.
CREATE FUNCTION tenant_backup._restore_swaps_recover()
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r tenant_backup.restore_swaps;
	outcome text;
BEGIN
	FOR r IN SELECT s.* FROM tenant_backup.restore_swaps s
			 WHERE s.step IN ('loading', 'swapping')
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.jobs j WHERE j.id = s.job_id AND j.state IN ('queued', 'running'))
			 FOR UPDATE OF s SKIP LOCKED
	LOOP
		outcome := 'interrupted';
		IF r.local AND r.step = 'swapping' THEN
			IF EXISTS (SELECT 1 FROM pg_database WHERE datname = r.live AND NOT datallowconn) THEN
				EXECUTE format('ALTER DATABASE %I WITH ALLOW_CONNECTIONS true', r.live);
			END IF;
			outcome := CASE WHEN EXISTS (SELECT 1 FROM pg_database WHERE datname = r.fresh) THEN 'rolled back'
							ELSE 'swapped' END;
		END IF;
		UPDATE tenant_backup.restore_swaps SET step = outcome, updated = now() WHERE job_id = r.job_id;
		PERFORM tenant_backup._audit('restore recovered', r.tenant,
			jsonb_build_object('job_id', r.job_id, 'database', r.live, 'was', r.step, 'outcome', outcome,
							   'left', CASE WHEN outcome <> 'swapped' THEN r.fresh END));
	END LOOP;
END
$$;
COMMENT ON FUNCTION tenant_backup._restore_swaps_recover() IS
	'Finishes the journal rows of in-place restores whose worker died: the live database (of this cluster) accepts connections again; the row says swapped (live holds the restored data, the previous one is kept as old), rolled back (live holds its own data) or interrupted (the load did not finish; its fresh database is a leftover).';

-- Every database a restore or drill made beside a tenant's own on this cluster, by the
-- exact names the engine gave them (the journal's, or <db>_tb_drill_<job> of a drill
-- job of a database here); never a database that is itself a tenant's.
CREATE VIEW tenant_backup.scratch_databases WITH (security_barrier) AS
SELECT d.datname AS database, x.kind, x.job_id, x.tenant, j.kind AS job_kind, j.state AS job_state, x.restore_step,
	   pg_database_size(d.oid) AS bytes, x.since, now() - x.since AS age,
	   format('SELECT tenant_backup.tenant_remove_scratch(%L)', d.datname) AS remove_command
FROM (SELECT s.old AS name, 'old' AS kind, s.job_id, s.tenant, s.step AS restore_step, s.updated AS since
	  FROM tenant_backup.restore_swaps s WHERE s.local AND s.old IS NOT NULL AND s.step = 'swapped'
	  UNION ALL
	  SELECT s.fresh, 'new', s.job_id, s.tenant, s.step, s.updated
	  FROM tenant_backup.restore_swaps s WHERE s.local AND s.step NOT IN ('swapped', 'failed')
	  UNION ALL
	  SELECT dd.datname, 'drill', dj.id, dj.tenant, NULL, coalesce(dj.finished, dj.started, dj.created)
	  FROM pg_database dd
	  CROSS JOIN LATERAL regexp_match(dd.datname, '^(.+)_tb_drill_([0-9]{1,18})$') m
	  JOIN tenant_backup.jobs dj ON dj.id = m[2]::bigint AND dj.kind = 'drill'
	  JOIN tenant_backup.sources ds ON ds.id = dj.source_id AND ds.engine = 'postgres'
	  WHERE ds.locator !~ '=' AND ds.locator !~ '^postgres(ql)?://' AND starts_with(ds.locator, m[1])
	  AND (ds.locator = m[1] OR octet_length(m[1]) >= 37)) x
JOIN pg_database d ON d.datname = x.name
LEFT JOIN tenant_backup.jobs j ON j.id = x.job_id
WHERE NOT EXISTS (SELECT 1 FROM tenant_backup.sources t WHERE t.engine = 'postgres' AND t.locator = d.datname);
COMMENT ON VIEW tenant_backup.scratch_databases IS
	'Databases restores and drills left on this cluster: previous copies kept by an in-place restore (old, dropped by the launcher after tenant_backup.keep_old_copy), loads a crash interrupted or a failed swap left (new), drill scratch (drill); their tenant, job, size and age, and the call that removes one.';
GRANT SELECT ON tenant_backup.scratch_databases TO tenant_backup_operator;

-- Removals asked for by tenant_remove_scratch, done by the launcher (DROP DATABASE runs
-- in no function); a failed one records why and is tried again an hour later.
CREATE TABLE tenant_backup.scratch_removals (
	database text PRIMARY KEY,
	requested timestamptz NOT NULL DEFAULT now(),
	requested_by text NOT NULL DEFAULT session_user,
	failed_at timestamptz,
	error text
);
COMMENT ON TABLE tenant_backup.scratch_removals IS
	'Scratch databases to be dropped by the launcher (tenant_remove_scratch(), or kept copies past tenant_backup.keep_old_copy that failed to drop), with the last failure.';
SELECT pg_catalog.pg_extension_config_dump('tenant_backup.scratch_removals', '');

CREATE FUNCTION tenant_backup.tenant_remove_scratch(name text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v tenant_backup.scratch_databases;
BEGIN
	SELECT * INTO v FROM tenant_backup.scratch_databases s WHERE s.database = name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'database "%" is not a scratch database of a restore or drill', name
			USING ERRCODE = 'undefined_object', HINT = 'tenant_backup.scratch_databases lists them.';
	END IF;
	IF v.job_state IN ('queued', 'running') THEN
		RAISE EXCEPTION 'database "%" belongs to job %, which is %', name, v.job_id, v.job_state
			USING ERRCODE = 'object_in_use', HINT = 'Wait for the job to end, or cancel it with tenant_backup.tenant_cancel().';
	END IF;
	INSERT INTO tenant_backup.scratch_removals (database) VALUES (name)
	ON CONFLICT (database) DO UPDATE SET requested = now(), requested_by = session_user, failed_at = NULL, error = NULL;
	PERFORM tenant_backup._audit('scratch removal requested', v.tenant,
		jsonb_build_object('database', name, 'kind', v.kind, 'job_id', v.job_id, 'bytes', v.bytes));
	PERFORM pg_notify('tenant_backup_jobs', '');
	RETURN format('database "%s" (%s) is dropped by the launcher within tenant_backup.naptime', name,
				  pg_size_pretty(v.bytes));
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_remove_scratch(text) IS
	'Removes a scratch database listed in tenant_backup.scratch_databases (a kept old copy, an interrupted load, drill scratch): the launcher drops it at its next round. Refused while its job is queued or running; audited.';

-- The next scratch database the launcher drops: one asked for, else a kept copy older
-- than p_keep seconds (0: none); never one whose job is still queued or running.
CREATE FUNCTION tenant_backup._scratch_due(p_keep int)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT v.database FROM tenant_backup.scratch_databases v
	LEFT JOIN tenant_backup.scratch_removals r ON r.database = v.database
	WHERE coalesce(v.job_state, '') NOT IN ('queued', 'running')
	AND (r.failed_at IS NULL OR r.failed_at < now() - interval '1 hour')
	AND (r.database IS NOT NULL OR (p_keep > 0 AND v.kind = 'old' AND v.age > make_interval(secs => p_keep)))
	ORDER BY r.requested NULLS LAST, v.since LIMIT 1
$$;

-- What became of a drop: audited and forgotten, or its failure kept.
CREATE FUNCTION tenant_backup._scratch_dropped(p_database text, p_error text)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tenant text := (SELECT s.tenant FROM tenant_backup.restore_swaps s WHERE p_database IN (s.old, s.fresh) LIMIT 1);
BEGIN
	IF p_error IS NULL THEN
		DELETE FROM tenant_backup.scratch_removals WHERE database = p_database;
		PERFORM tenant_backup._audit('scratch database dropped', v_tenant, jsonb_build_object('database', p_database));
	ELSE
		INSERT INTO tenant_backup.scratch_removals (database, requested_by, failed_at, error)
		VALUES (p_database, 'tenant_backup.keep_old_copy', now(), p_error)
		ON CONFLICT (database) DO UPDATE SET failed_at = now(), error = p_error;
	END IF;
END
$$;

-- The newest complete backup of the database named by p_database (a source id or
-- locator) when p_backup_id is not given; a target restore of a tenant with several
-- databases of the engine must say which.
CREATE FUNCTION tenant_backup._restore_backup(p_tenant text, p_engine text, p_backup_id bigint, p_target text,
											  p_database text)
RETURNS bigint LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	src tenant_backup.sources;
	matches int;
	chosen bigint := p_backup_id;
	v_engine text;
BEGIN
	IF p_database IS NULL THEN
		v_engine := coalesce(p_engine, (SELECT b.engine FROM tenant_backup.backups b WHERE b.id = p_backup_id),
						   (SELECT b.engine FROM tenant_backup.backups b WHERE b.tenant = p_tenant
							AND b.status = 'complete' ORDER BY b.finished DESC, b.id DESC LIMIT 1));
		IF p_target IS NOT NULL AND p_backup_id IS NULL
		   AND (SELECT count(*) FROM tenant_backup.sources s WHERE s.tenant = p_tenant AND s.engine = v_engine) > 1 THEN
			RAISE EXCEPTION 'tenant "%" has several % databases: say which one to restore into "%"', p_tenant,
				v_engine, p_target
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Give database => its locator or source id (tenant_backup.tenant_backups() shows them), or backup_id =>.';
		END IF;
		RETURN chosen;
	END IF;
	SELECT count(*) INTO matches FROM tenant_backup.sources s
	WHERE s.tenant = p_tenant AND (p_engine IS NULL OR s.engine = p_engine)
	AND (s.id::text = p_database OR s.locator = p_database);
	IF matches <> 1 THEN
		RAISE EXCEPTION 'tenant "%" has % %database "%"', p_tenant, CASE WHEN matches = 0 THEN 'no' ELSE 'more than one' END,
			coalesce(p_engine || ' ', ''), p_database
			USING ERRCODE = 'undefined_object',
				  HINT = 'Name it by its locator or source id as tenant_backup.tenant_backups() shows them, with engine => if two engines share a locator.';
	END IF;
	SELECT s.* INTO src FROM tenant_backup.sources s
	WHERE s.tenant = p_tenant AND (p_engine IS NULL OR s.engine = p_engine)
	AND (s.id::text = p_database OR s.locator = p_database);
	IF chosen IS NOT NULL THEN
		IF NOT EXISTS (SELECT 1 FROM tenant_backup.backups b WHERE b.id = chosen AND b.source_id = src.id) THEN
			RAISE EXCEPTION 'backup % is not a backup of % database "%" of tenant "%"', chosen, src.engine,
				src.locator, p_tenant
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		RETURN chosen;
	END IF;
	SELECT b.id INTO chosen FROM tenant_backup.backups b
	WHERE b.source_id = src.id AND b.status = 'complete' ORDER BY b.finished DESC, b.id DESC LIMIT 1;
	IF chosen IS NULL THEN
		RAISE EXCEPTION '% database "%" of tenant "%" has no complete backup', src.engine, src.locator, p_tenant
			USING ERRCODE = 'no_data_found', HINT = 'Back it up first: tenant_backup.tenant_backup().';
	END IF;
	RETURN chosen;
END
$$;

COMMENT ON FUNCTION tenant_backup.tenant_restore(text, text, bigint, text, boolean, text) IS
	'Restores the latest complete backup (or backup_id; or the latest of database => a locator or source id). In place: loaded into a fresh database beside the live one with the backup''s database properties, swapped only after it loaded completely; the old one is kept as <name>_tb_old_<job>; a dropped database is recreated. With target: restored into that new database with the backup''s properties and grants, the live one untouched; a tenant with several databases of the engine must name one. See docs/restore.md.';
GRANT EXECUTE ON FUNCTION tenant_backup.tenant_restore(text, text, bigint, text, boolean, text) TO tenant_backup_operator;

DROP FUNCTION tenant_backup.tenant_restore_drill(text);
CREATE FUNCTION tenant_backup.tenant_restore_drill(tenant text, database text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	started timestamptz := clock_timestamp();
	job_ids bigint[];
	checks jsonb;
	all_ok boolean;
	drill_id bigint;
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	PERFORM tenant_backup._require_worker();
	SELECT array_agg(id) INTO job_ids
	FROM tenant_backup._run_request('drill', tenant, NULL,
									tenant_backup._restore_backup(tenant, NULL, NULL, NULL, database), NULL) id;
	SELECT jsonb_agg(jsonb_build_object(
			   'engine', j.engine, 'database', s.locator, 'source_id', j.source_id, 'backup_id', j.backup_id,
			   'backup_started', b.started, 'key_id', b.key_id, 'ok', j.state = 'succeeded', 'error', j.error,
			   'sha256', b.sha256, 'contents', b.contents, 'seconds', j.result->'seconds') ORDER BY j.id),
		   bool_and(j.state = 'succeeded')
	INTO checks, all_ok
	FROM tenant_backup.jobs j
	JOIN tenant_backup.backups b ON b.id = j.backup_id
	LEFT JOIN tenant_backup.sources s ON s.id = j.source_id
	WHERE j.id = ANY (job_ids);
	INSERT INTO tenant_backup.drills (tenant, at, finished, ok, checks)
	VALUES (tenant, started, clock_timestamp(), coalesce(all_ok, false), coalesce(checks, '[]'))
	RETURNING id INTO drill_id;
	PERFORM tenant_backup._audit('restore drill', tenant,
		jsonb_build_object('drill_id', drill_id, 'ok', coalesce(all_ok, false),
			'checks', (SELECT jsonb_agg(c - 'contents') FROM jsonb_array_elements(checks) c)));
	RETURN jsonb_build_object('tenant', tenant, 'drill_id', drill_id, 'ok', coalesce(all_ok, false),
							  'started', started, 'finished', clock_timestamp(), 'checks', coalesce(checks, '[]'));
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_restore_drill(text, text) IS
	'Restores the newest complete backup of each of the tenant''s databases (or of database => a locator or source id) into scratch, compares what loaded (row, document, key or file counts and the object''s SHA-256) with what the backup recorded when it was made, removes the scratch, and records the outcome (tenant_backup.drills and the audit log). Returns it; a failed check is ok = false, not an error. Cannot run inside a transaction block.';
GRANT EXECUTE ON FUNCTION tenant_backup.tenant_restore_drill(text, text) TO tenant_backup_operator;

DROP FUNCTION tenant_backup.tenant_backups(text);
CREATE FUNCTION tenant_backup.tenant_backups(tenant text)
RETURNS TABLE (id bigint, engine text, status text, started timestamptz, finished timestamptz, bytes_in bigint,
			   bytes_stored bigint, sha256 text, object_key text, key_id text, error text, source_id bigint,
			   database text)
LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	RETURN QUERY
		SELECT b.id, b.engine, b.status, b.started, b.finished, b.bytes_in, b.bytes_stored, b.sha256,
			   b.object_key, b.key_id, b.error, b.source_id, s.locator
		FROM tenant_backup.backups b LEFT JOIN tenant_backup.sources s ON s.id = b.source_id
		WHERE b.tenant = tenant_backups.tenant
		ORDER BY b.started DESC, b.id DESC;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_backups(text) IS
	'The tenant''s backups, newest first, each with the database it is of (source_id and its locator; NULL once that database was removed).';
GRANT EXECUTE ON FUNCTION tenant_backup.tenant_backups(text) TO tenant_backup_operator;

-- Removing a database of a tenant: no more backups of it are queued; its backups stay
-- (readable with the CLI's restore-direct) until the tenant's retention removes them.
-- Refused while one of its jobs runs.
CREATE FUNCTION tenant_backup.tenant_remove_database(tenant text, engine text, database text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	src tenant_backup.sources;
	kept bigint;
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	PERFORM tenant_backup._engine_check(engine);
	SELECT s.* INTO src FROM tenant_backup.sources s
	WHERE s.tenant = tenant_remove_database.tenant AND s.engine = tenant_remove_database.engine
	AND (s.id::text = database OR s.locator = database)
	FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'tenant "%" has no % database "%"', tenant, engine, database
			USING ERRCODE = 'undefined_object', HINT = 'tenant_backup.tenant_backups() and the status view show its databases.';
	END IF;
	IF EXISTS (SELECT 1 FROM tenant_backup.jobs j WHERE j.source_id = src.id AND j.state = 'running') THEN
		RAISE EXCEPTION 'a job of % database "%" of tenant "%" is running', engine, src.locator, tenant
			USING ERRCODE = 'object_in_use', HINT = 'Wait for it, or stop it with tenant_backup.tenant_cancel(), then remove the database.';
	END IF;
	SELECT count(*) INTO kept FROM tenant_backup.backups b WHERE b.source_id = src.id;
	-- Queued jobs go with it; its backups keep their rows (source_id becomes NULL).
	DELETE FROM tenant_backup.sources s WHERE s.id = src.id;
	PERFORM tenant_backup._audit('database removed', tenant,
		jsonb_build_object('engine', engine, 'locator', src.locator, 'source_id', src.id, 'backups_kept', kept));
	RETURN kept;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_remove_database(text, text, text) IS
	'Removes a database (by locator or source id) from the tenant: its backups are no longer scheduled, queued ones are dropped, its backups are kept under the tenant''s retention (readable with the CLI''s restore-direct). Refused while one of its jobs runs; audited. Returns how many backups were kept.';

REVOKE ALL ON FUNCTION tenant_backup._restore_swaps_recover(), tenant_backup._restore_backup(text, text, bigint, text, text),
	tenant_backup.tenant_remove_database(text, text, text), tenant_backup.tenant_backups(text),
	tenant_backup.tenant_restore_drill(text, text), tenant_backup.tenant_restore(text, text, bigint, text, boolean, text),
	tenant_backup.tenant_remove_scratch(text), tenant_backup._scratch_due(int), tenant_backup._scratch_dropped(text, text)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.tenant_remove_database(text, text, text), tenant_backup.tenant_remove_scratch(text)
	TO tenant_backup_operator;
-- ---------------------------------------------------------------- intents and janitor
-- Storage is acted on only after the catalog committed what it means: a function that
-- runs in the caller's transaction records an intent, the launcher acts on it after
-- commit and marks it done (a rolled-back transaction takes its intents with it). Key
-- documents, which must exist before a key is used, are written at once and removed
-- again if the transaction aborts (sql_api.c). The janitor removes unfinished writes
-- and objects no catalog row names.

CREATE TABLE tenant_backup.storage_intents (
	id bigserial PRIMARY KEY,
	-- No foreign key: the intents of a dropped tenant outlive it.
	tenant text NOT NULL,
	action text NOT NULL CHECK (action IN ('delete backup', 'delete prefix', 'active key')),
	object text,
	state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
	created timestamptz NOT NULL DEFAULT now(),
	created_by text NOT NULL DEFAULT session_user,
	attempts int NOT NULL DEFAULT 0,
	finished timestamptz,
	error text,
	CHECK ((action = 'active key') = (object IS NULL))
);
CREATE INDEX storage_intents_pending ON tenant_backup.storage_intents (id) WHERE state = 'pending';
COMMENT ON TABLE tenant_backup.storage_intents IS
	'Storage effects the catalog committed and the launcher carries out after commit: delete backup (an object and its manifest), delete prefix (every object under it), active key (write <tenant>/keys/active.json naming the catalog''s active key). error: why the last attempt failed; done rows go after 7 days.';
SELECT pg_catalog.pg_extension_config_dump('tenant_backup.storage_intents', '');
SELECT pg_catalog.pg_extension_config_dump('tenant_backup.storage_intents_id_seq', '');

CREATE FUNCTION tenant_backup._storage_list(p_prefix text, OUT key text, OUT bytes bigint, OUT modified timestamptz)
RETURNS SETOF record LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_storage_list';
COMMENT ON FUNCTION tenant_backup._storage_list(text) IS
	'Every object below a tenant''s prefix (not the hidden temporaries), with its size and modification time (NULL when storage does not say); raises if any part of it cannot be listed.';

CREATE FUNCTION tenant_backup._storage_unfinished(OUT key text, OUT upload text, OUT bytes bigint,
												  OUT modified timestamptz)
RETURNS SETOF record LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_storage_unfinished';
COMMENT ON FUNCTION tenant_backup._storage_unfinished() IS
	'Writes begun in storage and never committed nor aborted (a temporary file, an S3 multipart upload): the object each was for, its upload name, bytes and last change.';

CREATE FUNCTION tenant_backup._storage_unfinished_abort(p_key text, p_upload text)
RETURNS void LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_storage_unfinished_abort';
COMMENT ON FUNCTION tenant_backup._storage_unfinished_abort(text, text) IS
	'Removes an unfinished write listed by _storage_unfinished().';

CREATE FUNCTION tenant_backup._active_key_put(p_tenant text, p_key_id text)
RETURNS void LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_active_key_put';
COMMENT ON FUNCTION tenant_backup._active_key_put(text, text) IS
	'Writes <tenant>/keys/active.json naming p_key_id, sealed with the master key; the CLI and the WAL archiver seal new objects with the key it names.';

-- A new or changed key row: the tenant's active.json is written again after commit.
CREATE FUNCTION tenant_backup._key_store_intent()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO tenant_backup.storage_intents (tenant, action)
	SELECT NEW.tenant, 'active key'
	WHERE NOT EXISTS (SELECT 1 FROM tenant_backup.storage_intents i
					  WHERE i.tenant = NEW.tenant AND i.action = 'active key' AND i.state = 'pending');
	RETURN NULL;
END
$$;
CREATE TRIGGER key_store_active_key AFTER INSERT OR UPDATE OF state ON tenant_backup.key_store
	FOR EACH ROW WHEN (NEW.state = 'active') EXECUTE FUNCTION tenant_backup._key_store_intent();

-- Every tenant's active.json again (the launcher at start and after the master key changed).
CREATE FUNCTION tenant_backup._intent_active_keys()
RETURNS bigint LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	WITH queued AS (
		INSERT INTO tenant_backup.storage_intents (tenant, action)
		SELECT t.name, 'active key' FROM tenant_backup.tenants t
		WHERE NOT EXISTS (SELECT 1 FROM tenant_backup.storage_intents i
						  WHERE i.tenant = t.name AND i.action = 'active key' AND i.state = 'pending')
		RETURNING 1)
	SELECT count(*) FROM queued
$$;
COMMENT ON FUNCTION tenant_backup._intent_active_keys() IS
	'Queues the writing of every tenant''s keys/active.json (after a master key change it must be sealed with the new key).';

-- Carries out the pending intents, oldest first, each in a subtransaction: one that
-- fails keeps its error and is tried again next round; the others go on.
CREATE FUNCTION tenant_backup._intents_run()
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	i tenant_backup.storage_intents;
	active text;
	done bigint := 0;
BEGIN
	FOR i IN SELECT * FROM tenant_backup.storage_intents x WHERE x.state = 'pending' ORDER BY x.id
			 FOR UPDATE SKIP LOCKED
	LOOP
		BEGIN
			IF i.action = 'delete backup' THEN
				PERFORM tenant_backup._storage_delete(i.object);
			ELSIF i.action = 'delete prefix' THEN
				PERFORM tenant_backup._storage_delete_prefix(i.object);
			ELSE
				-- The catalog's active key now (a dropped tenant has none, and no active.json).
				active := (tenant_backup._active_key(i.tenant)).key_id;
				IF active IS NOT NULL THEN
					PERFORM tenant_backup._active_key_put(i.tenant, active);
				END IF;
			END IF;
			UPDATE tenant_backup.storage_intents SET state = 'done', finished = now(), attempts = attempts + 1,
				error = NULL
			WHERE id = i.id;
			done := done + 1;
		EXCEPTION WHEN OTHERS THEN
			UPDATE tenant_backup.storage_intents SET attempts = attempts + 1, error = SQLERRM WHERE id = i.id;
			RAISE WARNING 'tenant_backup: storage intent % (%) of tenant "%" failed: %', i.id, i.action, i.tenant, SQLERRM
				USING HINT = 'The launcher tries it again next round; tenant_backup.storage_intents shows it.';
		END;
	END LOOP;
	RETURN done;
END
$$;
COMMENT ON FUNCTION tenant_backup._intents_run() IS
	'Carries out the pending storage intents (delete an expired backup''s object, a destroyed key''s document, a dropped tenant''s prefix; write active.json) and marks them done; a failure stays pending with its error. Run by the launcher every round.';

-- 0.1.0's _expire with the storage deletions turned into intents: a failure or a
-- rollback after it leaves rows and objects as they were, and an expired row never
-- comes back pointing at nothing. bytes_stored: what the deletion frees.
CREATE OR REPLACE FUNCTION tenant_backup._expire(p_tenant text, p_actor text)
RETURNS TABLE (backup_id bigint, engine text, started timestamptz, object_key text, bytes_stored bigint, action text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	b record;
	k record;
BEGIN
	PERFORM 1 FROM tenant_backup.tenants t WHERE t.name = p_tenant AND t.hold_since IS NULL FOR UPDATE;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	FOR b IN SELECT * FROM tenant_backup._retention_plan(p_tenant) p WHERE NOT p.keep ORDER BY p.started, p.backup_id
	LOOP
		-- A backup a running job reads is left for the next pass.
		CONTINUE WHEN EXISTS (SELECT 1 FROM tenant_backup.jobs j WHERE j.backup_id = b.backup_id
							  AND j.kind <> 'backup' AND j.state IN ('queued', 'running'));
		IF b.object_key IS NOT NULL THEN
			INSERT INTO tenant_backup.storage_intents (tenant, action, object, created_by)
			VALUES (p_tenant, 'delete backup', b.object_key, p_actor);
		END IF;
		DELETE FROM tenant_backup.backups x WHERE x.id = b.backup_id;
		PERFORM tenant_backup._audit('backup expired', p_tenant,
			jsonb_build_object('backup_id', b.backup_id, 'engine', b.engine, 'status', b.status, 'started', b.started,
							   'object', b.object_key, 'bytes', coalesce(b.bytes_stored, 0)), p_actor);
		backup_id := b.backup_id; engine := b.engine; started := b.started; object_key := b.object_key;
		bytes_stored := coalesce(b.bytes_stored, 0); action := 'deleted';
		RETURN NEXT;
	END LOOP;
	-- A retired key no complete backup uses any more opens nothing that is kept. With
	-- archived WAL, only once a base backup taken well after the rotation is the oldest
	-- (the archiver picks a new key up within a minute).
	FOR k IN SELECT * FROM tenant_backup.key_store x
			 WHERE x.tenant = p_tenant AND x.state = 'retired'
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.backups y WHERE y.tenant = p_tenant AND y.key_id = x.key_id
							 AND y.status <> 'failed')
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.backups y WHERE y.tenant = p_tenant AND y.status = 'complete'
							 AND y.start_lsn IS NOT NULL AND y.started < x.retired + interval '5 minutes')
	LOOP
		INSERT INTO tenant_backup.storage_intents (tenant, action, object, created_by)
		VALUES (p_tenant, 'delete prefix', p_tenant || '/keys/' || k.key_id || '.json', p_actor);
		UPDATE tenant_backup.key_store x SET state = 'destroyed', destroyed = now(), wrapped = NULL
		WHERE x.tenant = p_tenant AND x.key_id = k.key_id;
		PERFORM tenant_backup._audit('key destroyed', p_tenant,
									 jsonb_build_object('key_id', k.key_id, 'reason', 'no backup uses it'), p_actor);
	END LOOP;
END
$$;
COMMENT ON FUNCTION tenant_backup._expire(text, text) IS
	'Removes from the catalog what retention does not keep (an audit row each) and the retired keys no backup needs; their objects and key documents are deleted from storage by the launcher once this commits (tenant_backup.storage_intents).';

-- 0.1.0's tenant_drop, which first lists everything it deletes (so that an unlistable
-- part refuses before any key is destroyed); storage it then cannot delete is left to
-- an intent the launcher finishes, and the certificate says what is pending.
CREATE OR REPLACE FUNCTION tenant_backup.tenant_drop(tenant text, confirm text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants := tenant_backup._tenant_check(tenant);
	key_ids text[];
	busy bigint;
	part text;
	gone record;
	objects bigint := 0;
	bytes bigint := 0;
	pending text[] := '{}';
	cert jsonb;
	cert_hash text;
BEGIN
	IF confirm IS DISTINCT FROM tenant THEN
		RAISE EXCEPTION 'tenant_drop needs confirm => ''%''', tenant USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Dropping destroys every backup of the tenant for good; repeat its name to confirm.';
	END IF;
	PERFORM 1 FROM tenant_backup.tenants x WHERE x.name = tenant FOR UPDATE;
	IF t.hold_since IS NOT NULL THEN
		RAISE EXCEPTION 'tenant "%" is on legal hold since %: it cannot be dropped', tenant, t.hold_since
			USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = format('Reason: %s', t.hold_reason),
				  HINT = 'tenant_backup.tenant_release() ends the hold.';
	END IF;
	SELECT count(*) INTO busy FROM tenant_backup.jobs j WHERE j.tenant = tenant_drop.tenant AND j.state IN ('queued', 'running');
	IF busy > 0 THEN
		RAISE EXCEPTION 'tenant "%" has % queued or running jobs', tenant, busy
			USING ERRCODE = 'object_in_use', HINT = 'Wait for them to finish (tenant_backup.status), then drop.';
	END IF;
	BEGIN
		PERFORM count(*) FROM tenant_backup._storage_list(tenant || '/');
	EXCEPTION WHEN OTHERS THEN
		RAISE EXCEPTION 'tenant "%" is not dropped: its storage cannot be listed, so not all of it could be deleted', tenant
			USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = SQLERRM,
				  HINT = 'Make every directory under the tenant''s prefix readable by the server (or the bucket listable), then drop again; no key was destroyed.';
	END;
	SELECT array_agg(k.key_id ORDER BY k.key_id) INTO key_ids
	FROM tenant_backup.key_store k WHERE k.tenant = tenant_drop.tenant AND k.state <> 'destroyed';
	-- Keys first: from then on no copy of the tenant's backups can be read anywhere.
	FOREACH part IN ARRAY ARRAY[tenant || '/keys/', tenant || '/'] LOOP
		BEGIN
			SELECT * INTO gone FROM tenant_backup._storage_delete_prefix(part);
			objects := objects + gone.objects;
			bytes := bytes + gone.bytes;
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO tenant_backup.storage_intents (tenant, action, object) VALUES (tenant, 'delete prefix', part);
			pending := pending || part;
			RAISE WARNING 'tenant_backup: not all of "%" could be deleted now: %', part, SQLERRM
				USING HINT = 'The launcher deletes the rest (tenant_backup.storage_intents).';
		END;
	END LOOP;
	DELETE FROM tenant_backup.tenants x WHERE x.name = tenant;
	cert := jsonb_build_object(
		'tenant', tenant, 'dropped_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'dropped_by', session_user, 'objects_deleted', objects, 'bytes_deleted', bytes,
		'key_ids_destroyed', coalesce(to_jsonb(key_ids), '[]'),
		'catalog_rows_removed', 'tenant, databases, keys, jobs, backups, drills; the audit trail is kept');
	IF cardinality(pending) > 0 THEN
		cert := cert || jsonb_build_object('storage_pending', to_jsonb(pending));
	END IF;
	cert_hash := encode(sha256(convert_to(cert::text, 'UTF8')), 'hex');
	PERFORM tenant_backup._audit('tenant dropped', tenant, cert || jsonb_build_object('certificate_sha256', cert_hash));
	RETURN cert || jsonb_build_object('certificate_sha256', cert_hash,
		'audit_hash', (SELECT a.hash FROM tenant_backup.audit a WHERE a.tenant = tenant_drop.tenant ORDER BY a.id DESC LIMIT 1));
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_drop(text, text) IS
	'Offboards a tenant: refuses under a legal hold, with jobs queued or running, or when its storage cannot be listed (before any key is destroyed); destroys its keys (storage, then catalog), deletes every object under its prefix (what cannot be deleted now the launcher deletes after commit: storage_pending) and its catalog rows, keeps the audit trail, and returns the deletion certificate (its SHA-256 is chained into the audit log).';

-- 0.1.0's tenant_set_key_source, which also refuses to give the tenant whose WAL this
-- cluster archives a key command the archiver could not run.
CREATE OR REPLACE FUNCTION tenant_backup.tenant_set_key_source(tenant text, command text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	PERFORM tenant_backup._require_program_rights('set a tenant''s key command');
	IF command IS NOT NULL AND (btrim(command) = '' OR command ~ '[\n\r]' OR octet_length(command) > 1024) THEN
		RAISE EXCEPTION 'invalid key command for tenant "%"', tenant USING ERRCODE = 'invalid_parameter_value',
			HINT = 'One line of at most 1024 bytes: a program and its arguments, quoted as for /bin/sh but never run by a shell; NULL goes back to the master key.';
	END IF;
	IF command IS NOT NULL AND tenant = current_setting('tenant_backup.archive_tenant', true)
	   AND coalesce(current_setting('tenant_backup.archive_key_command', true), '') = '' THEN
		RAISE EXCEPTION 'tenant "%" cannot get a key command: this cluster archives its WAL and the archiver would have no way to open its new key', tenant
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'tenant_backup.archive_tenant names it and tenant_backup.archive_key_command is empty.',
				  HINT = 'Set tenant_backup.archive_key_command in postgresql.conf to the same command, reload, and try again.';
	END IF;
	PERFORM 1 FROM tenant_backup.tenants t WHERE t.name = tenant FOR UPDATE;
	UPDATE tenant_backup.tenants t SET key_command = command WHERE t.name = tenant;
	-- The first key under the new source proves the command wraps and unwraps.
	RETURN tenant_backup._key_rotate(tenant,
		CASE WHEN command IS NULL THEN 'key source set to the master key' ELSE 'key source set to a key command' END);
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_set_key_source(text, text) IS
	'Bring your own key: the tenant''s keys from now on are wrapped by command (a KMS client, say; the contract is in the README) instead of the master key, so reading its new backups needs that command. Makes and checks a new key at once. NULL: back to the master key. The tenant whose WAL the cluster archives needs tenant_backup.archive_key_command set first.';

-- The janitor, every tenant_backup.janitor_interval: unfinished writes older than a
-- lease whose tenant has no running job, then complete objects under <tenant>/<engine>/
-- (never keys/, _audit/ or archived WAL) that no backups row names, older than
-- janitor_grace (at least a lease), of tenants and engines with no running job; an
-- audit row for each removal.
CREATE FUNCTION tenant_backup._janitor_run()
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lease interval := current_setting('tenant_backup.lease_timeout')::interval;
	grace interval := greatest(current_setting('tenant_backup.janitor_grace')::interval, lease);
	u record;
	o record;
	removed bigint := 0;
BEGIN
	FOR u IN SELECT x.*, t.name AS tenant FROM tenant_backup._storage_unfinished() x
			 LEFT JOIN tenant_backup.tenants t ON t.name = split_part(x.key, '/', 1)
			 WHERE x.modified < now() - lease
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.jobs j WHERE j.tenant = split_part(x.key, '/', 1)
							 AND j.state = 'running')
			 ORDER BY x.key
	LOOP
		PERFORM tenant_backup._storage_unfinished_abort(u.key, u.upload);
		PERFORM tenant_backup._audit('unfinished write removed', u.tenant,
			jsonb_build_object('object', u.key, 'bytes', u.bytes, 'last_written', u.modified), 'tenant_backup janitor');
		removed := removed + 1;
	END LOOP;
	FOR o IN WITH listed AS MATERIALIZED (
				SELECT t.name AS tenant, e.engine, l.key, l.bytes, l.modified
				FROM tenant_backup.tenants t
				CROSS JOIN tenant_backup._engines() e(engine)
				CROSS JOIN LATERAL tenant_backup._storage_list(t.name || '/' || e.engine || '/') l
				WHERE NOT EXISTS (SELECT 1 FROM tenant_backup.jobs j WHERE j.tenant = t.name AND j.engine = e.engine
								  AND j.state = 'running'))
			 SELECT x.* FROM listed x
			 WHERE x.modified < now() - grace
			 AND NOT starts_with(x.key, x.tenant || '/postgres/wal/')
			 AND (x.key LIKE '%.tbk'
				  OR (x.key LIKE '%.json' AND NOT EXISTS (SELECT 1 FROM listed y
														  WHERE y.key = left(x.key, -5) || '.tbk')))
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.backups b
							 WHERE b.object_key IN (x.key, left(x.key, -5) || '.tbk'))
			 ORDER BY x.key
	LOOP
		IF o.key LIKE '%.tbk' THEN
			PERFORM tenant_backup._storage_delete(o.key);
		ELSE
			PERFORM tenant_backup._storage_delete_prefix(o.key);
		END IF;
		PERFORM tenant_backup._audit('unreferenced object removed', o.tenant,
			jsonb_build_object('engine', o.engine, 'object', o.key, 'bytes', o.bytes, 'modified', o.modified,
							   'grace', grace), 'tenant_backup janitor');
		removed := removed + 1;
	END LOOP;
	DELETE FROM tenant_backup.storage_intents WHERE state = 'done' AND finished < now() - interval '7 days';
	RETURN removed;
END
$$;
COMMENT ON FUNCTION tenant_backup._janitor_run() IS
	'Removes unfinished writes older than tenant_backup.lease_timeout whose tenant runs no job, and complete objects under <tenant>/<engine>/ (never keys/, _audit/ or archived WAL) that no backups row names, older than tenant_backup.janitor_grace, of tenants and engines running no job; an audit row each. Returns how many.';

REVOKE ALL ON FUNCTION tenant_backup._storage_list(text), tenant_backup._storage_unfinished(),
	tenant_backup._storage_unfinished_abort(text, text), tenant_backup._active_key_put(text, text),
	tenant_backup._key_store_intent(), tenant_backup._intent_active_keys(), tenant_backup._intents_run(),
	tenant_backup._janitor_run(), tenant_backup._expire(text, text) FROM PUBLIC;

-- ---------------------------------------------------------------- replication
-- Every complete backup of a tenant with a replica (tenant_backup.replica_storage, or
-- the tenant's own tenant_set_replica URL) is copied, sealed as it is, to the same key
-- in the replica storage by a replication worker the launcher starts (replicate.c),
-- then read back and checked against the catalog's SHA-256.

ALTER TABLE tenant_backup.tenants ADD COLUMN replica_storage text;
COMMENT ON COLUMN tenant_backup.tenants.replica_storage IS
	'NULL: tenant_backup.replica_storage applies; ''none'': no replica; otherwise the tenant''s own replica URL (tenant_set_replica).';
ALTER TABLE tenant_backup.tenants ADD COLUMN replica_set_by_superuser boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN tenant_backup.tenants.replica_set_by_superuser IS
	'Whether a superuser set replica_storage: otherwise each replication pass checks again that it is tenant_backup.replica_storage or an entry of tenant_backup.replica_storage_allowed.';

ALTER TABLE tenant_backup.backups
	ADD COLUMN replica_state text CHECK (replica_state IN ('pending', 'replicated', 'failed')),
	ADD COLUMN replicated_at timestamptz,
	ADD COLUMN replica_error text,
	ADD COLUMN replica_attempts int NOT NULL DEFAULT 0,
	ADD COLUMN replica_next_attempt timestamptz,
	ADD COLUMN replica_url text;
CREATE INDEX backups_replica_due ON tenant_backup.backups (tenant, finished)
	WHERE replica_state IN ('pending', 'failed');
COMMENT ON COLUMN tenant_backup.backups.replica_state IS
	'NULL: no replica applies; pending: to be copied; replicated: the replica copy at replica_url matched sha256 when read back; failed: replica_error says why, tried again at replica_next_attempt.';

CREATE FUNCTION tenant_backup._replica_url_check(p_tenant text, p_url text)
RETURNS void LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_replica_url_check';
COMMENT ON FUNCTION tenant_backup._replica_url_check(text, text) IS
	'Refuses a replica URL storage would not open, one that overlaps tenant_backup.storage, one strictly above or below a replica root in use (the setting, a tenant''s URL, a backup''s copy), and for a session user who is not a superuser any URL but tenant_backup.replica_storage or an entry of tenant_backup.replica_storage_allowed.';

-- The effective replica of a tenant: its own URL, else the setting; NULL when none.
CREATE FUNCTION tenant_backup._replica_url(p_tenant text)
RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN t.replica_storage = 'none' THEN NULL
				ELSE coalesce(t.replica_storage, nullif(current_setting('tenant_backup.replica_storage', true), '')) END
	FROM tenant_backup.tenants t WHERE t.name = p_tenant
$$;
COMMENT ON FUNCTION tenant_backup._replica_url(text) IS
	'The replica storage URL of a tenant (its own, else tenant_backup.replica_storage), NULL when it has none.';

CREATE FUNCTION tenant_backup.tenant_set_replica(tenant text, url text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants := tenant_backup._tenant_check(tenant);
	effective text;
BEGIN
	IF url IS NOT NULL AND url <> 'none' THEN
		PERFORM tenant_backup._replica_url_check(tenant, url);
	END IF;
	PERFORM 1 FROM tenant_backup.tenants x WHERE x.name = tenant FOR UPDATE;
	UPDATE tenant_backup.tenants x SET replica_storage = url,
		replica_set_by_superuser = (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user)
	WHERE x.name = tenant;
	effective := tenant_backup._replica_url(tenant);
	-- Backups not copied yet go to the replica that applies now; copies made stay where replica_url says.
	UPDATE tenant_backup.backups b
	SET replica_state = CASE WHEN effective IS NULL THEN NULL ELSE 'pending' END,
		replica_error = NULL, replica_attempts = 0, replica_next_attempt = NULL
	WHERE b.tenant = tenant_set_replica.tenant AND b.status = 'complete'
	AND b.replica_state IS DISTINCT FROM 'replicated';
	PERFORM tenant_backup._audit('replica set', tenant,
		jsonb_build_object('url', url, 'was', t.replica_storage, 'effective', effective));
	RETURN effective;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_set_replica(text, text) IS
	'Gives the tenant its own replica storage URL (NULL: tenant_backup.replica_storage applies again; ''none'': no replica). A non-superuser may name only tenant_backup.replica_storage or an entry of tenant_backup.replica_storage_allowed, exactly (re-checked at each replication pass); no URL may overlap tenant_backup.storage, nor lie strictly above or below a replica root in use. Backups not yet replicated are copied to the replica that applies now. Returns that URL (NULL: none). Audited.';

-- A backup that becomes complete is pending replication when its tenant has a replica.
CREATE FUNCTION tenant_backup._backup_replica_pending()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.replica_state IS NULL AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'complete')
	   AND tenant_backup._replica_url(NEW.tenant) IS NOT NULL THEN
		NEW.replica_state := 'pending';
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER backups_replica_pending BEFORE INSERT OR UPDATE OF status ON tenant_backup.backups
	FOR EACH ROW WHEN (NEW.status = 'complete') EXECUTE FUNCTION tenant_backup._backup_replica_pending();

-- The replication worker's catalog steps (replicate.c), each in a transaction of its own.

-- A dedicated tenant's archived WAL is not in the catalog: its replication is recorded per tenant.
CREATE TABLE tenant_backup.replica_wal (
	tenant text PRIMARY KEY REFERENCES tenant_backup.tenants ON DELETE CASCADE,
	replicated_at timestamptz,
	copied bigint NOT NULL DEFAULT 0,
	error text,
	error_at timestamptz,
	attempts int NOT NULL DEFAULT 0,
	next_attempt timestamptz
);
COMMENT ON TABLE tenant_backup.replica_wal IS
	'Per dedicated tenant with a replica: when its archived WAL was last found all copied (replicated_at), how many files were copied in all, and the last failure with the next attempt (NULL error: the last pass succeeded).';
SELECT pg_catalog.pg_extension_config_dump('tenant_backup.replica_wal', '');

-- 1, 5 and 25 minutes after the 1st, 2nd and 3rd failure, then every hour.
CREATE FUNCTION tenant_backup._replica_retry_delay(p_attempts int)
RETURNS interval LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE WHEN p_attempts <= 1 THEN interval '1 minute' WHEN p_attempts = 2 THEN interval '5 minutes'
				WHEN p_attempts = 3 THEN interval '25 minutes' ELSE interval '1 hour' END
$$;
COMMENT ON FUNCTION tenant_backup._replica_retry_delay(int) IS
	'The wait before the next replication attempt after p_attempts failed ones: 1, 5, 25 minutes, then every hour.';

-- Complete backups of tenants that have a replica are pending; not yet replicated ones of tenants that lost it are not.
CREATE FUNCTION tenant_backup._replica_backfill()
RETURNS bigint LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	WITH gained AS (
		UPDATE tenant_backup.backups b SET replica_state = 'pending'
		WHERE b.status = 'complete' AND b.replica_state IS NULL AND tenant_backup._replica_url(b.tenant) IS NOT NULL
		RETURNING 1),
	lost AS (
		UPDATE tenant_backup.backups b SET replica_state = NULL, replica_error = NULL, replica_attempts = 0,
			replica_next_attempt = NULL
		WHERE b.replica_state IN ('pending', 'failed') AND tenant_backup._replica_url(b.tenant) IS NULL
		RETURNING 1)
	SELECT (SELECT count(*) FROM gained) + (SELECT count(*) FROM lost)
$$;
COMMENT ON FUNCTION tenant_backup._replica_backfill() IS
	'Makes the complete backups of tenants with a replica that were never replicated pending, and the pending or failed ones of tenants without a replica no longer so (the launcher, at start and when tenant_backup.replica_storage changes).';

-- Tenants with a copy due now: a pending or failed backup whose next attempt came, or a dedicated tenant's WAL.
CREATE FUNCTION tenant_backup._replica_due_tenants()
RETURNS SETOF text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT DISTINCT b.tenant FROM tenant_backup.backups b
	WHERE b.replica_state IN ('pending', 'failed') AND b.status = 'complete'
	AND coalesce(b.replica_next_attempt, '-infinity') <= now()
	UNION
	SELECT t.name FROM tenant_backup.tenants t LEFT JOIN tenant_backup.replica_wal w ON w.tenant = t.name
	WHERE t.tier = 'dedicated' AND coalesce(w.next_attempt, '-infinity') <= now()
	AND tenant_backup._replica_url(t.name) IS NOT NULL
$$;
COMMENT ON FUNCTION tenant_backup._replica_due_tenants() IS
	'The tenants the launcher starts a replication worker for: a backup''s copy is due, or a dedicated tenant''s archived WAL is to be looked at (every minute, or after its backoff).';

-- The tenant's next copy due: '<id> <sha256> <object key>', oldest first.
CREATE FUNCTION tenant_backup._replica_next(p_tenant text)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT b.id || ' ' || b.sha256 || ' ' || b.object_key FROM tenant_backup.backups b
	WHERE b.tenant = p_tenant AND b.status = 'complete' AND b.replica_state IN ('pending', 'failed')
	AND coalesce(b.replica_next_attempt, '-infinity') <= now()
	ORDER BY b.finished, b.id LIMIT 1
$$;
COMMENT ON FUNCTION tenant_backup._replica_next(text) IS
	'The next backup of the tenant whose copy is due, as ''<id> <sha256> <object key>''; NULL when none.';

CREATE FUNCTION tenant_backup._replica_done(p_backup_id bigint, p_url text)
RETURNS boolean LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	WITH done AS (
		UPDATE tenant_backup.backups b SET replica_state = 'replicated', replicated_at = now(), replica_error = NULL,
			replica_attempts = b.replica_attempts + 1, replica_next_attempt = NULL, replica_url = p_url
		WHERE b.id = p_backup_id AND b.status = 'complete'
		RETURNING 1)
	SELECT EXISTS (SELECT 1 FROM done)
$$;
COMMENT ON FUNCTION tenant_backup._replica_done(bigint, text) IS
	'Records a backup''s copy at p_url as replicated (read back and checked); false if the backup is gone meanwhile (its copy is then removed).';

-- Whether the replication worker also looks at the tenant's archived WAL (a dedicated tenant).
CREATE FUNCTION tenant_backup._replica_wal_due(p_tenant text)
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT true FROM tenant_backup.tenants t WHERE t.name = p_tenant AND t.tier = 'dedicated'
$$;
COMMENT ON FUNCTION tenant_backup._replica_wal_due(text) IS
	'True for a dedicated tenant (its archived WAL is replicated too), NULL otherwise.';

-- The end of a pass over a dedicated tenant's WAL: p_copied files copied, p_error NULL on success.
CREATE FUNCTION tenant_backup._replica_wal_done(p_tenant text, p_copied int, p_error text)
RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO tenant_backup.replica_wal AS w (tenant, replicated_at, copied, error, error_at, attempts, next_attempt)
	VALUES (p_tenant, CASE WHEN p_error IS NULL THEN now() END, p_copied, p_error,
			CASE WHEN p_error IS NOT NULL THEN now() END, CASE WHEN p_error IS NULL THEN 0 ELSE 1 END,
			now() + CASE WHEN p_error IS NULL THEN interval '1 minute' ELSE tenant_backup._replica_retry_delay(1) END)
	ON CONFLICT (tenant) DO UPDATE SET
		replicated_at = CASE WHEN p_error IS NULL THEN now() ELSE w.replicated_at END,
		copied = w.copied + p_copied,
		error = p_error,
		error_at = CASE WHEN p_error IS NOT NULL THEN now() ELSE w.error_at END,
		attempts = CASE WHEN p_error IS NULL THEN 0 ELSE w.attempts + 1 END,
		next_attempt = now() + CASE WHEN p_error IS NULL THEN interval '1 minute'
									ELSE tenant_backup._replica_retry_delay(w.attempts + 1) END
$$;
COMMENT ON FUNCTION tenant_backup._replica_wal_done(text, int, text) IS
	'Records a pass of the replication worker over a dedicated tenant''s archived WAL: files copied, or why it failed (the next pass after the replication backoff; after a success, a minute).';
-- A failed copy of one backup (p_backup_id), or of every one due when the tenant's
-- replica could not be used at all (and of its archived WAL when it is dedicated).
CREATE FUNCTION tenant_backup._replica_failed(p_tenant text, p_backup_id bigint, p_error text)
RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE tenant_backup.backups b SET replica_state = 'failed', replica_error = p_error,
		replica_attempts = b.replica_attempts + 1,
		replica_next_attempt = now() + tenant_backup._replica_retry_delay(b.replica_attempts + 1)
	WHERE b.tenant = p_tenant AND b.status = 'complete' AND b.replica_state IN ('pending', 'failed')
	AND CASE WHEN p_backup_id IS NULL THEN coalesce(b.replica_next_attempt, '-infinity') <= now()
			 ELSE b.id = p_backup_id END;
	SELECT tenant_backup._replica_wal_done(p_tenant, 0, p_error)
	WHERE p_backup_id IS NULL AND EXISTS (SELECT 1 FROM tenant_backup.tenants t
										  WHERE t.name = p_tenant AND t.tier = 'dedicated');
$$;

COMMENT ON FUNCTION tenant_backup._replica_failed(text, bigint, text) IS
	'Records a failed copy of one backup, or (p_backup_id NULL) of every one due and of a dedicated tenant''s WAL, with the error and the next attempt (1, 5, 25 minutes, then hourly).';

-- The status view as before, and per database its replication: the lag (the age of
-- the oldest complete backup not replicated yet), how many wait, the last copy made
-- and the last copy's error (for a dedicated tenant's postgres database, that of its
-- archived WAL when no backup's copy failed).
ALTER VIEW tenant_backup.status RENAME TO _status_before_replication;
REVOKE ALL ON tenant_backup._status_before_replication FROM tenant_backup_operator;
COMMENT ON VIEW tenant_backup._status_before_replication IS
	'Internal: tenant_backup.status without its replication columns; read tenant_backup.status.';
CREATE VIEW tenant_backup.status WITH (security_barrier) AS
SELECT s.*,
	   now() - r.oldest_waiting AS replication_lag,
	   coalesce(r.waiting, 0) AS replication_pending,
	   r.last_replicated,
	   coalesce(r.last_error, CASE WHEN s.engine = 'postgres' THEN w.error END) AS replication_error
FROM tenant_backup._status_before_replication s
LEFT JOIN (SELECT b.source_id,
				  min(b.finished) FILTER (WHERE b.replica_state IN ('pending', 'failed')) AS oldest_waiting,
				  count(*) FILTER (WHERE b.replica_state IN ('pending', 'failed')) AS waiting,
				  max(b.replicated_at) AS last_replicated,
				  (array_agg(b.replica_error ORDER BY b.finished DESC) FILTER (WHERE b.replica_state = 'failed'))[1]
					  AS last_error
		   FROM tenant_backup.backups b WHERE b.replica_state IS NOT NULL AND b.status = 'complete'
		   GROUP BY b.source_id) r ON r.source_id = s.source_id
LEFT JOIN tenant_backup.replica_wal w ON w.tenant = s.tenant;
COMMENT ON VIEW tenant_backup.status IS
	'Per tenant database: last successful backup and its age, next due, schedule_state, overdue, the last backup, restore and drill errors, the running job (phase, bytes, expected total, rate, ETA, who runs it), queued jobs with the next retry, waiting_for_agent, the WAL archiver''s state for the archived dedicated tenant; and replication: replication_lag (age of the oldest complete backup not yet in the replica; NULL when all are or there is no replica), replication_pending, last_replicated, replication_error (the newest failed copy''s error, or the dedicated tenant''s WAL replication error).';
GRANT SELECT ON tenant_backup.status TO tenant_backup_operator;

-- Whether a key document read from the primary (untrusted) is the catalog's wrapped key.
CREATE FUNCTION tenant_backup._replica_key_vouched(p_tenant text, p_key_id text, p_doc text)
RETURNS boolean LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	doc jsonb;
BEGIN
	-- A forged document that does not parse (bad text, \u0000, nesting too deep) is simply not vouched for.
	BEGIN
		doc := p_doc::jsonb;
	EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
		RETURN false;
	END;
	RETURN EXISTS (SELECT 1 FROM tenant_backup.key_store k
				   WHERE k.tenant = p_tenant AND k.key_id = p_key_id AND k.wrapped = doc);
END
$$;
COMMENT ON FUNCTION tenant_backup._replica_key_vouched(text, text, text) IS
	'True when p_doc, read from the primary storage as <tenant>/keys/<key id>.json, is that key''s wrapped document in the catalog (as JSON): only such documents are copied to the replica.';

-- tenant_backups() as before, and each backup's replication (only SQL callers depend on it, by column name).
DROP FUNCTION tenant_backup.tenant_backups(text);
CREATE FUNCTION tenant_backup.tenant_backups(tenant text)
RETURNS TABLE (id bigint, engine text, status text, started timestamptz, finished timestamptz, bytes_in bigint,
			   bytes_stored bigint, sha256 text, object_key text, key_id text, error text, source_id bigint,
			   database text, replica_state text, replicated_at timestamptz, replica_error text, replica_url text)
LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	RETURN QUERY
		SELECT b.id, b.engine, b.status, b.started, b.finished, b.bytes_in, b.bytes_stored, b.sha256,
			   b.object_key, b.key_id, b.error, b.source_id, s.locator, b.replica_state, b.replicated_at,
			   b.replica_error, b.replica_url
		FROM tenant_backup.backups b LEFT JOIN tenant_backup.sources s ON s.id = b.source_id
		WHERE b.tenant = tenant_backups.tenant
		ORDER BY b.started DESC, b.id DESC;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_backups(text) IS
	'The tenant''s backups, newest first, each with the database it is of (source_id and its locator; NULL once that database was removed) and its replication: replica_state (NULL: no replica applies; pending, replicated, failed), replicated_at, replica_error, replica_url (where the copy is).';
REVOKE ALL ON FUNCTION tenant_backup.tenant_backups(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.tenant_backups(text) TO tenant_backup_operator;

REVOKE ALL ON FUNCTION tenant_backup._replica_url_check(text, text), tenant_backup._replica_url(text),
	tenant_backup.tenant_set_replica(text, text), tenant_backup._backup_replica_pending(),
	tenant_backup._replica_retry_delay(int), tenant_backup._replica_backfill(), tenant_backup._replica_due_tenants(),
	tenant_backup._replica_next(text), tenant_backup._replica_done(bigint, text),
	tenant_backup._replica_failed(text, bigint, text), tenant_backup._replica_wal_due(text),
	tenant_backup._replica_wal_done(text, int, text),
	tenant_backup._replica_key_vouched(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.tenant_set_replica(text, text) TO tenant_backup_operator;
-- ---------------------------------------------------------------- restores: privileges
-- privileges => false on a PostgreSQL target restore: the target is left as a fresh
-- CREATE DATABASE leaves it (PUBLIC may connect and create temporary tables), without the
-- backup's database grants. The job carries it to the worker (extension/pg_restore.c).
ALTER TABLE tenant_backup.jobs ADD COLUMN restore_privileges boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN tenant_backup.jobs.restore_privileges IS
	'A PostgreSQL target restore: false gives the target PUBLIC''s defaults instead of the backup''s database grants (tenant_restore(..., privileges => false)).';

-- The request worker's call (extension/request.c): the jobs of a request, a restore's
-- marked as privileges says.
CREATE FUNCTION tenant_backup._enqueue(p_kind text, p_tenant text, p_engine text, p_backup_id bigint,
									   p_target text, p_request text, p_actor text, p_privileges boolean)
RETURNS SETOF bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	job bigint;
BEGIN
	IF NOT p_privileges AND (p_kind <> 'restore' OR p_target IS NULL) THEN
		RAISE EXCEPTION 'privileges => false of tenant "%" applies to a restore to a target only', p_tenant
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR job IN SELECT tenant_backup._enqueue(p_kind, p_tenant, p_engine, p_backup_id, p_target, p_request, p_actor)
	LOOP
		UPDATE tenant_backup.jobs SET restore_privileges = p_privileges WHERE id = job;
		IF NOT p_privileges THEN
			PERFORM tenant_backup._audit('restore without grants requested', p_tenant,
										 jsonb_build_object('job_id', job, 'target', p_target), p_actor);
		END IF;
		RETURN NEXT job;
	END LOOP;
END
$$;
COMMENT ON FUNCTION tenant_backup._enqueue(text, text, text, bigint, text, text, text, boolean) IS
	'Queues a request''s jobs as the 7-argument _enqueue does; a restore''s job gets restore_privileges = p_privileges (false: to a target only).';

DROP FUNCTION tenant_backup._run_request(text, text, text, bigint, text);
CREATE FUNCTION tenant_backup._run_request(p_kind text, p_tenant text, p_engine text, p_backup_id bigint,
										   p_target text, p_privileges boolean DEFAULT true)
RETURNS SETOF bigint LANGUAGE c CALLED ON NULL INPUT
AS 'MODULE_PATHNAME', 'tenant_backup_run_request';
COMMENT ON FUNCTION tenant_backup._run_request(text, text, text, bigint, text, boolean) IS
	'Queues a request''s jobs in a worker''s own transaction (p_privileges: see _enqueue) and waits until they have all finished.';

DROP FUNCTION tenant_backup._request(text, text, text, bigint, text, boolean);
CREATE FUNCTION tenant_backup._request(p_kind text, p_tenant text, p_engine text, p_backup_id bigint,
									   p_target text, p_wait boolean, p_privileges boolean DEFAULT true)
RETURNS SETOF bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(p_tenant);
	PERFORM tenant_backup._engine_check(p_engine);
	PERFORM tenant_backup._require_worker();
	IF p_wait THEN
		RETURN QUERY SELECT tenant_backup._run_request(p_kind, p_tenant, p_engine, p_backup_id, p_target, p_privileges);
	ELSE
		RETURN QUERY SELECT tenant_backup._enqueue(p_kind, p_tenant, p_engine, p_backup_id, p_target, NULL, NULL,
												   p_privileges);
	END IF;
END
$$;
COMMENT ON FUNCTION tenant_backup._request(text, text, text, bigint, text, boolean, boolean) IS
	'Dispatches a request: queued with the caller''s transaction, or run to completion (p_wait); p_privileges: see _enqueue.';

DROP FUNCTION tenant_backup.tenant_restore(text, text, bigint, text, boolean, text);
CREATE FUNCTION tenant_backup.tenant_restore(tenant text, engine text DEFAULT NULL,
											 backup_id bigint DEFAULT NULL, target text DEFAULT NULL,
											 wait boolean DEFAULT true, database text DEFAULT NULL,
											 privileges boolean DEFAULT true)
RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_engine text;
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	IF target IS NOT NULL AND (target = '' OR octet_length(target) > CASE WHEN engine = 'redis' THEN 1023 ELSE 63 END) THEN
		RAISE EXCEPTION 'invalid target database name "%"', target USING ERRCODE = 'invalid_parameter_value';
	END IF;
	backup_id := tenant_backup._restore_backup(tenant, engine, backup_id, target, database);
	v_engine := coalesce(engine,
						 (SELECT b.engine FROM tenant_backup.backups b WHERE b.id = tenant_restore.backup_id),
						 (SELECT b.engine FROM tenant_backup.backups b WHERE b.tenant = tenant_restore.tenant
						  AND b.status = 'complete' ORDER BY b.finished DESC, b.id DESC LIMIT 1));
	PERFORM tenant_backup._restore_target_check(v_engine, target);
	-- In place, the live database's grants stay (who may connect was decided there); a
	-- dropped one gets the backup's. Only a new target can be left bare.
	IF privileges IS NOT true AND (target IS NULL OR v_engine IS DISTINCT FROM 'postgres') THEN
		RAISE EXCEPTION 'privileges => false of tenant "%" needs a PostgreSQL restore to a target', tenant
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = CASE WHEN target IS NULL
								THEN 'An in-place restore keeps the live database''s grants, or gives a dropped database the backup''s.'
								ELSE format('The backup to restore is of engine %s, which has no database grants to leave out.',
											coalesce(v_engine, 'unknown')) END,
				  HINT = 'Add target => a new database name, or leave privileges out.';
	END IF;
	RETURN QUERY SELECT tenant_backup._request('restore', tenant, engine, backup_id, target, wait, privileges);
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_restore(text, text, bigint, text, boolean, text, boolean) IS
	'Restores the latest complete backup (or backup_id; or the latest of database => a locator or source id). In place: loaded into a fresh database beside the live one with the backup''s database properties, swapped only after it loaded completely; the old one is kept as <name>_tb_old_<job>; a dropped database is recreated. With target: restored into that new database with the backup''s properties and grants (privileges => false: PostgreSQL''s defaults instead of the backup''s grants), the live one untouched; a tenant with several databases of the engine must name one. See docs/restore.md.';

REVOKE ALL ON FUNCTION tenant_backup._enqueue(text, text, text, bigint, text, text, text, boolean),
	tenant_backup._run_request(text, text, text, bigint, text, boolean),
	tenant_backup._request(text, text, text, bigint, text, boolean, boolean),
	tenant_backup.tenant_restore(text, text, bigint, text, boolean, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.tenant_restore(text, text, bigint, text, boolean, text, boolean)
	TO tenant_backup_operator;

-- Drill scratch directories (a base backup drill unpacks into one), as the launcher
-- finds them: listed while they exist; the launcher removes each once its job is over.
CREATE FUNCTION tenant_backup._scratch_directories(OUT directory text, OUT job_id bigint, OUT bytes bigint,
												   OUT modified timestamptz)
RETURNS SETOF record LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_scratch_directories';
COMMENT ON FUNCTION tenant_backup._scratch_directories() IS
	'The drill scratch directories of this server (under its TMPDIR, tenant_backup_drill_<port>_<job>_*, owned by its user): path, job, bytes of their files, last change.';
CREATE VIEW tenant_backup.scratch_directories WITH (security_barrier) AS
SELECT d.directory, j.tenant, d.job_id, j.kind AS job_kind, j.state AS job_state, d.bytes, d.modified AS since,
	   now() - d.modified AS age
FROM tenant_backup._scratch_directories() d
LEFT JOIN tenant_backup.jobs j ON j.id = d.job_id;
COMMENT ON VIEW tenant_backup.scratch_directories IS
	'Scratch directories of drills of dedicated tenants'' base backups: their tenant, job, size and age. The launcher removes one (audited: scratch directory removed) as soon as its job is neither queued nor running.';
REVOKE ALL ON FUNCTION tenant_backup._scratch_directories() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup._scratch_directories() TO tenant_backup_operator;
GRANT SELECT ON tenant_backup.scratch_directories TO tenant_backup_operator;

-- ---------------------------------------------------------------- replication: deletion
-- Retention, legal holds and tenant_drop cover the replica: every storage intent names
-- the storage it acts on (NULL: tenant_backup.storage; else the replica URL a copy was
-- made to), expiry deletes the replica copy as it deletes the primary's, tenant_drop
-- destroys the key documents in every storage before any object and leaves what an
-- unreachable replica holds to intents that complete its certificate later, and the
-- janitor looks at each replica as it looks at the primary.

ALTER TABLE tenant_backup.storage_intents
	ADD COLUMN storage text,
	ADD COLUMN deleted_objects bigint,
	ADD COLUMN deleted_bytes bigint,
	ADD COLUMN certificate_audit_id bigint,
	ADD COLUMN tried_at timestamptz;
COMMENT ON COLUMN tenant_backup.storage_intents.storage IS
	'Where the intent acts: NULL is tenant_backup.storage, otherwise a replica storage URL (tenant_backup.replica_storage, a tenant_set_replica URL or a backup''s replica_url; storage URLs never hold credentials).';
COMMENT ON COLUMN tenant_backup.storage_intents.deleted_objects IS
	'Once done: how many objects the deletion removed (a delete backup: 1 if the object was there).';
COMMENT ON COLUMN tenant_backup.storage_intents.deleted_bytes IS 'Once done: the bytes the deletion removed.';
COMMENT ON COLUMN tenant_backup.storage_intents.certificate_audit_id IS
	'The audit row of the tenant_drop certificate this deletion is part of: when the last of them is done, the launcher appends the completed certificate (action ''tenant dropped'', completes_audit_id).';
COMMENT ON COLUMN tenant_backup.storage_intents.tried_at IS
	'When the launcher last tried it: a failed intent in a replica is tried again after as many seconds as it has failed (at most a minute).';
CREATE INDEX storage_intents_certificate ON tenant_backup.storage_intents (certificate_audit_id)
	WHERE certificate_audit_id IS NOT NULL;

-- The storage functions again, with the storage to act on (NULL: tenant_backup.storage).
CREATE FUNCTION tenant_backup._storage_list(p_prefix text, p_storage text, OUT key text, OUT bytes bigint,
											OUT modified timestamptz)
RETURNS SETOF record LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_storage_list';
COMMENT ON FUNCTION tenant_backup._storage_list(text, text) IS
	'_storage_list(prefix) in the storage p_storage names (NULL: tenant_backup.storage).';

CREATE FUNCTION tenant_backup._storage_delete(p_object text, p_storage text)
RETURNS bigint LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_storage_delete';
COMMENT ON FUNCTION tenant_backup._storage_delete(text, text) IS
	'_storage_delete(object) in the storage p_storage names (NULL: tenant_backup.storage).';

CREATE FUNCTION tenant_backup._storage_delete_prefix(p_prefix text, p_storage text, OUT objects bigint,
													 OUT bytes bigint)
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_storage_delete_prefix';
COMMENT ON FUNCTION tenant_backup._storage_delete_prefix(text, text) IS
	'_storage_delete_prefix(prefix) in the storage p_storage names (NULL: tenant_backup.storage).';

CREATE FUNCTION tenant_backup._storage_unfinished(p_storage text, OUT key text, OUT upload text, OUT bytes bigint,
												  OUT modified timestamptz)
RETURNS SETOF record LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_storage_unfinished';
COMMENT ON FUNCTION tenant_backup._storage_unfinished(text) IS
	'_storage_unfinished() in the storage p_storage names (NULL: tenant_backup.storage).';

CREATE FUNCTION tenant_backup._storage_unfinished_abort(p_key text, p_upload text, p_storage text)
RETURNS void LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_storage_unfinished_abort';
COMMENT ON FUNCTION tenant_backup._storage_unfinished_abort(text, text, text) IS
	'_storage_unfinished_abort(key, upload) in the storage p_storage names (NULL: tenant_backup.storage).';

-- Every replica storage that may hold copies of the tenant's objects: the one that
-- applies now and every one a backup of it was copied to.
CREATE FUNCTION tenant_backup._replica_storages(p_tenant text)
RETURNS SETOF text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT u FROM (SELECT tenant_backup._replica_url(p_tenant)
				   UNION SELECT b.replica_url FROM tenant_backup.backups b WHERE b.tenant = p_tenant) s(u)
	WHERE u IS NOT NULL
	ORDER BY u COLLATE "C"
$$;
COMMENT ON FUNCTION tenant_backup._replica_storages(text) IS
	'The replica storage URLs that may hold copies of the tenant''s objects: its replica now (_replica_url) and every backups.replica_url of it.';

-- The tenant's replication worker holds this lock while it copies (replicate.c): a
-- deletion in its replica waits until it is free, or the worker could put back what is
-- deleted (a key document it listed before). Held until the caller's transaction ends,
-- so no worker of the tenant starts meanwhile.
CREATE FUNCTION tenant_backup._replica_lock_try(p_tenant text)
RETURNS boolean LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_try_advisory_xact_lock(hashtext('tenant_backup replication'), hashtext(p_tenant))
$$;
COMMENT ON FUNCTION tenant_backup._replica_lock_try(text) IS
	'Takes the lock the tenant''s replication worker holds while it copies, for the rest of the transaction; false (taking nothing) while a worker holds it.';

-- A storage as a deletion certificate names it: its role and URL (never credentials).
CREATE FUNCTION tenant_backup._certificate_storage(p_storage text)
RETURNS jsonb LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT jsonb_build_object('role', CASE WHEN p_storage IS NULL THEN 'primary' ELSE 'replica' END,
							  'url', coalesce(p_storage, current_setting('tenant_backup.storage')))
$$;
COMMENT ON FUNCTION tenant_backup._certificate_storage(text) IS
	'How a deletion certificate names a storage: role primary (p_storage NULL: tenant_backup.storage) or replica, and its URL.';

-- The certificate of a drop whose last pending deletion the launcher just finished:
-- the first one's storages with what the intents deleted added, appended to the
-- tenant's audit chain like the first.
CREATE FUNCTION tenant_backup._drop_certificate_complete(p_audit_id bigint)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	original tenant_backup.audit;
	storages jsonb;
	cert jsonb;
BEGIN
	SELECT * INTO original FROM tenant_backup.audit a WHERE a.id = p_audit_id;
	SELECT jsonb_agg(CASE WHEN d.n = 0 THEN e.s
						  ELSE (e.s - 'pending') || jsonb_build_object('status', 'deleted',
							  'objects_deleted', (e.s->>'objects_deleted')::bigint + d.objects,
							  'bytes_deleted', (e.s->>'bytes_deleted')::bigint + d.bytes, 'completed_at', d.finished) END
					 ORDER BY e.n)
	INTO storages
	FROM jsonb_array_elements(original.detail->'storage') WITH ORDINALITY e(s, n)
	CROSS JOIN LATERAL (
		SELECT count(*) AS n, coalesce(sum(i.deleted_objects), 0) AS objects, coalesce(sum(i.deleted_bytes), 0) AS bytes,
			   max(i.finished) AS finished
		FROM tenant_backup.storage_intents i
		WHERE i.certificate_audit_id = p_audit_id
		AND i.storage IS NOT DISTINCT FROM CASE WHEN e.s->>'role' = 'replica' THEN e.s->>'url' END) d;
	cert := (original.detail - 'certificate_sha256' - 'storage_pending' - 'status') || jsonb_build_object(
		'status', 'complete', 'storage', storages,
		'objects_deleted', (SELECT sum((s->>'objects_deleted')::bigint) FROM jsonb_array_elements(storages) s),
		'bytes_deleted', (SELECT sum((s->>'bytes_deleted')::bigint) FROM jsonb_array_elements(storages) s),
		'completed_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'completes_audit_id', p_audit_id);
	PERFORM tenant_backup._audit('tenant dropped', original.tenant,
		cert || jsonb_build_object('certificate_sha256', encode(sha256(convert_to(cert::text, 'UTF8')), 'hex')),
		'tenant_backup launcher');
END
$$;
COMMENT ON FUNCTION tenant_backup._drop_certificate_complete(bigint) IS
	'Appends to the audit log the completed deletion certificate of the drop whose certificate is audit row p_audit_id: every storage deleted, with the objects and bytes the launcher''s intents removed (status complete, completes_audit_id).';

-- _intents_run with the storage of each intent; a dropped tenant's prefix waits for its
-- key documents in the same storage, and the last deletion of a drop completes its
-- certificate.
CREATE OR REPLACE FUNCTION tenant_backup._intents_run()
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	i tenant_backup.storage_intents;
	active text;
	objects bigint;
	bytes bigint;
	done bigint := 0;
	unreachable text[] := '{}';
BEGIN
	FOR i IN SELECT * FROM tenant_backup.storage_intents x WHERE x.state = 'pending' ORDER BY x.id
			 FOR UPDATE SKIP LOCKED
	LOOP
		CONTINUE WHEN i.certificate_audit_id IS NOT NULL
			AND EXISTS (SELECT 1 FROM tenant_backup.storage_intents y
						WHERE y.certificate_audit_id = i.certificate_audit_id AND y.state = 'pending' AND y.id < i.id
						AND y.storage IS NOT DISTINCT FROM i.storage);
		-- A replica that does not answer costs a launcher round at most one request (each
		-- may take the S3 driver's retries), and at most one a minute once it failed long.
		CONTINUE WHEN i.storage = ANY (unreachable)
			OR (i.storage IS NOT NULL AND i.error IS NOT NULL
				AND i.tried_at > now() - least(i.attempts, 60) * interval '1 second');
		-- In a replica only after the same deletion in the primary (a replication worker
		-- copies from there) and while no replication worker of the tenant copies.
		CONTINUE WHEN i.storage IS NOT NULL
			AND (EXISTS (SELECT 1 FROM tenant_backup.storage_intents y
						 WHERE y.state = 'pending' AND y.id < i.id AND y.storage IS NULL AND y.tenant = i.tenant
						 AND y.action = i.action AND y.object = i.object)
				 OR NOT tenant_backup._replica_lock_try(i.tenant));
		BEGIN
			objects := NULL;
			bytes := NULL;
			IF i.action = 'delete backup' THEN
				bytes := tenant_backup._storage_delete(i.object, i.storage);
				objects := (bytes > 0)::int;
			ELSIF i.action = 'delete prefix' THEN
				SELECT x.objects, x.bytes INTO objects, bytes FROM tenant_backup._storage_delete_prefix(i.object, i.storage) x;
			ELSE
				-- The catalog's active key now (a dropped tenant has none, and no active.json).
				active := (tenant_backup._active_key(i.tenant)).key_id;
				IF active IS NOT NULL THEN
					PERFORM tenant_backup._active_key_put(i.tenant, active);
				END IF;
			END IF;
			UPDATE tenant_backup.storage_intents SET state = 'done', finished = now(), attempts = attempts + 1,
				error = NULL, deleted_objects = objects, deleted_bytes = bytes, tried_at = now()
			WHERE id = i.id;
			IF i.certificate_audit_id IS NOT NULL
			   AND NOT EXISTS (SELECT 1 FROM tenant_backup.storage_intents y
							   WHERE y.certificate_audit_id = i.certificate_audit_id AND y.state = 'pending') THEN
				PERFORM tenant_backup._drop_certificate_complete(i.certificate_audit_id);
			END IF;
			done := done + 1;
		EXCEPTION WHEN OTHERS THEN
			UPDATE tenant_backup.storage_intents SET attempts = attempts + 1, error = SQLERRM, tried_at = now()
			WHERE id = i.id;
			IF i.storage IS NOT NULL THEN
				unreachable := unreachable || i.storage;
			END IF;
			RAISE WARNING 'tenant_backup: storage intent % (%) of tenant "%" failed: %', i.id, i.action, i.tenant, SQLERRM
				USING HINT = 'The launcher tries it again next round; tenant_backup.storage_intents shows it.';
		END;
	END LOOP;
	RETURN done;
END
$$;
COMMENT ON FUNCTION tenant_backup._intents_run() IS
	'Carries out the pending storage intents, each in the storage it names (delete an expired backup''s object, a destroyed key''s document, a dropped tenant''s prefix, in the primary or a replica; write active.json) and marks them done with what they deleted; a dropped tenant''s prefix waits for its key documents in the same storage, and the last deletion of a drop appends its completed certificate. A failure stays pending with its error; in a replica, the others in that replica wait for the next round and it is tried again after as many seconds as it failed (at most a minute). Run by the launcher every round.';

-- _expire, the replica copies included: each deletion is an intent per storage that may
-- hold the object (the primary, the backup's replica_url, the tenant's replica now).
-- A held tenant is skipped whole, so its backups stay in every storage.
CREATE OR REPLACE FUNCTION tenant_backup._expire(p_tenant text, p_actor text)
RETURNS TABLE (backup_id bigint, engine text, started timestamptz, object_key text, bytes_stored bigint, action text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	b record;
	k record;
	replica_now text := tenant_backup._replica_url(p_tenant);
BEGIN
	PERFORM 1 FROM tenant_backup.tenants t WHERE t.name = p_tenant AND t.hold_since IS NULL FOR UPDATE;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	FOR b IN SELECT p.*, x.replica_url FROM tenant_backup._retention_plan(p_tenant) p
			 JOIN tenant_backup.backups x ON x.id = p.backup_id
			 WHERE NOT p.keep ORDER BY p.started, p.backup_id
	LOOP
		-- A backup a running job reads is left for the next pass.
		CONTINUE WHEN EXISTS (SELECT 1 FROM tenant_backup.jobs j WHERE j.backup_id = b.backup_id
							  AND j.kind <> 'backup' AND j.state IN ('queued', 'running'));
		IF b.object_key IS NOT NULL THEN
			INSERT INTO tenant_backup.storage_intents (tenant, action, object, created_by, storage)
			SELECT p_tenant, 'delete backup', b.object_key, p_actor, s.url
			FROM (SELECT NULL::text UNION SELECT b.replica_url UNION SELECT replica_now) s(url)
			ORDER BY s.url NULLS FIRST;
		END IF;
		DELETE FROM tenant_backup.backups x WHERE x.id = b.backup_id;
		PERFORM tenant_backup._audit('backup expired', p_tenant,
			jsonb_build_object('backup_id', b.backup_id, 'engine', b.engine, 'status', b.status, 'started', b.started,
							   'object', b.object_key, 'bytes', coalesce(b.bytes_stored, 0)), p_actor);
		backup_id := b.backup_id; engine := b.engine; started := b.started; object_key := b.object_key;
		bytes_stored := coalesce(b.bytes_stored, 0); action := 'deleted';
		RETURN NEXT;
	END LOOP;
	-- A retired key no complete backup uses any more opens nothing that is kept. With
	-- archived WAL, only once a base backup taken well after the rotation is the oldest
	-- (the archiver picks a new key up within a minute). Its document goes from every storage.
	FOR k IN SELECT * FROM tenant_backup.key_store x
			 WHERE x.tenant = p_tenant AND x.state = 'retired'
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.backups y WHERE y.tenant = p_tenant AND y.key_id = x.key_id
							 AND y.status <> 'failed')
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.backups y WHERE y.tenant = p_tenant AND y.status = 'complete'
							 AND y.start_lsn IS NOT NULL AND y.started < x.retired + interval '5 minutes')
	LOOP
		INSERT INTO tenant_backup.storage_intents (tenant, action, object, created_by, storage)
		SELECT p_tenant, 'delete prefix', p_tenant || '/keys/' || k.key_id || '.json', p_actor, s.url
		FROM (SELECT NULL::text UNION SELECT tenant_backup._replica_storages(p_tenant)) s(url)
		ORDER BY s.url NULLS FIRST;
		UPDATE tenant_backup.key_store x SET state = 'destroyed', destroyed = now(), wrapped = NULL
		WHERE x.tenant = p_tenant AND x.key_id = k.key_id;
		PERFORM tenant_backup._audit('key destroyed', p_tenant,
									 jsonb_build_object('key_id', k.key_id, 'reason', 'no backup uses it'), p_actor);
	END LOOP;
END
$$;
COMMENT ON FUNCTION tenant_backup._expire(text, text) IS
	'Removes from the catalog what retention does not keep (an audit row each) and the retired keys no backup needs; their objects and key documents are deleted by the launcher once this commits, from tenant_backup.storage and from every replica storage that may hold a copy (tenant_backup.storage_intents, one per storage). A tenant on legal hold keeps everything in every storage.';

-- tenant_drop over the primary and every replica of the tenant. Before any key is
-- destroyed it lists the tenant's prefix everywhere: an unlistable primary refuses the
-- drop; an unreachable replica does not (it may stay down for long) but its part is
-- left to intents. Then the key documents go from every storage, then the objects; what
-- cannot be deleted now is an intent the launcher finishes, and the last one of them
-- appends the completed certificate.
CREATE OR REPLACE FUNCTION tenant_backup.tenant_drop(tenant text, confirm text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants := tenant_backup._tenant_check(tenant);
	key_ids text[];
	busy bigint;
	targets text[];
	deferred boolean[];
	entries jsonb := '[]';
	entry jsonb;
	n int;
	part text;
	gone record;
	intent_ids bigint[] := '{}';
	pending jsonb := '[]';
	cert jsonb;
	cert_hash text;
	audit_id bigint;
	intent_id bigint;
BEGIN
	IF confirm IS DISTINCT FROM tenant THEN
		RAISE EXCEPTION 'tenant_drop needs confirm => ''%''', tenant USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Dropping destroys every backup of the tenant for good; repeat its name to confirm.';
	END IF;
	-- Before the tenant's row: a replication worker's own catalog steps may need it.
	IF NOT tenant_backup._replica_lock_try(tenant) THEN
		RAISE NOTICE 'tenant_backup: waiting for the replication worker of tenant "%" to finish its copy', tenant;
		PERFORM pg_advisory_xact_lock(hashtext('tenant_backup replication'), hashtext(tenant));
	END IF;
	PERFORM 1 FROM tenant_backup.tenants x WHERE x.name = tenant FOR UPDATE;
	IF t.hold_since IS NOT NULL THEN
		RAISE EXCEPTION 'tenant "%" is on legal hold since %: it cannot be dropped', tenant, t.hold_since
			USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = format('Reason: %s', t.hold_reason),
				  HINT = 'tenant_backup.tenant_release() ends the hold.';
	END IF;
	SELECT count(*) INTO busy FROM tenant_backup.jobs j WHERE j.tenant = tenant_drop.tenant AND j.state IN ('queued', 'running');
	IF busy > 0 THEN
		RAISE EXCEPTION 'tenant "%" has % queued or running jobs', tenant, busy
			USING ERRCODE = 'object_in_use', HINT = 'Wait for them to finish (tenant_backup.status), then drop.';
	END IF;
	BEGIN
		PERFORM count(*) FROM tenant_backup._storage_list(tenant || '/');
	EXCEPTION WHEN OTHERS THEN
		RAISE EXCEPTION 'tenant "%" is not dropped: its storage cannot be listed, so not all of it could be deleted', tenant
			USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = SQLERRM,
				  HINT = 'Make every directory under the tenant''s prefix readable by the server (or the bucket listable), then drop again; no key was destroyed.';
	END;
	-- The primary first (NULL), then every replica that may hold a copy.
	targets := ARRAY[NULL::text] || ARRAY(SELECT tenant_backup._replica_storages(tenant));
	deferred := array_fill(false, ARRAY[cardinality(targets)]);
	FOR n IN 1 .. cardinality(targets) LOOP
		entries := entries || (tenant_backup._certificate_storage(targets[n])
							   || jsonb_build_object('status', 'deleted', 'objects_deleted', 0, 'bytes_deleted', 0));
		CONTINUE WHEN n = 1;
		BEGIN
			PERFORM count(*) FROM tenant_backup._storage_list(tenant || '/', targets[n]);
		EXCEPTION WHEN OTHERS THEN
			deferred[n] := true;
			RAISE WARNING 'tenant_backup: the replica storage % of tenant "%" cannot be listed now: %', targets[n], tenant, SQLERRM
				USING HINT = 'The drop goes on: the launcher deletes the tenant''s key documents and then its objects there once it answers (tenant_backup.storage_intents), and appends the completed certificate to the audit log.';
		END;
	END LOOP;
	SELECT array_agg(k.key_id ORDER BY k.key_id) INTO key_ids
	FROM tenant_backup.key_store k WHERE k.tenant = tenant_drop.tenant AND k.state <> 'destroyed';
	-- Keys first, in every storage: from then on no copy of the tenant's backups can be
	-- read anywhere. A storage whose key documents are not gone keeps its objects for
	-- the launcher, which deletes them after the keys.
	FOREACH part IN ARRAY ARRAY[tenant || '/keys/', tenant || '/'] LOOP
		FOR n IN 1 .. cardinality(targets) LOOP
			entry := entries->(n - 1);
			IF NOT deferred[n] THEN
				BEGIN
					SELECT * INTO gone FROM tenant_backup._storage_delete_prefix(part, targets[n]);
					entry := entry || jsonb_build_object('objects_deleted', (entry->>'objects_deleted')::bigint + gone.objects,
														 'bytes_deleted', (entry->>'bytes_deleted')::bigint + gone.bytes);
				EXCEPTION WHEN OTHERS THEN
					deferred[n] := true;
					RAISE WARNING 'tenant_backup: not all of "%" could be deleted now in %: %', part,
						coalesce(targets[n], 'tenant_backup.storage'), SQLERRM
						USING HINT = 'The launcher deletes the rest (tenant_backup.storage_intents).';
				END;
			END IF;
			IF deferred[n] THEN
				INSERT INTO tenant_backup.storage_intents (tenant, action, object, storage)
				VALUES (tenant, 'delete prefix', part, targets[n]) RETURNING id INTO intent_id;
				intent_ids := intent_ids || intent_id;
				entry := entry || jsonb_build_object('status', 'pending',
													 'pending', coalesce(entry->'pending', '[]') || to_jsonb(part));
				pending := pending || to_jsonb(part);
			END IF;
			entries := jsonb_set(entries, ARRAY[(n - 1)::text], entry);
		END LOOP;
	END LOOP;
	DELETE FROM tenant_backup.tenants x WHERE x.name = tenant;
	cert := jsonb_build_object(
		'tenant', tenant, 'dropped_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'dropped_by', session_user,
		'status', CASE WHEN cardinality(intent_ids) > 0 THEN 'pending' ELSE 'complete' END,
		'objects_deleted', (SELECT sum((s->>'objects_deleted')::bigint) FROM jsonb_array_elements(entries) s),
		'bytes_deleted', (SELECT sum((s->>'bytes_deleted')::bigint) FROM jsonb_array_elements(entries) s),
		'key_ids_destroyed', coalesce(to_jsonb(key_ids), '[]'), 'storage', entries,
		'catalog_rows_removed', 'tenant, databases, keys, jobs, backups, drills; the audit trail is kept');
	IF cardinality(intent_ids) > 0 THEN
		cert := cert || jsonb_build_object('storage_pending', pending);
	END IF;
	cert_hash := encode(sha256(convert_to(cert::text, 'UTF8')), 'hex');
	PERFORM tenant_backup._audit('tenant dropped', tenant, cert || jsonb_build_object('certificate_sha256', cert_hash));
	SELECT a.id INTO audit_id FROM tenant_backup.audit a WHERE a.tenant = tenant_drop.tenant ORDER BY a.id DESC LIMIT 1;
	IF cardinality(intent_ids) > 0 THEN
		UPDATE tenant_backup.storage_intents i SET certificate_audit_id = audit_id WHERE i.id = ANY (intent_ids);
		RAISE WARNING 'tenant "%" is dropped, but its deletion is pending in %', tenant,
			(SELECT string_agg(s->>'url', ', ') FROM jsonb_array_elements(entries) s WHERE s->>'status' = 'pending')
			USING DETAIL = 'Its keys are destroyed in the catalog and wherever storage answered; the launcher deletes the rest (first the key documents) once that storage answers.',
				  HINT = format('tenant_backup.storage_intents (certificate_audit_id %s) shows what is pending; the completed certificate is the next "tenant dropped" row of tenant_backup.audit (tenant_compliance_report shows it).', audit_id);
	END IF;
	RETURN cert || jsonb_build_object('certificate_sha256', cert_hash,
		'audit_hash', (SELECT a.hash FROM tenant_backup.audit a WHERE a.id = audit_id), 'audit_id', audit_id);
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_drop(text, text) IS
	'Offboards a tenant: refuses under a legal hold, with jobs queued or running, or when its primary storage cannot be listed (before any key is destroyed); destroys its keys (the key documents in the primary and every replica storage, then the catalog''s), deletes every object under its prefix in each storage and its catalog rows, keeps the audit trail, and returns the deletion certificate (storage: what was deleted in each storage, by URL; its SHA-256 is chained into the audit log). A replica that cannot be listed, or anything not deleted now, is left to intents the launcher finishes (status pending, storage_pending, a WARNING); the last of them appends the completed certificate to the audit log.';

-- A dropped tenant's name is free again only once every deletion of its drop is done:
-- a pending prefix deletion would otherwise delete the new tenant's objects.
CREATE FUNCTION tenant_backup._tenants_drop_pending()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	waiting text;
BEGIN
	SELECT string_agg(DISTINCT coalesce(i.storage, 'tenant_backup.storage'), ', ') INTO waiting
	FROM tenant_backup.storage_intents i
	WHERE i.tenant = NEW.name AND i.state = 'pending' AND i.certificate_audit_id IS NOT NULL;
	IF waiting IS NOT NULL THEN
		RAISE EXCEPTION 'tenant "%" cannot be created yet: the deletion of the dropped tenant of that name is still pending', NEW.name
			USING ERRCODE = 'object_in_use', DETAIL = format('Pending in %s.', waiting),
				  HINT = 'The launcher finishes it once that storage answers (tenant_backup.storage_intents); create the tenant then, or under another name.';
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER tenants_drop_pending BEFORE INSERT ON tenant_backup.tenants
	FOR EACH ROW EXECUTE FUNCTION tenant_backup._tenants_drop_pending();
COMMENT ON FUNCTION tenant_backup._tenants_drop_pending() IS
	'Refuses a new tenant whose name is that of a dropped tenant whose storage deletion is still pending (55006).';

-- The first archived WAL file the tenant's oldest complete base backup needs, named as
-- PostgreSQL names it (<timeline><log><segment>); NULL without a base backup.
CREATE FUNCTION tenant_backup._wal_keep(p_tenant text)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT upper(lpad(to_hex(b.timeline), 8, '0') || lpad(to_hex(x.seg / x.per_log), 8, '0')
				 || lpad(to_hex(x.seg % x.per_log), 8, '0'))
	FROM (SELECT y.timeline, y.start_lsn FROM tenant_backup.backups y
		  WHERE y.tenant = p_tenant AND y.status = 'complete' AND y.start_lsn IS NOT NULL AND y.timeline IS NOT NULL
		  ORDER BY y.start_lsn LIMIT 1) b
	CROSS JOIN (SELECT setting::bigint AS size FROM pg_settings WHERE name = 'wal_segment_size') s
	CROSS JOIN LATERAL (SELECT ((b.start_lsn - '0/0'::pg_lsn) / s.size)::bigint AS seg,
							   (4294967296 / s.size)::bigint AS per_log) x
$$;
COMMENT ON FUNCTION tenant_backup._wal_keep(text) IS
	'The first archived WAL file (24 hex digits) the tenant''s oldest complete base backup needs; NULL when it has none.';

-- The janitor of one storage (NULL: tenant_backup.storage; else a replica URL, over the
-- tenants whose replica it is): unfinished writes older than a lease whose tenant has
-- no running job, then complete objects under <tenant>/<engine>/ (never keys/, _audit/
-- or archived WAL) that no backups row names, older than janitor_grace (at least a
-- lease), of tenants and engines with no running job; an audit row for each removal. In
-- a replica also a dedicated tenant's archived WAL older than its oldest complete base
-- backup needs (in the primary that goes when a base backup completes, pg_backup.c).
CREATE FUNCTION tenant_backup._janitor_storage(p_storage text)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lease interval := current_setting('tenant_backup.lease_timeout')::interval;
	grace interval := greatest(current_setting('tenant_backup.janitor_grace')::interval, lease);
	place jsonb := CASE WHEN p_storage IS NOT NULL THEN jsonb_build_object('storage', p_storage) ELSE '{}' END;
	u record;
	o record;
	d record;
	wal text;
	wal_removed int;
	removed bigint := 0;
BEGIN
	FOR u IN SELECT x.*, t.name AS tenant FROM tenant_backup._storage_unfinished(p_storage) x
			 LEFT JOIN tenant_backup.tenants t ON t.name = split_part(x.key, '/', 1)
			 WHERE x.modified < now() - lease
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.jobs j WHERE j.tenant = split_part(x.key, '/', 1)
							 AND j.state = 'running')
			 ORDER BY x.key
	LOOP
		-- A replica's write may be a copy its replication worker is making now.
		CONTINUE WHEN p_storage IS NOT NULL AND NOT tenant_backup._replica_lock_try(split_part(u.key, '/', 1));
		PERFORM tenant_backup._storage_unfinished_abort(u.key, u.upload, p_storage);
		PERFORM tenant_backup._audit('unfinished write removed', u.tenant,
			jsonb_build_object('object', u.key, 'bytes', u.bytes, 'last_written', u.modified) || place,
			'tenant_backup janitor');
		removed := removed + 1;
	END LOOP;
	FOR o IN WITH listed AS MATERIALIZED (
				SELECT t.name AS tenant, e.engine, l.key, l.bytes, l.modified
				FROM tenant_backup.tenants t
				CROSS JOIN tenant_backup._engines() e(engine)
				CROSS JOIN LATERAL tenant_backup._storage_list(t.name || '/' || e.engine || '/', p_storage) l
				WHERE (p_storage IS NULL OR tenant_backup._replica_url(t.name) = p_storage)
				AND NOT EXISTS (SELECT 1 FROM tenant_backup.jobs j WHERE j.tenant = t.name AND j.engine = e.engine
								AND j.state = 'running'))
			 SELECT x.* FROM listed x
			 WHERE x.modified < now() - grace
			 AND NOT starts_with(x.key, x.tenant || '/postgres/wal/')
			 AND (x.key LIKE '%.tbk'
				  OR (x.key LIKE '%.json' AND NOT EXISTS (SELECT 1 FROM listed y
														  WHERE y.key = left(x.key, -5) || '.tbk')))
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.backups b
							 WHERE b.object_key IN (x.key, left(x.key, -5) || '.tbk'))
			 -- An expired backup's object is its deletion intent's: the intent records what it deleted.
			 AND NOT EXISTS (SELECT 1 FROM tenant_backup.storage_intents i
							 WHERE i.state = 'pending' AND i.storage IS NOT DISTINCT FROM p_storage
							 AND i.tenant = x.tenant
							 AND (i.object IN (x.key, left(x.key, -5) || '.tbk')
								  OR (i.action = 'delete prefix' AND starts_with(x.key, i.object))))
			 ORDER BY x.key
	LOOP
		IF o.key LIKE '%.tbk' THEN
			PERFORM tenant_backup._storage_delete(o.key, p_storage);
		ELSE
			PERFORM tenant_backup._storage_delete_prefix(o.key, p_storage);
		END IF;
		PERFORM tenant_backup._audit('unreferenced object removed', o.tenant,
			jsonb_build_object('engine', o.engine, 'object', o.key, 'bytes', o.bytes, 'modified', o.modified,
							   'grace', grace) || place, 'tenant_backup janitor');
		removed := removed + 1;
	END LOOP;
	-- Segments, partial segments and backup history files before the kept one, on its
	-- timeline or an older one (what tb_wal_cleanup removes), while no replication worker
	-- of the tenant copies.
	FOR d IN SELECT t.name AS tenant, tenant_backup._wal_keep(t.name) AS keep FROM tenant_backup.tenants t
			 WHERE p_storage IS NOT NULL AND t.tier = 'dedicated' AND tenant_backup._replica_url(t.name) = p_storage
			 AND tenant_backup._wal_keep(t.name) IS NOT NULL ORDER BY t.name
	LOOP
		CONTINUE WHEN NOT tenant_backup._replica_lock_try(d.tenant);
		wal_removed := 0;
		FOR wal IN SELECT l.key FROM tenant_backup._storage_list(d.tenant || '/postgres/wal/', p_storage) l
				   CROSS JOIN LATERAL (SELECT regexp_replace(l.key, '^.*/', '') AS name) f
				   WHERE f.name ~ '^[0-9A-F]{24}' AND left(f.name, 8) <= left(d.keep, 8)
				   AND substr(f.name, 9, 16) < substr(d.keep, 9, 16)
				   ORDER BY l.key
		LOOP
			PERFORM tenant_backup._storage_delete_prefix(wal, p_storage);
			wal_removed := wal_removed + 1;
		END LOOP;
		IF wal_removed > 0 THEN
			PERFORM tenant_backup._audit('archived WAL removed', d.tenant,
				jsonb_build_object('removed_objects', wal_removed, 'kept_from', d.keep) || place, 'tenant_backup janitor');
			removed := removed + wal_removed;
		END IF;
	END LOOP;
	RETURN removed;
END
$$;
COMMENT ON FUNCTION tenant_backup._janitor_storage(text) IS
	'The janitor of one storage (NULL: tenant_backup.storage; else a replica URL, for the tenants whose replica it is now): removes unfinished writes older than tenant_backup.lease_timeout whose tenant runs no job, and complete objects under <tenant>/<engine>/ (never keys/, _audit/ or archived WAL) that no backups row and no pending storage intent names, older than tenant_backup.janitor_grace, of tenants and engines running no job; in a replica also a dedicated tenant''s archived WAL older than its oldest complete base backup needs; an audit row each (with the storage, for a replica). Returns how many.';

-- The janitor over the primary, then every replica storage a tenant has now; a replica
-- that does not answer is a warning and does not undo the others' pass.
CREATE OR REPLACE FUNCTION tenant_backup._janitor_run()
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	url text;
	removed bigint := tenant_backup._janitor_storage(NULL);
BEGIN
	FOR url IN SELECT DISTINCT tenant_backup._replica_url(t.name) COLLATE "C" AS u FROM tenant_backup.tenants t
			   WHERE tenant_backup._replica_url(t.name) IS NOT NULL ORDER BY 1
	LOOP
		BEGIN
			removed := removed + tenant_backup._janitor_storage(url);
		EXCEPTION WHEN OTHERS THEN
			RAISE WARNING 'tenant_backup: the storage janitor of replica storage % failed: %', url, SQLERRM
				USING HINT = 'The janitor tries again after tenant_backup.janitor_interval.';
		END;
	END LOOP;
	DELETE FROM tenant_backup.storage_intents WHERE state = 'done' AND finished < now() - interval '7 days';
	RETURN removed;
END
$$;
COMMENT ON FUNCTION tenant_backup._janitor_run() IS
	'The storage janitor (_janitor_storage) of tenant_backup.storage and of every replica storage a tenant has; a replica that fails is a warning, the others'' removals stay. Drops done storage intents after 7 days. Returns how many objects and writes it removed.';

REVOKE ALL ON FUNCTION tenant_backup._storage_list(text, text), tenant_backup._storage_delete(text, text),
	tenant_backup._storage_delete_prefix(text, text), tenant_backup._storage_unfinished(text),
	tenant_backup._storage_unfinished_abort(text, text, text), tenant_backup._replica_storages(text),
	tenant_backup._certificate_storage(text), tenant_backup._drop_certificate_complete(bigint),
	tenant_backup._tenants_drop_pending(), tenant_backup._janitor_storage(text), tenant_backup._replica_lock_try(text),
	tenant_backup._wal_keep(text) FROM PUBLIC;

-- ---------------------------------------------------------------- job engine: latency

-- A job's commit wakes who acts on it, instead of their next poll: a queued
-- PostgreSQL job the launcher (not its naptime later), an ended job the backend
-- waiting on it with wait => true (set by the request worker; the wait polls only as
-- a fallback). Both at commit (job.c), when the rows are visible to the woken.
ALTER TABLE tenant_backup.jobs ADD COLUMN waiter_pid int;
COMMENT ON COLUMN tenant_backup.jobs.waiter_pid IS
	'The backend waiting on the job with wait => true (its pid), woken when the job ends; NULL when no call waits. A hint only: a pid no backend has any more wakes no one.';

CREATE FUNCTION tenant_backup._jobs_wake() RETURNS trigger LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_jobs_wake';
COMMENT ON FUNCTION tenant_backup._jobs_wake() IS
	'Trigger of jobs: at commit, wakes the launcher for a queued PostgreSQL job (jobs_wake_launcher) and the backend in jobs.waiter_pid for a job that ended (jobs_wake_waiter).';
REVOKE ALL ON FUNCTION tenant_backup._jobs_wake() FROM PUBLIC;

CREATE TRIGGER jobs_wake_launcher AFTER INSERT ON tenant_backup.jobs FOR EACH ROW
	WHEN (NEW.engine = 'postgres' AND NEW.state = 'queued')
	EXECUTE FUNCTION tenant_backup._jobs_wake();
CREATE TRIGGER jobs_wake_waiter AFTER UPDATE OF state ON tenant_backup.jobs FOR EACH ROW
	WHEN (NEW.waiter_pid IS NOT NULL AND NEW.state IN ('succeeded', 'failed') AND OLD.state IS DISTINCT FROM NEW.state)
	EXECUTE FUNCTION tenant_backup._jobs_wake();

-- ---------------------------------------------------------------- replication: reads

-- Where an agent reads a restore's backup when the primary copy is missing or fails
-- authentication: the replica of the job's tenant, for the job its lease holds only.
CREATE FUNCTION tenant_backup.agent_job_replica(job_id bigint, lease text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs := tenant_backup._agent_held_job(job_id, lease);
BEGIN
	IF j.kind <> 'restore' THEN
		RETURN NULL;
	END IF;
	RETURN tenant_backup._replica_url(j.tenant);
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_job_replica(bigint, text) IS
	'For the restore job its lease holds: the replica storage URL of the job''s tenant (tenant_set_replica, else tenant_backup.replica_storage), where the agent reads the backup when the primary copy is missing or fails authentication; NULL when the tenant has none, and for backups and drills.';
REVOKE ALL ON FUNCTION tenant_backup.agent_job_replica(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.agent_job_replica(bigint, text) TO tenant_backup_agent;
-- ---------------------------------------------------------------- operators: phase

-- The phases a job reports as it goes, in order (docs/operate.md): a backup connect,
-- dump (the tool's output is compressed, sealed and stored as it comes: there is no
-- separate upload), commit; a restore authenticate, connect, load, index, swap; a
-- drill authenticate, connect, load, index, compare, cleanup. A finished job keeps
-- the last phase its newest attempt reached, so a failure shows where it happened.
ALTER TABLE tenant_backup.jobs ADD CONSTRAINT jobs_phase_known
	CHECK (phase IN ('connect', 'dump', 'commit', 'authenticate', 'load', 'index', 'swap', 'compare', 'cleanup'));
COMMENT ON COLUMN tenant_backup.jobs.phase IS
	'What the job is doing, as its worker or agent reports it: backup connect, dump (streamed into storage), commit; restore authenticate, connect, load, index (pg_restore''s post-data), swap; drill the same with compare and cleanup instead of swap. A finished job keeps the last phase its newest attempt reached; NULL before the first report.';

CREATE FUNCTION tenant_backup.agent_phase(job_id bigint, lease text, phase text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE tenant_backup.jobs j SET phase = agent_phase.phase
	WHERE j.id = agent_phase.job_id AND j.lease_owner = agent_phase.lease AND j.state = 'running';
	RETURN FOUND;
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_phase(bigint, text, text) IS
	'An agent reports the phase of the job its lease holds (one of jobs.phase''s names; another is refused, 23514). False, and nothing recorded, when the lease does not hold the job: an agent sets the phase of no other job.';
REVOKE ALL ON FUNCTION tenant_backup.agent_phase(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_backup.agent_phase(bigint, text, text) TO tenant_backup_agent;

-- ---------------------------------------------------------------- subprocess and twins
-- The one definition of a tenant's active key (the job workers, agent_claim and the
-- intents that write active.json all ask it): the newest row in state active.
CREATE FUNCTION tenant_backup._active_key(p_tenant text) RETURNS tenant_backup.key_store
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT k.* FROM tenant_backup.key_store k WHERE k.tenant = p_tenant AND k.state = 'active'
	ORDER BY k.created DESC, k.key_id DESC LIMIT 1
$$;
COMMENT ON FUNCTION tenant_backup._active_key(text) IS
	'The key_store row of p_tenant''s active key (the newest in state active), or a row of NULLs when it has none. Internal.';
REVOKE ALL ON FUNCTION tenant_backup._active_key(text) FROM PUBLIC;

-- The engines, in one place for the SQL that walks every engine's prefix (the janitor);
-- the same list as core/names.c and the sources.engine CHECK of 0.1.0.
CREATE FUNCTION tenant_backup._engines() RETURNS SETOF text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT unnest(ARRAY['postgres', 'mysql', 'mongodb', 'redis']) $$;
COMMENT ON FUNCTION tenant_backup._engines() IS
	'The engines tenant_backup backs up: postgres, mysql, mongodb, redis (each tenant''s storage has a prefix per engine). Internal.';
REVOKE ALL ON FUNCTION tenant_backup._engines() FROM PUBLIC;

-- ---------------------------------------------------------------- replication: status at scale
-- The status view's and the metrics' replication columns read what is waiting through
-- the partial index backups_replica_due (few rows) and the last copy made from
-- source_backup_state, kept by a trigger: never the whole backup history per query.
ALTER TABLE tenant_backup.source_backup_state ADD COLUMN last_replicated timestamptz;
COMMENT ON COLUMN tenant_backup.source_backup_state.last_replicated IS
	'When a backup of this database was last copied to its replica storage (and read back matching).';

CREATE FUNCTION tenant_backup._source_state_replicated()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO tenant_backup.source_backup_state AS x (source_id, last_replicated)
	VALUES (NEW.source_id, NEW.replicated_at)
	ON CONFLICT (source_id) DO UPDATE SET last_replicated = excluded.last_replicated
	WHERE x.last_replicated IS NULL OR x.last_replicated < excluded.last_replicated;
	RETURN NULL;
END
$$;
CREATE TRIGGER backups_source_state_replicated AFTER INSERT OR UPDATE OF replicated_at ON tenant_backup.backups
	FOR EACH ROW WHEN (NEW.replicated_at IS NOT NULL AND NEW.source_id IS NOT NULL)
	EXECUTE FUNCTION tenant_backup._source_state_replicated();
REVOKE ALL ON FUNCTION tenant_backup._source_state_replicated() FROM PUBLIC;
UPDATE tenant_backup.source_backup_state x SET last_replicated = r.last
FROM (SELECT b.source_id, max(b.replicated_at) AS last FROM tenant_backup.backups b
	  WHERE b.replicated_at IS NOT NULL GROUP BY b.source_id) r
WHERE r.source_id = x.source_id;

CREATE OR REPLACE VIEW tenant_backup.status WITH (security_barrier) AS
SELECT s.*,
	   now() - r.oldest_waiting AS replication_lag,
	   coalesce(r.waiting, 0) AS replication_pending,
	   st.last_replicated,
	   coalesce(r.last_error, CASE WHEN s.engine = 'postgres' THEN w.error END) AS replication_error
FROM tenant_backup._status_before_replication s
LEFT JOIN tenant_backup.source_backup_state st ON st.source_id = s.source_id
LEFT JOIN (SELECT b.source_id, min(b.finished) AS oldest_waiting, count(*) AS waiting,
				  (array_agg(b.replica_error ORDER BY b.finished DESC) FILTER (WHERE b.replica_state = 'failed'))[1]
					  AS last_error
		   FROM tenant_backup.backups b WHERE b.replica_state IN ('pending', 'failed') AND b.status = 'complete'
		   GROUP BY b.source_id) r ON r.source_id = s.source_id
LEFT JOIN tenant_backup.replica_wal w ON w.tenant = s.tenant;

-- Metrics of replication, appended to _metrics() by the metrics worker: per tenant and
-- engine with a replica, the lag in seconds (0: all replicated), the copies waiting and
-- whether one fails. (Defined here, not with replication: it reads last_replicated.)
CREATE FUNCTION tenant_backup._metrics_replication()
RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH waiting AS (
		SELECT b.tenant, b.engine, min(b.finished) AS oldest, count(*) AS n,
			   count(*) FILTER (WHERE b.replica_state = 'failed') AS failed
		FROM tenant_backup.backups b WHERE b.replica_state IN ('pending', 'failed') AND b.status = 'complete'
		GROUP BY b.tenant, b.engine),
	replicated AS (
		SELECT DISTINCT s.tenant, s.engine FROM tenant_backup.sources s
		JOIN tenant_backup.source_backup_state st ON st.source_id = s.id
		WHERE st.last_replicated IS NOT NULL AND tenant_backup._replica_url(s.tenant) IS NOT NULL),
	per AS (
		SELECT '{tenant=' || tenant_backup._metrics_label(k.tenant) || ',engine=' || tenant_backup._metrics_label(k.engine)
				   || '}' AS labels,
			   coalesce(extract(epoch FROM now() - w.oldest), 0) AS lag, coalesce(w.n, 0) AS waiting,
			   (coalesce(w.failed, 0) > 0)::int AS failing
		FROM (SELECT tenant, engine FROM waiting UNION SELECT tenant, engine FROM replicated) k
		LEFT JOIN waiting w ON w.tenant = k.tenant AND w.engine = k.engine),
	families(ord, metric, help, column_name) AS (VALUES
		(1, 'replication_lag_seconds', 'Age of the oldest complete backup not yet copied to the replica storage (0: all are).', 'lag'),
		(2, 'replication_pending_backups', 'Complete backups waiting to be copied to the replica storage.', 'waiting'),
		(3, 'replication_failing', '1 when a backup''s copy to the replica storage failed and waits for its retry.', 'failing'))
	SELECT string_agg(block, '' ORDER BY ord)
	FROM (SELECT f.ord,
				 format(E'# HELP tenant_backup_%s %s\n# TYPE tenant_backup_%s gauge\n', f.metric, f.help, f.metric)
				 || string_agg(format(E'tenant_backup_%s%s %s\n', f.metric, p.labels,
									  CASE f.column_name WHEN 'lag' THEN p.lag::float8 WHEN 'waiting' THEN p.waiting::float8
														 ELSE p.failing::float8 END), '' ORDER BY p.labels) AS block
		  FROM families f CROSS JOIN per p GROUP BY f.ord, f.metric, f.help) b
$$;
COMMENT ON FUNCTION tenant_backup._metrics_replication() IS
	'The replication part of the Prometheus exposition: per tenant and engine with a replica, tenant_backup_replication_lag_seconds, _pending_backups and _failing; NULL when no tenant has a replica.';
REVOKE ALL ON FUNCTION tenant_backup._metrics_replication() FROM PUBLIC;
