/*
 * The database's own properties, as the backup's archive carries them (pg_dump writes
 * them into every custom archive; pg_restore applies them only with --create): its
 * CREATE DATABASE (encoding, locale provider, collation, tablespace), owner, settings,
 * role-in-database settings, connection limit, comment and grants, retargeted from the
 * backed-up database's name to the one a restore creates.
 */
#include "tenant_backup.h"

#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "utils/builtins.h"

#include "pg_engine.h"

/* Entries about the database itself, which only this file applies. */
bool
tb_pg_database_entry(const tb_archive_entry *e)
{
	if (strcmp(e->desc, "DATABASE") == 0 || strcmp(e->desc, "DATABASE PROPERTIES") == 0)
		return true;
	return (strcmp(e->desc, "COMMENT") == 0 || strcmp(e->desc, "ACL") == 0 || strcmp(e->desc, "SECURITY LABEL") == 0) &&
		   e->tag != NULL && strncmp(e->tag, "DATABASE ", 9) == 0;
}

static const tb_archive_entry *
tb_props_find(const tb_archive *toc, const char *desc)
{
	for (int i = 0; i < toc->nentries; i++)
		if (tb_pg_database_entry(&toc->entries[i]) && strcmp(toc->entries[i].desc, desc) == 0 &&
			toc->entries[i].defn != NULL)
			return &toc->entries[i];
	return NULL;
}

/*
 * pg_dump's statements about the database quoted as qsource, aimed at qfresh: every
 * "DATABASE <qsource>" outside string literals and quoted identifiers becomes
 * "DATABASE <qfresh>". Each statement must begin with one of allowed and name the
 * database; with one_statement, there must be exactly one. NULL (with *failure set)
 * when the text is not what pg_dump writes there: it is never run then.
 */
static char *
tb_props_retarget(const char *stmts, const char *qsource, const char *qfresh, const char *const *allowed,
				  bool one_statement, char **failure)
{
	char *match = psprintf("DATABASE %s", qsource);
	size_t match_len = strlen(match);
	StringInfoData out;
	const char *p = stmts;
	int statements = 0;

	initStringInfo(&out);
	while (*p)
	{
		bool prefix_ok = false;
		int retargeted = 0;

		while (*p == ' ' || *p == '\n' || *p == '\t')
			appendStringInfoChar(&out, *p++);
		if (*p == '\0')
			break;
		for (int i = 0; allowed[i] && !prefix_ok; i++)
			prefix_ok = strncmp(p, allowed[i], strlen(allowed[i])) == 0;
		if (!prefix_ok || (one_statement && statements > 0))
		{
			*failure = pstrdup("its statements about the database are not the ones pg_dump writes");
			return NULL;
		}
		statements++;
		while (*p && *p != ';')
		{
			if (*p == '\'' || *p == '"')
			{
				char quote = *p;
				bool escapes = *p == '\'' && p > stmts && (p[-1] == 'E' || p[-1] == 'e');

				appendStringInfoChar(&out, *p++);
				while (*p && !(*p == quote && p[1] != quote))
				{
					if ((*p == quote && p[1] == quote) || (escapes && *p == '\\' && p[1] != '\0'))
						appendStringInfoChar(&out, *p++);
					appendStringInfoChar(&out, *p++);
				}
				if (*p == '\0')
					break;
				appendStringInfoChar(&out, *p++);
			}
			else if (strncmp(p, match, match_len) == 0 && (p == stmts || p[-1] == ' ') &&
					 (p[match_len] == ' ' || p[match_len] == ';' || p[match_len] == '\n'))
			{
				appendStringInfo(&out, "DATABASE %s", qfresh);
				p += match_len;
				retargeted++;
			}
			else
				appendStringInfoChar(&out, *p++);
		}
		if (*p != ';' || retargeted == 0)
		{
			*failure = pstrdup("a statement about the database does not name it, or does not end");
			return NULL;
		}
		appendStringInfoChar(&out, *p++);
	}
	if (statements == 0)
	{
		*failure = pstrdup("it holds no statement");
		return NULL;
	}
	*failure = NULL;
	return out.data;
}

/* The archive's database, quoted as pg_dump quoted it, or NULL when the archive has no DATABASE entry. */
static const char *
tb_props_source(const tb_archive *toc)
{
	const tb_archive_entry *db = tb_props_find(toc, "DATABASE");

	return db && db->tag ? quote_identifier(db->tag) : NULL;
}

/* Runs one entry's statements on admin, aimed at fresh; NULL, or why not. */
static char *
tb_props_run(PGconn *admin, const tb_archive *toc, const char *desc, const char *fresh, const char *const *allowed,
			 bool one_statement)
{
	const tb_archive_entry *e = tb_props_find(toc, desc);
	const char *qsource = tb_props_source(toc);
	char *failure, *sql;

	if (e == NULL || qsource == NULL)
		return NULL;
	sql = tb_props_retarget(e->defn, qsource, quote_identifier(fresh), allowed, one_statement, &failure);
	if (sql == NULL)
		return psprintf("the backup's %s entry of database %s is refused: %s", desc, qsource, failure);
	if ((failure = tb_admin_exec(admin, sql)) != NULL)
		return psprintf("could not apply the backup's %s of database %s to \"%s\": %s", desc, qsource, fresh, failure);
	return NULL;
}

char *
tb_pg_database_create(PGconn *admin, const tb_archive *toc, const char *live, const char *fresh, bool *created)
{
	static const char *const create[] = {"CREATE DATABASE ", NULL};
	const tb_archive_entry *db = tb_props_find(toc, "DATABASE");
	char *failure, *owner;

	*created = false;
	if (db == NULL)
		return psprintf("the backup holds no CREATE DATABASE entry for \"%s\" (it was made with a schema or table "
						"selection); restore it with pg_restore",
						fresh);
	if ((failure = tb_props_run(admin, toc, "DATABASE", fresh, create, true)) != NULL)
		return failure;
	*created = true;
	/* The backed-up owner if that role exists here, else the live database's owner. */
	owner = tb_admin_value(
		admin, psprintf("SELECT pg_catalog.quote_ident(coalesce((SELECT rolname FROM pg_catalog.pg_roles"
						"   WHERE rolname OPERATOR(pg_catalog.=) %s), (SELECT pg_catalog.pg_get_userbyid(datdba)"
						"   FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) %s)))",
						quote_literal_cstr(db->owner ? db->owner : ""), quote_literal_cstr(live)));
	if (owner != NULL &&
		(failure = tb_admin_exec(admin, psprintf("ALTER DATABASE %s OWNER TO %s", quote_identifier(fresh), owner))))
		return psprintf("could not give database \"%s\" its owner: %s", fresh, failure);
	/* Closed to PUBLIC while it loads; the backup's grants come once it is complete. */
	if ((failure = tb_admin_exec(admin, psprintf("REVOKE ALL ON DATABASE %s FROM PUBLIC", quote_identifier(fresh)))))
		return psprintf("could not close database \"%s\" while it loads: %s", fresh, failure);
	return NULL;
}

char *
tb_pg_database_props_apply(PGconn *admin, const tb_archive *toc, const char *fresh, tb_database_grants grants)
{
	static const char *const properties[] = {"ALTER DATABASE ", "ALTER ROLE ", NULL};
	static const char *const comment[] = {"COMMENT ON DATABASE ", NULL};
	static const char *const acl[] = {"GRANT ", "REVOKE ", NULL};
	char *failure = tb_props_run(admin, toc, "DATABASE PROPERTIES", fresh, properties, false);

	if (failure == NULL)
		failure = tb_props_run(admin, toc, "COMMENT", fresh, comment, true);
	if (failure != NULL || grants == TB_GRANTS_CLOSED)
		return failure;
	/* pg_dump's grants are relative to the defaults, which the load took away from PUBLIC. */
	if ((failure = tb_admin_exec(
			 admin, psprintf("GRANT CONNECT, TEMPORARY ON DATABASE %s TO PUBLIC", quote_identifier(fresh)))) != NULL)
		return psprintf("could not open database \"%s\" to PUBLIC: %s", fresh, failure);
	return grants == TB_GRANTS_BACKUP ? tb_props_run(admin, toc, "ACL", fresh, acl, false) : NULL;
}
