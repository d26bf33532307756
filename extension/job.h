/*
 * A claimed job as a job worker sees it, and the catalog updates a job worker makes,
 * each in its own short transaction so nothing is held open during a dump.
 */
#ifndef TENANT_BACKUP_JOB_H
#define TENANT_BACKUP_JOB_H

#include "postgres.h"

#include "datatype/timestamp.h"

typedef struct tb_job
{
	int64 id;
	char kind[8]; /* backup, restore or drill */
	bool drill;   /* a restore drill: load into scratch, compare, remove */
	char tenant[64];
	char engine[16];
	int64 source_id;
	char *locator;
	char *sealed_password;  /* NULL when the locator needs none */
	int64 backup_id;        /* restore: the backup to restore */
	char *restore_target;   /* restore: NULL for in place */
	bool must_use_password; /* added by a non-superuser: its server must ask for the password */
	int attempts;
	int max_attempts;
	char lease_owner[64];
	int64 bytes_done;
	TimestampTz last_report;
	char *key_command; /* the tenant's own key command (BYOK), NULL: the master key wraps its keys */
	char *result;      /* a stored backup: JSON with object, bytes_in, bytes_stored, sha256, key_id, contents; a drill's
						  findings */
	TimestampTz deadline; /* when tenant_backup.job_timeout ends the job; 0: never */
	/*
	 * A conninfo source's server as the job's first connection reached it (PQhost,
	 * PQport, PQhostaddr; NULL until then): every later connection of the job goes to
	 * that address, whatever DNS answers by then.
	 */
	char *pinned_host;
	char *pinned_port;
	char *pinned_hostaddr;
} tb_job;

/* Settings (tenant_backup.c): pg_dump's lock wait in ms, a job's time limit in s (0: none each). */
extern int tb_lock_timeout_ms;
extern int tb_job_timeout_s;
extern int tb_connect_timeout_s;

/*
 * Runs sql with text arguments in a transaction of its own and returns the first
 * column of the first row (palloc'd in the caller's context), or NULL.
 */
char *tb_sql(const char *sql, int nargs, const char *const *args);

/*
 * Records bytes done and renews the lease, at most every few seconds. Returns false
 * when the lease is lost (the job was given to someone else): stop at once.
 */
bool tb_job_progress(tb_job *job, int64 bytes, bool force);

/*
 * Records the job's phase (one of jobs.phase's names, docs/operate.md), under the same
 * lease check as tb_job_progress, and shows it in pg_stat_activity. Returns false when
 * the lease is lost.
 */
bool tb_job_phase(const tb_job *job, const char *phase);

/* NULL while the job is within tenant_backup.job_timeout; otherwise why it must stop. */
char *tb_job_overdue(const tb_job *job);

#endif
