/*
 * What the extension's files share: settings, the bridge to core/ (master key,
 * storage, errors), and the entry points of its background workers.
 */
#ifndef TENANT_BACKUP_EXT_H
#define TENANT_BACKUP_EXT_H

#include "postgres.h"

#include "lib/stringinfo.h"

#include "error.h"
#include "keys.h"
#include "storage/storage.h"

/* settings (tenant_backup.*) */
extern char *tb_database;
extern char *tb_storage_url;
extern char *tb_master_key_file;
extern char *tb_master_key_command;
extern int tb_max_workers;
extern int tb_naptime_ms;
extern char *tb_default_schedule;
extern char *tb_retention_interval;
extern char *tb_bin_dir;
extern char *tb_max_bandwidth;
extern int tb_lease_seconds;
extern int tb_compression_level;
extern bool tb_preloaded;
extern char *tb_archive_tenant;
extern char *tb_archive_key_command;
extern char *tb_janitor_interval;

/* Raises a core error as an ereport(ERROR) with an errcode matching its kind. */
void tb_raise(const tb_error *err, const char *context) pg_attribute_noreturn();

/* Loads the master key from tenant_backup.master_key_file or _command; ERROR if neither works. */
void tb_master_key(master_key *out);

/* url with tenant_backup.max_bandwidth added when it is an s3:// URL without a limit of its own (palloc'd or url). */
const char *tb_storage_url_limited(const char *url);

/* Opens tenant_backup.storage; ERROR if unset or invalid. The caller closes it. */
storage *tb_storage(void);

/* Where pg_dump and pg_restore live: tenant_backup.bin_dir or this server's own bindir. */
const char *tb_pg_bin_dir(void);

/*
 * A conninfo for this cluster's database dbname over its first Unix socket, as the
 * bootstrap superuser. For workers, outside a transaction (it runs one to look up the role).
 */
/* Appends key='value' to a conninfo (a space first unless buf is empty), quoting the value as libpq wants. */
void tb_conninfo_append(StringInfo buf, const char *key, const char *value);
char *tb_local_conninfo(const char *dbname);

/* Refuses to go on without the background worker (not in shared_preload_libraries). */
void tb_require_worker(void);

/* Describes one of our background workers: connects to a database, never restarted. */
struct BackgroundWorker;
void tb_worker_describe(struct BackgroundWorker *worker, const char *function, const char *type, const char *name);

/*
 * Removes the tenant's archived WAL files older than keep (the first file the oldest
 * kept base backup needs): segments, partial segments and backup history files of its
 * timeline and older ones; timeline history files stay. Returns the objects removed.
 */
int tb_wal_cleanup(const char *tenant, const char *keep);

/* Where the archiver notes a gap in the archived WAL (relative to the data directory). */
#define TB_WAL_GAP_FILE "pg_stat_tmp/tenant_backup_wal_gap"

/*
 * The launcher's storage upkeep, each round: finishes the committed storage intents;
 * every janitor_interval, removes unfinished writes and unreferenced objects (janitor.c).
 */
void tb_janitor_pass(void);
/*
 * The launcher's pass over restore leftovers, each round: drops the scratch databases
 * operators asked to remove and previous copies older than keep_old_copy (pg_scratch.c).
 */
extern int tb_keep_old_copy_s;
void tb_scratch_pass(void);

/* background worker entry points */
PGDLLEXPORT void tenant_backup_launcher_main(Datum arg);
PGDLLEXPORT void tenant_backup_job_main(Datum arg);
PGDLLEXPORT void tenant_backup_request_main(Datum arg);

/* the PostgreSQL engine: one claimed job each, in a job worker */
struct tb_job;
char *tb_pg_backup(struct tb_job *job);
char *tb_pg_restore(struct tb_job *job);

#endif
