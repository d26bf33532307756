-- pgTAP: the audit trail the API functions write. Checks that every call that
-- changes something adds one row, that rows chain per tenant (prev_hash = the hash of
-- the tenant's previous row), that each hash is the row's HMAC (tenant_backup._audit_mac,
-- keyed from the master key), that an edit, a deletion, and a chain rewritten forward
-- with the public unkeyed _audit_hash() all show. Rolled back.
BEGIN;
SELECT plan(30);

-- Each audit row with whether its hash recomputes from its fields (keyed rows: their MAC).
CREATE TEMP VIEW audit_check AS
SELECT id, hash = CASE WHEN mac_key_id IS NULL THEN tenant_backup._audit_hash(prev_hash, at, actor, action, tenant, detail)
					   ELSE (tenant_backup._audit_mac(id, coalesce(tenant, ''), prev_hash, at, actor, action, tenant,
													 detail)).mac END AS verifies
FROM tenant_backup.audit;

-- Each keyed audit row whose prev_hash is not the hash of the row before it in its tenant's chain.
CREATE TEMP VIEW audit_breaks AS
SELECT id FROM (SELECT id, prev_hash, lag(hash) OVER (PARTITION BY coalesce(tenant, '') ORDER BY id) AS previous
				FROM tenant_backup.audit WHERE mac_key_id IS NOT NULL) a
WHERE previous IS NOT NULL AND prev_hash IS DISTINCT FROM previous;

CREATE TEMP TABLE before AS
SELECT (SELECT coalesce(max(id), 0) FROM tenant_backup.audit) AS last_id;

DO $$
BEGIN
	PERFORM tenant_backup.tenant_create('audit-t');
	PERFORM tenant_backup.tenant_add_database('audit-t', 'postgres', 'tenant_db_a');
	PERFORM tenant_backup.tenant_set_schedule('audit-t', '6 hours');
	PERFORM tenant_backup.tenant_backup('audit-t');
	PERFORM * FROM tenant_backup.tenant_backups('audit-t');
END
$$;

SELECT results_eq($$SELECT action FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before) ORDER BY id$$,
	ARRAY['tenant created', 'database added', 'schedule set', 'backup requested'],
	'each changing call adds one audit row, in order; reading adds none');
SELECT is_empty($$SELECT * FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before)
				  AND (tenant IS DISTINCT FROM 'audit-t' OR actor <> session_user)$$,
	'the rows name the tenant and the session user');
SELECT ok((SELECT bool_and(at >= now() AND at <= clock_timestamp())
		   FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before)),
	'the rows carry the time of the call');
SELECT throws_ok($$SELECT tenant_backup.tenant_create('audit-t')$$, '42710', NULL,
	'a duplicate tenant_create is refused');
SELECT throws_ok($$SELECT tenant_backup.tenant_set_schedule('audit-t', '1 millisecond')$$, '22023', NULL,
	'a too-short schedule is refused');
SELECT is((SELECT count(*) FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before)), 4::bigint,
	'refused calls add no audit row');

SELECT is((SELECT prev_hash FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before) ORDER BY id LIMIT 1),
	(SELECT hash FROM tenant_backup.audit WHERE mac_key_id IS NULL ORDER BY id DESC LIMIT 1),
	'the first row of a new tenant''s chain points at the last unkeyed row (NULL: there is none)');
SELECT is_empty($$SELECT * FROM audit_breaks$$,
	'every keyed row''s prev_hash is the hash of its tenant''s previous row');
SELECT is_empty($$SELECT hash FROM tenant_backup.audit WHERE hash !~ '^[0-9a-f]{64}$'$$,
	'hashes are SHA-256 hex');
SELECT is((SELECT count(*) FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before)
		   AND mac_key_id = tenant_backup._master_key_id()), 4::bigint,
	'new rows are keyed by the configured master key');
SELECT ok((SELECT bool_and(hash <> tenant_backup._audit_hash(prev_hash, at, actor, action, tenant, detail))
		   FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before)),
	'a new row''s hash is not the unkeyed hash anyone could compute');
SELECT is((SELECT last_id FROM tenant_backup.audit_heads WHERE chain = 'audit-t'),
	(SELECT max(id) FROM tenant_backup.audit WHERE tenant = 'audit-t'), 'audit_heads names the tenant''s newest row');
SELECT is((SELECT count(DISTINCT hash) FROM tenant_backup.audit), (SELECT count(*) FROM tenant_backup.audit),
	'hashes are unique');
SELECT ok((SELECT bool_and(verifies) FROM audit_check WHERE id > (SELECT last_id FROM before)),
	'each new row''s hash recomputes from its fields');

-- The hash covers the time in a fixed UTC form, not in the writer's TimeZone.
SET LOCAL TimeZone = 'Asia/Tokyo';
DO $$ BEGIN PERFORM tenant_backup.tenant_set_schedule('audit-t', '2 hours'); END $$;
SET LOCAL TimeZone = 'UTC';
SELECT ok((SELECT verifies FROM audit_check ORDER BY id DESC LIMIT 1),
	'a row written by a session in another TimeZone verifies too');

SELECT row_eq($$SELECT ok, first_broken_id, problem FROM tenant_backup.tenant_audit_verify()$$,
	ROW(true, NULL::bigint, NULL::text), 'tenant_audit_verify() finds the intact chain intact');
SELECT ok((SELECT rows_checked FROM tenant_backup.tenant_audit_verify()) = (SELECT count(*) FROM tenant_backup.audit),
	'tenant_audit_verify() checks every row');

-- Append-only for everyone: the table owner (and a superuser) is refused too.
SELECT throws_ok($$UPDATE tenant_backup.audit SET actor = 'mallory'$$, '42501',
	'tenant_backup.audit is append-only: UPDATE refused', 'UPDATE of the audit log is refused');
SELECT throws_ok($$DELETE FROM tenant_backup.audit$$, '42501',
	'tenant_backup.audit is append-only: DELETE refused', 'DELETE from the audit log is refused');
SELECT throws_ok($$TRUNCATE tenant_backup.audit$$, '42501',
	'tenant_backup.audit is append-only: TRUNCATE refused', 'TRUNCATE of the audit log is refused');

-- A superuser who switches the triggers off can still change rows: the chain shows it.
SET LOCAL session_replication_role = replica;
CREATE TEMP TABLE deleted AS
SELECT id FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before) ORDER BY id OFFSET 1 LIMIT 1;
SAVEPOINT before_delete;
DELETE FROM tenant_backup.audit WHERE id = (SELECT id FROM deleted);
SELECT results_eq($$SELECT id FROM audit_breaks$$,
	$$SELECT min(id) FROM tenant_backup.audit WHERE id > (SELECT id FROM deleted)$$,
	'a deleted row breaks the chain at the row after it');
SELECT row_eq($$SELECT ok, first_broken_id FROM tenant_backup.tenant_audit_verify()$$,
	ROW(false, (SELECT min(id) FROM tenant_backup.audit WHERE id > (SELECT id FROM deleted))),
	'tenant_audit_verify() names the row after the deleted one');
SELECT matches((SELECT problem FROM tenant_backup.tenant_audit_verify()), 'a row between them was removed',
	'and says a row was removed');
ROLLBACK TO SAVEPOINT before_delete;

CREATE TEMP TABLE edited AS
SELECT min(id) AS id FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before);
UPDATE tenant_backup.audit SET detail = '{"tier": "dedicated"}' WHERE id = (SELECT id FROM edited);
SELECT ok(NOT (SELECT verifies FROM audit_check WHERE id = (SELECT id FROM edited)),
	'an edited row no longer verifies');
SELECT row_eq($$SELECT ok, first_broken_id FROM tenant_backup.tenant_audit_verify()$$,
	ROW(false, (SELECT id FROM edited)), 'tenant_audit_verify() names the edited row');
SELECT matches((SELECT problem FROM tenant_backup.tenant_audit_verify()), 'was changed after it was written',
	'and says it was changed');

ROLLBACK TO SAVEPOINT before_delete;

-- A superuser rewriting a row and recomputing the chain forward with the public
-- _audit_hash() (the 0.1.0 forgery) no longer passes: without the key the MAC cannot be
-- recomputed, and unkeyed rows are refused after the first keyed one.
CREATE TEMP TABLE forged AS
SELECT min(id) AS id FROM tenant_backup.audit WHERE id > (SELECT last_id FROM before);
CREATE FUNCTION pg_temp.rehash_forward(p_from bigint, p_keep_key boolean) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
	r record;
	prev text := (SELECT prev_hash FROM tenant_backup.audit WHERE id = p_from);
BEGIN
	FOR r IN SELECT * FROM tenant_backup.audit WHERE id >= p_from AND tenant = 'audit-t' ORDER BY id LOOP
		UPDATE tenant_backup.audit SET prev_hash = prev,
			hash = tenant_backup._audit_hash(prev, r.at, r.actor, r.action, r.tenant, r.detail),
			mac_key_id = CASE WHEN p_keep_key THEN mac_key_id END
		WHERE id = r.id RETURNING hash INTO prev;
	END LOOP;
	UPDATE tenant_backup.audit_heads SET last_hash = prev WHERE chain = 'audit-t';
END
$f$;
SAVEPOINT before_forgery;
UPDATE tenant_backup.audit SET detail = '{"tier": "dedicated"}' WHERE id = (SELECT id FROM forged);
SELECT pg_temp.rehash_forward((SELECT id FROM forged), true);
SELECT row_eq($$SELECT ok, first_broken_id FROM tenant_backup.tenant_audit_verify()$$,
	ROW(false, (SELECT id FROM forged)), 'an edit with every hash recomputed forward by _audit_hash() is found');
SELECT matches((SELECT problem FROM tenant_backup.tenant_audit_verify()), 'its MAC does not match its contents',
	'and named as a row whose MAC does not match');
ROLLBACK TO SAVEPOINT before_forgery;
UPDATE tenant_backup.audit SET detail = '{"tier": "dedicated"}' WHERE id = (SELECT id FROM forged);
SELECT pg_temp.rehash_forward((SELECT id FROM forged), false);
SELECT matches((SELECT problem FROM tenant_backup.tenant_audit_verify()), 'has the unkeyed form of 0.1.0 after keyed row',
	'rows rewritten into the unkeyed 0.1.0 form after keyed rows are refused');
ROLLBACK TO SAVEPOINT before_forgery;
SELECT is((SELECT ok FROM tenant_backup.tenant_audit_verify()), true, 'the untouched chain verifies again');

SELECT * FROM finish();
ROLLBACK;
