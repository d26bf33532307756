/*
 * Restore drills of PostgreSQL backups: what a scratch load holds is counted as the
 * backup counted it at dump time; a base backup is unpacked by tar into a scratch
 * directory and its files counted.
 */
#include "tenant_backup.h"

#include <ftw.h>
#include <stdlib.h>

#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "pg_engine.h"

/* A drill's findings: the stored object's SHA-256 as read, and what it loaded. */
static char *
tb_drill_result(tb_job *job, repo_reader *reader, const char *contents)
{
	stream_stats stats;
	char sha[2 * CRYPTO_SHA256_LEN + 1];

	repo_reader_stats(reader, &stats);
	if (!stats.stored_sha256_known)
		return pstrdup("drill: the object's SHA-256 was not computed");
	crypto_hex_encode(stats.stored_sha256, CRYPTO_SHA256_LEN, sha);
	job->result = psprintf("{\"sha256\": \"%s\", \"contents\": %s}", sha, contents);
	return NULL;
}

/*
 * Counts the rows the drill loaded into its scratch database, of every table whose
 * data the archive holds, a table at a time in autocommit (no lock piles up,
 * whatever the number of tables), as {"tables": {"schema.table": rows}}. conn has
 * search_path pinned. Counting a plain table (relkind 'r', checked first: no view,
 * no rule) runs no tenant code, even as a superuser, which bypasses row-level
 * security and so counts what pg_dump dumped.
 */
static char *
tb_drill_count_rows(PGconn *conn, const tb_archive *toc, char **contents)
{
	StringInfoData json;
	bool first = true;

	initStringInfo(&json);
	appendStringInfoString(&json, "{\"tables\": {");
	for (int i = 0; i < toc->nentries; i++)
	{
		const tb_archive_entry *e = &toc->entries[i];
		char *name = psprintf("%s.%s", e->namespace, e->tag);
		char *table, *kind, *rows = NULL;

		if (!e->table_data)
			continue;
		table = psprintf("%s.%s", quote_identifier(e->namespace), quote_identifier(e->tag));
		kind = tb_admin_value(conn, psprintf("SELECT relkind FROM pg_catalog.pg_class"
											 " WHERE oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%s)",
											 quote_literal_cstr(table)));
		if (kind == NULL || strcmp(kind, "r") != 0)
			return psprintf("drill: table %s of the backup was not restored as a table", name);
		if ((rows = tb_admin_value(conn, psprintf("SELECT pg_catalog.count(*) FROM ONLY %s", table))) == NULL)
			return psprintf("drill: could not count the rows of %s: %s", name, pchomp(PQerrorMessage(conn)));
		if (!first)
			appendStringInfoString(&json, ", ");
		first = false;
		escape_json(&json, name);
		appendStringInfo(&json, ": %s", rows);
	}
	appendStringInfoString(&json, "}}");
	*contents = json.data;
	return NULL;
}

/* Counts the rows the drill loaded into its scratch database, as the backup counted them. */
char *
tb_pg_drill_check(tb_job *job, repo_reader *reader, const tb_archive *toc, const char *conninfo)
{
	char *contents = NULL, *failure;
	PGconn *conn;

	tb_job_phase(job, "compare");
	conn = tb_tenant_connect(job, conninfo, &failure);

	if (failure != NULL)
		failure = psprintf("drill: could not connect to the scratch database: %s", failure);
	else if ((failure = tb_drill_count_rows(conn, toc, &contents)) == NULL)
		failure = tb_drill_result(job, reader, contents);
	PQfinish(conn);
	return failure;
}

static uint64 tb_scratch_files;
static uint64 tb_scratch_bytes;

static int
tb_scratch_count(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	if (type == FTW_F && S_ISREG(sb->st_mode))
	{
		tb_scratch_files++;
		tb_scratch_bytes += sb->st_size;
	}
	return 0;
}

static int
tb_scratch_remove_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int
tb_pg_drill_scratch_remove(const char *dir)
{
	return nftw(dir, tb_scratch_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Named by this cluster's port too: the launcher of another cluster on the host never takes it for its own. */
char *
tb_pg_drill_scratch_prefix(void)
{
	return psprintf("tenant_backup_drill_%d_", PostPortNumber);
}

char *
tb_pg_drill_scratch_parent(void)
{
	const char *tmp = getenv("TMPDIR");

	return pstrdup(tmp && tmp[0] ? tmp : "/tmp");
}

/*
 * A drill of a base backup: unpacked by tar into a scratch directory, its files and
 * bytes counted on disk against the tar the backup was made from, then removed.
 */
char *
tb_pg_drill_base(tb_job *job, const char *object, const char *backup_id)
{
	stream_reader_options read_options = {.hash_stored = true};
	char *scratch =
		psprintf("%s/%s" INT64_FORMAT "_XXXXXX", tb_pg_drill_scratch_parent(), tb_pg_drill_scratch_prefix(), job->id);
	char *failure = NULL;
	master_key master;
	tb_error err = {0};
	repo_reader *reader;
	storage *st;
	tb_child tar;

	if (mkdtemp(scratch) == NULL)
		return psprintf("drill: could not create a scratch directory: %m");
	tb_job_phase(job, "authenticate");
	tb_job_master_key(job, &master);
	st = tb_storage();
	reader = repo_reader_open(st, &master, object, &read_options, &err);
	keys_master_wipe(&master);
	if (reader == NULL)
		failure = psprintf("backup %s cannot be read: %s", backup_id, err.msg);
	else if ((failure = tb_pg_check_header(job, reader, backup_id)) == NULL &&
			 !tb_child_start(&tar, (const char *const[]){"tar", "-x", "-f", "-", "-C", scratch, NULL}, NULL, false))
		failure = psprintf("could not run tar: %m");
	else if (failure == NULL)
	{
		tb_job_phase(job, "load");
		PG_TRY();
		{
			failure = tb_pg_restore_from(job, reader, &tar, "tar");
		}
		PG_CATCH();
		{
			tb_child_kill(&tar);
			tb_pg_drill_scratch_remove(scratch);
			repo_reader_close(reader);
			storage_close(st);
			PG_RE_THROW();
		}
		PG_END_TRY();
		failure = tb_tool_end(&tar, job, "tar", failure);
	}
	tb_scratch_files = tb_scratch_bytes = 0;
	if (failure == NULL)
		tb_job_phase(job, "compare");
	if (failure == NULL && nftw(scratch, tb_scratch_count, 16, FTW_PHYS) != 0)
		failure = psprintf("drill: could not walk the scratch directory: %m");
	if (failure == NULL)
		failure = tb_drill_result(job, reader,
								  psprintf("{\"files\": " UINT64_FORMAT ", \"bytes\": " UINT64_FORMAT "}",
										   tb_scratch_files, tb_scratch_bytes));
	if (reader != NULL)
		repo_reader_close(reader);
	storage_close(st);
	if (failure == NULL)
		tb_job_phase(job, "cleanup");
	if (tb_pg_drill_scratch_remove(scratch) != 0)
		ereport(WARNING, (errmsg("tenant_backup: could not remove drill scratch directory \"%s\": %m", scratch)));
	return failure;
}
