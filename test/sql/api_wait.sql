-- pgTAP: the refusals of wait => true requests made outside a transaction block,
-- where the request worker queues the jobs in its own transaction. They must carry
-- the same SQLSTATE as with wait => false. pgTAP's throws_ok() cannot be used: its
-- exception block is a subtransaction, which wait => true refuses like BEGIN. So
-- each request runs as a plain statement with ON_ERROR_STOP off (psql prints its
-- error on stderr) and psql's :SQLSTATE of it is checked. Not in a transaction
-- block either: the tenant made here is committed, and deleted at the end. No job
-- runs: every request here is refused before anything is queued.
SELECT plan(6);

DO $$ BEGIN PERFORM tenant_backup.tenant_create('wait-t'); END $$;
SELECT max(id) AS created_audit_id FROM tenant_backup.audit \gset
\set ON_ERROR_STOP 0

SET default_transaction_isolation = 'repeatable read';
SELECT tenant_backup.tenant_backup('wait-t', wait => true);
SELECT is(:'SQLSTATE'::text, '0A000', 'wait => true is refused under REPEATABLE READ');
RESET default_transaction_isolation;

-- These fail today: the request worker's error comes back as 55000, its hint lost.
SELECT tenant_backup.tenant_backup('wait-t', wait => true);
SELECT is(:'SQLSTATE'::text, 'P0002',
	'tenant_backup with wait => true: a tenant with no databases is refused with no_data_found');
SELECT tenant_backup.tenant_restore('wait-t');
SELECT is(:'SQLSTATE'::text, 'P0002',
	'tenant_restore with wait => true: a tenant with no complete backup is refused with no_data_found');
SELECT tenant_backup.tenant_restore('wait-t', backup_id => 424242);
SELECT is(:'SQLSTATE'::text, '42704',
	'tenant_restore with wait => true: an unknown backup id is refused with undefined_object');

\set ON_ERROR_STOP 1
SELECT is_empty($$SELECT * FROM tenant_backup.jobs WHERE tenant = 'wait-t'$$,
	'refused wait => true requests queued no job');
SELECT is_empty(format('SELECT * FROM tenant_backup.audit WHERE id > %s', :created_audit_id),
	'refused wait => true requests were not audited');

DELETE FROM tenant_backup.tenants WHERE name = 'wait-t';
SELECT * FROM finish();
