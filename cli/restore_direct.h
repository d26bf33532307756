/* What restore-direct's PostgreSQL path (cmd_restore_direct.c) and its agents' path (restore_direct_agent.c) share. */
#ifndef TB_CLI_RESTORE_DIRECT_H
#define TB_CLI_RESTORE_DIRECT_H

#include "cli.h"

/* -1 (err set) once SIGINT, SIGTERM or SIGHUP asked restore-direct to stop; also a repo_read_options.keep_going. */
int direct_keep_going(void *ctx, tb_error *err);

/*
 * Runs argv (argv[0] looked up in PATH unless it holds a '/') with stdout into the file
 * out (NULL: ours), no other descriptor but 0-2 inherited, SIGTERM passed on when we are
 * asked to stop; an error names the tool and its exit status (its messages went to our stderr).
 */
int direct_run(const char *const *argv, const char *out, tb_error *err);

/* How a MySQL/MariaDB, Redis or MongoDB backup is restored: by the engine's agent. */
typedef struct direct_agent_request
{
	const char *engine;
	const char *into;          /* the target URI, without a password */
	const char *agent;         /* the agent's path; NULL: tenant-backup-agent-<engine> beside this program */
	const char *password_file; /* the target's password, passed on by name; NULL: the agent's environment */
	const char *storage_url;   /* the storage the object is read from (the primary's or the replica's) */
	bool *loading;             /* set once the agent runs: the target may have been written to */
} direct_agent_request;

/*
 * --into of a MySQL/MariaDB, Redis or MongoDB restore must be a URI of the engine's
 * scheme without a password (it would be in argv, ours and the agent's): -1 (err set) if not.
 */
int direct_agent_into_check(const char *engine, const char *into, tb_error *err);

/*
 * With req->into checked (direct_agent_into_check), authenticates the whole object m
 * describes (header, every chunk, trailer, the manifest's SHA-256) before anything is
 * created, then runs the engine's agent in its restore-direct mode on it (an argv, no
 * shell), which loads it with its own restore into the new target and removes what it
 * created on failure.
 */
int direct_restore_with_agent(const direct_agent_request *req, const cli_context *ctx, storage *st,
							  const master_key *master, const manifest *m, tb_error *err);

#endif
