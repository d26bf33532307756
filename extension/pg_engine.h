/*
 * The PostgreSQL engine's pieces (pg_source.c, pg_tools.c, pg_backup.c, pg_restore.c,
 * pg_swap.c, pg_drill.c), as they call each other; tenant_backup.h has its entry points.
 */
#ifndef TENANT_BACKUP_PG_ENGINE_H
#define TENANT_BACKUP_PG_ENGINE_H

#include "postgres.h"

#include "libpq-fe.h"

#include "child.h"
#include "job.h"
#include "repo.h"

#define TB_PIPE_BUFFER (1024 * 1024)
#define TB_LEASE_LOST "the job's lease was lost to another worker"

/* pg_archive.c */
#define TB_ARCHIVE_STRING_MAX (64 * 1024 * 1024)

/* One entry of an archive's table of contents, its strings as pg_dump wrote them (NULL: none). */
typedef struct tb_archive_entry
{
	int64 dump_id;
	char *desc;      /* "TABLE", "TABLE DATA", "SCHEMA", "ACL", ... */
	char *tag;       /* the object's name */
	char *namespace; /* its schema */
	char *owner;     /* header pass only */
	char *drop_stmt; /* header pass only */
	char *defn;      /* header pass only, and only of EXTENSION, ACL, DEFAULT ACL and COMMENT entries */
	bool table_data;
	uint64 rows; /* TABLE DATA: rows of its COPY text */
} tb_archive_entry;

/*
 * A custom-format archive (pg_dump --format=custom --compress=0 of PostgreSQL 15) fed
 * in pieces of any size. With toc_only, parsing stops after the table of contents
 * (a restore's header pass); otherwise every data block is walked and the rows of
 * each table counted, in memory bounded by the TOC (no data is buffered, no string
 * beyond TB_ARCHIVE_STRING_MAX). Allocations in the current memory context.
 */
typedef struct tb_archive
{
	bool toc_only;
	bool toc_done;
	tb_archive_entry *entries;
	int nentries;
	int allocated;
	char *error; /* why the archive was refused; NULL while it is well formed */
	/* internal */
	int step;
	unsigned char field[16]; /* the fixed header, an int, an offset being gathered */
	size_t need, have;
	int int_size, off_size;
	bool in_string, null_string;
	char *string;
	uint64 string_len, string_have;
	int timestamp_left;
	int64 toc_left;
	int cursor;
	bool blobs;
	tb_archive_entry *block;
	unsigned char tail[6]; /* the last bytes of the current block's data */
	uint64 block_bytes;
	uint64 chunk_left;
	uint64 offset;
} tb_archive;

void tb_archive_init(tb_archive *a, bool toc_only);
/* false (a->error set) once the archive is malformed. */
bool tb_archive_feed(tb_archive *a, const void *buf, size_t len);
/* At the end of the stream: false (a->error set) unless it ended where an archive may end. */
bool tb_archive_finish(tb_archive *a);
/* {"tables": {"schema.table": rows}} of every TABLE DATA entry. */
char *tb_archive_table_counts(const tb_archive *a);

/* pg_source.c */
bool tb_is_conninfo(const char *locator);
char *tb_source_conninfo(const tb_job *job, const char *dbname);
int tb_clip(const char *name);
char *tb_source_dbname(const tb_job *job);
void tb_passfile_create(const tb_job *job);
/* As tb_passfile_create, with a first line for login with login_password (a per-job role's). */
void tb_passfile_create_with_login(const tb_job *job, const char *login, const char *login_password);
void tb_passfile_remove(void);
/*
 * Claims the identity of database dbname of conn's server for the job's source
 * (raises when another tenant has it, or a dedicated tenant's cluster is shared);
 * NULL, or why it could not be read.
 */
char *tb_source_identity_claim(const tb_job *job, PGconn *conn, const char *dbname);
/* NULL, or why a dedicated tenant's base backup is refused: conn's cluster holds another tenant's database. */
char *tb_cluster_shared_refusal(const tb_job *job, PGconn *conn);
/* Exports a snapshot of conn (left in its transaction) for pg_dump --snapshot; NULL, or why not. */
char *tb_source_snapshot_export(const tb_job *job, PGconn *conn, char **snapshot);

/* pg_tools.c */
/* The argv of a PostgreSQL tool of this server's: tool, options (NULL-terminated), --dbname=conninfo. */
char **tb_tool_argv(const char *tool, const char *const *options, const char *conninfo);
char *tb_tool_end(tb_child *child, tb_job *job, const char *tool, char *failure);
/* Where a tool run by job writes its messages (stderr): a file among the server's temporary ones. */
char *tb_tool_messages_file(const tb_job *job, const char *tool);
/*
 * After the tool ran: every line it wrote to messages goes to the server log, and a
 * failure (NULL: none) that names only its exit status gets the tool's first
 * "<tool>: error:" line, bounded. Removes the file; returns the failure.
 */
char *tb_tool_messages(const char *messages, const char *tool, char *failure);
void tb_job_master_key(tb_job *job, master_key *out);
/*
 * Runs sql on an admin connection, answering interrupts while it waits; its last
 * result (NULL if it could not be sent), which the caller clears.
 */
PGresult *tb_admin_query(PGconn *conn, const char *sql);
char *tb_admin_exec(PGconn *conn, const char *sql);
char *tb_admin_value(PGconn *conn, const char *sql);
/*
 * Connects for job with conninfo, never blocking: within its connect_timeout (or
 * tenant_backup.connect_timeout), interruptible, shown in pg_stat_activity. The job's
 * first connection to a conninfo source pins its address (tb_source_conninfo uses it
 * after) and, for a source added by a non-superuser, must have used the password.
 * Pins search_path to pg_catalog, pg_temp before anything else runs: the database's
 * content is the tenant's, and an operator or function it planted on the default path
 * must never be picked (CVE-2018-1058). Every SQL text sent on it qualifies its
 * functions and operators all the same. Returns the connection (the caller
 * PQfinish()es it) and sets *failure to NULL or why it failed.
 */
PGconn *tb_tenant_connect(tb_job *job, const char *conninfo, char **failure);

/* pg_restore.c */
char *tb_pg_restore_from(tb_job *job, repo_reader *reader, tb_child *restore, const char *tool);
char *tb_pg_check_header(const tb_job *job, repo_reader *reader, const char *backup_id);
char *tb_pg_check_stored_hash(repo_reader *reader, const char *backup_id);
/*
 * Runs pg_restore with options (NULL-terminated) on conninfo, fed from reader; NULL, or
 * why it failed (its first error line).
 */
char *tb_pg_run_restore(tb_job *job, repo_reader *reader, const char *const *options, const char *conninfo);

/* pg_restore_role.c */
/*
 * Loads reader's archive (toc: its table of contents) into fresh, an empty database
 * of admin's server, admin being a superuser: as a per-job role with only the
 * tenant's roles. NULL, or why not; on failure the caller drops fresh, then calls
 * tb_restore_role_end.
 */
char *tb_pg_load_as_tenant(tb_job *job, repo_reader *reader, const tb_archive *toc, PGconn *admin, const char *fresh,
						   const char *fresh_conninfo);
/* Drops the job's restore role, if one exists (a warning if it cannot). Call before the admin connection ends. */
void tb_restore_role_end(void);

/* pg_database_props.c */
/* An entry about the database itself (CREATE DATABASE, its properties, comment, grants). */
bool tb_pg_database_entry(const tb_archive_entry *e);
/*
 * Creates fresh as the archive's CREATE DATABASE says (encoding, locale provider,
 * collation, tablespace), owned by the backed-up owner if that role exists here (else
 * by live's owner), closed to PUBLIC. NULL, or why not; *created says whether fresh
 * was created (then the caller drops it on failure).
 */
char *tb_pg_database_create(PGconn *admin, const tb_archive *toc, const char *live, const char *fresh, bool *created);
/* Who may connect to a restored database once it is loaded. */
typedef enum tb_database_grants
{
	TB_GRANTS_CLOSED,  /* nobody yet: a drill, or a swap that carries the live database's grants over */
	TB_GRANTS_DEFAULT, /* PUBLIC's CONNECT and TEMPORARY, as CREATE DATABASE gives them (privileges => false) */
	TB_GRANTS_BACKUP,  /* those defaults, then the backup's own grants */
} tb_database_grants;
/*
 * Once fresh is loaded: the archive's database settings, role-in-database settings,
 * connection limit and comment, and the grants asked for. NULL, or why not.
 */
char *tb_pg_database_props_apply(PGconn *admin, const tb_archive *toc, const char *fresh, tb_database_grants grants);

/* pg_swap.c */
/* The steps of a restore, journaled in tenant_backup.restore_swaps (committed) before each is taken. */
void tb_pg_swap_journal(const tb_job *job, const char *step, const char *live, const char *fresh, const char *old);
/*
 * Renames fresh over live in one transaction (old NULL: live is gone, fresh only takes
 * its name), live kept as old; connections to live are ended just for the swap.
 */
char *tb_pg_swap(PGconn *conn, tb_job *job, const char *live, const char *fresh, const char *old);

/* pg_drill.c */
char *tb_pg_drill_check(tb_job *job, repo_reader *reader, const tb_archive *toc, const char *conninfo);
char *tb_pg_drill_base(tb_job *job, const char *object, const char *backup_id);
/* A base backup's drill unpacks into <parent>/<prefix><job>_XXXXXX (prefix: tenant_backup_drill_<port>_). */
char *tb_pg_drill_scratch_parent(void);
char *tb_pg_drill_scratch_prefix(void);
/* Removes a drill's scratch directory and everything under it (no symbolic link followed); 0 or -1 (errno). */
int tb_pg_drill_scratch_remove(const char *dir);

#endif
