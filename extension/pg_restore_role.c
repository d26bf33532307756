/*
 * A restore on a superuser connection loads as the tenant, not as the cluster: a
 * per-job login role with only the tenant's own roles runs pg_restore (phase B), so
 * that every piece of tenant code a load runs (CHECK constraints, generated columns,
 * index expressions, matview queries) runs in a session whose session user has no
 * more rights than the tenant. Superuser steps that run no tenant code come before
 * (phase A: extensions, schemas, the role's grants) and after it (phase C: owners,
 * grants, default privileges, comments on extensions and schemas, then the role goes).
 */
#include "tenant_backup.h"

#include <unistd.h>

#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "utils/builtins.h"

#include "pg_engine.h"

#define TB_RESTORE_ROLE_PREFIX "tenant_backup_restore_"
#define TB_RESTORER_ROLE "tenant_backup_restorer"
#define TB_RESTORE_PASSWORD_BYTES 32
#define TB_OWNER_BATCH (1024 * 1024) /* bytes of ALTER ... OWNER statements sent at once */

/* The per-job role while it exists and the connection that drops it, for the exit callback. */
static char tb_restore_role_name[NAMEDATALEN];
static PGconn *tb_restore_role_admin;

/* At exit (FATAL included) a role left by this process goes; what it still owns keeps it, for the next sweep. */
static void
tb_restore_role_at_exit(int code, Datum arg)
{
	char sql[NAMEDATALEN + 32];

	if (tb_restore_role_name[0] == '\0' || tb_restore_role_admin == NULL)
		return;
	snprintf(sql, sizeof(sql), "DROP ROLE IF EXISTS \"%s\"", tb_restore_role_name);
	PQclear(PQexec(tb_restore_role_admin, sql));
	tb_restore_role_name[0] = '\0';
}

static void
tb_restore_role_drop(PGconn *admin, const char *role)
{
	char *failure = tb_admin_exec(admin, psprintf("DROP ROLE IF EXISTS %s", quote_identifier(role)));

	if (failure != NULL)
		ereport(WARNING,
				(errmsg("tenant_backup: could not drop the restore role \"%s\": %s", role, failure),
				 errhint("Run DROP OWNED BY %s in the database it restored into, then DROP ROLE %s.", role, role)));
}

void
tb_restore_role_end(void)
{
	if (tb_restore_role_name[0] != '\0' && tb_restore_role_admin != NULL)
		tb_restore_role_drop(tb_restore_role_admin, tb_restore_role_name);
	tb_restore_role_name[0] = '\0';
	tb_restore_role_admin = NULL;
}

/*
 * Roles tenant_backup_restore_<job> of jobs no longer running (a worker that died
 * before it could drop its own), and this job's from an earlier attempt, are dropped.
 */
static void
tb_restore_roles_sweep(PGconn *admin, const tb_job *job)
{
	PGresult *roles =
		tb_admin_query(admin, "SELECT rolname, pg_catalog.substr(rolname, 23) FROM pg_catalog.pg_roles"
							  " WHERE pg_catalog.starts_with(rolname::pg_catalog.text, '" TB_RESTORE_ROLE_PREFIX "')");
	char own[32];

	snprintf(own, sizeof(own), INT64_FORMAT, job->id);
	for (int i = 0; PQresultStatus(roles) == PGRES_TUPLES_OK && i < PQntuples(roles); i++)
	{
		const char *id = PQgetvalue(roles, i, 1);
		const char *args[2] = {id, own};

		if (id[0] == '\0' || strspn(id, "0123456789") != strlen(id) || strlen(id) > 18)
			continue;
		if (tb_sql("SELECT 1 FROM tenant_backup.jobs WHERE id = $1::bigint AND state = 'running'"
				   " AND id <> $2::bigint",
				   2, args) == NULL)
			tb_restore_role_drop(admin, PQgetvalue(roles, i, 0));
	}
	PQclear(roles);
}

/*
 * Creates the job's restore role on admin (a superuser connection): a login with a
 * random password (only its SCRAM verifier reaches the server), no attribute, a
 * member of the marker role tenant_backup_restorer (for pg_hba.conf) and of exactly
 * the tenant's own roles: fresh's owner and every owner the archive names that is
 * neither a superuser nor a predefined role. role and password (65 bytes) receive
 * its name and password. The role is dropped at exit whatever happens.
 */
static char *
tb_restore_role_create(PGconn *admin, const tb_job *job, const tb_archive *toc, const char *fresh, char *role,
					   char *password)
{
	static bool exit_callback = false;
	uint8 random[TB_RESTORE_PASSWORD_BYTES];
	StringInfoData owners;
	char *verifier, *failure, *members;

	tb_restore_roles_sweep(admin, job);
	snprintf(role, NAMEDATALEN, TB_RESTORE_ROLE_PREFIX INT64_FORMAT, job->id);
	if (!pg_strong_random(random, sizeof(random)))
		return pstrdup("could not generate a password for the restore role");
	password[hex_encode((char *) random, sizeof(random), password)] = '\0';
	explicit_bzero(random, sizeof(random));
	verifier = PQencryptPasswordConn(admin, password, role, "scram-sha-256");
	if (verifier == NULL)
		return psprintf("could not compute the restore role's password verifier: %s", pchomp(PQerrorMessage(admin)));

	/* One marker role for every job, made once; two jobs racing to make it is no failure. */
	failure = tb_admin_exec(admin, "DO $$BEGIN CREATE ROLE " TB_RESTORER_ROLE " NOLOGIN;"
								   " EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END$$");
	/* Every restore role inherits from the marker: it must carry no right of its own. */
	if (failure == NULL &&
		tb_admin_value(admin,
					   "SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) '" TB_RESTORER_ROLE
					   "' AND (r.rolsuper OR r.rolcanlogin OR r.rolbypassrls OR EXISTS (SELECT 1 FROM"
					   " pg_catalog.pg_auth_members m WHERE m.member OPERATOR(pg_catalog.=) r.oid))") != NULL)
		failure = pstrdup("role " TB_RESTORER_ROLE " has rights of its own (a login, superuser, BYPASSRLS or a "
						  "membership): restore roles would inherit them; make it a bare NOLOGIN role again");
	if (failure == NULL)
	{
		if (!exit_callback)
			before_shmem_exit(tb_restore_role_at_exit, (Datum) 0);
		exit_callback = true;
		strlcpy(tb_restore_role_name, role, sizeof(tb_restore_role_name));
		tb_restore_role_admin = admin;
		failure = tb_admin_exec(admin, psprintf("CREATE ROLE %s LOGIN PASSWORD %s NOSUPERUSER NOCREATEDB NOCREATEROLE"
												" NOREPLICATION NOBYPASSRLS INHERIT IN ROLE " TB_RESTORER_ROLE,
												quote_identifier(role), quote_literal_cstr(verifier)));
	}
	PQfreemem(verifier);
	if (failure != NULL)
		return psprintf("could not create the restore role \"%s\": %s", role, failure);

	initStringInfo(&owners);
	appendStringInfoString(&owners, "ARRAY[''");
	for (int i = 0; i < toc->nentries; i++)
		if (toc->entries[i].owner != NULL && toc->entries[i].owner[0] != '\0')
			appendStringInfo(&owners, ", %s", quote_literal_cstr(toc->entries[i].owner));
	appendStringInfoString(&owners, "]::pg_catalog.text[]");
	members = tb_admin_value(
		admin,
		psprintf("SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname), ', ') FROM pg_catalog.pg_roles r"
				 " WHERE (r.rolname::pg_catalog.text OPERATOR(pg_catalog.=) ANY (%s)"
				 "        OR r.oid OPERATOR(pg_catalog.=) (SELECT d.datdba FROM pg_catalog.pg_database d"
				 "                                         WHERE d.datname OPERATOR(pg_catalog.=) %s))"
				 " AND NOT r.rolsuper AND NOT pg_catalog.starts_with(r.rolname::pg_catalog.text, 'pg_')",
				 owners.data, quote_literal_cstr(fresh)));
	if (members != NULL &&
		(failure = tb_admin_exec(admin, psprintf("GRANT %s TO %s", members, quote_identifier(role)))))
		return psprintf("could not grant the tenant's roles to the restore role \"%s\": %s", role, failure);
	return NULL;
}

/* Entries pg_restore leaves to phases A and C: superuser statements and objects of the database itself. */
static bool
tb_restore_by_superuser(const tb_archive_entry *e)
{
	static const char *const kinds[] = {"EXTENSION",           "SCHEMA",   "ACL",        "DEFAULT ACL", "DATABASE",
										"DATABASE PROPERTIES", "ENCODING", "STDSTRINGS", "SEARCHPATH",  NULL};

	for (int i = 0; kinds[i]; i++)
		if (strcmp(e->desc, kinds[i]) == 0)
			return true;
	/* Comments on what the role does not own: extensions, schemas, the database. */
	return strcmp(e->desc, "COMMENT") == 0 && e->tag != NULL &&
		   (strncmp(e->tag, "EXTENSION ", 10) == 0 || strncmp(e->tag, "SCHEMA ", 7) == 0 ||
			strncmp(e->tag, "DATABASE ", 9) == 0);
}

/* An ACL entry whose object exists before the load and that the load needs (CREATE SERVER needs USAGE). */
static bool
tb_restore_acl_before_load(const tb_archive_entry *e)
{
	return strcmp(e->desc, "ACL") == 0 && e->tag != NULL && strncmp(e->tag, "FOREIGN DATA WRAPPER ", 21) == 0;
}

/*
 * Phase A, superuser on fresh, before any tenant code exists there: pg_dump's own
 * CREATE EXTENSION statements, the schemas (from their names) with their owners,
 * the ACLs the load needs, and the role's temporary grants: USAGE and CREATE on
 * every schema, all rights on the extensions' configuration tables the archive has
 * data for, CONNECT and TEMPORARY on the database.
 */
static char *
tb_restore_phase_a(PGconn *conn, const tb_archive *toc, const char *role, const char *fresh)
{
	char *failure = NULL, *schemas;

	for (int i = 0; i < toc->nentries && failure == NULL; i++)
	{
		const tb_archive_entry *e = &toc->entries[i];

		if (strcmp(e->desc, "SCHEMA") == 0 && e->tag != NULL)
		{
			failure = tb_admin_exec(conn, psprintf("CREATE SCHEMA IF NOT EXISTS %s", quote_identifier(e->tag)));
			if (failure == NULL && e->owner != NULL && e->owner[0] != '\0')
				failure = tb_admin_exec(conn, psprintf("ALTER SCHEMA %s OWNER TO %s", quote_identifier(e->tag),
													   quote_identifier(e->owner)));
		}
		else if ((strcmp(e->desc, "EXTENSION") == 0 || tb_restore_acl_before_load(e)) && e->defn != NULL)
			failure = tb_admin_exec(conn, e->defn);
	}
	/* Data for what exists already is an extension's configuration table or sequence: the role may write it. */
	for (int i = 0; i < toc->nentries && failure == NULL; i++)
	{
		const tb_archive_entry *e = &toc->entries[i];
		char *relation;

		if ((!e->table_data && strcmp(e->desc, "SEQUENCE SET") != 0) || e->namespace == NULL || e->tag == NULL)
			continue;
		relation = psprintf("%s.%s", quote_identifier(e->namespace), quote_identifier(e->tag));
		if (tb_admin_value(conn, psprintf("SELECT pg_catalog.to_regclass(%s)", quote_literal_cstr(relation))) != NULL)
			failure = tb_admin_exec(conn, psprintf("GRANT ALL ON TABLE %s TO %s", relation, quote_identifier(role)));
	}
	if (failure != NULL)
		return psprintf("could not prepare database \"%s\" for the load: %s", fresh, failure);
	schemas =
		tb_admin_value(conn, "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(nspname), ', ')"
							 " FROM pg_catalog.pg_namespace WHERE NOT pg_catalog.starts_with(nspname::pg_catalog.text,"
							 " 'pg_') AND nspname OPERATOR(pg_catalog.<>) 'information_schema'");
	if (schemas != NULL)
		failure =
			tb_admin_exec(conn, psprintf("GRANT USAGE, CREATE ON SCHEMA %s TO %s", schemas, quote_identifier(role)));
	if (failure == NULL)
		failure = tb_admin_exec(conn, psprintf("GRANT CONNECT, TEMPORARY ON DATABASE %s TO %s", quote_identifier(fresh),
											   quote_identifier(role)));
	return failure ? psprintf("could not grant the restore role \"%s\" its rights on \"%s\": %s", role, fresh, failure)
				   : NULL;
}

/*
 * What ALTER ... OWNER TO names an entry's object by, as pg_restore's own
 * _getObjectDescription builds it: from the schema and name, or from pg_dump's DROP
 * statement for objects with arguments; NULL for objects with no owner of their own.
 */
static char *
tb_restore_object_identity(const tb_archive_entry *e)
{
	static const char *const qualified[] = {
		"COLLATION",  "CONVERSION", "DOMAIN", "FOREIGN TABLE", "MATERIALIZED VIEW",      "SEQUENCE",
		"STATISTICS", "TABLE",      "TYPE",   "VIEW",          "TEXT SEARCH DICTIONARY", "TEXT SEARCH CONFIGURATION",
		NULL};
	static const char *const unqualified[] = {"EVENT TRIGGER", "FOREIGN DATA WRAPPER", "SERVER",
											  "PUBLICATION",   "SUBSCRIPTION",         NULL};
	static const char *const by_drop[] = {"AGGREGATE",       "FUNCTION",  "OPERATOR", "OPERATOR CLASS",
										  "OPERATOR FAMILY", "PROCEDURE", NULL};

	if (e->tag == NULL)
		return NULL;
	for (int i = 0; qualified[i]; i++)
		if (strcmp(e->desc, qualified[i]) == 0)
			return e->namespace && e->namespace[0]
					   ? psprintf("%s %s.%s", e->desc, quote_identifier(e->namespace), quote_identifier(e->tag))
					   : psprintf("%s %s", e->desc, quote_identifier(e->tag));
	for (int i = 0; unqualified[i]; i++)
		if (strcmp(e->desc, unqualified[i]) == 0)
			return psprintf("%s %s", e->desc, quote_identifier(e->tag));
	if (strcmp(e->desc, "BLOB") == 0)
		return psprintf("LARGE OBJECT %s", e->tag);
	for (int i = 0; by_drop[i]; i++)
		if (strcmp(e->desc, by_drop[i]) == 0 && e->drop_stmt != NULL && strncmp(e->drop_stmt, "DROP ", 5) == 0)
		{
			char *identity = pstrdup(e->drop_stmt + 5);
			char *last = identity + strlen(identity) - 1;

			while (last >= identity && (*last == '\n' || *last == ';'))
				*last-- = '\0';
			return identity;
		}
	return NULL;
}

/* Sends what statements holds once it is big enough (or at the end, with flush); NULL or the server's message. */
static char *
tb_restore_send(PGconn *conn, StringInfo statements, bool flush)
{
	char *failure = NULL;

	if (statements->len > 0 && (flush || statements->len >= TB_OWNER_BATCH))
	{
		failure = tb_admin_exec(conn, statements->data);
		resetStringInfo(statements);
	}
	return failure;
}

/*
 * Phase C, superuser on fresh once the load is done (no tenant code runs): every
 * object the role created gets the owner the archive names (sequences last: a
 * table's own ones follow it), then pg_dump's GRANT/REVOKE, default privileges and
 * comments on extensions and schemas; then what the role still owns goes to the
 * database's owner and its own grants are revoked.
 */
static char *
tb_restore_phase_c(PGconn *conn, const tb_archive *toc, const char *role, const char *fresh)
{
	StringInfoData statements;
	char *failure = NULL;

	initStringInfo(&statements);
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < toc->nentries && failure == NULL; i++)
		{
			const tb_archive_entry *e = &toc->entries[i];
			char *identity;

			if (tb_restore_by_superuser(e) || e->owner == NULL || e->owner[0] == '\0' ||
				(strcmp(e->desc, "SEQUENCE") == 0) != (pass == 1) || (identity = tb_restore_object_identity(e)) == NULL)
				continue;
			appendStringInfo(&statements, "ALTER %s OWNER TO %s;\n", identity, quote_identifier(e->owner));
			failure = tb_restore_send(conn, &statements, false);
		}
	for (int i = 0; i < toc->nentries && failure == NULL; i++)
	{
		const tb_archive_entry *e = &toc->entries[i];

		if (e->defn != NULL && strcmp(e->desc, "EXTENSION") != 0 && !tb_restore_acl_before_load(e) &&
			tb_restore_by_superuser(e) && !tb_pg_database_entry(e))
		{
			appendStringInfo(&statements, "%s\n", e->defn);
			failure = tb_restore_send(conn, &statements, false);
		}
	}
	if (failure == NULL)
		failure = tb_restore_send(conn, &statements, true);
	if (failure == NULL)
		failure = tb_admin_exec(
			conn,
			psprintf("REASSIGN OWNED BY %s TO %s; DROP OWNED BY %s", quote_identifier(role),
					 quote_identifier(tb_admin_value(conn, "SELECT pg_catalog.pg_get_userbyid(datdba)"
														   " FROM pg_catalog.pg_database"
														   " WHERE datname OPERATOR(pg_catalog.=) current_database()")),
					 quote_identifier(role)));
	return failure
			   ? psprintf("could not give the objects restored into \"%s\" their owners and grants: %s", fresh, failure)
			   : NULL;
}

/* The pg_restore --use-list file of what the role loads: every entry but the superuser's. */
static char *
tb_restore_list_write(const tb_archive *toc, const char *path)
{
	StringInfoData list;
	FILE *f;
	bool written;

	initStringInfo(&list);
	for (int i = 0; i < toc->nentries; i++)
		if (!tb_restore_by_superuser(&toc->entries[i]))
			appendStringInfo(&list, INT64_FORMAT ";\n", toc->entries[i].dump_id);
	if ((f = AllocateFile(path, PG_BINARY_W)) == NULL)
		return psprintf("could not write the restore list \"%s\": %m", path);
	written = fwrite(list.data, 1, list.len, f) == (size_t) list.len;
	if (FreeFile(f) != 0 || !written)
		return psprintf("could not write the restore list \"%s\": %m", path);
	return NULL;
}

/*
 * The session pg_restore runs in: the job's role, with its password from the job's
 * password file, at the locator's server (a conninfo), or this cluster over TCP on
 * 127.0.0.1 (over its socket when it listens on no address: pg_hba.conf then needs a
 * "local" line for the role). Later keywords override earlier ones.
 */
static char *
tb_restore_role_conninfo(const tb_job *job, const char *fresh_conninfo, const char *role)
{
	if (tb_is_conninfo(job->locator) || ListenAddresses == NULL || ListenAddresses[0] == '\0')
		return psprintf("%s user='%s'", fresh_conninfo, role);
	return psprintf("%s host='127.0.0.1' port=%d user='%s'", fresh_conninfo, PostPortNumber, role);
}

char *
tb_pg_load_as_tenant(tb_job *job, repo_reader *reader, const tb_archive *toc, PGconn *admin, const char *fresh,
					 const char *fresh_conninfo)
{
	char role[NAMEDATALEN], password[2 * TB_RESTORE_PASSWORD_BYTES + 1] = "";
	char *failure, *list = tb_tool_messages_file(job, "pg_restore_list");
	PGconn *conn = tb_tenant_connect(job, fresh_conninfo, &failure);

	if (failure != NULL)
		failure = psprintf("could not connect to database \"%s\": %s", fresh, failure);
	if (failure == NULL)
		failure = tb_restore_role_create(admin, job, toc, fresh, role, password);
	if (failure == NULL)
		failure = tb_restore_phase_a(conn, toc, role, fresh);
	if (failure == NULL)
		failure = tb_restore_list_write(toc, list);
	if (failure == NULL)
	{
		tb_passfile_remove();
		tb_passfile_create_with_login(job, role, password);
		explicit_bzero(password, sizeof(password));
		PG_TRY();
		{
			failure = tb_pg_run_restore(
				job, reader,
				(const char *const[]){"--no-owner", "--no-acl", "--exit-on-error", "--no-password",
									  psprintf("--use-list=%s", list), NULL},
				tb_restore_role_conninfo(job, fresh_conninfo, role));
		}
		PG_CATCH();
		{
			unlink(list);
			PQfinish(conn);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	explicit_bzero(password, sizeof(password));
	unlink(list);
	if (failure == NULL)
		failure = tb_restore_phase_c(conn, toc, role, fresh);
	PQfinish(conn);
	/* On failure the caller drops fresh first: the role owns objects there until then. */
	if (failure == NULL)
		tb_restore_role_end();
	return failure;
}
