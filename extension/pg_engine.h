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

/*
 * Rows of every table pg_dump dumps the data of (the tenant's own tables, not those
 * of extensions), counted in one statement: {"tables": {"schema.table": rows}}.
 */
#define TB_COUNT_ROWS                                                                                                  \
	"SELECT jsonb_build_object('tables', coalesce(jsonb_object_agg(n.nspname || '.' || c.relname,"                     \
	" (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname),"      \
	" false, true, '')))[1]::text::bigint), '{}'))"                                                                    \
	" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"                                                   \
	" WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"                             \
	" AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"            \
	" AND d.deptype = 'e')"

/* pg_source.c */
char *tb_source_conninfo(const tb_job *job, const char *dbname);
int tb_clip(const char *name);
char *tb_source_dbname(const tb_job *job);
void tb_passfile_create(const tb_job *job);
void tb_passfile_remove(void);
char *tb_check_password_used(const tb_job *job, const char *conninfo);

/* pg_tools.c */
char *tb_shell_quote(const char *value);
char *tb_tool_command(const char *tool, const char *options, const char *conninfo);
char *tb_tool_end(tb_child *child, tb_job *job, const char *tool, char *failure);
void tb_job_master_key(tb_job *job, master_key *out);
/*
 * Runs sql on an admin connection, answering interrupts while it waits; its last
 * result (NULL if it could not be sent), which the caller clears.
 */
PGresult *tb_admin_query(PGconn *conn, const char *sql);
char *tb_admin_exec(PGconn *conn, const char *sql);
char *tb_admin_value(PGconn *conn, const char *sql);
/*
 * Connects with conninfo and pins search_path to pg_catalog, pg_temp before anything
 * else runs: the database's content is the tenant's, and an operator or function it
 * planted on the default path must never be picked (CVE-2018-1058). Every SQL text
 * sent on it qualifies its functions and operators all the same. Returns the
 * connection (the caller PQfinish()es it) and sets *failure to NULL or why it failed.
 */
PGconn *tb_tenant_connect(const char *conninfo, char **failure);

/* pg_restore.c */
char *tb_pg_restore_from(tb_job *job, repo_reader *reader, tb_child *restore, const char *tool);

/* pg_swap.c */
char *tb_pg_swap(PGconn *conn, const char *live, const char *fresh, const char *old);

/* pg_drill.c */
char *tb_pg_drill_check(tb_job *job, repo_reader *reader, const char *conninfo);
char *tb_pg_drill_base(tb_job *job, const char *object, const char *backup_id);

#endif
