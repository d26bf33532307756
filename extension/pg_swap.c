/*
 * The in-place restore's last step: the freshly loaded database takes the live one's
 * name, grants and connection limit; the live one is kept beside it as *_tb_old_<job>. Both renames are one
 * transaction, and every step is journaled first, so that a crash at any point leaves
 * the live name on either the old or the restored data (the launcher re-opens it:
 * tenant_backup._restore_swaps_recover).
 */
#include "tenant_backup.h"

#include "libpq-fe.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "pg_engine.h"

#define TB_SWAP_WAIT_SECONDS 30

void
tb_pg_swap_journal(const tb_job *job, const char *step, const char *live, const char *fresh, const char *old)
{
	char job_id[32], source_id[32];
	const char *args[8] = {job_id, job->tenant, source_id, tb_is_conninfo(job->locator) ? "false" : "true",
						   live,   fresh,       old,       step};

	snprintf(job_id, sizeof(job_id), INT64_FORMAT, job->id);
	snprintf(source_id, sizeof(source_id), INT64_FORMAT, job->source_id);
	tb_sql("INSERT INTO tenant_backup.restore_swaps (job_id, tenant, source_id, local, live, fresh, old, step)"
		   " VALUES ($1::bigint, $2, $3::bigint, $4::boolean, $5, $6, $7, $8)"
		   " ON CONFLICT (job_id) DO UPDATE SET step = EXCLUDED.step, updated = now()",
		   8, args);
}

/*
 * Who may connect to live, and how many at once, as statements for fresh: an in-place
 * restore keeps the access decided for the live database since the backup.
 */
static char *
tb_pg_access_of(PGconn *conn, const char *live, const char *fresh)
{
	return tb_admin_value(
		conn,
		psprintf("SELECT pg_catalog.format('REVOKE ALL ON DATABASE %%1$I FROM PUBLIC; ALTER DATABASE %%1$I CONNECTION "
				 "LIMIT %%2$s; ', %s, d.datconnlimit) OPERATOR(pg_catalog.||)"
				 " pg_catalog.string_agg(pg_catalog.format('GRANT %%s ON DATABASE %%I TO %%s;', a.privilege_type, %s,"
				 "   CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'"
				 "   ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END), ' ')"
				 " FROM pg_catalog.pg_database d,"
				 " pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) a"
				 " WHERE d.datname OPERATOR(pg_catalog.=) %s GROUP BY d.datconnlimit",
				 quote_literal_cstr(fresh), quote_literal_cstr(fresh), quote_literal_cstr(live)));
}

/*
 * Ends every other session of live (connections to it are refused by then), renewing
 * the job's lease meanwhile (the launcher would otherwise take the job, and its
 * journal row, from a worker still at work); NULL, or why not.
 */
static char *
tb_pg_swap_end_sessions(PGconn *conn, tb_job *job, const char *live)
{
	for (int waited = 0; waited <= TB_SWAP_WAIT_SECONDS * 10; waited++)
	{
		char *left;

		if (!tb_job_progress(job, job->bytes_done, false))
			return pstrdup(TB_LEASE_LOST);
		left = tb_admin_value(
			conn,
			psprintf("SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity"
					 " WHERE datname OPERATOR(pg_catalog.=) %s AND pid OPERATOR(pg_catalog.<>) "
					 "pg_catalog.pg_backend_pid()",
					 quote_literal_cstr(live)));

		if (left != NULL && strcmp(left, "0") == 0)
			return NULL;
		pg_usleep(100 * 1000L);
	}
	return psprintf("sessions of database \"%s\" did not end within %d seconds", live, TB_SWAP_WAIT_SECONDS);
}

/*
 * A prepared transaction keeps live open with no session to end: the rename would wait
 * for it (5 s inside ALTER DATABASE) and fail. Said at once, naming them; NULL if none.
 */
static char *
tb_pg_swap_prepared(PGconn *conn, const char *live)
{
	char *held =
		tb_admin_value(conn, psprintf("SELECT pg_catalog.string_agg(pg_catalog.quote_literal(gid), ', ')"
									  " FROM pg_catalog.pg_prepared_xacts WHERE database OPERATOR(pg_catalog.=) %s",
									  quote_literal_cstr(live)));

	if (held == NULL || held[0] == '\0')
		return NULL;
	return psprintf("database \"%s\" is held open by prepared transactions (%s): COMMIT PREPARED or ROLLBACK PREPARED "
					"them, then restore again",
					live, held);
}

char *
tb_pg_swap(PGconn *conn, tb_job *job, const char *live, const char *fresh, const char *old)
{
	const char *qlive = quote_identifier(live), *qfresh = quote_identifier(fresh);
	char *failure;

	if (old != NULL)
	{
		char *access = tb_pg_access_of(conn, live, fresh);

		failure =
			access ? tb_admin_exec(conn, access) : psprintf("could not read who may connect to database \"%s\"", live);
		if (failure != NULL)
			return psprintf("could not give database \"%s\" the grants of \"%s\": %s", fresh, live, failure);
	}
	tb_pg_swap_journal(job, "swapping", live, fresh, old);
	/*
	 * From here on a cancel or a shutdown must not stop us half-way: the live database
	 * would be left refusing connections.
	 */
	HOLD_INTERRUPTS();
	if (old == NULL)
		failure = tb_admin_exec(conn, psprintf("ALTER DATABASE %s RENAME TO %s", qfresh, qlive));
	else
	{
		const char *qold = quote_identifier(old);

		failure = tb_admin_exec(conn, psprintf("ALTER DATABASE %s WITH ALLOW_CONNECTIONS false", qlive));
		if (failure == NULL)
			failure = tb_pg_swap_end_sessions(conn, job, live);
		if (failure == NULL)
			failure = tb_pg_swap_prepared(conn, live);
		/*
		 * The renames wait for the databases' locks (another session's ALTER or COMMENT
		 * ON DATABASE holds one): within half a lease, renewed just before, so that the
		 * launcher never takes the job from a worker still in its swap.
		 */
		if (failure == NULL && !tb_job_progress(job, job->bytes_done, true))
			failure = pstrdup(TB_LEASE_LOST);
		if (failure == NULL)
			failure = tb_admin_exec(conn, psprintf("BEGIN; SET LOCAL lock_timeout = %d; ALTER DATABASE %s RENAME TO %s;"
												   " ALTER DATABASE %s RENAME TO %s;"
												   " ALTER DATABASE %s WITH ALLOW_CONNECTIONS true; COMMIT",
												   tb_lease_seconds * 500, qlive, qold, qfresh, qlive, qold));
		if (failure != NULL)
		{
			tb_admin_exec(conn, "ROLLBACK");
			tb_admin_exec(conn, psprintf("ALTER DATABASE %s WITH ALLOW_CONNECTIONS true", qlive));
		}
	}
	tb_pg_swap_journal(job, failure ? "rolled back" : "swapped", live, fresh, old);
	RESUME_INTERRUPTS();
	if (failure != NULL)
		return psprintf("could not swap the restored \"%s\" in as \"%s\" (nothing was renamed; \"%s\" is listed in "
						"tenant_backup.scratch_databases): %s",
						fresh, live, fresh, failure);
	return NULL;
}
