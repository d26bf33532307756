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
GRANT EXECUTE ON FUNCTION tenant_backup._source_identity_claim(bigint, text) TO tenant_backup_agent;

-- ---------------------------------------------------------------- job engine: fairness, retries, audit
-- A queued job is not started before not_before (a retry's back-off); NULL: at once.
ALTER TABLE tenant_backup.jobs ADD COLUMN not_before timestamptz;
COMMENT ON COLUMN tenant_backup.jobs.not_before IS
	'A queued job is not started before this time (the next retry after a failed attempt); NULL: as soon as a worker is free.';
CREATE INDEX jobs_claimable ON tenant_backup.jobs (engine, not_before, id) WHERE state = 'queued';
