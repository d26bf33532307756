/*
 * The job loop every agent shares. The extension's catalog is the queue: an agent
 * claims one job of its engine under a lease, keeps the lease while it works, and
 * reports through the extension's agent_* functions. An engine supplies only its
 * backup and restore; the queue, the lease, storage, keys and logging live here.
 */
#ifndef TB_AGENT_H
#define TB_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "keys.h"
#include "repo.h"
#include "storage/storage.h"

typedef struct agent_config agent_config;
typedef struct agent agent;

/* Why a job must stop before it is done. */
typedef enum agent_stop
{
	AGENT_GO = 0,
	AGENT_STOP_SIGNAL,     /* SIGTERM or SIGINT: give the job back */
	AGENT_STOP_LEASE_LOST, /* another attempt owns the job now: report nothing */
} agent_stop;

typedef struct agent_job
{
	int64_t id;
	char *lease;
	char *kind; /* "backup", "restore" or "drill" */
	/*
	 * A restore drill: the engine loads the backup into its staging place as for a
	 * restore, fills contents and object_sha256 from what it loaded, then removes the
	 * staging without touching anything live. The catalog compares both with what the
	 * backup recorded at dump time.
	 */
	bool drill;
	char *tenant;
	const char *engine;
	char *locator;
	char *password; /* opened from the catalog's sealed form, percent-decoded; NULL if none */
	char *options;  /* the source's options, a JSON object */
	int64_t backup_id;
	/*
	 * Whether a superuser added the locator. If not, an operator did, and the locator
	 * must carry its own credentials: the agent's own (its configuration's fallback user
	 * and password, its OS identity through a socket) never work for it.
	 */
	bool locator_trusted;
	char *backup_sha256;  /* restore, drill: the SHA-256 of the object as stored, as the catalog recorded it */
	char *backup_key_id;  /* restore, drill: the key id the catalog recorded for the backup */
	char *object_key;     /* restore: the backup to restore */
	char *restore_target; /* restore: another database, NULL for in place */
	int attempt;
	bool dedicated;    /* the tenant's tier: the whole server is the tenant's */
	tenant_key key;    /* backup: the tenant's active key */
	char *key_command; /* the tenant's own key command (BYOK) that opens its keys; NULL: the master key does */
	storage *storage;
	const master_key *master;
	const agent_config *config;
	int workers; /* compression threads for a backup */
	int level;   /* zstd level for a backup */
	uint64_t bytes_done;
	char detail[200]; /* the engine's own account of a success for the log line ("1200 keys") */
	/*
	 * What a backup holds, counted by the engine as it dumped (backup) or as found in the
	 * staging after loading (drill): a JSON object such as {"tables": {"shop.orders": 120}}
	 * or {"keys": 1200}, malloc'd; NULL if the engine counts nothing.
	 */
	char *contents;
	char object_sha256[65]; /* drill: SHA-256 of the stored object as read (open it with hash_stored) */
	agent_stop stop;
	agent *owner;
	/*
	 * restore-direct (agent_direct_main): no control plane, job or catalog. The lease is
	 * never renewed, identities are not reported (the master key's holder chose the
	 * target), and the target must be empty: nothing of it is replaced.
	 */
	bool direct;
} agent_job;

struct agent_uri;

typedef struct agent_engine
{
	const char *engine;      /* "mysql" */
	const char *program;     /* "tenant-backup-agent-mysql" */
	const char *config_help; /* the engine's own configuration keys, for --help */
	/* Streams the tenant's database into put (agent_job_tick at least once a second). */
	int (*backup)(agent_job *job, repo_put *put, tb_error *err);
	/* Restores job->object_key; nothing live may change before the whole backup authenticated. */
	int (*restore)(agent_job *job, tb_error *err);
	/*
	 * restore-direct: fills job->restore_target and job->options (and may change
	 * job->locator) for the --into URI (already job->locator, without a password);
	 * source_database is the backed-up database its manifest names (a hint; NULL if
	 * none). NULL: the database the URI's path names is the restore target.
	 */
	int (*direct_target)(agent_job *job, const struct agent_uri *into, const char *source_database, tb_error *err);
} agent_engine;

/*
 * Parses the command line and configuration, then runs the loop; returns the exit
 * status. "PROGRAM restore-direct ..." runs agent_direct_main instead.
 */
int agent_main(const agent_engine *engine, int argc, char **argv);

/*
 * The one-shot restore-direct mode: one backup object (its tenant, key id and SHA-256
 * as its manifest gave them to the caller, tenant-backup restore-direct) restored with
 * the engine's own restore into the new target --into names, without a control plane.
 * Passwords come from --password-file or TENANT_BACKUP_<ENGINE>_PASSWORD, never argv.
 * Returns the exit status: 0 restored, 1 failed (nothing of the target left), 2 usage.
 */
int agent_direct_main(const agent_engine *engine, int argc, char **argv);

/*
 * Keeps the job's lease (renewed when due, with bytes_done as progress) and notices a
 * stop; call it at least once a second while working. Returns -1 with err set when the
 * job must stop (job->stop says why).
 */
int agent_job_tick(agent_job *job, tb_error *err);

/*
 * Reports the job's phase (a name jobs.phase knows: connect, dump, commit, authenticate,
 * load, index, swap, compare, cleanup) for status and job_log, best effort: a failed
 * report is logged, never the job's failure (a lost lease shows at the next tick). The
 * common loop reports connect, dump, commit and load; an engine reports what only it
 * sees (swap, compare, cleanup).
 */
void agent_job_phase(const agent_job *job, const char *phase);

/*
 * Reports what the job's working connection reached (the server and the database, as
 * the server itself says; sent percent-encoded as <server>/<database>) before anything
 * is read or written there; the control plane refuses one that another tenant's source
 * already is (err then says why: fail the job).
 */
int agent_job_identity(agent_job *job, const char *server, const char *database, tb_error *err);
/*
 * A restore into a target, before it writes there: the same for the target (with, for
 * Redis, the key prefix it writes under, "" for a whole database); refused when the
 * target is, or overlaps, another tenant's source.
 */
int agent_job_target_identity(agent_job *job, const char *server, const char *database, const char *key_prefix,
							  tb_error *err);

/*
 * Whether the agent's fallback credentials (<engine>_user, <engine>_password of its
 * configuration) may be sent to host:port: only to an entry of
 * <engine>_fallback_credentials_hosts ("host" or "host:port", comma-separated).
 */
bool agent_fallback_credentials_allowed(const agent_job *job, const char *host, int port);

/*
 * A restore's or drill's backup as the catalog knows it, against what storage gave: the
 * authenticated header must name the job's tenant and engine, the backup id in the
 * object's name and the catalog's key id (agent_job_check_header); the object as stored
 * must have the catalog's SHA-256 (agent_job_check_stored, once the whole object was
 * read with hash_stored). A mismatch is an error naming the backup; call both before
 * anything live changes.
 */
int agent_job_check_header(const agent_job *job, const stream_header *hdr, tb_error *err);
/* agent_job_check_header, then reports the job in its load phase. */
int agent_job_accept_header(const agent_job *job, const stream_header *hdr, tb_error *err);
int agent_job_check_stored(const agent_job *job, const stream_stats *stats, tb_error *err);

/* A repo_progress_fn that records bytes into job->bytes_done (ctx is the job). */
void agent_job_progress(void *ctx, uint64_t bytes);

/* A configuration value: the file's, overridden by TENANT_BACKUP_<KEY> in the environment. */
const char *agent_config_get(const agent_config *config, const char *key);

typedef enum agent_log_level
{
	AGENT_LOG_INFO,
	AGENT_LOG_WARNING,
	AGENT_LOG_ERROR,
} agent_log_level;

/*
 * One line on stderr: the time, the program's name and the message (text, the
 * default), or with --log-format json one JSON object with time, level, agent, job,
 * tenant, engine and message, its strings escaped.
 */
void agent_log_at(agent_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define agent_log(...) agent_log_at(AGENT_LOG_INFO, __VA_ARGS__)

/*
 * A tool run for a job: argv[0] looked up in PATH, stdin and/or stdout piped to us,
 * stderr kept (its end) for error messages, every other descriptor closed but the
 * ones in keep_fds. Waits on its pipes tick the job's lease.
 */
typedef struct agent_child agent_child;

#define AGENT_CHILD_STDIN 1
#define AGENT_CHILD_STDOUT 2

agent_child *agent_child_start(const char *const *argv, int pipes, const int *keep_fds, int nkeep, tb_error *err);
/* Bytes read from the tool's stdout, 0 at its end, -1 with err set. */
ssize_t agent_child_read(agent_child *c, agent_job *job, void *buf, size_t len, tb_error *err);
int agent_child_write(agent_child *c, agent_job *job, const void *buf, size_t len, tb_error *err);
/* Closes its stdin, waits for it to exit; an error names the tool, its status and stderr. */
int agent_child_finish(agent_child *c, agent_job *job, tb_error *err);
/* Kills it if still running, waits and frees. NULL is ignored. */
void agent_child_kill(agent_child *c);

/*
 * An option file passed to a tool as /dev/fd/N: its contents written into a pipe, so a
 * secret in it never touches a disk or argv. Returns the read end (close it after the
 * tool started), -1 with err set.
 */
int agent_secret_pipe(const char *contents, tb_error *err);

/*
 * A backup's plaintext read in pieces of any size through a buffer (memory bounded by
 * the buffer and the caller's largest piece).
 */
typedef struct agent_bufread agent_bufread;

agent_bufread *agent_bufread_open(repo_reader *reader, tb_error *err);
/* Up to len bytes; fewer only at the stream's authenticated end (0: at it); -1 with err set. */
ssize_t agent_bufread_read(agent_bufread *b, void *out, size_t len, tb_error *err);
/* Exactly len bytes; the end of the stream before them is an error ("ends inside a record"). */
int agent_bufread_exact(agent_bufread *b, void *out, size_t len, tb_error *err);
void agent_bufread_close(agent_bufread *b);

/* A URI: scheme://[user[:password]@]host[:port][/path][?query]; parts percent-decoded. */
typedef struct agent_uri
{
	char *scheme;
	char *user;
	char *password;
	char *host;
	int port;   /* 0: not given */
	char *path; /* without its leading '/', NULL if none */
	char *query;
} agent_uri;

int agent_uri_parse(const char *text, agent_uri *out, tb_error *err);
/* A query parameter, percent-decoded (caller frees), or NULL. */
char *agent_uri_param(const agent_uri *uri, const char *name);
void agent_uri_free(agent_uri *uri);
/* text with every byte but letters, digits and "_-.:@" as %XX, for an identity; caller frees. */
char *agent_uri_encode(const char *text);
/* Decodes %XX escapes of len bytes of in; caller frees *out. */
int agent_uri_decode(const char *in, size_t len, char **out, tb_error *err);

#endif
