/*
 * WAL archiving for a dedicated tenant's cluster, and the removal of archived WAL
 * that no base backup needs any more: archive_library = 'tenant_backup'
 * with tenant_backup.archive_tenant ships every completed WAL file (segments, timeline
 * and backup history files) through core/ to <tenant>/postgres/wal/<timeline>/<file>.tbk,
 * sealed with the tenant's key. Success is reported only once the object and its
 * manifest are stored. A file archived before is compared with what is stored: the
 * same content succeeds again, different content fails and is reported, and the stored
 * object is never overwritten.
 */
#include "tenant_backup.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "access/xlog.h"
#include "postmaster/pgarch.h"
#include "storage/fd.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "names.h"
#include "pitr.h"
#include "put_guard.h"
#include "repo.h"

#define ARCHIVE_BUFFER (1024 * 1024)
#define ARCHIVE_KEY_SECONDS 60

PGDLLEXPORT void _PG_archive_module_init(ArchiveModuleCallbacks *cb);

/* The tenant's key, looked up in storage at most once a minute (rotation shows within one). */
static tenant_key archive_key;
static time_t archive_key_loaded;

static bool
tb_archive_configured(void)
{
	const char *missing = tb_archive_tenant == NULL || tb_archive_tenant[0] == '\0' ? "tenant_backup.archive_tenant"
						  : tb_storage_url == NULL || tb_storage_url[0] == '\0'     ? "tenant_backup.storage"
																					: NULL;

	if (missing)
		ereport(WARNING, (errmsg("archive_library tenant_backup cannot archive: %s is not set", missing),
						  errhint("Set it in postgresql.conf and reload; WAL files wait in pg_wal until then.")));
	return missing == NULL;
}

/* Reads all of fd, comparing it with an archived object; 1 when they are the same bytes. */
static int
tb_archive_same(storage *st, const master_key *master, const char *object, int fd, tb_error *err)
{
	repo_reader *r = repo_reader_open(st, master, object, NULL, err);
	char *stored = palloc(ARCHIVE_BUFFER), *local = palloc(ARCHIVE_BUFFER);
	int same = -1;

	if (r == NULL)
		return -1;
	for (;;)
	{
		ssize_t n = repo_reader_read(r, stored, ARCHIVE_BUFFER, err), m = 0, got;

		if (n < 0)
			break;
		while (m < (n ? n : 1) && (got = read(fd, local + m, (n ? n : 1) - m)) > 0)
			m += got;
		if (n == 0)
		{
			same = m == 0;
			break;
		}
		if (m != n || memcmp(stored, local, n) != 0)
		{
			same = 0;
			break;
		}
	}
	repo_reader_close(r);
	pfree(stored);
	pfree(local);
	return same;
}

/* Seals the file at path as object; 0 once object and manifest are stored. */
static int
tb_archive_store(storage *st, const char *object_name, const char *backup_id, int fd, tb_error *err)
{
	repo_put_options options = {.backup_id = backup_id, .object_name = object_name};
	repo_put *put;
	manifest m;
	char *buf;
	ssize_t n;

	options.stream.level = tb_compression_level;
	put = tb_put_begin(st, &archive_key, "postgres", &options, err);
	if (put == NULL)
		return -1;
	buf = palloc(ARCHIVE_BUFFER);
	while ((n = read(fd, buf, ARCHIVE_BUFFER)) > 0)
		if (repo_put_write(put, buf, n, err) != 0)
		{
			pfree(buf);
			tb_put_abort(put);
			return -1;
		}
	pfree(buf);
	if (n < 0)
	{
		tb_put_abort(put);
		return tb_error_set(err, TB_ERR_IO, "could not read the file: %s", strerror(errno));
	}
	return tb_put_commit(put, &m, err);
}

typedef struct wal_older
{
	const char *than;
	bool found;
} wal_older;

static int
tb_archive_find_older(const char *key, const storage_info *info, void *arg)
{
	wal_older *o = arg;
	const char *file = strrchr(key, '/');

	(void) info;
	if (file && strlen(file + 1) == 28 && strcmp(file + 1 + 24, ".tbk") == 0 && strncmp(file + 1, o->than, 24) < 0)
		o->found = true;
	return o->found ? 1 : 0;
}

/*
 * A gap: the segment before file on its timeline was never archived, though older
 * ones were (so file is not simply the first). The first gap found is kept in
 * TB_WAL_GAP_FILE for tenant_backup.status until the next base backup, from which
 * recovery can start past it.
 */
static void
tb_archive_check_gap(storage *st, const char *file)
{
	char prev[PITR_WAL_NAME_LEN + 1], object[MAXPGPATH];
	pitr_wal_name name;
	uint64 segno;
	storage_info info;
	tb_error err = {0};
	wal_older older = {.than = prev};
	FILE *f;

	if (pitr_wal_name_parse(file, &name) != 0 || (segno = pitr_wal_segno(&name, wal_segment_size)) == 0)
		return;
	pitr_wal_name_format(name.timeline, segno - 1, wal_segment_size, prev, sizeof(prev));
	snprintf(object, sizeof(object), "%s/postgres/wal/%.8s/%s.tbk", tb_archive_tenant, prev, prev);
	if (storage_head(st, object, &info, &err) == 0 || err.code != TB_ERR_NOT_FOUND ||
		access(TB_WAL_GAP_FILE, F_OK) == 0)
		return;
	snprintf(object, sizeof(object), "%s/postgres/wal/%.8s/", tb_archive_tenant, prev);
	if (storage_list(st, object, tb_archive_find_older, &older, &err) != 0 && !older.found)
		return;
	if (!older.found)
		return;
	ereport(WARNING, (errmsg("the archived WAL of tenant \"%s\" has a gap: %s is missing before %s", tb_archive_tenant,
							 prev, file),
					  errhint("Recovery cannot cross it; take a base backup to start again from after it.")));
	if ((f = AllocateFile(TB_WAL_GAP_FILE, "w")) != NULL)
	{
		fprintf(f, "%s missing before %s", prev, file);
		FreeFile(f);
	}
}

/*
 * The archiver's storage and master key, opened once and kept while the settings that
 * name them stay the same (a reload that changes them opens them again). With
 * tenant_backup.archive_key_command, the tenant's keys wrapped by its own key command
 * (bring your own key) open with it.
 */
static storage *archive_st;
static master_key archive_master;
static char *archive_settings;

static void
tb_archive_open(void)
{
	char *settings =
		psprintf("%s\n%s\n%s\n%s", tb_storage_url, tb_master_key_file, tb_master_key_command, tb_archive_key_command);

	if (archive_st != NULL && strcmp(settings, archive_settings) == 0)
	{
		pfree(settings);
		return;
	}
	if (archive_st != NULL)
	{
		storage_close(archive_st);
		keys_master_wipe(&archive_master);
		archive_st = NULL;
		pfree(archive_settings);
	}
	tb_master_key(&archive_master);
	archive_st = tb_storage();
	archive_settings = MemoryContextStrdup(TopMemoryContext, settings);
	archive_master.key_command = tb_archive_key_command != NULL && tb_archive_key_command[0] != '\0'
									 ? MemoryContextStrdup(TopMemoryContext, tb_archive_key_command)
									 : NULL;
	pfree(settings);
}

/* One WAL file; false (with a WARNING saying why) keeps it for the next attempt. */
static bool
tb_archive_one(const char *file, const char *path)
{
	char object_name[NAMES_WAL_OBJECT_MAX], object[MAXPGPATH], backup_id[80];
	tb_error err = {0};
	storage *st;
	storage_info info;
	tb_error missing = {0};
	int fd, rc = -1;

	if (names_wal_object(file, object_name, sizeof(object_name), backup_id, sizeof(backup_id), &err) != 0)
		tb_raise(&err, "cannot archive this file");
	snprintf(object, sizeof(object), "%s/postgres/%s", tb_archive_tenant, object_name);
	tb_archive_open();
	st = archive_st;
	if (archive_key_loaded == 0 || time(NULL) - archive_key_loaded >= ARCHIVE_KEY_SECONDS ||
		strcmp(archive_key.tenant, tb_archive_tenant) != 0)
	{
		keys_tenant_wipe(&archive_key);
		archive_key_loaded = 0;
		if (repo_tenant_key_current(st, &archive_master, tb_archive_tenant, false, &archive_key, &err) != 0)
			goto done;
		archive_key_loaded = time(NULL);
	}
	if ((fd = OpenTransientFile(path, O_RDONLY | PG_BINARY)) < 0)
	{
		tb_error_set(&err, TB_ERR_IO, "could not open \"%s\": %s", path, strerror(errno));
		goto done;
	}
	if (storage_head(st, object, &info, &missing) == 0)
	{
		rc = tb_archive_same(st, &archive_master, object, fd, &err);
		if (rc == 1)
			ereport(LOG, (errmsg("WAL file \"%s\" of tenant \"%s\" was archived before with the same content", file,
								 tb_archive_tenant)));
		else if (rc == 0)
			tb_error_set(&err, TB_ERR_EXISTS,
						 "%s is already archived with different content; the stored object is kept, never "
						 "overwritten",
						 object);
		rc = rc == 1 ? 0 : -1;
	}
	else if (missing.code != TB_ERR_NOT_FOUND)
		err = missing;
	else if ((rc = tb_archive_store(st, object_name, backup_id, fd, &err)) == 0)
		tb_archive_check_gap(st, file);
	CloseTransientFile(fd);
done:
	if (rc != 0)
		ereport(WARNING,
				(errcode(ERRCODE_IO_ERROR),
				 errmsg("could not archive WAL file \"%s\" of tenant \"%s\": %s", file, tb_archive_tenant, err.msg),
				 errhint("The file stays in pg_wal and is tried again; see tenant_backup.status for the lag.")));
	return rc == 0;
}

/* PostgreSQL 15's archiver has no error handler of its own: an ERROR becomes a failed attempt. */
static bool
tb_archive_file(const char *file, const char *path)
{
	MemoryContext caller = CurrentMemoryContext;
	volatile bool ok = false;

	PG_TRY();
	{
		ok = tb_archive_one(file, path);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING, (errmsg("could not archive WAL file \"%s\" of tenant \"%s\": %s", file, tb_archive_tenant,
								 edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return ok;
}

static void
tb_archive_shutdown(void)
{
	keys_tenant_wipe(&archive_key);
	archive_key_loaded = 0;
	if (archive_st != NULL)
	{
		storage_close(archive_st);
		keys_master_wipe(&archive_master);
		archive_st = NULL;
	}
}

void
_PG_archive_module_init(ArchiveModuleCallbacks *cb)
{
	cb->check_configured_cb = tb_archive_configured;
	cb->archive_file_cb = tb_archive_file;
	cb->shutdown_cb = tb_archive_shutdown;
}

typedef struct wal_cleanup
{
	const char *keep; /* the oldest WAL file a kept base backup needs */
	List *doomed;
} wal_cleanup;

/* Segments, partial segments and backup history files before keep on its timeline or older ones. */
static int
tb_wal_cleanup_consider(const char *key, const storage_info *info, void *arg)
{
	wal_cleanup *c = arg;
	const char *file = strrchr(key, '/');

	(void) info;
	if (file == NULL || strlen(++file) < 24 || strspn(file, "0123456789ABCDEF") < 24 || strncmp(file, c->keep, 8) > 0 ||
		strncmp(file + 8, c->keep + 8, 16) >= 0)
		return 0;
	c->doomed = lappend(c->doomed, pstrdup(key));
	return 0;
}

int
tb_wal_cleanup(const char *tenant, const char *keep)
{
	wal_cleanup c = {.keep = keep};
	tb_error err = {0};
	storage *st = tb_storage();
	ListCell *lc;
	int removed = 0;

	if (storage_list(st, psprintf("%s/postgres/wal/", tenant), tb_wal_cleanup_consider, &c, &err) != 0)
	{
		storage_close(st);
		tb_raise(&err, psprintf("could not list the archived WAL of tenant \"%s\"", tenant));
	}
	/* The object and its manifest both go; a failure leaves the rest for the next time. */
	foreach (lc, c.doomed)
	{
		if (storage_delete(st, lfirst(lc), &err) != 0)
		{
			ereport(WARNING, (errmsg("could not remove archived WAL %s: %s", (char *) lfirst(lc), err.msg)));
			break;
		}
		removed++;
	}
	storage_close(st);
	return removed;
}
