/*
 * The loop every agent runs: wait for a job of its engine (woken by NOTIFY, and at
 * least every poll_seconds), claim it under a lease, run it while ticking the lease,
 * report the outcome. A backup's object is committed to storage before the report, and
 * deleted again when the report says the lease was lost: storage never keeps a
 * completed object the catalog does not know. SIGTERM gives a running job back.
 */
#include "agent_internal.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

double
agent_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

bool
agent_signalled(agent *a)
{
	struct signalfd_siginfo info;

	while (read(a->signal_fd, &info, sizeof(info)) == (ssize_t) sizeof(info))
	{
		if (!a->stopping)
			agent_log("signal %d: stopping", (int) info.ssi_signo);
		a->stopping = true;
	}
	return a->stopping;
}

void
agent_job_progress(void *ctx, uint64_t bytes)
{
	((agent_job *) ctx)->bytes_done = bytes;
}

/* Renews the lease now; an unreachable control plane is retried at the next tick. */
static void
agent_job_renew(agent_job *job)
{
	agent *a = job->owner;
	tb_error err;
	int held = control_renew(a, job, &err);

	if (held == 0)
		job->stop = AGENT_STOP_LEASE_LOST;
	else if (held < 0 && a->conn == NULL)
		a->renew_at = a->reconnect_at;
	else
		a->renew_at = agent_now() + a->config->lease_seconds / 4.0;
	if (held < 0 && a->conn != NULL)
		agent_log_at(AGENT_LOG_WARNING, "renewing the lease of job %lld: %s", (long long) job->id, err.msg);
}

int
agent_job_tick(agent_job *job, tb_error *err)
{
	agent *a = job->owner;

	if (job->stop == AGENT_GO && agent_signalled(a))
		job->stop = AGENT_STOP_SIGNAL;
	if (job->stop == AGENT_GO && !job->direct && agent_now() >= a->renew_at)
		agent_job_renew(job);
	if (job->stop == AGENT_STOP_SIGNAL)
		return tb_error_set(err, TB_ERR_INTERNAL, "the agent was asked to stop");
	if (job->stop == AGENT_STOP_LEASE_LOST)
		return tb_error_set(err, TB_ERR_INTERNAL, "the job's lease was lost to another attempt");
	return 0;
}

void
agent_job_phase(const agent_job *job, const char *phase)
{
	tb_error err;

	/* restore-direct has no control plane to tell. */
	if (job->direct)
		return;
	if (control_phase(job->owner, job, phase, &err) < 0)
		agent_log_at(AGENT_LOG_WARNING, "reporting phase %s of job %lld: %s", phase, (long long) job->id, err.msg);
}

/* Deletes a committed object the catalog refused: manifest first, so nothing lists it. */
static void
agent_delete_object(agent *a, const char *object)
{
	char manifest_key[1024];
	tb_error err;

	if (repo_manifest_key(object, manifest_key, sizeof(manifest_key), &err) != 0 ||
		storage_delete(a->storage, manifest_key, &err) != 0 || storage_delete(a->storage, object, &err) != 0)
		agent_log_at(AGENT_LOG_WARNING, "could not delete unreported object %s: %s", object, err.msg);
}

/* The report of a backup (what was stored) or of a drill (what was loaded). */
static char *
agent_result_json(const agent_job *job, const manifest *m, double seconds)
{
	json_t *contents = job->contents ? json_loads(job->contents, 0, NULL) : json_object();
	json_t *doc;
	char *text;

	if (job->drill)
		doc = json_pack("{s:s, s:o, s:f}", "sha256", job->object_sha256, "contents", contents, "seconds", seconds);
	else
		doc = json_pack("{s:s, s:I, s:I, s:s, s:s, s:o, s:f}", "object", m->object, "bytes_in",
						(json_int_t) m->plain_bytes, "bytes_stored", (json_int_t) m->stored_bytes, "sha256", m->sha256,
						"key_id", m->key_id, "contents", contents, "seconds", seconds);
	text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	return text;
}

/* Streams the backup into storage and commits it, the lease checked just before. */
static int
agent_backup(agent *a, agent_job *job, manifest *m, tb_error *err)
{
	repo_put_options options = {
		.stream = {.level = job->level, .workers = job->workers}, .progress = agent_job_progress, .progress_ctx = job};
	agent_uri locator = {0};
	repo_put *put;

	/* Its manifest says which database it is of: the locator's path (a database name or Redis number). */
	if (agent_uri_parse(job->locator, &locator, &(tb_error){0}) == 0)
		options.database = locator.path;
	put = repo_put_begin(a->storage, &job->key, job->engine, &options, err);
	agent_uri_free(&locator);
	if (put == NULL)
		return -1;
	agent_job_phase(job, "connect");
	if (a->engine->backup(job, put, err) != 0 || agent_job_tick(job, err) != 0)
	{
		repo_put_abort(put);
		return -1;
	}
	agent_job_renew(job);
	if (agent_job_tick(job, err) != 0)
	{
		repo_put_abort(put);
		return -1;
	}
	agent_job_phase(job, "commit");
	return repo_put_commit(put, m, err);
}

/*
 * Sends the outcome until the control plane takes it. Once stopping, gives up after a
 * lease's length: by then the job is another attempt's anyway. 1: recorded, 0: lease
 * lost, -1: never reached.
 */
static int
agent_deliver(agent *a, agent_job *job, const char *error, const char *result, bool release)
{
	double give_up = 0;

	for (;;)
	{
		tb_error err;
		int rc = release ? control_release(a, job, &err) : control_report(a, job, error, result, &err);

		if (rc >= 0)
			return rc;
		if (a->conn != NULL)
		{
			agent_log_at(AGENT_LOG_ERROR, "job %lld: %s", (long long) job->id, err.msg);
			return -1;
		}
		if (agent_signalled(a) && give_up == 0)
			give_up = agent_now() + a->config->lease_seconds;
		if (give_up > 0 && agent_now() > give_up)
			return -1;
		control_wait(a, a->reconnect_at - agent_now() > 0 ? a->reconnect_at - agent_now() : 0.1);
	}
}

static const char *
human_bytes(uint64_t bytes, char *buf, size_t size)
{
	if (bytes >= 10ULL << 30)
		snprintf(buf, size, "%.1f GiB", (double) bytes / (1 << 30));
	else if (bytes >= 10ULL << 20)
		snprintf(buf, size, "%.1f MiB", (double) bytes / (1 << 20));
	else
		snprintf(buf, size, "%llu bytes", (unsigned long long) bytes);
	return buf;
}

static void
agent_run_job(agent *a, agent_job *job, int claimed, tb_error *claim_err)
{
	double started = agent_now();
	bool is_backup = strcmp(job->kind, "backup") == 0;
	char what[512], in[32], out[32];
	manifest m = {0};
	tb_error err = {0};
	char *result = NULL;
	int rc = -1, delivered;

	snprintf(what, sizeof(what), "%s of tenant \"%s\" (%s, job %lld, backup %lld, attempt %d)", job->kind, job->tenant,
			 job->engine, (long long) job->id, (long long) job->backup_id, job->attempt);
	if (claimed < 0)
		err = *claim_err;
	else
	{
		a->renew_at = agent_now() + a->config->lease_seconds / 4.0;
		if (!is_backup)
			agent_job_phase(job, "connect");
		rc = is_backup ? agent_backup(a, job, &m, &err) : a->engine->restore(job, &err);
		if (rc != 0 && !is_backup)
			rc = agent_restore_from_replica(a, job, &err, &result);
	}
	if (rc != 0 && job->stop == AGENT_STOP_LEASE_LOST)
	{
		agent_log("%s stopped: its lease was lost to another attempt; nothing reported", what);
		return;
	}
	if (rc != 0 && job->stop == AGENT_STOP_SIGNAL)
	{
		delivered = agent_deliver(a, job, NULL, NULL, true);
		agent_log("%s stopped by a signal: %s", what,
				  delivered == 1 ? "given back to the queue" : "not given back; its lease will expire");
		return;
	}
	if (rc == 0 && (is_backup || job->drill) && (result = agent_result_json(job, &m, agent_now() - started)) == NULL)
	{
		rc = tb_error_set(&err, TB_ERR_NOMEM, "out of memory building the report");
		if (is_backup)
			agent_delete_object(a, m.object);
	}
	delivered = agent_deliver(a, job, rc == 0 ? NULL : err.msg, result, false);
	free(result);
	if (rc == 0 && delivered == 0)
	{
		if (is_backup)
			agent_delete_object(a, m.object);
		agent_log("%s finished but its lease was lost to another attempt; %s", what,
				  is_backup ? "its object was deleted" : "nothing reported");
		return;
	}
	if (rc == 0 && is_backup)
		agent_log("%s succeeded: %s in, %s stored, %.2f s, %s%s%s", what, human_bytes(m.plain_bytes, in, sizeof(in)),
				  human_bytes(m.stored_bytes, out, sizeof(out)), agent_now() - started, m.object,
				  *job->detail ? "; " : "", job->detail);
	else if (rc == 0)
		agent_log("%s succeeded: %s %s, %.2f s%s%s", what, human_bytes(job->bytes_done, in, sizeof(in)),
				  job->drill ? "loaded into scratch and removed" : "restored", agent_now() - started,
				  *job->detail ? "; " : "", job->detail);
	else
	{
		a->jobs_failed++;
		agent_log_at(AGENT_LOG_ERROR, "%s failed after %.2f s: %s", what, agent_now() - started, err.msg);
	}
	if (delivered < 0)
		agent_log_at(AGENT_LOG_WARNING,
					 "%s: the outcome could not be reported; the lease will expire and the job be retried", what);
}

void
agent_job_free(agent_job *job)
{
	free(job->lease);
	free(job->kind);
	free(job->tenant);
	free(job->locator);
	if (job->password)
	{
		explicit_bzero(job->password, strlen(job->password));
		free(job->password);
	}
	free(job->options);
	free(job->object_key);
	free(job->backup_sha256);
	free(job->backup_key_id);
	free(job->restore_target);
	free(job->contents);
	free(job->key_command);
	keys_tenant_wipe(&job->key);
	memset(job, 0, sizeof(*job));
}

/* Claims and runs jobs until none is left. */
static void
agent_drain_queue(agent *a)
{
	while (!agent_signalled(a))
	{
		agent_job job = {0};
		tb_error err;
		int claimed = control_claim(a, &job, &err);

		if (claimed == 0)
			return;
		if (claimed == -1)
		{
			/* Unreachable is retried by the main loop; a refusal counts as a failure for --once. */
			if (a->conn != NULL)
				a->jobs_failed++;
			agent_log_at(AGENT_LOG_ERROR, "%s", err.msg);
			return;
		}
		job.storage = a->storage;
		job.master = &a->master;
		job.config = a->config;
		job.workers = a->config->workers;
		job.level = a->config->level;
		job.owner = a;
		agent_log_job(&job);
		agent_run_job(a, &job, claimed, &err);
		agent_log_job(NULL);
		agent_job_free(&job);
	}
}

int
agent_setup(agent *a)
{
	sigset_t mask;
	tb_error err;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	a->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (a->signal_fd < 0)
	{
		agent_log_at(AGENT_LOG_ERROR, "cannot watch for signals: %s", strerror(errno));
		return 1;
	}
	if (gethostname(a->host, sizeof(a->host)) != 0)
		snprintf(a->host, sizeof(a->host), "unknown");
	if (a->config->name == NULL && asprintf(&a->config->name, "%s@%.60s", a->engine->engine, a->host) < 0)
		return 1;
	if (keys_master_load(a->config->master_key_file, &a->master, &err) != 0 ||
		(a->storage = storage_open(a->config->storage, &err)) == NULL)
	{
		agent_log_at(AGENT_LOG_ERROR, "%s", err.msg);
		return 1;
	}
	a->backoff = 1;
	return 0;
}

void
agent_teardown(agent *a)
{
	if (a->storage)
		storage_close(a->storage);
	if (a->signal_fd >= 0)
		close(a->signal_fd);
	keys_master_wipe(&a->master);
	agent_config_free(a->config);
}

int
agent_main(const agent_engine *engine, int argc, char **argv)
{
	agent_config config;
	agent a = {.engine = engine, .config = &config, .signal_fd = -1};
	int rc;

	if (argc > 1 && strcmp(argv[1], "restore-direct") == 0)
		return agent_direct_main(engine, argc - 1, argv + 1);
	agent_log_setup(engine->program, engine->engine, false);
	rc = agent_config_load(&config, engine, argc, argv);
	if (rc != 0)
	{
		agent_config_free(&config);
		return rc < 0 ? 0 : 1;
	}
	agent_log_setup(engine->program, engine->engine, config.log_json);
	rc = agent_setup(&a);
	agent_log_name(config.name);
	if (rc == 0)
		agent_log("started as \"%s\" for %s jobs, storage %s", config.name, engine->engine, config.storage);
	while (rc == 0 && !agent_signalled(&a))
	{
		tb_error err;
		double next_heartbeat;

		if (control_connect(&a, &err) != 0)
		{
			if (config.once)
			{
				rc = 1;
				break;
			}
			control_wait(&a, a.reconnect_at - agent_now());
			continue;
		}
		agent_drain_queue(&a);
		if (config.once)
			break;
		/* Idle: a heartbeat, then wait for a notification or the next poll. */
		if (control_hello(&a, &err) != 0)
			continue;
		next_heartbeat = agent_now() + config.poll_seconds;
		while (!agent_signalled(&a) && a.conn && agent_now() < next_heartbeat)
			if (control_wait(&a, next_heartbeat - agent_now()))
				break;
	}
	if (a.jobs_failed > 0 && config.once)
		rc = 1;
	if (a.storage)
		agent_log("stopped");
	control_disconnect(&a);
	agent_teardown(&a);
	return rc;
}
