/* tenant-backup-agent-redis: backups and restores of Redis tenants. */
#include "redis_agent.h"

#include <jansson.h>
#include <string.h>

static int
redis_backup(agent_job *job, repo_put *put, tb_error *err)
{
	redis_source src;
	int rc;

	if (redis_source_from_job(job, &src, err) != 0)
		return -1;
	rc = src.rdb ? redis_rdb_backup(job, &src, put, err) : redis_keys_backup(job, &src, put, err);
	if (rc != 0 && job->stop == AGENT_GO && !src.rdb)
		tb_error_prefix(err, "backup of %s:%d/%d%s%s%s for tenant \"%s\"", src.host, src.port, src.db,
						*src.prefix ? " prefix \"" : "", src.prefix, *src.prefix ? "\"" : "", job->tenant);
	redis_source_free(&src);
	return rc;
}

/* The backup's first bytes say which kind it is: an RDB snapshot or the logical format. */
static int
backup_kind(agent_job *job, repo_reader **reader, bool *rdb, tb_error *err)
{
	/* The SHA-256 of the object as stored: a drill reports it, a restore compares it with the catalog's. */
	stream_reader_options options = {.hash_stored = true, .readahead = true};
	char magic[sizeof(REDIS_KEYS_MAGIC) - 1];
	size_t have = 0;

	if ((*reader = repo_reader_open(job->storage, job->master, job->object_key, &options, err)) == NULL ||
		agent_job_accept_header(job, repo_reader_header(*reader), err) != 0)
		return -1;
	while (have < sizeof(magic))
	{
		ssize_t got = repo_reader_read(*reader, magic + have, sizeof(magic) - have, err);

		if (got < 0)
			return -1;
		if (got == 0)
			break;
		have += (size_t) got;
	}
	*rdb = have >= 5 && memcmp(magic, "REDIS", 5) == 0;
	if (!*rdb && (have < sizeof(magic) || memcmp(magic, REDIS_KEYS_MAGIC, sizeof(magic)) != 0))
		return tb_error_set(err, TB_ERR_CORRUPT, "backup %s is neither an RDB snapshot nor Redis keys",
							job->object_key);
	return 0;
}

static int
redis_restore(agent_job *job, tb_error *err)
{
	redis_source src;
	repo_reader *reader = NULL;
	bool rdb = false;
	int rc = -1;

	if (redis_source_from_job(job, &src, err) != 0)
		return -1;
	if (job->object_key == NULL)
		tb_error_set(err, TB_ERR_INVALID, "the restore job names no backup object");
	else if (backup_kind(job, &reader, &rdb, err) == 0)
	{
		/* An RDB is written out whole, authenticated on the way, by its own reader. */
		if (rdb && job->direct)
			rc = tb_error_set(err, TB_ERR_INVALID,
							  "backup %s is an RDB snapshot of a dedicated server: write it out with tenant-backup "
							  "restore-rdb and start a server on it",
							  job->object_key);
		else if (rdb)
		{
			repo_reader_close(reader);
			reader = NULL;
			rc = job->drill ? redis_rdb_drill(job, err) : redis_rdb_restore(job, err);
		}
		else
			rc = job->drill ? redis_keys_drill(job, &src, reader, err) : redis_keys_restore(job, &src, reader, err);
	}
	if (rc != 0 && job->stop == AGENT_GO && !rdb)
		tb_error_prefix(err, "%s of %s:%d/%d%s%s%s for tenant \"%s\"", job->drill ? "drill" : "restore", src.host,
						src.port, src.db, *src.prefix ? " prefix \"" : "", src.prefix, *src.prefix ? "\"" : "",
						job->tenant);
	else if (rc != 0 && job->stop == AGENT_GO && job->drill)
		tb_error_prefix(err, "drill of the RDB snapshot %s for tenant \"%s\"", job->object_key, job->tenant);
	repo_reader_close(reader);
	redis_source_free(&src);
	return rc;
}

/*
 * restore-direct into redis://host:port/N, the keys under ?key_prefix=P when given (a
 * prefix tenant's form): the destination is the job's own place, which must hold no keys.
 */
static int
redis_direct_target(agent_job *job, const agent_uri *into, const char *source_database, tb_error *err)
{
	char *prefix = agent_uri_param(into, "key_prefix");
	json_t *options = prefix && *prefix ? json_pack("{s:s}", "key_prefix", prefix) : json_object();

	(void) source_database;
	free(prefix);
	free(job->options);
	job->options = options ? json_dumps(options, JSON_COMPACT) : NULL;
	json_decref(options);
	return job->options ? 0 : tb_error_set(err, TB_ERR_NOMEM, "out of memory (or the key prefix is not UTF-8)");
}

static const agent_engine redis_engine = {
	.engine = "redis",
	.program = "tenant-backup-agent-redis",
	.config_help = "  redis_user, redis_password     when the locator has none (the catalog's sealed\n"
				   "                                 password comes first); AUTH only, never argv\n"
				   "  redis_restore_dir              where an RDB restore without a target writes dump.rdb,\n"
				   "                                 and a drill its scratch directory (else TMPDIR or /tmp)\n",
	.backup = redis_backup,
	.restore = redis_restore,
	.direct_target = redis_direct_target,
};

int
main(int argc, char **argv)
{
	return agent_main(&redis_engine, argc, argv);
}
