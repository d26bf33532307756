-- pgTAP: tenant_add_database() and the status view. Checks validation (SQLSTATE and
-- message), that passwords never stay in the locator or the audit trail but are
-- sealed with the master key, and one status row per source. Needs the databases
-- tenant_db_a and tenant_db_b on this cluster (pgtap.t creates them). Rolled back.
BEGIN;
SELECT plan(46);

DO $$ BEGIN PERFORM tenant_backup.tenant_create('db-t'); END $$;

-- ------------------------------------------------------------ validation

SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'oracle', 'oracle://h/db')$$,
	'22023', 'unknown engine "oracle"', 'unknown engine is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'Postgres', 'tenant_db_a')$$,
	'22023', 'unknown engine "Postgres"', 'engine names are case-sensitive');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', NULL, 'tenant_db_a')$$,
	'22023', 'engine and locator are required', 'NULL engine is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'postgres', '')$$,
	'22023', 'engine and locator are required', 'empty locator is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'redis', NULL)$$,
	'22023', 'engine and locator are required', 'NULL locator is refused');
-- Fails today: the RAISE names the condition undefined_database, which PL/pgSQL does not
-- know (3D000 is invalid_catalog_name), so the RAISE itself fails with 42704.
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'postgres', 'no_such_db')$$,
	'3D000', 'database "no_such_db" does not exist on this cluster',
	'postgres locator naming a database that does not exist is refused with undefined_database');
SELECT throws_ok(format('SELECT tenant_backup.tenant_add_database(%L, %L, %L)', 'db-t', 'postgres', current_database()),
	'22023', format('database "%s" cannot be a tenant database', current_database()),
	'the control database itself is refused as a tenant database');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'postgres', 'tenant_db_a', '[]')$$,
	'22023', 'options must be a JSON object', 'array options are refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'postgres', 'tenant_db_a', '"x"')$$,
	'22023', 'options must be a JSON object', 'string options are refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'postgres', 'tenant_db_a', 'null')$$,
	'22023', 'options must be a JSON object', 'JSON null options are refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'postgres', 'tenant_db_a', NULL)$$,
	'22023', 'options must be a JSON object', 'SQL NULL options are refused');
SELECT is((SELECT count(*) FROM tenant_backup.sources WHERE tenant = 'db-t'), 0::bigint,
	'refused calls added no source');

-- ------------------------------------------------------------ accepted locators

SELECT results_eq($$SELECT tenant, engine, locator, options, identity
				   FROM tenant_backup.tenant_add_database('db-t', 'postgres', 'tenant_db_a')$$,
	$$SELECT 'db-t', 'postgres', 'tenant_db_a', '{}'::jsonb,
			 (SELECT system_identifier || '/' || (SELECT oid FROM pg_database WHERE datname = 'tenant_db_a')
			  FROM pg_control_system())$$,
	'a database of this cluster is stored by name, with its identity (system identifier/oid)');
SELECT is((SELECT sealed_password FROM tenant_backup.sources WHERE tenant = 'db-t' AND locator = 'tenant_db_a'), NULL,
	'and no sealed password');
SELECT is((SELECT options FROM tenant_backup.tenant_add_database('db-t', 'mysql', 'mysql://app@db.example/acme',
																  '{"single_transaction": true}')),
	'{"single_transaction": true}'::jsonb,
	'options are stored');
SELECT is((SELECT locator FROM tenant_backup.tenant_add_database('db-t', 'redis', 'redis://cache.example:6379/1')),
	'redis://cache.example:6379/1',
	'a locator without a password is stored as given');

-- ------------------------------------------------------------ passwords are sealed, never stored

CREATE TEMP TABLE added AS
SELECT s.id FROM (VALUES
	('mysql', 'mysql://app:secret@db.example:3306/acme'),
	('redis', 'redis://:secret@cache.example:6379/0'),
	('postgres', 'postgresql://app:secret@db.example:5432/acme'),
	('postgres', 'host=db.example dbname=acme user=app password=secret'),
	('postgres', $$host=db2.example password='se cret\'s' dbname=acme$$)
) AS v(engine, locator),
LATERAL tenant_backup.tenant_add_database('db-t', v.engine, v.locator) AS s;
-- tenant_add_database returns no sealed password: read what was stored.
CREATE TEMP TABLE with_password AS SELECT * FROM tenant_backup.sources WHERE id IN (SELECT id FROM added);

SELECT is((SELECT locator FROM with_password WHERE engine = 'mysql'), 'mysql://app@db.example:3306/acme',
	'mysql URI: user:password@ becomes user@');
SELECT is((SELECT locator FROM with_password WHERE engine = 'redis'), 'redis://@cache.example:6379/0',
	'redis URI: :password@ is removed');
-- PostgreSQL locators are parsed by libpq and stored as key='value' without the password.
SELECT is((SELECT locator FROM with_password WHERE locator LIKE '%port=''5432''%'),
	$$user='app' dbname='acme' host='db.example' port='5432'$$,
	'postgres URI: parsed by libpq, stored without its password');
SELECT is((SELECT locator FROM with_password WHERE locator LIKE $$%host='db.example'$$),
	$$user='app' dbname='acme' host='db.example'$$,
	'conninfo: password=... is removed');
SELECT is((SELECT locator FROM with_password WHERE locator LIKE '%db2.example%'), $$dbname='acme' host='db2.example'$$,
	'conninfo: a quoted password with a space and an escaped quote is removed whole');
SELECT is((SELECT count(*) FROM with_password WHERE sealed_password IS NOT NULL), 5::bigint,
	'every password was sealed');
SELECT is_empty($$SELECT locator FROM with_password
				  WHERE sealed_password !~ ('^tbs1:' || (SELECT wrapped->>'master_key_id' FROM tenant_backup.key_store
														 WHERE tenant = 'db-t') || ':[0-9a-f]{24}:[0-9a-f]+$')$$,
	'sealed passwords are tbs1:<master key id>:<nonce>:<ciphertext>');
SELECT is_empty($$SELECT locator FROM tenant_backup.sources
				  WHERE tenant = 'db-t' AND (locator ~ 'secret|cret' OR sealed_password ~ 'secret')$$,
	'no stored locator or sealed password holds the password');
SELECT is((SELECT count(DISTINCT sealed_password) FROM with_password WHERE locator !~ 'db2'), 4::bigint,
	'the same password sealed twice gives different ciphertexts');
SELECT is((SELECT count(*) FROM tenant_backup.audit WHERE tenant = 'db-t' AND action = 'database added'), 8::bigint,
	'every added database is audited');
SELECT is_empty($$SELECT detail FROM tenant_backup.audit WHERE tenant = 'db-t' AND detail::text ~ 'secret|cret'$$,
	'the audit trail holds no password');
SELECT set_eq($$SELECT (detail->>'source_id')::bigint AS id, detail->>'engine' AS engine, detail->>'locator' AS locator
				FROM tenant_backup.audit WHERE tenant = 'db-t' AND action = 'database added'$$,
	$$SELECT id, engine, locator FROM tenant_backup.sources WHERE tenant = 'db-t'$$,
	'each audit row names its source id, engine and clean locator');

-- ------------------------------------------------------------ the status view

DO $$ BEGIN PERFORM tenant_backup.tenant_create('db-u'); END $$;
SELECT lives_ok($$SELECT tenant_backup.tenant_add_database('db-u', 'postgres', 'tenant_db_b')$$,
	'a second tenant adds its database');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-u', 'postgres', 'tenant_db_a')$$,
	'42710', 'the postgres database "tenant_db_a" of tenant "db-u" is already a database of tenant "db-t"',
	'the same database under another tenant is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('db-u', 'postgres', 'tenant_db_b')$$,
	'42710', 'tenant "db-u" already has postgres database "tenant_db_b"',
	'the same database twice under one tenant is refused');
SELECT set_eq($$SELECT source_id FROM tenant_backup.status WHERE tenant = 'db-t'$$,
	$$SELECT id FROM tenant_backup.sources WHERE tenant = 'db-t'$$,
	'the status view has one row per source of the tenant');
SELECT is((SELECT count(*) FROM tenant_backup.status WHERE tenant = 'db-u'), 1::bigint,
	'and one row for the second tenant, whose refused database added none');
SELECT set_eq($$SELECT tenant, engine, locator FROM tenant_backup.status WHERE tenant IN ('db-t', 'db-u')$$,
	$$SELECT tenant, engine, locator FROM tenant_backup.sources WHERE tenant IN ('db-t', 'db-u')$$,
	'status rows show the engine and the clean locator of their source');
SELECT is_empty($$SELECT * FROM tenant_backup.status WHERE tenant IN ('db-t', 'db-u')
				  AND (last_success IS NOT NULL OR age IS NOT NULL OR last_error IS NOT NULL OR running_job IS NOT NULL)$$,
	'new sources have no backup, error or running job yet');
DO $$ BEGIN PERFORM tenant_backup.tenant_set_schedule('db-u', '1 hour'); END $$;
SELECT is_empty($$SELECT * FROM tenant_backup.status s JOIN tenant_backup.tenants t ON t.name = s.tenant
				  WHERE s.tenant IN ('db-t', 'db-u') AND s.next_due IS DISTINCT FROM t.next_due$$,
	'status rows show the tenant''s next_due');
SELECT ok((SELECT bool_and(next_due IS NOT NULL) FROM tenant_backup.status WHERE tenant = 'db-u'),
	'a scheduled tenant''s status rows have a next_due');

-- ------------------------------------------------------------ less common locators
-- The password of a mongodb+srv:// URI and a URI's ?password= are sealed too; a conninfo
-- without a password (which pg_dump would use with the server's own identity, reaching
-- the control database or any other) is for superusers only, as with dblink.

SELECT lives_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'mongodb', 'mongodb+srv://app:secret@cluster0.example/acme')$$,
	'a mongodb+srv URI is accepted');
SELECT is((SELECT locator FROM tenant_backup.sources WHERE tenant = 'db-t' AND engine = 'mongodb'),
	'mongodb+srv://app@cluster0.example/acme',
	'mongodb+srv URI: user:password@ becomes user@');
SELECT lives_ok($$SELECT tenant_backup.tenant_add_database('db-u', 'postgres',
													  'postgresql://app@db.example/acme?sslmode=require&password=secret')$$,
	'a postgres URI with a password query parameter is accepted');
SELECT unalike((SELECT locator FROM tenant_backup.sources WHERE tenant = 'db-u' AND locator LIKE '%sslmode%'),
	'%secret%',
	'postgres URI: the password=... query parameter is removed');
SELECT ok((SELECT sealed_password IS NOT NULL FROM tenant_backup.sources WHERE tenant = 'db-u' AND locator LIKE '%sslmode%'),
	'postgres URI: the password query parameter is sealed');
SELECT lives_ok($q$SELECT tenant_backup.tenant_add_database('db-u', 'postgres',
													  'postgresql://app@db3.example/acme?%70assword=LeakMe')$q$,
	'a postgres URI whose password key is percent-encoded is accepted');
SELECT is((SELECT count(*) FROM tenant_backup.sources WHERE locator LIKE '%LeakMe%'), 0::bigint,
	'and its password, decoded as libpq decodes it, is not stored in clear');
CREATE ROLE tb_test_operator_nopw;
GRANT tenant_backup_operator TO tb_test_operator_nopw;
SET SESSION AUTHORIZATION tb_test_operator_nopw;
SELECT throws_ok(format('SELECT tenant_backup.tenant_add_database(%L, %L, %L)', 'db-t', 'postgres',
						format('host=/var/run/postgresql dbname=%s', current_database())),
	'42501', 'a conninfo without a password can only be added by a superuser',
	'an operator cannot add a conninfo without a password (it would reach the control database)');
SELECT lives_ok($$SELECT tenant_backup.tenant_add_database('db-t', 'postgres', 'host=operator.example dbname=acme user=app password=pw')$$,
	'an operator can add a conninfo with a password');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;
