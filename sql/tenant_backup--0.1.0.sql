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
	created timestamptz NOT NULL DEFAULT now(),
	-- Bring your own key: the command that wraps and unwraps the tenant's keys (README).
	key_command text,
	-- The tenant's retention policy (NULL: the default policy), see tenant_set_retention().
	retention jsonb,
	-- A legal hold: while set, nothing of the tenant is deleted.
	hold_reason text,
	hold_since timestamptz,
	hold_by text
);
COMMENT ON TABLE tenant_backup.tenants IS
	'One row per tenant. schedule NULL means tenant_backup.default_schedule; next_due is when the worker next backs it up.';

CREATE TABLE tenant_backup.settings (
	name text PRIMARY KEY CHECK (name IN ('default_retention')),
	value jsonb NOT NULL,
	set_at timestamptz NOT NULL DEFAULT now(),
	set_by text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE tenant_backup.settings IS
	'Catalog-wide settings changed through the API: default_retention (tenant_set_retention(NULL, ...)).';

CREATE TABLE tenant_backup.key_store (
	tenant text NOT NULL REFERENCES tenant_backup.tenants ON DELETE CASCADE,
	key_id text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
	state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired', 'destroyed')),
	source text NOT NULL DEFAULT 'master' CHECK (source IN ('master', 'command')),
	wrapped jsonb,
	created timestamptz NOT NULL DEFAULT now(),
	retired timestamptz,
	destroyed timestamptz,
	PRIMARY KEY (tenant, key_id),
	CHECK ((state = 'destroyed') = (wrapped IS NULL))
);
COMMENT ON TABLE tenant_backup.key_store IS
	'Tenant keys, only ever stored wrapped, by the master key or the tenant''s key command (also in storage as <tenant>/keys/<key id>.json). Read it through the view tenant_backup.keys.';

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
	kind text NOT NULL CHECK (kind IN ('backup', 'restore', 'drill')),
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
	result jsonb,
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
	-- What the backup holds, counted as it was dumped (tables' rows, documents, keys, files);
	-- a restore drill compares what it loaded with it.
	contents jsonb,
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
	'Append-only audit trail; each row''s hash covers the previous row''s hash, so edits and deletions show (tenant_audit_verify()).';

-- Append-only for everyone, the extension included: only a superuser switching the
-- triggers off could change a row, and tenant_audit_verify() shows that.
CREATE FUNCTION tenant_backup._audit_append_only()
RETURNS trigger LANGUAGE plpgsql
AS $$
BEGIN
	RAISE EXCEPTION 'tenant_backup.audit is append-only: % refused', TG_OP
		USING ERRCODE = 'insufficient_privilege', HINT = 'Audit rows are never changed or removed, not even by tenant_drop().';
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON tenant_backup.audit
	FOR EACH ROW EXECUTE FUNCTION tenant_backup._audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON tenant_backup.audit
	FOR EACH STATEMENT EXECUTE FUNCTION tenant_backup._audit_append_only();

CREATE TABLE tenant_backup.drills (
	id bigserial PRIMARY KEY,
	tenant text NOT NULL REFERENCES tenant_backup.tenants ON DELETE CASCADE,
	at timestamptz NOT NULL DEFAULT now(),
	finished timestamptz,
	actor text NOT NULL DEFAULT session_user,
	ok boolean NOT NULL,
	checks jsonb NOT NULL
);
COMMENT ON TABLE tenant_backup.drills IS
	'Restore drills (tenant_restore_drill()): per engine, the backup restored into scratch, what was compared, the outcome.';

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
	ELSIF p_kind = 'drill' THEN
		-- The newest complete backup of each of the tenant's databases, loaded into scratch.
		FOR b IN SELECT DISTINCT ON (x.source_id) x.* FROM tenant_backup.backups x
				 WHERE x.tenant = p_tenant AND x.status = 'complete' AND x.source_id IS NOT NULL
				 AND (p_engine IS NULL OR x.engine = p_engine)
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
	-- A drill succeeds only if what it loaded is what the backup recorded at dump time.
	IF p_error IS NULL THEN
		SELECT tenant_backup._drill_mismatch(x.backup_id, p_result) INTO p_error
		FROM tenant_backup.jobs x WHERE x.id = p_job AND x.kind = 'drill';
	END IF;
	IF p_error IS NULL AND p_result IS NOT NULL THEN
		UPDATE tenant_backup.backups SET status = 'complete', finished = now(),
			bytes_in = (p_result->>'bytes_in')::bigint, bytes_stored = (p_result->>'bytes_stored')::bigint,
			sha256 = p_result->>'sha256', object_key = p_result->>'object', key_id = p_result->>'key_id',
			start_lsn = (p_result->>'start_lsn')::pg_lsn, stop_lsn = (p_result->>'stop_lsn')::pg_lsn,
			timeline = (p_result->>'timeline')::int, contents = p_result->'contents'
		WHERE job_id = p_job AND status = 'running'
		  AND EXISTS (SELECT 1 FROM tenant_backup.jobs WHERE id = p_job AND lease_owner = p_lease AND state = 'running')
		RETURNING id INTO done_backup;
	END IF;
	UPDATE tenant_backup.jobs SET
		state = CASE WHEN p_error IS NULL THEN 'succeeded' WHEN attempts < max_attempts THEN 'queued' ELSE 'failed' END,
		finished = CASE WHEN p_error IS NOT NULL AND attempts < max_attempts THEN NULL ELSE now() END,
		error = p_error, lease_owner = NULL, lease_expires = NULL,
		backup_id = coalesce(done_backup, backup_id), result = p_result
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

CREATE FUNCTION tenant_backup._key_create(p_tenant text, p_command text)
RETURNS jsonb LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_key_create';
COMMENT ON FUNCTION tenant_backup._key_create(text, text) IS
	'Creates a tenant key, stores it wrapped by the master key (p_command NULL) or by the tenant''s key command in storage, returns the wrapped document.';

CREATE FUNCTION tenant_backup._storage_delete(p_object text)
RETURNS bigint LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_storage_delete';
COMMENT ON FUNCTION tenant_backup._storage_delete(text) IS
	'Deletes an object and its manifest from storage (the manifest first, so nothing lists a half-deleted backup); returns the bytes freed, 0 if it was already gone.';

CREATE FUNCTION tenant_backup._storage_delete_prefix(p_prefix text, OUT objects bigint, OUT bytes bigint)
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_storage_delete_prefix';
COMMENT ON FUNCTION tenant_backup._storage_delete_prefix(text) IS
	'Deletes every object whose name begins with p_prefix (a tenant''s "acme/" or "acme/keys/"); returns how many and their bytes.';

CREATE FUNCTION tenant_backup._key_rewrap(p_tenant text, p_doc jsonb, p_new_master_key_file text)
RETURNS jsonb LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_key_rewrap';
COMMENT ON FUNCTION tenant_backup._key_rewrap(text, jsonb, text) IS
	'Unwraps a tenant key document with the current master key, wraps it with the master key in the file, stores it in storage; returns the new document.';

CREATE FUNCTION tenant_backup._secret_reseal(p_context text, p_sealed text, p_new_master_key_file text)
RETURNS text LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'tenant_backup_secret_reseal';

CREATE FUNCTION tenant_backup._master_key_id(p_key_file text DEFAULT NULL)
RETURNS text LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_backup_master_key_id';
COMMENT ON FUNCTION tenant_backup._master_key_id(text) IS
	'The id of the configured master key (or of the key in p_key_file): names it without revealing it.';

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
	doc := tenant_backup._key_create(name, NULL);
	INSERT INTO tenant_backup.key_store (tenant, key_id, wrapped) VALUES (name, doc->>'key_id', doc);
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

-- ---------------------------------------------------------------- keys

CREATE FUNCTION tenant_backup._require_program_rights(p_what text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
	   AND NOT pg_has_role(session_user, 'pg_execute_server_program', 'MEMBER') THEN
		RAISE EXCEPTION 'only a superuser or a member of pg_execute_server_program can %', p_what
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'The command runs on the database server as its operating system user, as COPY ... PROGRAM does.';
	END IF;
END
$$;

-- Makes a new key the tenant's active one, wrapped as the tenant's key source says;
-- the keys before it are retired (still used to read the backups made under them).
CREATE FUNCTION tenant_backup._key_rotate(p_tenant text, p_reason text)
RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	command text := (SELECT t.key_command FROM tenant_backup.tenants t WHERE t.name = p_tenant);
	doc jsonb := tenant_backup._key_create(p_tenant, command);
	old text[];
BEGIN
	WITH r AS (UPDATE tenant_backup.key_store SET state = 'retired', retired = now()
			   WHERE tenant = p_tenant AND state = 'active' RETURNING key_id)
	SELECT array_agg(key_id ORDER BY key_id) INTO old FROM r;
	INSERT INTO tenant_backup.key_store (tenant, key_id, wrapped, source)
	VALUES (p_tenant, doc->>'key_id', doc, CASE WHEN command IS NULL THEN 'master' ELSE 'command' END);
	PERFORM tenant_backup._audit(p_reason, p_tenant,
								 jsonb_build_object('key_id', doc->>'key_id', 'retired', to_jsonb(old),
													'source', CASE WHEN command IS NULL THEN 'master' ELSE 'command' END));
	RETURN doc->>'key_id';
END
$$;

CREATE FUNCTION tenant_backup.tenant_rotate_key(tenant text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	IF (SELECT t.key_command FROM tenant_backup.tenants t WHERE t.name = tenant) IS NOT NULL THEN
		PERFORM tenant_backup._require_program_rights('rotate a key made by the tenant''s key command');
	END IF;
	PERFORM 1 FROM tenant_backup.tenants t WHERE t.name = tenant FOR UPDATE;
	RETURN tenant_backup._key_rotate(tenant, 'key rotated');
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_rotate_key(text) IS
	'New backups of the tenant use a new tenant key (returned: its id); older backups stay readable with the key they were made with until retention removes them. Nothing is re-encrypted or uploaded again.';

CREATE FUNCTION tenant_backup.tenant_set_key_source(tenant text, command text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	PERFORM tenant_backup._require_program_rights('set a tenant''s key command');
	IF command IS NOT NULL AND (btrim(command) = '' OR command ~ '[\n\r]' OR octet_length(command) > 1024) THEN
		RAISE EXCEPTION 'invalid key command for tenant "%"', tenant USING ERRCODE = 'invalid_parameter_value',
			HINT = 'One line of at most 1024 bytes, run by /bin/sh -c; NULL goes back to the master key.';
	END IF;
	PERFORM 1 FROM tenant_backup.tenants t WHERE t.name = tenant FOR UPDATE;
	UPDATE tenant_backup.tenants t SET key_command = command WHERE t.name = tenant;
	-- The first key under the new source proves the command wraps and unwraps.
	RETURN tenant_backup._key_rotate(tenant,
		CASE WHEN command IS NULL THEN 'key source set to the master key' ELSE 'key source set to a key command' END);
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_set_key_source(text, text) IS
	'Bring your own key: the tenant''s keys from now on are wrapped by command (a KMS client, say; the contract is in the README) instead of the master key, so reading its new backups needs that command. Makes and checks a new key at once. NULL: back to the master key.';

CREATE VIEW tenant_backup.keys AS
SELECT k.tenant, k.key_id, k.state, k.source, k.created, k.retired, k.destroyed,
	   coalesce(u.backups, 0) AS backups, u.backup_ids, u.oldest_backup, u.newest_backup
FROM tenant_backup.key_store k
LEFT JOIN LATERAL (SELECT count(*) AS backups, array_agg(b.id ORDER BY b.id) AS backup_ids,
						  min(b.started) AS oldest_backup, max(b.started) AS newest_backup
				   FROM tenant_backup.backups b
				   WHERE b.tenant = k.tenant AND b.key_id = k.key_id AND b.status = 'complete') u ON true;
COMMENT ON VIEW tenant_backup.keys IS
	'Tenant keys: id, state (active, retired, destroyed), source (master key or the tenant''s key command), and the complete backups made with each. Never key material.';

-- Re-wraps every tenant key the master key wraps, and reseals every source password,
-- with the master key in p_new_key_file. Safe to run again after a failure: what the
-- new key already wraps is left alone.
CREATE FUNCTION tenant_backup.tenant_rotate_master_key(new_key_file text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old_id text := tenant_backup._master_key_id();
	new_id text := tenant_backup._master_key_id(new_key_file);
	k record;
	src record;
	rewrapped int := 0;
	resealed int := 0;
	result jsonb;
BEGIN
	IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
		RAISE EXCEPTION 'only a superuser can rotate the master key' USING ERRCODE = 'insufficient_privilege';
	END IF;
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
COMMENT ON FUNCTION tenant_backup.tenant_rotate_master_key(text) IS
	'Re-wraps the tenant keys (catalog and storage) and reseals the source passwords with the master key in new_key_file; backups are not touched. Then point tenant_backup.master_key_file (and the agents) at the new file and reload.';

-- ---------------------------------------------------------------- retention

CREATE FUNCTION tenant_backup._retention_check(p_policy jsonb)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF (p_policy->>'keep_last')::int IS NULL OR (p_policy->>'keep_last')::int < 1 THEN
		RAISE EXCEPTION 'keep_last must be at least 1' USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Retention never removes a tenant''s newest backup.';
	END IF;
	IF least((p_policy->>'keep_daily')::int, (p_policy->>'keep_weekly')::int, (p_policy->>'keep_monthly')::int) < 0
	   OR (p_policy->>'max_age')::interval < interval '0' THEN
		RAISE EXCEPTION 'retention counts and max_age cannot be negative' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN p_policy;
END
$$;

-- The policy that applies to a tenant: its own, else the default set through the API,
-- else the built-in one.
CREATE FUNCTION tenant_backup._retention_policy(p_tenant text, OUT policy jsonb, OUT origin text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(t.retention, d.value,
					'{"keep_last": 7, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "max_age": null}'),
		   CASE WHEN t.retention IS NOT NULL THEN 'tenant' WHEN d.value IS NOT NULL THEN 'default' ELSE 'built-in' END
	FROM (SELECT p_tenant AS name) n
	LEFT JOIN tenant_backup.tenants t ON t.name = n.name
	LEFT JOIN tenant_backup.settings d ON d.name = 'default_retention'
$$;

CREATE FUNCTION tenant_backup.tenant_set_retention(tenant text, keep_last int DEFAULT 7, keep_daily int DEFAULT 7,
												   keep_weekly int DEFAULT 4, keep_monthly int DEFAULT 12,
												   max_age interval DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	policy jsonb := tenant_backup._retention_check(jsonb_build_object(
		'keep_last', keep_last, 'keep_daily', coalesce(keep_daily, 0), 'keep_weekly', coalesce(keep_weekly, 0),
		'keep_monthly', coalesce(keep_monthly, 0), 'max_age', max_age));
BEGIN
	IF tenant IS NULL THEN
		INSERT INTO tenant_backup.settings (name, value) VALUES ('default_retention', policy)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, set_at = now(), set_by = session_user;
	ELSE
		PERFORM tenant_backup._tenant_check(tenant);
		UPDATE tenant_backup.tenants t SET retention = policy WHERE t.name = tenant;
	END IF;
	PERFORM tenant_backup._audit(CASE WHEN tenant IS NULL THEN 'default retention set' ELSE 'retention set' END,
								 tenant, policy);
	RETURN policy;
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_set_retention(text, int, int, int, int, interval) IS
	'GFS retention: a complete backup is kept if it is among the keep_last newest, the newest of one of the keep_daily / keep_weekly / keep_monthly most recent days / ISO weeks / months (UTC) that have backups, or younger than max_age. Per database of the tenant. tenant NULL sets the default policy of tenants without one.';

-- Which of a tenant's backups the policy keeps at p_at, and why. Complete backups are
-- judged per database; a failed one goes once it is older than the oldest kept one and
-- a week old (recent failures stay in view).
CREATE FUNCTION tenant_backup._retention_plan(p_tenant text, p_at timestamptz DEFAULT now())
RETURNS TABLE (backup_id bigint, engine text, status text, started timestamptz, object_key text, bytes_stored bigint,
			   key_id text, start_lsn pg_lsn, keep boolean, reasons text[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH policy AS (SELECT p.policy FROM tenant_backup._retention_policy(p_tenant) p),
	complete AS (
		SELECT b.*, coalesce(b.source_id, -1) AS grp,
			   row_number() OVER (PARTITION BY coalesce(b.source_id, -1) ORDER BY b.started DESC, b.id DESC) AS nth,
			   row_number() OVER (PARTITION BY coalesce(b.source_id, -1), date_trunc('day', b.started AT TIME ZONE 'UTC')
								  ORDER BY b.started DESC, b.id DESC) AS in_day,
			   dense_rank() OVER (PARTITION BY coalesce(b.source_id, -1)
								  ORDER BY date_trunc('day', b.started AT TIME ZONE 'UTC') DESC) AS day_rank,
			   row_number() OVER (PARTITION BY coalesce(b.source_id, -1), date_trunc('week', b.started AT TIME ZONE 'UTC')
								  ORDER BY b.started DESC, b.id DESC) AS in_week,
			   dense_rank() OVER (PARTITION BY coalesce(b.source_id, -1)
								  ORDER BY date_trunc('week', b.started AT TIME ZONE 'UTC') DESC) AS week_rank,
			   row_number() OVER (PARTITION BY coalesce(b.source_id, -1), date_trunc('month', b.started AT TIME ZONE 'UTC')
								  ORDER BY b.started DESC, b.id DESC) AS in_month,
			   dense_rank() OVER (PARTITION BY coalesce(b.source_id, -1)
								  ORDER BY date_trunc('month', b.started AT TIME ZONE 'UTC') DESC) AS month_rank
		FROM tenant_backup.backups b WHERE b.tenant = p_tenant AND b.status = 'complete'),
	judged AS (
		SELECT c.*, array_remove(ARRAY[
				CASE WHEN c.nth <= (pol.policy->>'keep_last')::int THEN 'last' END,
				CASE WHEN c.in_day = 1 AND c.day_rank <= (pol.policy->>'keep_daily')::int THEN 'daily' END,
				CASE WHEN c.in_week = 1 AND c.week_rank <= (pol.policy->>'keep_weekly')::int THEN 'weekly' END,
				CASE WHEN c.in_month = 1 AND c.month_rank <= (pol.policy->>'keep_monthly')::int THEN 'monthly' END,
				CASE WHEN c.started > p_at - (pol.policy->>'max_age')::interval THEN 'max_age' END], NULL) AS why
		FROM complete c, policy pol)
	SELECT j.id, j.engine, j.status, j.started, j.object_key, j.bytes_stored, j.key_id, j.start_lsn,
		   cardinality(j.why) > 0, j.why
	FROM judged j
	UNION ALL
	SELECT f.id, f.engine, f.status, f.started, f.object_key, f.bytes_stored, f.key_id, f.start_lsn,
		   f.started >= least(p_at - interval '7 days',
							   coalesce((SELECT min(j.started) FROM judged j
										 WHERE cardinality(j.why) > 0 AND j.grp = coalesce(f.source_id, -1)), '-infinity')),
		   '{}'::text[]
	FROM tenant_backup.backups f WHERE f.tenant = p_tenant AND f.status = 'failed'
	ORDER BY 4 DESC, 1 DESC
$$;

CREATE FUNCTION tenant_backup.tenant_hold(tenant text, reason text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM tenant_backup._tenant_check(tenant);
	IF reason IS NULL OR btrim(reason) = '' THEN
		RAISE EXCEPTION 'a hold needs a reason' USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Say why, e.g. the case or ticket number: it goes into the audit log.';
	END IF;
	UPDATE tenant_backup.tenants t SET hold_reason = reason, hold_since = now(), hold_by = session_user
	WHERE t.name = tenant;
	PERFORM tenant_backup._audit('hold placed', tenant, jsonb_build_object('reason', reason));
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_hold(text, text) IS
	'Legal hold: while it lasts nothing of the tenant is deleted (retention skips it, tenant_drop refuses). Backups go on.';

CREATE FUNCTION tenant_backup.tenant_release(tenant text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants := tenant_backup._tenant_check(tenant);
BEGIN
	IF t.hold_since IS NULL THEN
		RAISE EXCEPTION 'tenant "%" is not on hold', tenant USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	UPDATE tenant_backup.tenants x SET hold_reason = NULL, hold_since = NULL, hold_by = NULL WHERE x.name = tenant;
	PERFORM tenant_backup._audit('hold released', tenant,
								 jsonb_build_object('reason', t.hold_reason, 'since', t.hold_since, 'by', t.hold_by));
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_release(text) IS 'Ends the tenant''s legal hold; retention applies again.';

-- Deletes what retention does not keep: each object (and manifest) from storage first,
-- then its row, with an audit entry per backup; then the retired keys no backup needs.
CREATE FUNCTION tenant_backup._expire(p_tenant text, p_actor text)
RETURNS TABLE (backup_id bigint, engine text, started timestamptz, object_key text, bytes_stored bigint, action text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	b record;
	k record;
	freed bigint;
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
		freed := CASE WHEN b.object_key IS NOT NULL THEN tenant_backup._storage_delete(b.object_key) ELSE 0 END;
		DELETE FROM tenant_backup.backups x WHERE x.id = b.backup_id;
		PERFORM tenant_backup._audit('backup expired', p_tenant,
			jsonb_build_object('backup_id', b.backup_id, 'engine', b.engine, 'status', b.status, 'started', b.started,
							   'object', b.object_key, 'bytes', freed), p_actor);
		backup_id := b.backup_id; engine := b.engine; started := b.started; object_key := b.object_key;
		bytes_stored := freed; action := 'deleted';
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
		PERFORM tenant_backup._storage_delete_prefix(p_tenant || '/keys/' || k.key_id || '.json');
		UPDATE tenant_backup.key_store x SET state = 'destroyed', destroyed = now(), wrapped = NULL
		WHERE x.tenant = p_tenant AND x.key_id = k.key_id;
		PERFORM tenant_backup._audit('key destroyed', p_tenant,
									 jsonb_build_object('key_id', k.key_id, 'reason', 'no backup uses it'), p_actor);
	END LOOP;
END
$$;

CREATE FUNCTION tenant_backup.tenant_expire(tenant text, dry_run boolean DEFAULT true)
RETURNS TABLE (backup_id bigint, engine text, started timestamptz, object_key text, bytes_stored bigint, action text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants := tenant_backup._tenant_check(tenant);
BEGIN
	IF dry_run OR t.hold_since IS NOT NULL THEN
		IF NOT dry_run THEN
			RAISE EXCEPTION 'tenant "%" is on legal hold since %: nothing of it is deleted', tenant, t.hold_since
				USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = format('Reason: %s', t.hold_reason),
					  HINT = 'tenant_backup.tenant_release() ends the hold.';
		END IF;
		RETURN QUERY SELECT p.backup_id, p.engine, p.started, p.object_key, p.bytes_stored,
							CASE WHEN t.hold_since IS NOT NULL THEN 'held' ELSE 'would delete' END
					 FROM tenant_backup._retention_plan(tenant) p WHERE NOT p.keep ORDER BY p.started, p.backup_id;
		RETURN;
	END IF;
	RETURN QUERY SELECT * FROM tenant_backup._expire(tenant, session_user);
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_expire(text, boolean) IS
	'What retention removes from the tenant now: dry_run => true (default) only lists it (action "would delete", or "held" under a legal hold); false deletes it as the background worker does on its schedule.';

-- The background worker's retention pass over every tenant not on hold.
CREATE FUNCTION tenant_backup._retention_run()
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t record;
	n bigint := 0;
BEGIN
	FOR t IN SELECT name FROM tenant_backup.tenants WHERE hold_since IS NULL ORDER BY name LOOP
		n := n + (SELECT count(*) FROM tenant_backup._expire(t.name, 'tenant_backup worker'));
	END LOOP;
	RETURN n;
END
$$;

-- ---------------------------------------------------------------- offboarding

CREATE FUNCTION tenant_backup.tenant_drop(tenant text, confirm text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants := tenant_backup._tenant_check(tenant);
	key_ids text[];
	busy bigint;
	keys_gone record;
	data_gone record;
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
	SELECT array_agg(k.key_id ORDER BY k.key_id) INTO key_ids
	FROM tenant_backup.key_store k WHERE k.tenant = tenant_drop.tenant AND k.state <> 'destroyed';
	-- Keys first: from then on no copy of the tenant's backups can be read anywhere.
	SELECT * INTO keys_gone FROM tenant_backup._storage_delete_prefix(tenant || '/keys/');
	SELECT * INTO data_gone FROM tenant_backup._storage_delete_prefix(tenant || '/');
	DELETE FROM tenant_backup.tenants x WHERE x.name = tenant;
	cert := jsonb_build_object(
		'tenant', tenant, 'dropped_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'dropped_by', session_user, 'objects_deleted', keys_gone.objects + data_gone.objects,
		'bytes_deleted', keys_gone.bytes + data_gone.bytes, 'key_ids_destroyed', coalesce(to_jsonb(key_ids), '[]'),
		'catalog_rows_removed', 'tenant, databases, keys, jobs, backups, drills; the audit trail is kept');
	cert_hash := encode(sha256(convert_to(cert::text, 'UTF8')), 'hex');
	PERFORM tenant_backup._audit('tenant dropped', tenant, cert || jsonb_build_object('certificate_sha256', cert_hash));
	RETURN cert || jsonb_build_object('certificate_sha256', cert_hash,
		'audit_hash', (SELECT a.hash FROM tenant_backup.audit a ORDER BY a.id DESC LIMIT 1));
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_drop(text, text) IS
	'Offboards a tenant: refuses under a legal hold or with jobs queued or running; destroys its keys (storage, then catalog), deletes every object under its prefix and its catalog rows, keeps the audit trail, and returns the deletion certificate (its SHA-256 is chained into the audit log).';

-- ---------------------------------------------------------------- audit and drills

CREATE FUNCTION tenant_backup.tenant_audit_verify(OUT ok boolean, OUT rows_checked bigint, OUT first_broken_id bigint,
												  OUT problem text)
LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a tenant_backup.audit;
	prev tenant_backup.audit;
BEGIN
	ok := true;
	rows_checked := 0;
	FOR a IN SELECT * FROM tenant_backup.audit ORDER BY id LOOP
		rows_checked := rows_checked + 1;
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
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_audit_verify() IS
	'Walks the audit hash chain: ok, rows checked, and the first row whose link is broken (a row edited or removed) with what is wrong.';

-- Why a drill's load differs from what its backup recorded at dump time; NULL if it does not.
CREATE FUNCTION tenant_backup._drill_mismatch(p_backup_id bigint, p_result jsonb)
RETURNS text LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	b tenant_backup.backups;
	diffs text[];
BEGIN
	SELECT * INTO b FROM tenant_backup.backups WHERE id = p_backup_id;
	IF p_result IS NULL OR p_result->>'sha256' IS NULL THEN
		RETURN 'drill: the engine reported no result';
	END IF;
	IF p_result->>'sha256' IS DISTINCT FROM b.sha256 THEN
		RETURN format('drill: backup %s read back with SHA-256 %s, but %s was recorded when it was written',
					  p_backup_id, p_result->>'sha256', b.sha256);
	END IF;
	IF b.contents IS NULL OR b.contents = '{}' THEN
		RETURN NULL;
	END IF;
	SELECT array_agg(format('%s: %s at dump time, %s restored', path, coalesce(was, 'none'), coalesce(now_, 'none'))
					 ORDER BY path)
	INTO diffs
	FROM (SELECT coalesce(r.k || coalesce('.' || r.sk, ''), f.k || coalesce('.' || f.sk, '')) AS path,
				 r.v AS was, f.v AS now_
		  FROM (SELECT o.key AS k, i.key AS sk, coalesce(i.value, o.value)::text AS v
				FROM jsonb_each(b.contents) o
				LEFT JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(o.value) = 'object' THEN o.value END) i ON true) r
		  FULL JOIN
			   (SELECT o.key AS k, i.key AS sk, coalesce(i.value, o.value)::text AS v
				FROM jsonb_each(coalesce(p_result->'contents', '{}')) o
				LEFT JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(o.value) = 'object' THEN o.value END) i ON true) f
		  ON r.k = f.k AND r.sk IS NOT DISTINCT FROM f.sk
		  WHERE r.v IS DISTINCT FROM f.v) d;
	IF diffs IS NULL THEN
		RETURN NULL;
	END IF;
	RETURN format('drill: what backup %s restored differs from what it recorded at dump time: %s%s', p_backup_id,
				  array_to_string(diffs[1:5], '; '), CASE WHEN cardinality(diffs) > 5 THEN format(' (and %s more)', cardinality(diffs) - 5) ELSE '' END);
END
$$;

CREATE FUNCTION tenant_backup.tenant_restore_drill(tenant text)
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
	SELECT array_agg(id) INTO job_ids FROM tenant_backup._run_request('drill', tenant, NULL, NULL, NULL) id;
	SELECT jsonb_agg(jsonb_build_object(
			   'engine', j.engine, 'database', s.locator, 'backup_id', j.backup_id, 'backup_started', b.started,
			   'key_id', b.key_id, 'ok', j.state = 'succeeded', 'error', j.error,
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
COMMENT ON FUNCTION tenant_backup.tenant_restore_drill(text) IS
	'Restores the newest complete backup of each of the tenant''s databases into scratch, compares what loaded (row, document, key or file counts and the object''s SHA-256) with what the backup recorded when it was made, removes the scratch, and records the outcome (tenant_backup.drills and the audit log). Returns it; a failed check is ok = false, not an error. Cannot run inside a transaction block.';

CREATE FUNCTION tenant_backup.tenant_compliance_report(tenant text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t tenant_backup.tenants;
	dropped tenant_backup.audit;
	pol record;
BEGIN
	SELECT * INTO t FROM tenant_backup.tenants x WHERE x.name = tenant;
	IF NOT FOUND THEN
		SELECT * INTO dropped FROM tenant_backup.audit a
		WHERE a.tenant = tenant_compliance_report.tenant AND a.action = 'tenant dropped' ORDER BY a.id DESC LIMIT 1;
		IF NOT FOUND THEN
			PERFORM tenant_backup._tenant_check(tenant);
		END IF;
		RETURN jsonb_build_object('tenant', tenant, 'generated_at', now(),
			'deletion', jsonb_build_object('status', 'dropped', 'certificate', dropped.detail,
										   'audit_id', dropped.id, 'audit_hash', dropped.hash));
	END IF;
	SELECT * INTO pol FROM tenant_backup._retention_policy(tenant);
	RETURN jsonb_build_object(
		'tenant', tenant, 'generated_at', now(), 'tier', t.tier,
		'encryption', jsonb_build_object(
			'cipher', 'AES-256-GCM per chunk (zstd before), a random data key per backup wrapped by the tenant key',
			'tenant_key_wrapping', CASE WHEN t.key_command IS NULL
				THEN 'AES-256-GCM by the master key ' || tenant_backup._master_key_id()
				ELSE 'the tenant''s own key command (BYOK)' END,
			'key_source', CASE WHEN t.key_command IS NULL THEN 'master' ELSE 'command' END,
			'keys', (SELECT coalesce(jsonb_agg(jsonb_build_object('key_id', k.key_id, 'state', k.state, 'source', k.source,
								'created', k.created, 'retired', k.retired, 'destroyed', k.destroyed,
								'backups', k.backups) ORDER BY k.created, k.key_id), '[]')
					 FROM tenant_backup.keys k WHERE k.tenant = t.name)),
		'retention', jsonb_build_object(
			'policy', pol.policy, 'policy_origin', pol.origin,
			'legal_hold', CASE WHEN t.hold_since IS NOT NULL THEN jsonb_build_object(
				'reason', t.hold_reason, 'since', t.hold_since, 'by', t.hold_by) END,
			'backups_held', (SELECT coalesce(jsonb_agg(jsonb_build_object('backup_id', p.backup_id, 'engine', p.engine,
								'started', p.started, 'bytes_stored', p.bytes_stored, 'key_id', p.key_id,
								'kept_by', p.reasons) ORDER BY p.started DESC), '[]')
							 FROM tenant_backup._retention_plan(t.name) p WHERE p.keep AND p.status = 'complete'),
			'due_to_expire', (SELECT count(*) FROM tenant_backup._retention_plan(t.name) p WHERE NOT p.keep),
			'last_expiry', (SELECT max(a.at) FROM tenant_backup.audit a WHERE a.tenant = t.name AND a.action = 'backup expired')),
		'restore_drill', (SELECT jsonb_build_object('drill_id', d.id, 'at', d.at, 'ok', d.ok, 'by', d.actor,
													'checks', d.checks)
						  FROM tenant_backup.drills d WHERE d.tenant = t.name ORDER BY d.id DESC LIMIT 1),
		'deletion', jsonb_build_object('status', CASE WHEN t.hold_since IS NOT NULL THEN 'on legal hold' ELSE 'active' END,
			'how', 'tenant_drop() destroys the tenant''s keys in the catalog and storage, which makes every copy of its backups unreadable, deletes its objects and returns a deletion certificate chained into the audit log'),
		'audit', (SELECT to_jsonb(v) FROM tenant_backup.tenant_audit_verify() v));
END
$$;
COMMENT ON FUNCTION tenant_backup.tenant_compliance_report(text) IS
	'The auditor''s four answers for one tenant: how its backups are encrypted (keys and their source), how long they are kept (policy, hold, backups kept and why), the last restore drill and its result, and its deletion status (the certificate once dropped).';

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
		(SELECT k.wrapped FROM tenant_backup.key_store k WHERE k.tenant = j.tenant AND k.state = 'active'
		 ORDER BY k.created DESC, k.key_id DESC LIMIT 1),
		bid, obj, j.restore_target, j.attempts, t.tier, t.key_command
	FROM tenant_backup.tenants t WHERE t.name = j.tenant;
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
	tenant_backup._wal_archive_lag(),
	tenant_backup.tenant_rotate_key(text),
	tenant_backup.tenant_set_key_source(text, text),
	tenant_backup.tenant_rotate_master_key(text),
	tenant_backup.tenant_set_retention(text, int, int, int, int, interval),
	tenant_backup.tenant_hold(text, text),
	tenant_backup.tenant_release(text),
	tenant_backup.tenant_expire(text, boolean),
	tenant_backup.tenant_drop(text, text),
	tenant_backup.tenant_audit_verify(),
	tenant_backup.tenant_restore_drill(text),
	tenant_backup.tenant_compliance_report(text)
TO tenant_backup_operator;
GRANT SELECT ON tenant_backup.status, tenant_backup.keys TO tenant_backup_operator;
GRANT SELECT ON tenant_backup.agents TO tenant_backup_operator, tenant_backup_agent;
GRANT EXECUTE ON FUNCTION
	tenant_backup.agent_hello(text, text[], text, text),
	tenant_backup.agent_claim(text, text, int),
	tenant_backup.agent_renew(bigint, text, bigint, int),
	tenant_backup.agent_report(bigint, text, text, jsonb),
	tenant_backup.agent_release(bigint, text)
TO tenant_backup_agent;
