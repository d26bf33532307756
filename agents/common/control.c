/*
 * The agent's side of the extension's protocol, over one libpq connection: hello,
 * claim, renew, report, release, and LISTEN tenant_backup_jobs. Every call goes
 * through the extension's functions, never the catalog tables. A lost connection is
 * reconnected with exponential backoff (1 s doubling to 30 s).
 */
#include "agent_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define CONTROL_BACKOFF_MIN 1.0
#define CONTROL_BACKOFF_MAX 30.0

/* The connection dropped (or never came up): the next call reconnects after the backoff. */
static int
control_lost(agent *a, const char *what, tb_error *err)
{
	const char *why = a->conn ? PQerrorMessage(a->conn) : "";

	tb_error_set(err, TB_ERR_IO, "control plane unreachable (%s): %.*s", what, (int) strcspn(why, "\n"),
				 *why ? why : "no connection");
	agent_log_at(AGENT_LOG_WARNING, "%s; retrying in %.0f s", err->msg, a->backoff);
	control_disconnect(a);
	a->reconnect_at = agent_now() + a->backoff;
	a->backoff = a->backoff * 2 > CONTROL_BACKOFF_MAX ? CONTROL_BACKOFF_MAX : a->backoff * 2;
	return -1;
}

void
control_disconnect(agent *a)
{
	if (a->conn)
		PQfinish(a->conn);
	a->conn = NULL;
}

/* The server's notices (e.g. why it closes the connection) go to the agent's log. */
static void
control_notice(void *arg, const char *message)
{
	(void) arg;
	agent_log("control plane: %.*s", (int) strcspn(message, "\n"), message);
}

int
control_connect(agent *a, tb_error *err)
{
	/* The operator's conninfo comes last and wins over these defaults. */
	const char *keys[] = {"connect_timeout",
						  "keepalives_idle",
						  "keepalives_interval",
						  "keepalives_count",
						  "fallback_application_name",
						  "dbname",
						  NULL};
	const char *values[] = {"5", "10", "5", "3", a->engine->program, a->config->control ? a->config->control : "",
							NULL};
	PGresult *res;
	bool first = a->reconnect_at == 0;

	if (a->conn && PQstatus(a->conn) == CONNECTION_OK)
		return 0;
	if (agent_now() < a->reconnect_at)
		return tb_error_set(err, TB_ERR_IO, "control plane unreachable; retrying in %.0f s",
							a->reconnect_at - agent_now());
	control_disconnect(a);
	a->conn = PQconnectdbParams(keys, values, 1);
	if (a->conn == NULL || PQstatus(a->conn) != CONNECTION_OK)
		return control_lost(a, "connecting", err);
	PQsetNoticeProcessor(a->conn, control_notice, NULL);
	res = PQexec(a->conn, "LISTEN tenant_backup_jobs");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		PQclear(res);
		return control_lost(a, "listening for jobs", err);
	}
	PQclear(res);
	if (!first)
		agent_log("connected to the control plane again");
	a->backoff = CONTROL_BACKOFF_MIN;
	a->reconnect_at = agent_now();
	return control_hello(a, err);
}

/*
 * Runs one of the extension's functions. A failure of the connection is "unreachable";
 * any other is the extension refusing (its message says why).
 */
static PGresult *
control_call(agent *a, const char *what, const char *sql, int nparams, const char *const *params, tb_error *err)
{
	PGresult *res;

	if (control_connect(a, err) != 0)
		return NULL;
	res = PQexecParams(a->conn, sql, nparams, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK)
		return res;
	PQclear(res);
	if (PQstatus(a->conn) != CONNECTION_OK)
	{
		control_lost(a, what, err);
		return NULL;
	}
	tb_error_set(err, TB_ERR_INVALID, "the control plane refused %s: %.*s", what,
				 (int) strcspn(PQerrorMessage(a->conn), "\n"), PQerrorMessage(a->conn));
	return NULL;
}

/* A function of the protocol that answers whether the lease still held: 1, 0, or -1 with err. */
static int
control_call_held(agent *a, const char *what, const char *sql, int nparams, const char *const *params, tb_error *err)
{
	PGresult *res = control_call(a, what, sql, nparams, params, err);
	int held;

	if (res == NULL)
		return -1;
	held = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return held;
}

int
control_hello(agent *a, tb_error *err)
{
	char engines[32];
	const char *params[4] = {a->config->name, engines, a->host, TB_VERSION};
	PGresult *res;

	snprintf(engines, sizeof(engines), "{%s}", a->engine->engine);
	res = control_call(a, "hello", "SELECT tenant_backup.agent_hello($1, $2, $3, $4)", 4, params, err);
	if (res == NULL)
		return -1;
	PQclear(res);
	return 0;
}

static char *
field(PGresult *res, int col)
{
	return PQgetisnull(res, 0, col) ? NULL : strdup(PQgetvalue(res, 0, col));
}

/* The sealed password as written in the locator: opened, then percent-decoded. */
static int
control_open_password(agent *a, const char *sealed, agent_job *job, tb_error *err)
{
	char *raw;
	int rc;

	if (keys_secret_open(&a->master, "source password", sealed, &raw, err) != 0)
		return tb_error_prefix(err, "opening the password of tenant \"%s\" (%s)", job->tenant, job->engine);
	rc = agent_uri_decode(raw, strlen(raw), &job->password, err);
	explicit_bzero(raw, strlen(raw));
	free(raw);
	return rc;
}

/* What the job must not take from its locator or from storage: agent_job_trust's answer. */
static int
control_trust(agent *a, agent_job *job, tb_error *err)
{
	char id[24];
	const char *params[2] = {id, job->lease};
	PGresult *res;

	snprintf(id, sizeof(id), "%lld", (long long) job->id);
	res =
		control_call(a, "the trust check of the job",
					 "SELECT locator_trusted, backup_sha256, backup_key_id FROM tenant_backup.agent_job_trust($1, $2)",
					 2, params, err);
	if (res == NULL)
		return -1;
	if (PQntuples(res) != 1)
	{
		PQclear(res);
		return tb_error_set(err, TB_ERR_INVALID, "the control plane knows no source for job %lld of tenant \"%s\"",
							(long long) job->id, job->tenant);
	}
	job->locator_trusted = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	job->backup_sha256 = field(res, 1);
	job->backup_key_id = field(res, 2);
	PQclear(res);
	return 0;
}

int
control_identity(agent *a, agent_job *job, const char *identity, bool target, const char *key_prefix, tb_error *err)
{
	char id[24];
	const char *params[4] = {id, job->lease, identity, key_prefix};
	PGresult *res;

	snprintf(id, sizeof(id), "%lld", (long long) job->id);
	res = target ? control_call(a, "the restore target", "SELECT tenant_backup.agent_restore_target($1, $2, $3, $4)", 4,
								params, err)
				 : control_call(a, "the identity of the database",
								"SELECT tenant_backup.agent_source_identity($1, $2, $3)", 3, params, err);
	if (res == NULL)
		return -1;
	PQclear(res);
	return 0;
}

int
control_claim(agent *a, agent_job *job, tb_error *err)
{
	char lease[16];
	const char *params[3] = {a->config->name, a->engine->engine, lease};
	PGresult *res;
	char *sealed, *key_doc;
	int rc = 0;

	snprintf(lease, sizeof(lease), "%d", a->config->lease_seconds);
	res = control_call(
		a, "claiming a job",
		"SELECT job_id, lease, kind, tenant, locator, sealed_password, options, key_doc, backup_id,"
		" object_key, restore_target, attempt, tier, key_command FROM tenant_backup.agent_claim($1, $2, $3::int)",
		3, params, err);
	if (res == NULL)
		return -1;
	if (PQntuples(res) == 0)
	{
		PQclear(res);
		return 0;
	}
	job->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	job->lease = field(res, 1);
	job->kind = field(res, 2);
	job->tenant = field(res, 3);
	job->locator = field(res, 4);
	sealed = field(res, 5);
	job->options = field(res, 6);
	key_doc = field(res, 7);
	job->backup_id = PQgetisnull(res, 0, 8) ? 0 : strtoll(PQgetvalue(res, 0, 8), NULL, 10);
	job->object_key = field(res, 9);
	job->restore_target = field(res, 10);
	job->attempt = atoi(PQgetvalue(res, 0, 11));
	job->dedicated = strcmp(PQgetvalue(res, 0, 12), "dedicated") == 0;
	job->key_command = field(res, 13);
	PQclear(res);
	job->engine = a->engine->engine;
	job->drill = strcmp(job->kind, "drill") == 0;
	/* The job's keys, in its backup and in storage, open with the tenant's own command if it has one. */
	a->master.key_command = job->key_command;
	/* What the job needs but cannot get is the job's failure, reported as such. */
	if (sealed && control_open_password(a, sealed, job, err) != 0)
		rc = -2;
	else if (strcmp(job->kind, "backup") == 0 && key_doc == NULL)
	{
		tb_error_set(err, TB_ERR_KEY, "tenant \"%s\" has no active key", job->tenant);
		rc = -2;
	}
	else if (strcmp(job->kind, "backup") == 0 &&
			 keys_tenant_unwrap(&a->master, key_doc, job->tenant, NULL, &job->key, err) != 0)
	{
		tb_error_prefix(err, "unwrapping the key of tenant \"%s\"", job->tenant);
		rc = -2;
	}
	else if (control_trust(a, job, err) != 0)
		rc = -2;
	free(sealed);
	free(key_doc);
	return rc == 0 ? 1 : rc;
}

int
control_job_replica(agent *a, const agent_job *job, char **url, tb_error *err)
{
	char id[24];
	const char *params[2] = {id, job->lease};
	PGresult *res;

	snprintf(id, sizeof(id), "%lld", (long long) job->id);
	res = control_call(a, "the replica of a restore", "SELECT tenant_backup.agent_job_replica($1, $2)", 2, params,
					   err);
	if (res == NULL)
		return -1;
	*url = field(res, 0);
	PQclear(res);
	return 0;
}

int
control_renew(agent *a, agent_job *job, tb_error *err)
{
	char id[24], bytes[24], lease[16];
	const char *params[4] = {id, job->lease, bytes, lease};

	snprintf(id, sizeof(id), "%lld", (long long) job->id);
	snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long) job->bytes_done);
	snprintf(lease, sizeof(lease), "%d", a->config->lease_seconds);
	return control_call_held(a, "renewing a lease", "SELECT tenant_backup.agent_renew($1, $2, $3, $4::int)", 4, params,
							 err);
}

int
control_phase(agent *a, const agent_job *job, const char *phase, tb_error *err)
{
	char id[24];
	const char *params[3] = {id, job->lease, phase};

	snprintf(id, sizeof(id), "%lld", (long long) job->id);
	return control_call_held(a, "reporting the phase of a job", "SELECT tenant_backup.agent_phase($1, $2, $3)", 3,
							 params, err);
}

int
control_report(agent *a, agent_job *job, const char *error, const char *result_json, tb_error *err)
{
	char id[24];
	const char *params[4] = {id, job->lease, error, result_json};

	snprintf(id, sizeof(id), "%lld", (long long) job->id);
	return control_call_held(a, "reporting a job", "SELECT tenant_backup.agent_report($1, $2, $3, $4::jsonb)", 4,
							 params, err);
}

int
control_release(agent *a, agent_job *job, tb_error *err)
{
	char id[24];
	const char *params[2] = {id, job->lease};

	snprintf(id, sizeof(id), "%lld", (long long) job->id);
	return control_call_held(a, "releasing a job", "SELECT tenant_backup.agent_release($1, $2)", 2, params, err);
}

int
control_wait(agent *a, double seconds)
{
	struct pollfd pfd[2] = {{.fd = a->signal_fd, .events = POLLIN}, {.fd = -1, .events = POLLIN}};
	int notified = 0;
	PGnotify *n;

	if (a->conn)
		pfd[1].fd = PQsocket(a->conn);
	if (poll(pfd, 2, seconds > 0 ? (int) (seconds * 1000) : 0) < 0 && errno != EINTR)
		return 0;
	if (a->conn && pfd[1].revents)
	{
		if (PQconsumeInput(a->conn) == 0)
		{
			tb_error err;

			control_lost(a, "waiting for jobs", &err);
			return 0;
		}
		while ((n = PQnotifies(a->conn)) != NULL)
		{
			notified = notified || n->extra[0] == '\0' || strcmp(n->extra, a->engine->engine) == 0;
			PQfreemem(n);
		}
	}
	return notified;
}
