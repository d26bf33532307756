/*
 * A PostgreSQL tenant's restore: the backup, authenticated as it streams, is loaded
 * by pg_restore into a fresh database; in place, that one then takes the live one's
 * name (pg_swap.c); to a target or in a drill it stays beside it.
 */
#include "tenant_backup.h"

#include <unistd.h>

#include "libpq-fe.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "pg_engine.h"
#include "repo_copy.h"

/*
 * How the copy of the backup being read failed (repo_copy_failure) when that copy is
 * at fault: missing, failing authentication, not the object recorded. Set by the
 * reads and checks below; NULL when the current failure would be any copy's.
 */
static const char *tb_pg_copy_failure;

/* Streams the authenticated plaintext of reader into a tool (pg_restore, tar); NULL or why it failed. */
char *
tb_pg_restore_from(tb_job *job, repo_reader *reader, tb_child *restore, const char *tool)
{
	char *buf = palloc(TB_PIPE_BUFFER);
	tb_error err = {0};
	ssize_t n;

	while ((n = repo_reader_read(reader, buf, TB_PIPE_BUFFER, &err)) > 0)
	{
		if (tb_child_write(restore, job, buf, n) != 0)
			return restore->stopped ? restore->stopped : psprintf("could not feed %s: %m", tool);
		job->bytes_done += n;
		CHECK_FOR_INTERRUPTS();
	}
	if (n < 0)
	{
		tb_pg_copy_failure = repo_copy_failure(&err);
		return psprintf("the backup failed authentication, nothing live was changed: %s", err.msg);
	}
	return NULL;
}

/*
 * The object must be the one its catalog row describes: its authenticated header
 * names the job's tenant, the postgres engine and this backup's id. A backup made
 * before 0.2.0 carries a random id (not a number): its SHA-256 decides alone
 * (tb_pg_check_stored_hash). NULL, or why not.
 */
char *
tb_pg_check_header(const tb_job *job, repo_reader *reader, const char *backup_id)
{
	const stream_header *header = repo_reader_header(reader);
	bool numbered =
		header->backup_id[0] != '\0' && strspn(header->backup_id, "0123456789") == strlen(header->backup_id);

	if (strcmp(header->tenant, job->tenant) != 0 || strcmp(header->engine, "postgres") != 0 ||
		(numbered && strcmp(header->backup_id, backup_id) != 0))
		tb_pg_copy_failure = "failed authentication";
	if (strcmp(header->tenant, job->tenant) != 0 || strcmp(header->engine, "postgres") != 0)
		return psprintf(
			"backup %s holds a %s backup of tenant \"%s\", not a postgres backup of \"%s\"; nothing live was "
			"changed",
			backup_id, header->engine, header->tenant, job->tenant);
	if (numbered && strcmp(header->backup_id, backup_id) != 0)
		return psprintf("the object of backup %s holds backup %s (it was copied over it in storage); nothing live was "
						"changed",
						backup_id, header->backup_id);
	return NULL;
}

/*
 * Once the object was read to its end: the SHA-256 of what was stored must be the
 * one recorded in the catalog when the backup was written. NULL, or why not.
 */
char *
tb_pg_check_stored_hash(repo_reader *reader, const char *backup_id)
{
	const char *args[1] = {backup_id};
	char *recorded = tb_sql("SELECT sha256 FROM tenant_backup.backups WHERE id = $1::bigint", 1, args);
	char sha[2 * CRYPTO_SHA256_LEN + 1];
	stream_stats stats;

	repo_reader_stats(reader, &stats);
	if (!stats.stored_sha256_known)
		return psprintf("the SHA-256 of backup %s was not computed while it was read", backup_id);
	crypto_hex_encode(stats.stored_sha256, CRYPTO_SHA256_LEN, sha);
	if (recorded != NULL && strcmp(recorded, sha) != 0)
		tb_pg_copy_failure = "failed authentication";
	if (recorded == NULL || strcmp(recorded, sha) != 0)
		return psprintf("the object of backup %s has SHA-256 %s, but %s was recorded when it was written (it was "
						"replaced in storage); nothing live was changed",
						backup_id, sha, recorded ? recorded : "none");
	return NULL;
}

/*
 * The archive's table of contents, from a first pass over the authenticated object
 * that stops where the TOC ends. NULL, or why it could not be read.
 */
static char *
tb_pg_read_toc(tb_job *job, storage *st, const char *object, const char *backup_id, tb_archive *toc)
{
	char *buf = palloc(TB_PIPE_BUFFER), *failure = NULL;
	master_key master;
	tb_error err = {0};
	repo_reader *reader;
	ssize_t n = 0;

	tb_archive_init(toc, true);
	tb_job_master_key(job, &master);
	reader = repo_reader_open(st, &master, object, NULL, &err);
	keys_master_wipe(&master);
	if (reader == NULL)
	{
		tb_pg_copy_failure = repo_copy_failure(&err);
		return psprintf("backup %s cannot be read, nothing live was changed: %s", backup_id, err.msg);
	}
	while (!toc->toc_done && (n = repo_reader_read(reader, buf, TB_PIPE_BUFFER, &err)) > 0)
	{
		if (!tb_archive_feed(toc, buf, n))
			break;
		CHECK_FOR_INTERRUPTS();
	}
	if (n < 0)
	{
		tb_pg_copy_failure = repo_copy_failure(&err);
		failure = psprintf("the backup failed authentication, nothing live was changed: %s", err.msg);
	}
	else if (toc->error != NULL || !tb_archive_finish(toc))
		failure = psprintf("backup %s cannot be restored, nothing live was changed: %s", backup_id, toc->error);
	repo_reader_close(reader);
	pfree(buf);
	return failure;
}

char *
tb_pg_run_restore(tb_job *job, repo_reader *reader, const char *const *options, const char *conninfo)
{
	char *messages = tb_tool_messages_file(job, "pg_restore");
	char *failure;
	tb_child restore;

	if (!tb_child_start(&restore, (const char *const *) tb_tool_argv("pg_restore", options, conninfo), messages,
						false))
		failure = psprintf("could not run pg_restore: %m");
	else
	{
		PG_TRY();
		{
			failure = tb_pg_restore_from(job, reader, &restore, "pg_restore");
			/* The whole archive was handed over: what pg_restore does now is its post-data, indexes first. */
			if (failure == NULL)
				tb_job_phase(job, "index");
		}
		PG_CATCH();
		{
			tb_child_kill(&restore);
			unlink(messages);
			PG_RE_THROW();
		}
		PG_END_TRY();
		failure = tb_tool_end(&restore, job, "pg_restore", failure);
	}
	return tb_tool_messages(messages, "pg_restore", failure);
}

/*
 * Loads the backup into fresh (created, empty): as the tenant when admin is a
 * superuser (pg_restore_role.c); otherwise as admin's own login, whose rights are
 * all tenant code gets. Then the object must be the one recorded. NULL, or why not;
 * fresh is left for the caller to drop.
 */
static char *
tb_pg_load(tb_job *job, repo_reader *reader, const tb_archive *toc, PGconn *admin, const char *fresh,
		   const char *fresh_conninfo, const char *backup_id)
{
	char *superuser = tb_admin_value(admin, "SELECT rolsuper FROM pg_catalog.pg_roles"
											" WHERE rolname OPERATOR(pg_catalog.=) CURRENT_USER");
	char *failure;

	if (superuser != NULL && strcmp(superuser, "t") == 0)
		failure = tb_pg_load_as_tenant(job, reader, toc, admin, fresh, fresh_conninfo);
	else
		failure = tb_pg_run_restore(job, reader, (const char *const[]){"--exit-on-error", "--no-password", NULL},
								fresh_conninfo);
	return failure ? failure : tb_pg_check_stored_hash(reader, backup_id);
}

/* Whether database name exists on admin's server. */
static bool
tb_pg_database_exists(PGconn *admin, const char *name)
{
	return tb_admin_value(admin,
						  psprintf("SELECT 1 FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) %s",
								   quote_literal_cstr(name))) != NULL;
}

/*
 * Who may connect to fresh once loaded: nobody yet in a drill or when it replaces a
 * live database (old), whose own grants the swap carries over; PUBLIC's defaults for
 * a target restored with privileges => false; otherwise the backup's grants.
 */
static tb_database_grants
tb_pg_restore_grants(const tb_job *job, const char *old)
{
	char job_id[32];
	const char *args[1] = {job_id};
	char *privileges;

	if (job->drill || old != NULL)
		return TB_GRANTS_CLOSED;
	snprintf(job_id, sizeof(job_id), INT64_FORMAT, job->id);
	privileges = tb_sql("SELECT restore_privileges FROM tenant_backup.jobs WHERE id = $1::bigint", 1, args);
	return job->restore_target != NULL && privileges != NULL && strcmp(privileges, "f") == 0 ? TB_GRANTS_DEFAULT
																							 : TB_GRANTS_BACKUP;
}

/*
 * Loads the backup into fresh, created for it as the backup's CREATE DATABASE says,
 * and then gives it the backup's database properties and the grants
 * tb_pg_restore_grants says; a drill counts it and drops it. NULL, or why not; on
 * failure fresh is dropped if this created it.
 */
static char *
tb_pg_load_fresh(tb_job *job, repo_reader *reader, const tb_archive *toc, PGconn *admin, const char *live,
				 const char *fresh, const char *old, const char *backup_id)
{
	char *fresh_conninfo = tb_source_conninfo(job, fresh);
	tb_database_grants grants = tb_pg_restore_grants(job, old);
	bool created;
	char *failure = tb_pg_database_create(admin, toc, live, fresh, &created);

	/* A database of that name made by someone else in the meantime is not ours to drop. */
	if (!created)
		return failure;
	PG_TRY();
	{
		if (failure == NULL)
			failure = tb_pg_load(job, reader, toc, admin, fresh, fresh_conninfo, backup_id);
		if (failure == NULL)
			failure = tb_pg_database_props_apply(admin, toc, fresh, grants);
	}
	PG_CATCH();
	{
		tb_admin_exec(admin, psprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", quote_identifier(fresh)));
		tb_restore_role_end();
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (failure != NULL)
		tb_admin_exec(admin, psprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", quote_identifier(fresh)));
	/* Once fresh is gone (or owns nothing of the role's), the role goes. */
	tb_restore_role_end();
	if (failure == NULL && job->drill)
	{
		failure = tb_pg_drill_check(job, reader, toc, fresh_conninfo);
		if (failure == NULL)
			tb_job_phase(job, "cleanup");
		tb_admin_exec(admin, psprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", quote_identifier(fresh)));
	}
	return failure;
}

/*
 * Restores backup backup_id (object) from one copy of it, st (closed here): loaded into
 * fresh, which in place then takes live's name. NULL, or why not; tb_pg_copy_failure
 * is set when the copy was at fault, and nothing live changed then.
 */
static char *
tb_pg_restore_copy(tb_job *job, storage *st, const char *object, const char *backup_id, const char *live,
				   const char *fresh)
{
	char *admin_conninfo, *failure = NULL, *connect_failure;
	char *volatile old = NULL;
	bool in_place = job->restore_target == NULL && !job->drill;
	volatile bool journaled = false;
	stream_reader_options read_options = {.hash_stored = true};
	master_key master;
	tb_error err = {0};
	repo_reader *reader;
	PGconn *admin;
	tb_archive toc;

	tb_pg_copy_failure = NULL;
	job->bytes_done = 0;
	/* The header authenticates, and its TOC is read, before anything is created. */
	tb_job_phase(job, "authenticate");
	tb_job_master_key(job, &master);
	reader = repo_reader_open(st, &master, object, &read_options, &err);
	keys_master_wipe(&master);
	if (reader == NULL)
	{
		storage_close(st);
		tb_pg_copy_failure = repo_copy_failure(&err);
		return psprintf("backup %s cannot be read, nothing live was changed: %s", backup_id, err.msg);
	}
	if ((failure = tb_pg_check_header(job, reader, backup_id)) != NULL ||
		(failure = tb_pg_read_toc(job, st, object, backup_id, &toc)) != NULL)
	{
		repo_reader_close(reader);
		storage_close(st);
		return failure;
	}

	tb_job_phase(job, "connect");
	admin_conninfo = tb_source_conninfo(job, "postgres");
	tb_passfile_create(job);
	/* It pins the server: fresh's conninfo, built after it, goes there only. */
	admin = tb_tenant_connect(job, admin_conninfo, &connect_failure);
	if (connect_failure != NULL)
		failure = psprintf("could not connect to the server of database \"%s\": %s", live, connect_failure);
	else
		failure = tb_source_identity_claim(job, admin, live);
	if (failure == NULL && tb_pg_database_exists(admin, fresh))
		failure = psprintf("database \"%s\" already exists; nothing was changed", fresh);
	/* A live database that is gone (dropped) is recreated: the restored one only takes its name. */
	if (failure == NULL && in_place && tb_pg_database_exists(admin, live))
		old = psprintf("%.*s_tb_old_" INT64_FORMAT, tb_clip(live), live, job->id);
	if (failure == NULL && in_place)
	{
		tb_pg_swap_journal(job, "loading", live, fresh, old);
		journaled = true;
	}
	if (failure == NULL)
	{
		tb_job_phase(job, "load");
		PG_TRY();
		{
			failure = tb_pg_load_fresh(job, reader, &toc, admin, live, fresh, old, backup_id);
		}
		PG_CATCH();
		{
			PQfinish(admin);
			tb_passfile_remove();
			repo_reader_close(reader);
			storage_close(st);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	repo_reader_close(reader);
	storage_close(st);
	/* A restore already given up on (its lease taken back) must not replace anything. */
	if (failure == NULL && !job->drill && !tb_job_progress(job, job->bytes_done, true))
	{
		failure = pstrdup("the job's lease was lost before the swap; nothing live was changed");
		tb_admin_exec(admin, psprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", quote_identifier(fresh)));
	}
	if (failure == NULL && in_place)
	{
		tb_job_phase(job, "swap");
		failure = tb_pg_swap(admin, job, live, fresh, old);
	}
	else if (journaled)
		tb_pg_swap_journal(job, "failed", live, fresh, old);
	PQfinish(admin);
	tb_passfile_remove();
	if (failure == NULL && !job->drill)
		ereport(LOG, (errmsg("tenant_backup: restored backup %s of tenant \"%s\" into \"%s\"%s", backup_id, job->tenant,
							 in_place ? live : fresh,
							 !in_place ? ""
							 : old     ? " (the previous database is kept as *_tb_old_*)"
									   : " (it had been dropped: recreated)")));
	return failure;
}

/*
 * The tenant's replica storage (tenant_backup._replica_url), opened with the primary's
 * bandwidth limit into *replica; NULL there when the tenant has none. NULL, or why it
 * could not be opened.
 */
static char *
tb_pg_replica_storage(const tb_job *job, storage **replica)
{
	const char *args[1] = {job->tenant};
	char *url = tb_sql("SELECT tenant_backup._replica_url($1)", 1, args);
	tb_error err = {0};

	*replica = NULL;
	if (url == NULL)
		return NULL;
	*replica = storage_open(tb_storage_url_limited(url), &err);
	return *replica ? NULL
					: psprintf("the replica storage of tenant \"%s\" could not be opened: %s", job->tenant, err.msg);
}

/*
 * After the primary copy failed (how: tb_pg_copy_failure; why: primary_failure), the
 * same restore from the replica's copy (closed here), authenticated the same way:
 * header, every chunk, the catalog's SHA-256. On success the job's result and the log
 * say where it came from and why; NULL, or why neither copy could be restored.
 */
static char *
tb_pg_restore_replica(tb_job *job, storage *replica, const char *object, const char *backup_id, const char *live,
					  const char *fresh, const char *primary_failure)
{
	const char *how = tb_pg_copy_failure;
	char *where = pstrdup(storage_describe(replica));
	char note[2 * TB_ERROR_MSG_MAX];
	char *failure;
	StringInfoData result;

	ereport(LOG, (errmsg("tenant_backup: restore of tenant \"%s\" (job " INT64_FORMAT
						 "): the primary copy of backup %s %s; reading the replica %s",
						 job->tenant, job->id, backup_id, how, where),
				  errdetail("%s", primary_failure)));
	failure = tb_pg_restore_copy(job, replica, object, backup_id, live, fresh);
	if (failure != NULL)
		return psprintf("backup %s cannot be restored from either copy: the primary copy %s: %s; the replica %s: %s",
						backup_id, how, primary_failure, where, failure);
	repo_copy_fallback_note(note, sizeof(note), "restored", where, how, primary_failure);
	ereport(LOG, (errmsg("tenant_backup: backup %s of tenant \"%s\" %s", backup_id, job->tenant, note)));
	initStringInfo(&result);
	appendStringInfoString(&result, "{\"restored_from\": \"replica\", \"replica\": ");
	escape_json(&result, where);
	appendStringInfoString(&result, ", \"notice\": ");
	escape_json(&result, note);
	appendStringInfoChar(&result, '}');
	job->result = result.data;
	return NULL;
}

char *
tb_pg_restore(tb_job *job)
{
	char backup_id[32];
	const char *args[1] = {backup_id};
	char *object, *live, *fresh, *failure, *replica_failure;
	storage *replica;

	snprintf(backup_id, sizeof(backup_id), INT64_FORMAT, job->backup_id);
	object =
		tb_sql("SELECT object_key FROM tenant_backup.backups WHERE id = $1::bigint AND status = 'complete'", 1, args);
	if (object == NULL)
		return psprintf("backup %s is not a complete backup", backup_id);
	if (strstr(object, "/postgres/base/") != NULL && job->drill)
		return tb_pg_drill_base(job, object, backup_id);
	if (strstr(object, "/postgres/base/") != NULL)
		return psprintf("backup %s is a base backup of a dedicated cluster: restore it to a point in time with "
						"tenant-backup restore-pitr --tenant %s",
						backup_id, job->tenant);
	if (job->restore_target && strlen(job->restore_target) >= NAMEDATALEN)
		return psprintf("target database name \"%s\" is longer than %d bytes", job->restore_target, NAMEDATALEN - 1);
	live = tb_source_dbname(job);
	fresh = job->restore_target
				? pstrdup(job->restore_target)
				: psprintf("%.*s_tb_%s_" INT64_FORMAT, tb_clip(live), live, job->drill ? "drill" : "new", job->id);

	failure = tb_pg_restore_copy(job, tb_storage(), object, backup_id, live, fresh);
	/* A drill checks the primary copy: what it finds there is its finding, not a reason to look elsewhere. */
	if (failure == NULL || tb_pg_copy_failure == NULL || job->drill)
		return failure;
	if ((replica_failure = tb_pg_replica_storage(job, &replica)) != NULL)
		return psprintf("%s; %s", failure, replica_failure);
	if (replica == NULL)
		return failure;
	return tb_pg_restore_replica(job, replica, object, backup_id, live, fresh, failure);
}
