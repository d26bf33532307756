/* The pieces of tenant-backup-agent-mysql: where a tenant's database is, and how to reach it. */
#ifndef TB_MYSQL_AGENT_H
#define TB_MYSQL_AGENT_H

#include <mysql.h>

#include "agent.h"

/* A tenant's database: from the job's locator, its sealed password and the agent's configuration. */
typedef struct mysql_source
{
	char *host;
	int port;
	char *socket;
	char *user;
	char *password;
	char *database;
	const char *dump_command;   /* mariadb-dump or mysqldump */
	const char *client_command; /* mariadb or mysql */
} mysql_source;

#define MY_NAME_MAX 64

/*
 * Refuses a name this agent will not pass to a tool or a statement as a database:
 * MariaDB's rules (1 to 64 characters, no '/', '\\' or '.', no trailing space), no
 * control character, and no '-' first, which a tool could read as an option. what
 * names it in the error ("the restore target").
 */
int my_name_check(const char *what, const char *name, tb_error *err);
/* mysql, information_schema, performance_schema, sys: the server's own. */
bool my_is_system_schema(const char *name);

/*
 * From the job: the locator, its sealed password, the agent's configuration. The
 * database name is checked (my_name_check); a locator a superuser did not add must carry
 * its own user and password, over TCP, to no system schema; the configuration's
 * mysql_user and mysql_password go only to a server in mysql_fallback_credentials_hosts.
 */
int mysql_source_from_job(const agent_job *job, mysql_source *src, tb_error *err);
void mysql_source_free(mysql_source *src);

/* The [client] option file for the server's tools, as a pipe (see agent_secret_pipe). */
int mysql_option_pipe(const mysql_source *src, tb_error *err);

/*
 * A C API connection in utf8mb4, to no database, as the locator's user: CURRENT_USER()
 * is checked to be it.
 */
MYSQL *mysql_source_connect(const mysql_source *src, const agent_job *job, tb_error *err);

/*
 * Reports the server and schema conn reached to the control plane (agent_job_identity),
 * and a restore's target (agent_job_target_identity).
 */
int my_claim_identity(MYSQL *conn, const mysql_source *src, agent_job *job, tb_error *err);

/* Runs one statement built from fmt; an error names the statement's purpose (what). */
int my_exec(MYSQL *conn, const char *what, tb_error *err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* `name` with backticks doubled; caller frees. */
char *my_ident(const char *name);
/* 'text' escaped for conn; caller frees. */
char *my_literal(MYSQL *conn, const char *text);

/*
 * Runs sql_format (its one %s: db as a quoted literal) and returns the result set (the
 * caller frees it), or NULL with err saying "cannot <what> database ...".
 */
MYSQL_RES *my_query_about_database(MYSQL *conn, const char *db, const char *sql_format, const char *what,
								   tb_error *err);

/* 1 when db exists, with its default character set and collation; 0 when not; -1 on error. */
int my_database_defaults(MYSQL *conn, const char *db, char **charset, char **collation, tb_error *err);
/*
 * db's own properties as CREATE and ALTER DATABASE take them: "CHARACTER SET x COLLATE
 * y COMMENT '...'" (the comment escaped for conn); caller frees. NULL with err set when
 * db does not exist or on error.
 */
char *my_database_options(MYSQL *conn, const char *db, tb_error *err);

/* Both tools move rows of up to the server's maximum packet (1 GiB): --max-allowed-packet. */
#define MY_MAX_ALLOWED_PACKET "--max-allowed-packet=1073741824"

/*
 * Makes `live` hold what `fresh` holds: its tables move in (one RENAME TABLE), the
 * previous ones to `old`, with their triggers, views, routines and events each going
 * with them. Nothing is dropped: the previous contents stay in `old`. Journaled (see
 * my_journal_begin) before anything live changes: after a crash, my_journal_repair
 * finishes it.
 */
int my_swap(MYSQL *conn, const agent_job *job, const char *live, const char *fresh, const char *old, tb_error *err);

/*
 * The swap journal, a row per job in tenant_backup_agent.swap_journal on the tenant's
 * own server (beside what it describes, so that it cannot disagree with it), its body
 * MACed with the master key (the server is not trusted with it), and the job's named
 * lock held on conn while its agent lives. begin: before job creates database fresh
 * for live (a load); my_swap adds the definitions; end: removes the row (unless keep:
 * a swap that failed halfway, for the next agent to finish) and the lock.
 */
int my_journal_begin(MYSQL *conn, const agent_job *job, const char *live, const char *fresh, tb_error *err);
void my_journal_end(MYSQL *conn, const agent_job *job, bool keep);
/*
 * Finishes every interrupted job on live whose agent is gone (its lock is free): a swap
 * goes forward to its end, an unfinished load's database is dropped. *own_swap_done:
 * job's own swap was among them (a retried restore is then done). Every job on a
 * database calls it first.
 */
int my_journal_repair(MYSQL *conn, const agent_job *job, const char *live, bool *own_swap_done, tb_error *err);

int mysql_backup(agent_job *job, repo_put *put, tb_error *err);
int mysql_restore(agent_job *job, tb_error *err);

#endif
