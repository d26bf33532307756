/*
 * The in-place restore's last step: the freshly loaded database takes the live one's
 * name and grants; the live one is kept beside it as *_tb_old_<job>.
 */
#include "tenant_backup.h"

#include "libpq-fe.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "pg_engine.h"

#define TB_SWAP_WAIT_SECONDS 30

/* The live database's grants (and PUBLIC's), as statements for another database. */
static char *
tb_pg_grants_of(PGconn *conn, const char *live, const char *onto)
{
	return tb_admin_value(
		conn,
		psprintf("SELECT pg_catalog.concat(pg_catalog.string_agg(pg_catalog.format('GRANT %%s ON DATABASE %%I TO %%s',"
				 "   a.privilege_type, %s, CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'"
				 "   ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END), '; '), ';')"
				 " FROM pg_catalog.pg_database d,"
				 " pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) a"
				 " WHERE d.datname OPERATOR(pg_catalog.=) %s",
				 quote_literal_cstr(onto), quote_literal_cstr(live)));
}

/* Renames fresh over live: connections to live are ended just for the swap; live is kept as old. */
char *
tb_pg_swap(PGconn *conn, const char *live, const char *fresh, const char *old)
{
	const char *qlive = quote_identifier(live), *qfresh = quote_identifier(fresh), *qold = quote_identifier(old);
	char *failure;
	int waited = 0;

	char *grants = tb_pg_grants_of(conn, live, fresh);

	/* Who may connect comes over from the live database before anyone can. */
	failure = grants ? tb_admin_exec(conn, grants) : psprintf("could not read the grants of database \"%s\"", live);
	if (failure != NULL)
		return failure;

	/*
	 * From here on a cancel or a shutdown must not stop us half-way: the live database
	 * would be left refusing connections, or renamed away.
	 */
	HOLD_INTERRUPTS();
	failure = tb_admin_exec(conn, psprintf("ALTER DATABASE %s WITH ALLOW_CONNECTIONS false", qlive));
	while (failure == NULL)
	{
		char *left = tb_admin_value(
			conn,
			psprintf("SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity"
					 " WHERE datname OPERATOR(pg_catalog.=) %s AND pid OPERATOR(pg_catalog.<>) "
					 "pg_catalog.pg_backend_pid()",
					 quote_literal_cstr(live)));

		if (left != NULL && strcmp(left, "0") == 0)
			break;
		if (++waited > TB_SWAP_WAIT_SECONDS * 10)
			failure = psprintf("sessions of database \"%s\" did not end", live);
		pg_usleep(100 * 1000L);
	}
	if (failure == NULL)
		failure = tb_admin_exec(conn, psprintf("ALTER DATABASE %s RENAME TO %s", qlive, qold));
	if (failure == NULL && (failure = tb_admin_exec(conn, psprintf("ALTER DATABASE %s RENAME TO %s", qfresh, qlive))))
		tb_admin_exec(conn, psprintf("ALTER DATABASE %s RENAME TO %s", qold, qlive));
	tb_admin_exec(conn, psprintf("ALTER DATABASE %s WITH ALLOW_CONNECTIONS true", failure ? qlive : qold));
	RESUME_INTERRUPTS();
	return failure;
}
