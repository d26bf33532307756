/*
 * A logical restore. Every key of the backup is first RESTOREd (pipelined, with ABSTTL:
 * the very millisecond it expired at; a key whose time ran out while stored stays gone)
 * under a staging name inside the destination's own namespace,
 * <prefix>tenant-backup:restore:<job>:<token>:<key> (redis_staging_mark).
 * Only once the whole backup authenticated and loaded does live change, journaled in a
 * key of the staging (<staging>j, its value the step begun): keys of the tenant that
 * the backup does not hold are removed ("remove"), then each staged key
 * (<staging>k<key>) is RENAMEd over its live name ("move"), then the journal goes. A
 * failure before the journal removes the staged keys and nothing else; an agent killed
 * after it leaves the journal, and the next job of any agent in that keyspace (backup,
 * restore or drill: redis_keys_recover) takes the swap to its end. Staged keys of a job
 * that died before its journal are removed then too.
 * With a target (another database number, or another prefix), the keys go there; the
 * target must hold no keys yet. A drill stages the backup the same way, counts what it
 * staged as it removes it again, and never touches a live key.
 */
#include "redis_agent.h"

#include "crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESTORE_BATCH_COMMANDS 1000
#define RESTORE_BATCH_BYTES (8 * 1024 * 1024)
/* What follows the staging mark: a staged key's name, or the swap's journal. */
#define STAGED_KEY "k"
#define SWAP_JOURNAL "j"

typedef struct keys_restore
{
	agent_job *job;
	const redis_source *src;
	int db;             /* the destination's */
	const char *prefix; /* the destination's */
	size_t prefix_len;
	redisContext *c; /* to the destination's database */
	char *staging;   /* prefix + mark (tenant-backup:restore:<job>:<token>:) */
	size_t staging_len;
	char *data; /* staging + STAGED_KEY: where the backup's keys are staged */
	size_t data_len;
	char *name; /* a key name being built */
	size_t name_size;
	size_t pending, pending_bytes;
	uint64_t records;    /* keys read from the backup */
	uint64_t staged;     /* of them RESTOREd under their staging names */
	uint64_t staged_ttl; /* of those with a TTL, which may run out in the staging */
	uint64_t expired;    /* not staged: their time ran out while stored */
	uint64_t unstaged;   /* staged keys found and removed again */
	uint64_t removed, moved, existing;
} keys_restore;

/* kr->name = head + tail[skip..]: a staged or live name. */
static int
build_name(keys_restore *kr, const char *head, size_t head_len, const char *tail, size_t tail_len, tb_error *err)
{
	if (head_len + tail_len > kr->name_size)
	{
		char *grown = realloc(kr->name, head_len + tail_len);

		if (grown == NULL)
			return tb_error_set(err, TB_ERR_NOMEM, "out of memory for a key name");
		kr->name = grown;
		kr->name_size = head_len + tail_len;
	}
	memcpy(kr->name, head, head_len);
	memcpy(kr->name + head_len, tail, tail_len);
	return 0;
}

/* Reads the replies of the pipelined commands (integer ones summed into count, if any); any error fails. */
static int
flush_pending(redisContext *c, keys_restore *kr, const char *what, uint64_t *count, tb_error *err)
{
	int rc = 0;

	for (; kr->pending > 0; kr->pending--)
	{
		redisReply *reply = NULL;

		if (redisGetReply(c, (void **) &reply) != REDIS_OK)
			return redis_reply_error(c, NULL, what, err);
		if (rc == 0 && redis_reply_error(c, reply, what, err) != 0)
			rc = -1;
		else if (count && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
			*count += (uint64_t) reply->integer;
		freeReplyObject(reply);
	}
	kr->pending_bytes = 0;
	return rc;
}

static int
stage_key(redisContext *c, keys_restore *kr, const redis_record *rec, tb_error *err)
{
	char expires_text[24];

	if (rec->expires_ms != 0 && rec->expires_ms <= redis_now_ms())
	{
		kr->expired++;
		return 0;
	}
	if (build_name(kr, kr->data, kr->data_len, rec->name, rec->name_len, err) != 0)
		return -1;
	/* RESTORE's TTL 0 is none; with ABSTTL any other is the Unix time in ms it expires at. */
	snprintf(expires_text, sizeof(expires_text), "%lld", (long long) rec->expires_ms);
	redisAppendCommandArgv(
		c, 6, (const char *[]){"RESTORE", kr->name, expires_text, rec->value, "REPLACE", "ABSTTL"},
		(const size_t[]){7, kr->data_len + rec->name_len, strlen(expires_text), rec->value_len, 7, 6});
	kr->pending++;
	kr->pending_bytes += rec->value_len + rec->name_len;
	kr->staged++;
	kr->staged_ttl += rec->expires_ms != 0;
	if (kr->pending >= RESTORE_BATCH_COMMANDS || kr->pending_bytes >= RESTORE_BATCH_BYTES)
		return flush_pending(c, kr, "RESTORE", NULL, err);
	return 0;
}

/* Loads every record under its staging name; 0 only when the whole backup authenticated. */
static int
stage_backup(redisContext *c, keys_restore *kr, repo_reader *reader, tb_error *err)
{
	redis_record_reader *rr = redis_record_reader_open(reader, err);
	redis_record rec;
	bool ended = false;
	int got, rc = -1;

	if (rr == NULL)
		return -1;
	if ((got = redis_record_next(rr, &rec, err)) <= 0 || rec.type != 'S')
	{
		if (got == 0 || (got > 0 && rec.type != 'S'))
			tb_error_set(err, TB_ERR_CORRUPT, "the backup does not begin with its source record");
		goto done;
	}
	while ((got = redis_record_next(rr, &rec, err)) > 0)
	{
		if (ended || rec.type == 'S')
		{
			tb_error_set(err, TB_ERR_CORRUPT, "the backup has a record after its end");
			goto done;
		}
		if (rec.type == 'E')
		{
			if (rec.keys != kr->records)
			{
				tb_error_set(err, TB_ERR_CORRUPT, "the backup holds %llu keys, its end record says %llu",
							 (unsigned long long) kr->records, (unsigned long long) rec.keys);
				goto done;
			}
			ended = true;
			continue;
		}
		kr->records++;
		if (stage_key(c, kr, &rec, err) != 0 || agent_job_tick(kr->job, err) != 0)
			goto done;
		kr->job->bytes_done += rec.value_len;
	}
	if (got < 0 || flush_pending(c, kr, "RESTORE", NULL, err) != 0)
		goto done;
	if (!ended)
	{
		tb_error_set(err, TB_ERR_CORRUPT, "the backup ends without its end record");
		goto done;
	}
	rc = 0;
done:
	redis_record_reader_close(rr);
	return rc;
}

/* One command per key of a SCAN batch, pipelined: UNLINK of staged keys, counting those it removed. */
static int
unstage_batch(redisContext *c, redisReply **keys, size_t n, void *arg, tb_error *err)
{
	keys_restore *kr = arg;

	for (size_t i = 0; i < n; i++)
		redisAppendCommand(c, "UNLINK %b", keys[i]->str, (size_t) keys[i]->len);
	kr->pending = n;
	/* SCAN may return a key twice; UNLINK counts it once. */
	return flush_pending(c, kr, "UNLINK", &kr->unstaged, err);
}

/* Live keys the backup does not hold go: EXISTS of each one's staged name, then UNLINK. */
static int
remove_extra_batch(redisContext *c, redisReply **keys, size_t n, void *arg, tb_error *err)
{
	keys_restore *kr = arg;
	size_t i, asked = 0;
	int rc = 0;
	char *gone = calloc(n, 1);

	if (gone == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	for (i = 0; i < n; i++)
	{
		const redisReply *key = keys[i];

		if ((size_t) key->len < kr->prefix_len || memcmp(key->str, kr->prefix, kr->prefix_len) != 0 ||
			redis_is_staging_key(kr->job->master, key->str, key->len, kr->prefix_len))
			continue;
		if (build_name(kr, kr->data, kr->data_len, key->str + kr->prefix_len, key->len - kr->prefix_len, err) != 0)
		{
			rc = -1;
			break;
		}
		redisAppendCommand(c, "EXISTS %b", kr->name, kr->data_len + key->len - kr->prefix_len);
		gone[i] = 1;
		asked++;
	}
	for (i = 0; i < n && asked > 0; i++)
	{
		redisReply *reply = NULL;

		if (!gone[i])
			continue;
		asked--;
		if (redisGetReply(c, (void **) &reply) != REDIS_OK)
		{
			rc = redis_reply_error(c, NULL, "EXISTS", err);
			break;
		}
		if (rc == 0 && redis_reply_error(c, reply, "EXISTS", err) != 0)
			rc = -1;
		gone[i] = reply->type == REDIS_REPLY_INTEGER && reply->integer == 0;
		freeReplyObject(reply);
	}
	for (i = 0; i < n && rc == 0; i++)
		if (gone[i])
		{
			redisAppendCommand(c, "UNLINK %b", keys[i]->str, (size_t) keys[i]->len);
			kr->pending++;
			kr->removed++;
		}
	free(gone);
	return rc == 0 ? flush_pending(c, kr, "UNLINK", NULL, err) : -1;
}

/* Each staged key over its live name; a key that expired in the meantime is no error. */
static int
move_batch(redisContext *c, redisReply **keys, size_t n, void *arg, tb_error *err)
{
	keys_restore *kr = arg;
	int rc = 0;

	for (size_t i = 0; i < n; i++)
	{
		const redisReply *key = keys[i];

		if (build_name(kr, kr->prefix, kr->prefix_len, key->str + kr->data_len, key->len - kr->data_len, err) != 0)
			return -1;
		redisAppendCommand(c, "RENAME %b %b", key->str, (size_t) key->len, kr->name,
						   kr->prefix_len + key->len - kr->data_len);
	}
	for (size_t i = 0; i < n; i++)
	{
		redisReply *reply = NULL;

		if (redisGetReply(c, (void **) &reply) != REDIS_OK)
			return redis_reply_error(c, NULL, "RENAME", err);
		if (reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "no such key") == NULL && rc == 0)
			rc = redis_reply_error(c, reply, "RENAME", err);
		else if (reply->type != REDIS_REPLY_ERROR)
			kr->moved++;
		freeReplyObject(reply);
	}
	return rc;
}

/* Counts the keys of a SCAN batch that begin with the prefix (the pattern is a filter, not a proof). */
static int
count_batch(redisContext *c, redisReply **keys, size_t n, void *arg, tb_error *err)
{
	keys_restore *kr = arg;

	(void) c;
	(void) err;
	for (size_t i = 0; i < n; i++)
		if ((size_t) keys[i]->len >= kr->prefix_len && memcmp(keys[i]->str, kr->prefix, kr->prefix_len) == 0)
			kr->existing++;
	return 0;
}

/* Where the keys go: the tenant's own place, or the target (a database number or a prefix). */
static int
restore_destination(const agent_job *job, const redis_source *src, int *db, const char **prefix, tb_error *err)
{
	char *end;
	long n;

	*db = src->db;
	*prefix = src->prefix;
	if (job->restore_target == NULL)
		return 0;
	if (*src->prefix)
	{
		size_t a = strlen(src->prefix), b = strlen(job->restore_target);

		/* Keys restored inside the tenant's own prefix (or around it) would join its keys. */
		if (strncmp(src->prefix, job->restore_target, a < b ? a : b) == 0)
			return tb_error_set(err, TB_ERR_INVALID,
								"target prefix \"%s\" overlaps the tenant's own prefix \"%s\"; choose one beside it",
								job->restore_target, src->prefix);
		*prefix = job->restore_target;
		return 0;
	}
	n = strtol(job->restore_target, &end, 10);
	if (*job->restore_target == '\0' || *end != '\0' || n < 0 || n > 100000)
		return tb_error_set(err, TB_ERR_INVALID,
							"the target of tenant \"%s\" must be a database number: its keys are a whole database",
							job->tenant);
	*db = (int) n;
	return 0;
}

/*
 * Removes every key staged under kr->staging, counting them in kr->unstaged; a lost
 * connection is made again for it. With failed, err holds the failure that calls for
 * it, which stays first. 0 when nothing is left; else err also says which keys are left.
 */
static int
keys_unstage(keys_restore *kr, bool failed, tb_error *err)
{
	tb_error cleanup = {0};
	char failure[TB_ERROR_MSG_MAX];

	/* Commands still in flight are answered first; their errors are part of the failure. */
	if (kr->c && !kr->c->err)
		(void) flush_pending(kr->c, kr, "RESTORE", NULL, &cleanup);
	if (kr->c == NULL || kr->c->err)
	{
		if (kr->c)
			redisFree(kr->c);
		kr->pending = 0;
		kr->c = redis_connect(kr->src, kr->db, &cleanup);
	}
	if (kr->c && redis_scan(kr->c, NULL, kr->staging, kr->staging_len, unstage_batch, kr, &cleanup) == 0)
		return 0;
	if (!failed)
		return tb_error_set(err, cleanup.code, "removing the keys staged under \"%s\": %s", kr->staging, cleanup.msg);
	memcpy(failure, err->msg, sizeof(failure));
	return tb_error_set(err, err->code, "%s (and the keys staged under \"%s\" are left: %s)", failure, kr->staging,
						cleanup.msg);
}

static void
keys_restore_free(keys_restore *kr)
{
	if (kr->c)
		redisFree(kr->c);
	free(kr->staging);
	free(kr->data);
	free(kr->name);
}

/* kr's staging names for job job_id in kr's destination (prefix set). */
static int
keys_staging_names(keys_restore *kr, int64_t job_id, tb_error *err)
{
	char mark[96];

	redis_staging_mark(kr->job->master, job_id, mark, sizeof(mark));
	free(kr->staging);
	free(kr->data);
	kr->staging_len = kr->prefix_len + strlen(mark);
	kr->data_len = kr->staging_len + strlen(STAGED_KEY);
	kr->staging = malloc(kr->staging_len + 1);
	kr->data = malloc(kr->data_len + 1);
	if (kr->staging == NULL || kr->data == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	snprintf(kr->staging, kr->staging_len + 1, "%s%s", kr->prefix, mark);
	snprintf(kr->data, kr->data_len + 1, "%s%s", kr->staging, STAGED_KEY);
	return 0;
}

/* The swap's journal: step ("remove", "move") set, or removed (NULL). */
static int
swap_journal(keys_restore *kr, const char *step, tb_error *err)
{
	size_t len = kr->staging_len + strlen(SWAP_JOURNAL);
	redisReply *reply;
	int rc;

	if (build_name(kr, kr->staging, kr->staging_len, SWAP_JOURNAL, strlen(SWAP_JOURNAL), err) != 0)
		return -1;
	reply = step ? redisCommand(kr->c, "SET %b %s", kr->name, len, step) : redisCommand(kr->c, "DEL %b", kr->name, len);
	rc = redis_reply_error(kr->c, reply, step ? "SET" : "DEL", err);
	freeReplyObject(reply);
	return rc;
}

/*
 * The swap from step on ("remove": the live keys the backup does not hold go first;
 * "move": the staged keys take their live names), each step journaled before it is
 * taken; the journal goes at the end. Every step can be taken again after a crash.
 */
static int
keys_swap(keys_restore *kr, const char *step, tb_error *err)
{
	if (strcmp(step, "remove") == 0 &&
		(swap_journal(kr, "remove", err) != 0 ||
		 redis_scan(kr->c, NULL, kr->prefix, kr->prefix_len, remove_extra_batch, kr, err) != 0))
		return -1;
	if (swap_journal(kr, "move", err) != 0)
		return -1;
	for (int pass = 0; pass < 3; pass++)
	{
		uint64_t before = kr->moved;

		if (redis_scan(kr->c, NULL, kr->data, kr->data_len, move_batch, kr, err) != 0)
			return -1;
		if (kr->moved == before)
			break;
	}
	return swap_journal(kr, NULL, err);
}

typedef struct dead_staging
{
	const keys_restore *kr;
	int64_t self;     /* the job recovering, whose staging is its own */
	int64_t jobs[16]; /* the jobs whose staged keys were found, up to 16 a round */
	int njobs;
} dead_staging;

/* The jobs of a SCAN batch's staging keys (their tokens checked), but the running one's. */
static int
dead_staging_batch(redisContext *c, redisReply **keys, size_t n, void *arg, tb_error *err)
{
	dead_staging *ds = arg;
	size_t skip = ds->kr->prefix_len + strlen(REDIS_STAGING_MARK);

	(void) c;
	(void) err;
	for (size_t i = 0; i < n && ds->njobs < (int) (sizeof(ds->jobs) / sizeof(ds->jobs[0])); i++)
	{
		int64_t id = 0;
		bool known = false;

		if (!redis_is_staging_key(ds->kr->job->master, keys[i]->str, keys[i]->len, ds->kr->prefix_len))
			continue;
		for (size_t d = skip; d < (size_t) keys[i]->len && keys[i]->str[d] >= '0' && keys[i]->str[d] <= '9'; d++)
			id = id * 10 + (keys[i]->str[d] - '0');
		for (int j = 0; j < ds->njobs && !known; j++)
			known = ds->jobs[j] == id;
		if (!known && id != ds->self)
			ds->jobs[ds->njobs++] = id;
	}
	return 0;
}

int
redis_keys_recover(agent_job *job, redisContext *c, const char *prefix, tb_error *err)
{
	keys_restore kr = {.job = job, .c = c, .prefix = prefix, .prefix_len = strlen(prefix)};
	char *marks = NULL;
	int rc = 0;

	if (asprintf(&marks, "%s%s", prefix, REDIS_STAGING_MARK) < 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	/* A few rounds of up to 16 jobs each: more is no crash's leftover. */
	for (int round = 0; round < 4 && rc == 0; round++)
	{
		dead_staging ds = {.kr = &kr, .self = job->id};

		rc = redis_scan(c, NULL, marks, strlen(marks), dead_staging_batch, &ds, err);
		if (rc != 0 || ds.njobs == 0)
			break;
		for (int i = 0; i < ds.njobs && rc == 0; i++)
		{
			redisReply *step = NULL;

			if (keys_staging_names(&kr, ds.jobs[i], err) != 0 ||
				build_name(&kr, kr.staging, kr.staging_len, SWAP_JOURNAL, strlen(SWAP_JOURNAL), err) != 0 ||
				redis_reply_error(c, (step = redisCommand(c, "GET %b", kr.name, kr.staging_len + strlen(SWAP_JOURNAL))),
								  "GET", err) != 0)
				rc = -1;
			/* A journal: that job's backup was whole and loaded, its swap goes on. Else only its staging goes. */
			else if (step->type == REDIS_REPLY_STRING &&
					 (strcmp(step->str, "remove") == 0 || strcmp(step->str, "move") == 0))
			{
				agent_log_at(AGENT_LOG_INFO, "job %lld: finishing the swap of Redis restore job %lld (%s step)",
							 (long long) job->id, (long long) ds.jobs[i], step->str);
				rc = keys_swap(&kr, step->str, err);
			}
			freeReplyObject(step);
			if (rc == 0)
				rc = redis_scan(c, NULL, kr.staging, kr.staging_len, unstage_batch, &kr, err);
		}
	}
	if (rc != 0)
		tb_error_prefix(err, "finishing what an earlier restore left in the keyspace \"%s\"", prefix);
	kr.c = NULL;
	keys_restore_free(&kr);
	free(marks);
	return rc;
}

/*
 * What a restore and a drill share: connects to the destination and loads the whole
 * backup under the staging names. 0 only once all of it authenticated and loaded; on
 * failure, whatever was staged has been removed again (or err says what is left).
 */
static int
keys_stage(keys_restore *kr, repo_reader *reader, tb_error *err)
{
	agent_job *job = kr->job;
	char run_id[REDIS_RUN_ID_LEN + 1], db[16];

	if (restore_destination(job, kr->src, &kr->db, &kr->prefix, err) != 0 ||
		(kr->c = redis_connect(kr->src, kr->db, err)) == NULL ||
		redis_claim_identity(kr->c, kr->src, kr->job, run_id, err) != 0)
		return -1;
	kr->prefix_len = strlen(kr->prefix);
	/* Another tenant's database or prefix is no target, empty or not. */
	snprintf(db, sizeof(db), "%d", kr->db);
	if (job->restore_target && agent_job_target_identity(job, run_id, db, kr->prefix, err) != 0)
		return -1;
	/* A target, and restore-direct's destination, must be empty: nothing of it is replaced. */
	if (job->restore_target || job->direct)
	{
		if (redis_scan(kr->c, kr->job, kr->prefix, kr->prefix_len, count_batch, kr, err) != 0)
			return -1;
		if (kr->existing > 0)
			return tb_error_set(err, TB_ERR_EXISTS, "target %s %s already holds keys; restore into an empty one",
								*kr->prefix ? "prefix" : "database", *kr->prefix ? kr->prefix : db);
	}
	/* What a dead job left in this keyspace is finished (or removed) before anything is staged. */
	if (redis_keys_recover(job, kr->c, kr->prefix, err) != 0 || keys_staging_names(kr, job->id, err) != 0)
		return -1;
	if (stage_backup(kr->c, kr, reader, err) != 0)
	{
		/* Only what this job staged goes. */
		keys_unstage(kr, true, err);
		return -1;
	}
	return 0;
}

int
redis_keys_restore(agent_job *job, const redis_source *src, repo_reader *reader, tb_error *err)
{
	keys_restore kr = {.job = job, .src = src};
	stream_stats stats;
	int rc = -1;

	if (keys_stage(&kr, reader, err) != 0)
		goto done;
	/* The reader was opened with hash_stored: the object must be the one the catalog recorded. */
	repo_reader_stats(reader, &stats);
	if (agent_job_check_stored(job, &stats, err) != 0)
	{
		keys_unstage(&kr, true, err);
		goto done;
	}
	/*
	 * The whole backup authenticated and is loaded: only now does live change. Once
	 * begun, the swap (only UNLINKs and RENAMEs, no data moves) runs to its end: a stop
	 * halfway would leave the tenant half old, half restored (and a crash leaves the
	 * journal, for the next job in this keyspace to finish it).
	 */
	if (agent_job_tick(job, err) != 0 || keys_swap(&kr, "remove", err) != 0)
		goto done;
	snprintf(job->detail, sizeof(job->detail),
			 "%llu keys restored, %llu expired while stored, %llu not in the backup removed",
			 (unsigned long long) kr.moved, (unsigned long long) kr.expired, (unsigned long long) kr.removed);
	rc = 0;
done:
	keys_restore_free(&kr);
	return rc;
}

/*
 * The drill's contents are the keys the backup holds, as the backup counted them when
 * it dumped: a count of live staged keys would differ from it by every key whose TTL
 * ran out while stored (which the restore rightly leaves out), and by any that runs
 * out in the staging before it is counted. The staging is checked all the same: every
 * key loaded must be found there when it is removed, but for those with a TTL.
 */
int
redis_keys_drill(agent_job *job, const redis_source *src, repo_reader *reader, tb_error *err)
{
	keys_restore kr = {.job = job, .src = src};
	stream_stats stats;
	int rc = -1;

	if (keys_stage(&kr, reader, err) != 0 || keys_unstage(&kr, false, err) != 0)
		goto done;
	if (kr.unstaged > kr.staged || kr.staged - kr.unstaged > kr.staged_ttl)
	{
		tb_error_set(err, TB_ERR_CORRUPT, "the staging held %llu keys, but %llu were loaded (%llu of them with a TTL)",
					 (unsigned long long) kr.unstaged, (unsigned long long) kr.staged,
					 (unsigned long long) kr.staged_ttl);
		goto done;
	}
	/* The reader was opened with hash_stored: the object as read, for the catalog to compare. */
	repo_reader_stats(reader, &stats);
	if (!stats.stored_sha256_known)
	{
		tb_error_set(err, TB_ERR_INTERNAL, "the drill's reader did not hash the stored object");
		goto done;
	}
	crypto_hex_encode(stats.stored_sha256, sizeof(stats.stored_sha256), job->object_sha256);
	if (asprintf(&job->contents, "{\"keys\": %llu}", (unsigned long long) kr.records) < 0)
	{
		job->contents = NULL;
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		goto done;
	}
	snprintf(job->detail, sizeof(job->detail),
			 "drill: %llu keys read, %llu loaded into the staging, %llu expired while stored; %llu found there and "
			 "removed",
			 (unsigned long long) kr.records, (unsigned long long) kr.staged, (unsigned long long) kr.expired,
			 (unsigned long long) kr.unstaged);
	rc = 0;
done:
	keys_restore_free(&kr);
	return rc;
}
