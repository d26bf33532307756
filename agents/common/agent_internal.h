/* What the pieces of agents/common share among themselves; engines use agent.h only. */
#ifndef TB_AGENT_INTERNAL_H
#define TB_AGENT_INTERNAL_H

#include <libpq-fe.h>

#include "agent.h"

struct agent_config
{
	const char *engine;
	char *file; /* where the values below came from, NULL if none */
	char *control;
	char *storage;
	char *master_key_file;
	char *name;
	int lease_seconds;
	int poll_seconds;
	int workers;
	int level;
	bool once;
	bool log_json; /* --log-format json */
	int nentries;  /* the file's key = value lines, kept for agent_config_get */
	char **keys;
	char **values;
};

struct agent
{
	const agent_engine *engine;
	agent_config *config;
	master_key master;
	storage *storage;
	char host[256];
	PGconn *conn;
	double reconnect_at; /* monotonic seconds */
	double backoff;
	int signal_fd; /* SIGTERM/SIGINT, blocked and read from here */
	bool stopping;
	double renew_at;
	int jobs_failed;
};

/* Reads argv, the file and the environment; returns 0, 1 after an error, -1 after --help or --version. */
int agent_config_load(agent_config *config, const agent_engine *engine, int argc, char **argv);
void agent_config_free(agent_config *config);

/* What every log line names: the program and engine, the agent's name once known, the job being run (NULL: none). */
void agent_log_setup(const char *program, const char *engine, bool json);
void agent_log_name(const char *name);
void agent_log_job(const agent_job *job);

/*
 * Watches SIGTERM and SIGINT, loads the master key and opens the storage of a->config;
 * 1 (logged) if it cannot.
 */
int agent_setup(agent *a);
/* Undoes agent_setup (what of it was done) and frees a->config. */
void agent_teardown(agent *a);
/* Frees what a job owns (its strings, its tenant key) and zeroes it. */
void agent_job_free(agent_job *job);

double agent_now(void);
/* True once SIGTERM or SIGINT arrived. */
bool agent_signalled(agent *a);

/*
 * The control plane. Each call connects first if needed (no sooner than the backoff
 * allows) and returns -1 with err set when the database cannot be reached, or refused.
 */
int control_connect(agent *a, tb_error *err);
void control_disconnect(agent *a);
int control_hello(agent *a, tb_error *err);
/*
 * 1 with job filled, 0 when the queue has no job of this engine, -2 when a job was
 * claimed but cannot run (err says why: report it as the job's failure).
 */
int control_claim(agent *a, agent_job *job, tb_error *err);
/*
 * Reports what the job's connection reached (agent_source_identity), or with target
 * where its restore will write (agent_restore_target, key_prefix for Redis); -1 with err
 * when refused.
 */
int control_identity(agent *a, agent_job *job, const char *identity, bool target, const char *key_prefix,
					 tb_error *err);
/* 1 while the lease holds, 0 once lost. */
/* The replica URL of the tenant of the restore job holds (malloc'd; NULL: none): 0, or -1 with err. */
int control_job_replica(agent *a, const agent_job *job, char **url, tb_error *err);
/*
 * After job's restore failed with err: when the primary copy was at fault (missing,
 * failing authentication, unreadable) and the tenant has a replica, the same restore
 * from the replica (replica.c). 0 with *result the report saying so (malloc'd), or -1
 * with err: the primary's failure, or both copies'.
 */
int agent_restore_from_replica(agent *a, agent_job *job, tb_error *err, char **result);
int control_renew(agent *a, agent_job *job, tb_error *err);
/* Records the job's phase (agent_phase): 1 while the lease holds, 0 once lost. */
int control_phase(agent *a, const agent_job *job, const char *phase, tb_error *err);
int control_report(agent *a, agent_job *job, const char *error, const char *result_json, tb_error *err);
int control_release(agent *a, agent_job *job, tb_error *err);
/* Waits up to seconds for a notification of this engine's jobs or a signal; 1 if notified. */
int control_wait(agent *a, double seconds);

#endif
