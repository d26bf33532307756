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
