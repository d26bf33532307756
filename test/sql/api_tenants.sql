-- pgTAP: tenant_create() and tenant_set_schedule(), and the unknown-tenant error of
-- every API function. Checks validation (SQLSTATE and message), the returned row,
-- the tenant's key row (wrapped only) and the audit rows. Runs in a transaction that
-- is rolled back; the key files tenant_create() writes to storage stay (see pgtap.t).
BEGIN;
SELECT plan(54);

-- ------------------------------------------------------------ tenant names

SELECT throws_ok($$SELECT tenant_backup.tenant_create('Acme')$$,
	'22023', 'invalid tenant name "Acme"', 'tenant name with an upper-case letter is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('-acme')$$,
	'22023', 'invalid tenant name "-acme"', 'tenant name starting with "-" is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('_acme')$$,
	'22023', 'invalid tenant name "_acme"', 'tenant name starting with "_" is refused');
SELECT throws_ok(format('SELECT tenant_backup.tenant_create(%L)', repeat('a', 64)),
	'22023', format('invalid tenant name "%s"', repeat('a', 64)), 'tenant name of 64 characters is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('')$$,
	'22023', 'invalid tenant name ""', 'empty tenant name is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('../x')$$,
	'22023', 'invalid tenant name "../x"', 'tenant name "../x" is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('acme/x')$$,
	'22023', 'invalid tenant name "acme/x"', 'tenant name with "/" is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('acme corp')$$,
	'22023', 'invalid tenant name "acme corp"', 'tenant name with a space is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('acmé')$$,
	'22023', 'invalid tenant name "acmé"', 'tenant name with a non-ASCII letter is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create(E'acme\n')$$,
	'22023', E'invalid tenant name "acme\n"', 'tenant name with a trailing newline is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create(NULL)$$,
	'22023', 'invalid tenant name "<NULL>"', 'NULL tenant name is refused');
SELECT is((SELECT count(*) FROM tenant_backup.tenants WHERE created = now()), 0::bigint,
	'refused names created no tenant');

SELECT lives_ok(format('SELECT tenant_backup.tenant_create(%L)', repeat('a', 63)),
	'tenant name of 63 characters is accepted');
SELECT lives_ok($$SELECT tenant_backup.tenant_create('0')$$,
	'one-digit tenant name is accepted');
SELECT lives_ok($$SELECT tenant_backup.tenant_create('a_b-c9')$$,
	'tenant name with "_", "-" and digits is accepted');

-- ------------------------------------------------------------ tiers, duplicates

SELECT throws_ok($$SELECT tenant_backup.tenant_create('tier-t', 'gold')$$,
	'22023', 'invalid tier "gold" for tenant "tier-t"', 'unknown tier is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('tier-t', 'Shared')$$,
	'22023', 'invalid tier "Shared" for tenant "tier-t"', 'tier is case-sensitive');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('tier-t', NULL)$$,
	'22023', 'invalid tier "<NULL>" for tenant "tier-t"', 'NULL tier is refused');
SELECT ok(NOT EXISTS (SELECT 1 FROM tenant_backup.tenants WHERE name = 'tier-t'),
	'refused tiers created no tenant');

SELECT row_eq($$SELECT * FROM tenant_backup.tenant_create('alpha', 'dedicated')$$,
	ROW('alpha', 'dedicated', NULL, NULL, now(), NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, false)::tenant_backup.tenants,
	'tenant_create returns the new row (dedicated, no schedule yet)');
SELECT is((SELECT tier FROM tenant_backup.tenant_create('beta')), 'shared',
	'tier defaults to shared');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('alpha')$$,
	'42710', 'tenant "alpha" already exists', 'duplicate tenant is refused with duplicate_object');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('alpha', 'shared')$$,
	'42710', 'tenant "alpha" already exists', 'duplicate tenant is refused whatever the tier');
SELECT is((SELECT tier FROM tenant_backup.tenants WHERE name = 'alpha'), 'dedicated',
	'the refused duplicate left the tenant as it was');

-- ------------------------------------------------------------ the tenant key

SELECT is((SELECT count(*) FROM tenant_backup.key_store WHERE tenant = 'alpha'), 1::bigint,
	'tenant_create adds exactly one key row');
SELECT is((SELECT state FROM tenant_backup.key_store WHERE tenant = 'alpha'), 'active',
	'the key is active');
SELECT matches((SELECT key_id FROM tenant_backup.key_store WHERE tenant = 'alpha'), '^[0-9a-f]{16}$',
	'the key id is 16 hex digits');
SELECT is((SELECT wrapped->>'key_id' FROM tenant_backup.key_store WHERE tenant = 'alpha'),
	(SELECT key_id FROM tenant_backup.key_store WHERE tenant = 'alpha'),
	'the wrapped document names the same key id');
SELECT is((SELECT wrapped->>'tenant' FROM tenant_backup.key_store WHERE tenant = 'alpha'), 'alpha',
	'the wrapped document names the tenant');
SELECT matches((SELECT wrapped->>'master_key_id' FROM tenant_backup.key_store WHERE tenant = 'alpha'), '^[0-9a-f]{16}$',
	'the wrapped document names the master key by its id');
SELECT matches((SELECT wrapped->>'wrapped_key' FROM tenant_backup.key_store WHERE tenant = 'alpha'), '^[0-9a-f]{96}$',
	'the wrapped key is 32 bytes sealed with a 16-byte tag');
SELECT set_eq($$SELECT jsonb_object_keys(wrapped) FROM tenant_backup.key_store WHERE tenant = 'alpha'$$,
	ARRAY['format', 'version', 'tenant', 'key_id', 'created', 'master_key_id', 'wrap', 'nonce', 'wrapped_key'],
	'the wrapped document has exactly the documented fields (no clear key)');
SELECT isnt((SELECT wrapped->>'wrapped_key' FROM tenant_backup.key_store WHERE tenant = 'alpha'),
	(SELECT wrapped->>'wrapped_key' FROM tenant_backup.key_store WHERE tenant = 'beta'),
	'two tenants get different keys');
SELECT is((SELECT wrapped->>'master_key_id' FROM tenant_backup.key_store WHERE tenant = 'alpha'),
	(SELECT wrapped->>'master_key_id' FROM tenant_backup.key_store WHERE tenant = 'beta'),
	'both are wrapped by the same master key');

SELECT results_eq($$SELECT actor, action, detail FROM tenant_backup.audit WHERE tenant = 'alpha' ORDER BY id$$,
	$$SELECT session_user::text COLLATE "default", 'tenant created',
			 jsonb_build_object('tier', 'dedicated', 'key_id', (SELECT key_id FROM tenant_backup.key_store WHERE tenant = 'alpha'))$$,
	'tenant_create writes one audit row with the tier and key id');

-- ------------------------------------------------------------ schedules

SELECT throws_ok($$SELECT tenant_backup.tenant_set_schedule('alpha', '500 milliseconds')$$,
	'22023', 'schedule interval 00:00:00.5 is too short', 'schedule below 1 second is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_schedule('alpha', '0')$$,
	'22023', 'schedule interval 00:00:00 is too short', 'zero schedule is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_schedule('alpha', '-1 hour')$$,
	'22023', 'schedule interval -01:00:00 is too short', 'negative schedule is refused');
SELECT ok((SELECT schedule IS NULL AND next_due IS NULL FROM tenant_backup.tenants WHERE name = 'alpha'),
	'refused schedules left the tenant unscheduled');

SELECT is((SELECT schedule FROM tenant_backup.tenant_set_schedule('alpha', '1 second')), interval '1 second',
	'schedule of exactly 1 second is accepted');
SELECT is((SELECT schedule FROM tenant_backup.tenant_set_schedule('alpha', '1 hour')), interval '1 hour',
	'tenant_set_schedule returns the row with the schedule');
SELECT is((SELECT schedule FROM tenant_backup.tenants WHERE name = 'alpha'), interval '1 hour',
	'the schedule is stored');
SELECT ok((SELECT next_due > now() AND next_due <= now() + interval '1 hour' FROM tenant_backup.tenants WHERE name = 'alpha'),
	'next_due is in the future, within one period');
SELECT is((SELECT schedule FROM tenant_backup.tenant_set_schedule('beta', '1 hour')), interval '1 hour',
	'a second tenant gets the same schedule');
SELECT isnt((SELECT next_due FROM tenant_backup.tenants WHERE name = 'alpha'),
	(SELECT next_due FROM tenant_backup.tenants WHERE name = 'beta'),
	'tenants on the same schedule are due at different times');
SELECT ok((SELECT schedule IS NULL FROM tenant_backup.tenant_set_schedule('alpha', NULL)),
	'NULL schedule goes back to the default');
SELECT ok((SELECT next_due > now() AND next_due <= now() + current_setting('tenant_backup.default_schedule')::interval
		   FROM tenant_backup.tenants WHERE name = 'alpha'),
	'with the default schedule, next_due is within one default period');
SELECT results_eq($$SELECT detail FROM tenant_backup.audit WHERE tenant = 'alpha' AND action = 'schedule set' ORDER BY id$$,
	$$VALUES ('{"every": "00:00:01"}'::jsonb), ('{"every": "01:00:00"}'), ('{"every": null}')$$,
	'every accepted schedule is audited, refused ones are not');

-- ------------------------------------------------------------ unknown tenant, in every function

SELECT throws_ok($$SELECT tenant_backup.tenant_add_database('nope', 'postgres', 'tenant_db_a')$$,
	'42704', 'tenant "nope" does not exist', 'tenant_add_database: unknown tenant');
SELECT throws_ok($$SELECT tenant_backup.tenant_backup('nope')$$,
	'42704', 'tenant "nope" does not exist', 'tenant_backup: unknown tenant');
SELECT throws_ok($$SELECT tenant_backup.tenant_backup('nope', wait => true)$$,
	'42704', 'tenant "nope" does not exist', 'tenant_backup with wait => true: unknown tenant');
SELECT throws_ok($$SELECT tenant_backup.tenant_restore('nope')$$,
	'42704', 'tenant "nope" does not exist', 'tenant_restore: unknown tenant');
SELECT throws_ok($$SELECT * FROM tenant_backup.tenant_backups('nope')$$,
	'42704', 'tenant "nope" does not exist', 'tenant_backups: unknown tenant');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_schedule('nope', '1 hour')$$,
	'42704', 'tenant "nope" does not exist', 'tenant_set_schedule: unknown tenant');

SELECT * FROM finish();
ROLLBACK;
