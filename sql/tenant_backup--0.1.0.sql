-- tenant_backup 0.1.0: catalog and SQL API of per-tenant encrypted backups.
-- The API functions are the only way in: they are SECURITY DEFINER with a pinned
-- search_path, executable by tenant_backup_operator; the tables are not writable
-- by anyone else.

\echo Use "CREATE EXTENSION tenant_backup" to load this file. \quit

DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenant_backup_operator') THEN
		CREATE ROLE tenant_backup_operator NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenant_backup_agent') THEN
		CREATE ROLE tenant_backup_agent NOLOGIN;
	END IF;
END
$$;

-- ---------------------------------------------------------------- catalog

CREATE TABLE tenant_backup.tenants (
	name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
	tier text NOT NULL DEFAULT 'shared' CHECK (tier IN ('shared', 'dedicated')),
	schedule interval CHECK (schedule > interval '0'),
	next_due timestamptz,
	created timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenant_backup.tenants IS
	'One row per tenant. schedule NULL means tenant_backup.default_schedule; next_due is when the worker next backs it up.';

CREATE TABLE tenant_backup.keys (
	tenant text NOT NULL REFERENCES tenant_backup.tenants ON DELETE CASCADE,
	key_id text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
	state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired', 'destroyed')),
	wrapped jsonb NOT NULL,
	created timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, key_id)
);
COMMENT ON TABLE tenant_backup.keys IS
	'Tenant keys, only ever stored wrapped by the master key (also in storage as <tenant>/keys/<key id>.json).';

CREATE TABLE tenant_backup.sources (
	id bigserial PRIMARY KEY,
	tenant text NOT NULL REFERENCES tenant_backup.tenants ON DELETE CASCADE,
	engine text NOT NULL CHECK (engine IN ('postgres', 'mysql', 'mongodb', 'redis')),
	locator text NOT NULL,
	sealed_password text,
	options jsonb NOT NULL DEFAULT '{}',
	added_by_superuser boolean NOT NULL DEFAULT false,
	created timestamptz NOT NULL DEFAULT now(),
	UNIQUE (tenant, engine, locator)
);
COMMENT ON TABLE tenant_backup.sources IS
	'The tenant''s databases. locator never holds a password: it is sealed with the master key in sealed_password.';

CREATE TABLE tenant_backup.jobs (
	id bigserial PRIMARY KEY,
	kind text NOT NULL CHECK (kind IN ('backup', 'restore')),
	tenant text NOT NULL REFERENCES tenant_backup.tenants ON DELETE CASCADE,
	source_id bigint NOT NULL REFERENCES tenant_backup.sources ON DELETE CASCADE,
	engine text NOT NULL,
	state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
	backup_id bigint,
	restore_target text,
	request text,
	attempts int NOT NULL DEFAULT 0,
	max_attempts int NOT NULL DEFAULT 3,
	lease_owner text,
	lease_expires timestamptz,
	bytes_done bigint NOT NULL DEFAULT 0,
	error text,
	created timestamptz NOT NULL DEFAULT now(),
	started timestamptz,
	finished timestamptz
);
CREATE INDEX jobs_queued ON tenant_backup.jobs (engine, id) WHERE state = 'queued';
CREATE INDEX jobs_request ON tenant_backup.jobs (request) WHERE request IS NOT NULL;
COMMENT ON TABLE tenant_backup.jobs IS
	'Work queue. A worker or agent holds a job by its lease; an expired lease puts the job back (up to max_attempts).';

CREATE TABLE tenant_backup.backups (
	id bigserial PRIMARY KEY,
	tenant text NOT NULL REFERENCES tenant_backup.tenants ON DELETE CASCADE,
	engine text NOT NULL,
	source_id bigint REFERENCES tenant_backup.sources ON DELETE SET NULL,
	job_id bigint,
	status text NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
	started timestamptz NOT NULL DEFAULT now(),
	finished timestamptz,
	bytes_in bigint,
	bytes_stored bigint,
	sha256 text,
	object_key text,
	key_id text,
	error text,
	-- A base backup of a dedicated tenant's cluster: where its WAL begins and ends.
	start_lsn pg_lsn,
	stop_lsn pg_lsn,
	timeline int,
	CHECK (status <> 'complete' OR (object_key IS NOT NULL AND sha256 IS NOT NULL AND finished IS NOT NULL))
);
CREATE INDEX backups_tenant ON tenant_backup.backups (tenant, engine, started DESC);
COMMENT ON TABLE tenant_backup.backups IS
	'One row per backup object. complete only once the object and its manifest are stored.';

CREATE TABLE tenant_backup.audit (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	actor text NOT NULL DEFAULT session_user,
	action text NOT NULL,
	tenant text,
	detail jsonb NOT NULL DEFAULT '{}',
	prev_hash text,
	hash text NOT NULL
);
COMMENT ON TABLE tenant_backup.audit IS
	'Append-only audit trail; each row''s hash covers the previous row''s hash, so edits and deletions show.';

CREATE TABLE tenant_backup.agent_registry (
	name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$'),
	host text,
	engines text[] NOT NULL,
	version text,
	started timestamptz NOT NULL DEFAULT now(),
	last_seen timestamptz NOT NULL DEFAULT now(),
	jobs_done bigint NOT NULL DEFAULT 0,
	jobs_failed bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE tenant_backup.agent_registry IS
	'Agents that have said hello, and when they were last heard from. Read it through tenant_backup.agents.';

REVOKE ALL ON ALL TABLES IN SCHEMA tenant_backup FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA tenant_backup FROM PUBLIC;
GRANT USAGE ON SCHEMA tenant_backup TO tenant_backup_operator, tenant_backup_agent;

-- ---------------------------------------------------------------- internals

-- The hash of an audit row: over the previous row's hash and this row's content,
-- with the time in a fixed UTC form so it verifies whatever the session's settings.
CREATE FUNCTION tenant_backup._audit_hash(p_prev text, p_at timestamptz, p_actor text, p_action text,
										  p_tenant text, p_detail jsonb)
RETURNS text LANGUAGE sql IMMUTABLE
AS $$
	SELECT encode(sha256(convert_to(
		coalesce(p_prev, '') || '|' || to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '|' ||
		p_actor || '|' || p_action || '|' || coalesce(p_tenant, '') || '|' || p_detail::text, 'UTF8')), 'hex')
$$;
COMMENT ON FUNCTION tenant_backup._audit_hash(text, timestamptz, text, text, text, jsonb) IS
	'Recomputes an audit row''s hash: SELECT hash = tenant_backup._audit_hash(prev_hash, at, actor, action, tenant, detail) FROM tenant_backup.audit.';

-- Appends an audit row chained to the previous one. p_actor: who asked (default: the session user).
CREATE FUNCTION tenant_backup._audit(p_action text, p_tenant text, p_detail jsonb, p_actor text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	prev text;
	now_ts timestamptz;
	who text := coalesce(p_actor, session_user);
BEGIN
	LOCK TABLE tenant_backup.audit IN SHARE ROW EXCLUSIVE MODE;
	now_ts := clock_timestamp();
	SELECT hash INTO prev FROM tenant_backup.audit ORDER BY id DESC LIMIT 1;
	INSERT INTO tenant_backup.audit (at, actor, action, tenant, detail, prev_hash, hash)
	VALUES (now_ts, who, p_action, p_tenant, p_detail, prev,
			tenant_backup._audit_hash(prev, now_ts, who, p_action, p_tenant, p_detail));
END
$$;

CREATE FUNCTION tenant_backup._tenant_check(p_tenant text)
RETURNS tenant_backup.tenants LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants;
BEGIN
	SELECT * INTO t FROM tenant_backup.tenants WHERE name = p_tenant;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'tenant "%" does not exist', p_tenant
			USING ERRCODE = 'undefined_object', HINT = 'Create it with tenant_backup.tenant_create().';
	END IF;
	RETURN t;
END
$$;

CREATE FUNCTION tenant_backup._engine_check(p_engine text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_engine IS NOT NULL AND p_engine NOT IN ('postgres', 'mysql', 'mongodb', 'redis') THEN
		RAISE EXCEPTION 'unknown engine "%"', p_engine
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Use postgres, mysql, mongodb or redis.';
	END IF;
END
$$;

-- When a tenant is next due: the schedule's period, offset by a hash of the name so
-- that many tenants on the same schedule do not all start at once.
CREATE FUNCTION tenant_backup._next_due(p_tenant text, p_every interval, p_after timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE
AS $$
	SELECT to_timestamp(
		(floor((extract(epoch FROM p_after) - offs) / period) + 1) * period + offs)
	FROM (SELECT greatest(extract(epoch FROM p_every), 1) AS period) p,
		 LATERAL (SELECT (abs(hashtext(p_tenant)::bigint) % (period * 1000)::bigint) / 1000.0 AS offs) o
$$;

-- Queues the jobs of one request; used directly (wait => false) and by the request
-- worker (wait => true), which commits them in its own transaction.
CREATE FUNCTION tenant_backup._enqueue(p_kind text, p_tenant text, p_engine text, p_backup_id bigint,
									   p_target text, p_request text, p_actor text DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	src record;
	b tenant_backup.backups;
	job bigint;
BEGIN
	PERFORM tenant_backup._tenant_check(p_tenant);
	PERFORM tenant_backup._engine_check(p_engine);
	IF p_kind = 'backup' THEN
		FOR src IN SELECT * FROM tenant_backup.sources
				   WHERE tenant = p_tenant AND (p_engine IS NULL OR engine = p_engine) ORDER BY id
		LOOP
			INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, request)
			VALUES ('backup', p_tenant, src.id, src.engine, p_request) RETURNING id INTO job;
			RETURN NEXT job;
		END LOOP;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'tenant "%" has no %database to back up', p_tenant, coalesce(p_engine || ' ', '')
				USING ERRCODE = 'no_data_found', HINT = 'Add one with tenant_backup.tenant_add_database().';
		END IF;
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

-- Ends an attempt of a job, only while p_lease still holds it (a late worker or agent
-- never overwrites a newer attempt). p_error NULL: success; a backup then becomes
-- complete with p_result (object, bytes_in, bytes_stored, sha256, key_id). A failure
-- queues the job again until max_attempts. Returns whether the lease was still held.
CREATE FUNCTION tenant_backup._job_finish(p_job bigint, p_lease text, p_error text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j tenant_backup.jobs;
	done_backup bigint;
BEGIN
	IF p_error IS NULL AND p_result IS NOT NULL THEN
		UPDATE tenant_backup.backups SET status = 'complete', finished = now(),
			bytes_in = (p_result->>'bytes_in')::bigint, bytes_stored = (p_result->>'bytes_stored')::bigint,
			sha256 = p_result->>'sha256', object_key = p_result->>'object', key_id = p_result->>'key_id',
			start_lsn = (p_result->>'start_lsn')::pg_lsn, stop_lsn = (p_result->>'stop_lsn')::pg_lsn,
			timeline = (p_result->>'timeline')::int
		WHERE job_id = p_job AND status = 'running'
		  AND EXISTS (SELECT 1 FROM tenant_backup.jobs WHERE id = p_job AND lease_owner = p_lease AND state = 'running')
		RETURNING id INTO done_backup;
	END IF;
	UPDATE tenant_backup.jobs SET
		state = CASE WHEN p_error IS NULL THEN 'succeeded' WHEN attempts < max_attempts THEN 'queued' ELSE 'failed' END,
		finished = CASE WHEN p_error IS NOT NULL AND attempts < max_attempts THEN NULL ELSE now() END,
		error = p_error, lease_owner = NULL, lease_expires = NULL,
		backup_id = coalesce(done_backup, backup_id)
	WHERE id = p_job AND lease_owner = p_lease AND state = 'running'
	RETURNING * INTO j;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF p_error IS NOT NULL THEN
		UPDATE tenant_backup.backups SET status = 'failed', finished = now(), error = p_error
		WHERE job_id = p_job AND status = 'running';
	END IF;
	PERFORM tenant_backup._audit(j.kind || CASE WHEN p_error IS NULL THEN ' succeeded' ELSE ' failed' END, j.tenant,
								 jsonb_build_object('job', j.id, 'engine', j.engine, 'attempt', j.attempts,
													'backup_id', j.backup_id, 'error', p_error),
								 'tenant_backup worker');
	RETURN true;
END
$$;

-- ---------------------------------------------------------------- C parts

CREATE FUNCTION tenant_backup._key_create(p_tenant text)
RETURNS jsonb LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_key_create';
COMMENT ON FUNCTION tenant_backup._key_create(text) IS
	'Creates a tenant key, stores it wrapped by the master key in storage, returns the wrapped document.';

CREATE FUNCTION tenant_backup._seal_secret(p_context text, p_secret text)
RETURNS text LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_seal_secret';

CREATE FUNCTION tenant_backup._require_worker()
RETURNS void LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_require_worker';
COMMENT ON FUNCTION tenant_backup._require_worker() IS
	'Raises an error unless tenant_backup is in shared_preload_libraries: queued work would never run.';

CREATE FUNCTION tenant_backup._split_conninfo(p_locator text, OUT locator text, OUT password text)
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_split_conninfo';
COMMENT ON FUNCTION tenant_backup._split_conninfo(text) IS
	'Splits a PostgreSQL conninfo or URI with libpq''s parser into the conninfo without its password, and the password.';

CREATE FUNCTION tenant_backup._run_request(p_kind text, p_tenant text, p_engine text, p_backup_id bigint,
										   p_target text)
RETURNS SETOF bigint LANGUAGE c CALLED ON NULL INPUT
AS 'MODULE_PATHNAME', 'tenant_backup_run_request';
COMMENT ON FUNCTION tenant_backup._run_request(text, text, text, bigint, text) IS
	'Queues a request''s jobs in a worker''s own transaction and waits until they have all finished.';

-- Dispatches a request: queued with the caller's transaction, or run to completion.
CREATE FUNCTION tenant_backup._request(p_kind text, p_tenant text, p_engine text, p_backup_id bigint,
									   p_target text, p_wait boolean)
RETURNS SETOF bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(p_tenant);
	PERFORM tenant_backup._engine_check(p_engine);
	PERFORM tenant_backup._require_worker();
	IF p_wait THEN
		RETURN QUERY SELECT tenant_backup._run_request(p_kind, p_tenant, p_engine, p_backup_id, p_target);
	ELSE
		RETURN QUERY SELECT tenant_backup._enqueue(p_kind, p_tenant, p_engine, p_backup_id, p_target, NULL);
	END IF;
END
$$;

-- ---------------------------------------------------------------- API

CREATE FUNCTION tenant_backup.tenant_create(name text, tier text DEFAULT 'shared')
RETURNS tenant_backup.tenants LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants;
	doc jsonb;
BEGIN
	IF name IS NULL OR name !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
		RAISE EXCEPTION 'invalid tenant name "%"', name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use 1 to 63 lower-case letters, digits, "_" and "-", starting with a letter or digit.';
	END IF;
	IF tier IS NULL OR tier NOT IN ('shared', 'dedicated') THEN
		RAISE EXCEPTION 'invalid tier "%" for tenant "%"', tier, name
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Use shared or dedicated.';
	END IF;
	INSERT INTO tenant_backup.tenants (name, tier) VALUES (name, tier) ON CONFLICT DO NOTHING RETURNING * INTO t;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'tenant "%" already exists', name USING ERRCODE = 'duplicate_object';
	END IF;
	doc := tenant_backup._key_create(name);
	INSERT INTO tenant_backup.keys (tenant, key_id, wrapped) VALUES (name, doc->>'key_id', doc);
	PERFORM tenant_backup._audit('tenant created', name, jsonb_build_object('tier', tier, 'key_id', doc->>'key_id'));
	RETURN t;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_create(text, text) IS
	'Creates a tenant and its key (wrapped by the master key, also written to storage). tier: shared or dedicated.';

-- Where a Redis source's keys are: server (host:port), database number ('*' for a
-- dedicated tenant's whole server) and key prefix ('' for the whole database).
CREATE FUNCTION tenant_backup._redis_keyspace(p_tenant text, p_locator text, p_options jsonb,
											  OUT server text, OUT db text, OUT prefix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT substring(p_locator FROM '^[a-z]+://(?:[^@/]*@)?([^/?]*)'),
		   CASE WHEN (SELECT t.tier FROM tenant_backup.tenants t WHERE t.name = p_tenant) = 'dedicated' THEN '*'
				ELSE coalesce(nullif(substring(p_locator FROM '^[a-z]+://[^/]*/([0-9]+)'), ''), '0') END,
		   coalesce(p_options->>'key_prefix', '')
$$;

-- Two tenants whose Redis keys could overlap would back up (and restore over) each
-- other's keys: a prefix that begins another (acme / acme2), a prefix inside a database
-- another tenant owns whole, or anything on a dedicated tenant's server.
CREATE FUNCTION tenant_backup._redis_overlap_check(p_tenant text, p_locator text, p_options jsonb)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	mine record;
	other record;
BEGIN
	IF p_locator !~ '^redis://' THEN
		RAISE EXCEPTION 'the locator of tenant "%" is not a redis:// URI', p_tenant USING ERRCODE = 'invalid_parameter_value',
			HINT = 'redis://[user@]host:port/db, with options {"key_prefix": "acme:"} for a prefix on a shared database.';
	END IF;
	IF p_options ? 'key_prefix' AND (jsonb_typeof(p_options->'key_prefix') <> 'string' OR p_options->>'key_prefix' = '') THEN
		RAISE EXCEPTION 'key_prefix of tenant "%" must be a non-empty string', p_tenant
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT * INTO mine FROM tenant_backup._redis_keyspace(p_tenant, p_locator, p_options);
	SELECT s.tenant, k.db, k.prefix INTO other
	FROM tenant_backup.sources s, LATERAL tenant_backup._redis_keyspace(s.tenant, s.locator, s.options) k
	WHERE s.engine = 'redis' AND k.server = mine.server AND (k.db = mine.db OR '*' IN (k.db, mine.db))
	  AND (starts_with(k.prefix, mine.prefix) OR starts_with(mine.prefix, k.prefix))
	LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'the Redis keys of tenant "%" would overlap those of tenant "%" on % (database %, prefix "%")',
			p_tenant, other.tenant, mine.server, other.db, other.prefix
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Give each tenant its own database number, or key prefixes of which none begins another.';
	END IF;
END
$$;

CREATE FUNCTION tenant_backup.tenant_add_database(tenant text, engine text, locator text,
												  options jsonb DEFAULT '{}')
RETURNS tenant_backup.sources LANGUAGE plpgsql SECURITY DEFINER
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
	ELSIF engine = 'postgres' AND password IS NULL
		  AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
		-- As with dblink: without a password, pg_dump would connect with the server's own identity.
		RAISE EXCEPTION 'a conninfo without a password can only be added by a superuser'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Include the password of the role to connect as; it is sealed with the master key.';
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
	PERFORM tenant_backup._audit('database added', tenant,
								 jsonb_build_object('engine', engine, 'locator', clean, 'source_id', s.id));
	RETURN s;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_add_database(text, text, text, jsonb) IS
	'Adds a database of the tenant. postgres: a database on this cluster or a conninfo; other engines: a URI for the agents. A password in the locator is sealed with the master key, never stored in clear.';

CREATE FUNCTION tenant_backup.tenant_backup(tenant text, engine text DEFAULT NULL, wait boolean DEFAULT false)
RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN QUERY SELECT tenant_backup._request('backup', tenant, engine, NULL, NULL, wait);
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_backup(text, text, boolean) IS
	'Backs up every database of the tenant (or of one engine); returns the job ids. wait => false (default) queues the jobs with the calling transaction, so they run after it commits. wait => true returns once every job finished and raises the first failure; it cannot run inside a transaction block.';

CREATE FUNCTION tenant_backup.tenant_restore(tenant text, engine text DEFAULT NULL, backup_id bigint DEFAULT NULL,
											 target text DEFAULT NULL, wait boolean DEFAULT true)
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
	RETURN QUERY SELECT tenant_backup._request('restore', tenant, engine, backup_id, target, wait);
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_restore(text, text, bigint, text, boolean) IS
	'Restores the latest complete backup (or backup_id). In place: loaded into a fresh database beside the live one, swapped only after it loaded completely; the old one is kept as <name>_tb_old_<job>. With target: restored into that new database, the live one untouched.';

CREATE FUNCTION tenant_backup.tenant_backups(tenant text)
RETURNS TABLE (id bigint, engine text, status text, started timestamptz, finished timestamptz, bytes_in bigint,
			   bytes_stored bigint, sha256 text, object_key text, key_id text, error text)
LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	RETURN QUERY
		SELECT b.id, b.engine, b.status, b.started, b.finished, b.bytes_in, b.bytes_stored, b.sha256,
			   b.object_key, b.key_id, b.error
		FROM tenant_backup.backups b WHERE b.tenant = tenant_backups.tenant
		ORDER BY b.started DESC, b.id DESC;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_backups(text) IS 'The tenant''s backups, newest first.';

CREATE FUNCTION tenant_backup.tenant_set_schedule(tenant text, every interval)
RETURNS tenant_backup.tenants LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants;
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	IF every IS NOT NULL AND every < interval '1 second' THEN
		RAISE EXCEPTION 'schedule interval % is too short', every
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Use at least 1 second; NULL means the default.';
	END IF;
	UPDATE tenant_backup.tenants SET schedule = every,
		next_due = tenant_backup._next_due(tenants.name,
			coalesce(every, coalesce(current_setting('tenant_backup.default_schedule', true), '1 day')::interval),
			now())
	WHERE name = tenant RETURNING * INTO t;
	PERFORM tenant_backup._audit('schedule set', tenant, jsonb_build_object('every', every));
	RETURN t;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_set_schedule(text, interval) IS
	'Backs the tenant up every interval (NULL: tenant_backup.default_schedule), starting at an offset derived from its name.';

-- The WAL archiver of this cluster (archive_library = 'tenant_backup'): files waiting
-- in pg_wal, the oldest of them, the last success and failure, and a gap in the
-- archive the archiver found (until the next base backup).
CREATE FUNCTION tenant_backup._wal_archive_lag(OUT tenant text, OUT pending bigint, OUT oldest_pending timestamptz,
											   OUT last_archived timestamptz, OUT last_failure text, OUT gap text)
RETURNS record LANGUAGE sql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT nullif(current_setting('tenant_backup.archive_tenant', true), ''),
		   (SELECT count(*) FROM pg_ls_archive_statusdir() a WHERE a.name LIKE '%.ready'),
		   (SELECT min(a.modification) FROM pg_ls_archive_statusdir() a WHERE a.name LIKE '%.ready'),
		   (SELECT a.last_archived_time FROM pg_stat_archiver a),
		   (SELECT a.last_failed_wal || ' at ' || a.last_failed_time FROM pg_stat_archiver a
			WHERE a.last_failed_time > coalesce(a.last_archived_time, '-infinity')),
		   pg_read_file('pg_stat_tmp/tenant_backup_wal_gap', 0, 200, true)
	WHERE current_setting('archive_library') = 'tenant_backup'
$$;

CREATE VIEW tenant_backup.status AS
SELECT t.name AS tenant,
	   s.engine,
	   s.id AS source_id,
	   s.locator,
	   last_ok.finished AS last_success,
	   now() - last_ok.finished AS age,
	   t.next_due,
	   last_err.error AS last_error,
	   running.id AS running_job,
	   running.kind AS running_kind,
	   running.bytes_done AS running_bytes,
	   CASE WHEN running.lease_owner LIKE 'agent:%' THEN split_part(running.lease_owner, ':', 2)
			WHEN running.lease_owner IS NOT NULL THEN 'background worker' END AS running_on,
	   wal.pending AS wal_pending,
	   wal.oldest_pending AS wal_oldest_pending,
	   wal.last_archived AS wal_last_archived,
	   wal.last_failure AS wal_last_failure,
	   wal.gap AS wal_gap
FROM tenant_backup.tenants t
JOIN tenant_backup.sources s ON s.tenant = t.name
LEFT JOIN LATERAL (SELECT b.finished FROM tenant_backup.backups b
				   WHERE b.source_id = s.id AND b.status = 'complete'
				   ORDER BY b.finished DESC LIMIT 1) last_ok ON true
LEFT JOIN LATERAL (SELECT j.error FROM tenant_backup.jobs j
				   WHERE j.source_id = s.id AND j.state = 'failed'
				   AND j.finished > coalesce(last_ok.finished, '-infinity')
				   ORDER BY j.finished DESC LIMIT 1) last_err ON true
LEFT JOIN LATERAL (SELECT j.id, j.kind, j.bytes_done, j.lease_owner FROM tenant_backup.jobs j
				   WHERE j.source_id = s.id AND j.state = 'running' ORDER BY j.id LIMIT 1) running ON true
LEFT JOIN tenant_backup._wal_archive_lag() wal ON wal.tenant = t.name AND s.engine = 'postgres';
COMMENT ON VIEW tenant_backup.status IS
	'Per tenant database: last successful backup and its age, next due, last error since then, running job, bytes done and who runs it (an agent''s name or the background worker); for the dedicated tenant whose WAL this cluster archives, WAL files waiting to be archived, the oldest of them, the last success and the last failure since.';

-- ---------------------------------------------------------------- agents

CREATE FUNCTION tenant_backup._agent_check(p_agent text, p_engine text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_agent IS NULL OR p_agent !~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$' THEN
		RAISE EXCEPTION 'invalid agent name "%"', p_agent
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Use letters, digits and _ . @ -, at most 63.';
	END IF;
	IF p_engine IS NULL OR p_engine NOT IN ('mysql', 'mongodb', 'redis') THEN
		RAISE EXCEPTION 'agents take mysql, mongodb or redis jobs, not "%"', p_engine
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'PostgreSQL jobs run in the extension''s own background workers.';
	END IF;
END
$$;

CREATE FUNCTION tenant_backup.agent_hello(agent text, engines text[], host text DEFAULT NULL, version text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e text;
BEGIN
	FOREACH e IN ARRAY coalesce(engines, '{}') LOOP
		PERFORM tenant_backup._agent_check(agent, e);
	END LOOP;
	INSERT INTO tenant_backup.agent_registry AS r (name, host, engines, version)
	VALUES (agent, host, engines, version)
	ON CONFLICT (name) DO UPDATE SET host = excluded.host, engines = excluded.engines, version = excluded.version,
		last_seen = now(), started = CASE WHEN r.host IS DISTINCT FROM excluded.host THEN now() ELSE r.started END;
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_hello(text, text[], text, text) IS
	'An agent announces itself (at start and as a heartbeat while idle): name, engines, host, version.';

CREATE FUNCTION tenant_backup.agent_claim(agent text, engine text, lease_seconds int DEFAULT 60)
RETURNS TABLE (job_id bigint, lease text, kind text, tenant text, locator text, sealed_password text,
			   options jsonb, key_doc jsonb, backup_id bigint, object_key text, restore_target text, attempt int,
			   tier text)
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
	token := format('agent:%s:%s', agent, md5(random()::text || clock_timestamp()::text || pg_backend_pid()));
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
		(SELECT k.wrapped FROM tenant_backup.keys k WHERE k.tenant = j.tenant AND k.state = 'active'
		 ORDER BY k.created DESC, k.key_id DESC LIMIT 1),
		bid, obj, j.restore_target, j.attempts, (SELECT t.tier FROM tenant_backup.tenants t WHERE t.name = j.tenant);
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_claim(text, text, int) IS
	'Claims the oldest queued job of an engine (FOR UPDATE SKIP LOCKED) under a lease token unique to this attempt; no row when there is none. Returns what the job needs, with the tenant key and password only in wrapped or sealed form.';

CREATE FUNCTION tenant_backup.agent_renew(job_id bigint, lease text, bytes_done bigint DEFAULT NULL,
										  lease_seconds int DEFAULT 60)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE tenant_backup.agent_registry SET last_seen = now() WHERE name = split_part(lease, ':', 2);
	UPDATE tenant_backup.jobs j SET lease_expires = now() + make_interval(secs => greatest(lease_seconds, 5)),
		bytes_done = coalesce(agent_renew.bytes_done, j.bytes_done)
	WHERE j.id = agent_renew.job_id AND j.lease_owner = lease AND j.state = 'running';
	RETURN FOUND;
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_renew(bigint, text, bigint, int) IS
	'Renews the lease and records progress; false means the lease was lost (the job was given to another attempt): stop at once.';

CREATE FUNCTION tenant_backup.agent_report(job_id bigint, lease text, error text DEFAULT NULL, result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	held boolean;
BEGIN
	IF error IS NULL AND result IS NULL AND
	   (SELECT kind FROM tenant_backup.jobs j WHERE j.id = agent_report.job_id) = 'backup' THEN
		RAISE EXCEPTION 'a successful backup report needs its result (object, bytes_in, bytes_stored, sha256, key_id)'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	held := tenant_backup._job_finish(job_id, lease, error, result);
	-- A report sent again after its answer was lost (the connection dropped): the job
	-- already names this very object as complete, so it was this report that landed.
	IF NOT held AND error IS NULL AND result ? 'object' THEN
		RETURN EXISTS (SELECT 1 FROM tenant_backup.backups b
					   WHERE b.job_id = agent_report.job_id AND b.status = 'complete'
					   AND b.object_key = result->>'object');
	END IF;
	IF held THEN
		UPDATE tenant_backup.agent_registry SET last_seen = now(),
			jobs_done = jobs_done + (error IS NULL)::int, jobs_failed = jobs_failed + (error IS NOT NULL)::int
		WHERE name = split_part(lease, ':', 2);
	END IF;
	RETURN held;
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_report(bigint, text, text, jsonb) IS
	'Ends the attempt: error NULL is success (a backup needs result: object, bytes_in, bytes_stored, sha256, key_id); an error queues the job again until max_attempts. False if the lease was lost: nothing was recorded. Sending the same successful report again answers true.';

CREATE FUNCTION tenant_backup.agent_release(job_id bigint, lease text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE tenant_backup.jobs j SET state = 'queued', attempts = attempts - 1, lease_owner = NULL, lease_expires = NULL
	WHERE j.id = agent_release.job_id AND j.lease_owner = lease AND j.state = 'running';
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	UPDATE tenant_backup.backups b SET status = 'failed', finished = now(), error = 'released: the agent stopped'
	WHERE b.job_id = agent_release.job_id AND b.status = 'running';
	RETURN true;
END
$$;
COMMENT ON FUNCTION tenant_backup.agent_release(bigint, text) IS
	'Gives a job back untried (an agent shutting down): it is queued again and the attempt does not count.';

CREATE VIEW tenant_backup.agents AS
SELECT r.name, r.host, r.engines, r.version, r.started, r.last_seen, now() - r.last_seen AS silent_for,
	   (SELECT count(*) FROM tenant_backup.jobs j WHERE j.state = 'running'
		AND j.lease_owner LIKE 'agent:' || r.name || ':%') AS running_jobs,
	   r.jobs_done, r.jobs_failed
FROM tenant_backup.agent_registry r;
COMMENT ON VIEW tenant_backup.agents IS 'Agents, their last heartbeat, running jobs and totals.';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tenant_backup FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	tenant_backup.tenant_create(text, text),
	tenant_backup.tenant_add_database(text, text, text, jsonb),
	tenant_backup.tenant_backup(text, text, boolean),
	tenant_backup.tenant_restore(text, text, bigint, text, boolean),
	tenant_backup.tenant_backups(text),
	tenant_backup.tenant_set_schedule(text, interval),
	tenant_backup._wal_archive_lag()
TO tenant_backup_operator;
GRANT SELECT ON tenant_backup.status TO tenant_backup_operator;
GRANT SELECT ON tenant_backup.agents TO tenant_backup_operator, tenant_backup_agent;
GRANT EXECUTE ON FUNCTION
	tenant_backup.agent_hello(text, text[], text, text),
	tenant_backup.agent_claim(text, text, int),
	tenant_backup.agent_renew(bigint, text, bigint, int),
	tenant_backup.agent_report(bigint, text, text, jsonb),
	tenant_backup.agent_release(bigint, text)
TO tenant_backup_agent;
