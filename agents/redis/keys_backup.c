/*
 * A logical backup of a tenant's keys (a database number, or a key prefix in a shared
 * one): SCAN MATCH walks the keyspace in batches, never KEYS; each batch's PEXPIRETIME
 * (the absolute expiry, Redis 7; PTTL plus the agent's clock before) and DUMP go to the
 * server pipelined, one round trip per batch. A key that expired or was
 * deleted between SCAN and DUMP is skipped: it was not there to back up, nor counted.
 */
#include "redis_agent.h"

#include <stdlib.h>
#include <string.h>

typedef struct keys_backup
{
	agent_job *job;
	const redis_source *src;
	size_t prefix_len;
	repo_put *put;
	bool absolute; /* the server has PEXPIRETIME */
	uint64_t keys, value_bytes;
} keys_backup;

static int
backup_batch(redisContext *c, redisReply **keys, size_t n, void *arg, tb_error *err)
{
	keys_backup *kb = arg;
	size_t i;
	int rc = 0;

	for (i = 0; i < n; i++)
	{
		redisAppendCommand(c, kb->absolute ? "PEXPIRETIME %b" : "PTTL %b", keys[i]->str, (size_t) keys[i]->len);
		redisAppendCommand(c, "DUMP %b", keys[i]->str, (size_t) keys[i]->len);
	}
	for (i = 0; i < n; i++)
	{
		redisReply *ttl = NULL, *dump = NULL;
		const redisReply *key = keys[i];

		if (redisGetReply(c, (void **) &ttl) != REDIS_OK || redisGetReply(c, (void **) &dump) != REDIS_OK)
			rc = redis_reply_error(c, NULL, "PTTL/DUMP", err);
		else if (redis_reply_error(c, ttl, "PTTL", err) != 0 || redis_reply_error(c, dump, "DUMP", err) != 0)
			rc = tb_error_prefix(err, "key \"%.*s\"", (int) (key->len > 200 ? 200 : key->len), key->str);
		else if (rc == 0 && (size_t) key->len >= kb->prefix_len &&
				 memcmp(key->str, kb->src->prefix, kb->prefix_len) == 0 &&
				 !redis_is_staging_key(kb->job->master, key->str, key->len, kb->prefix_len) &&
				 ttl->type == REDIS_REPLY_INTEGER && ttl->integer != -2 && dump->type == REDIS_REPLY_STRING)
		{
			redis_record rec = {.type = 'K',
								.name = key->str + kb->prefix_len,
								.name_len = key->len - kb->prefix_len,
								.value = dump->str,
								.value_len = dump->len};

			/* Stored as the moment it expires, so that a restore gives it only the time it has left. */
			if (ttl->integer < 0)
				rec.expires_ms = 0;
			else if (kb->absolute)
				rec.expires_ms = ttl->integer;
			else
				rec.expires_ms = redis_now_ms() + (ttl->integer > 0 ? ttl->integer : 1);
			rc = redis_record_write(kb->put, &rec, err);
			kb->keys++;
			kb->value_bytes += dump->len;
		}
		freeReplyObject(ttl);
		freeReplyObject(dump);
		/* Every reply is read even after a failure, so the connection stays in step. */
		if (c->err)
			break;
	}
	kb->job->bytes_done = kb->value_bytes;
	return rc;
}

/* Whether the server knows PEXPIRETIME (Redis 7): asked of a key that cannot exist. */
static int
has_pexpiretime(redisContext *c, bool *absolute, tb_error *err)
{
	redisReply *reply = redisCommand(c, "PEXPIRETIME %s", "");

	if (reply == NULL)
		return redis_reply_error(c, NULL, "PEXPIRETIME", err);
	*absolute = reply->type == REDIS_REPLY_INTEGER;
	freeReplyObject(reply);
	return 0;
}

int
redis_keys_backup(agent_job *job, const redis_source *src, repo_put *put, tb_error *err)
{
	keys_backup kb = {.job = job, .src = src, .prefix_len = strlen(src->prefix), .put = put};
	redisContext *c = redis_connect(src, src->db, err);
	redis_record source = {.type = 'S', .db = (uint32_t) src->db, .name = src->prefix, .name_len = kb.prefix_len};
	redis_record end = {.type = 'E'};
	char run_id[REDIS_RUN_ID_LEN + 1];
	int rc;

	if (c == NULL)
		return -1;
	rc = redis_claim_identity(c, src, job, run_id, err);
	/* A restore an agent crash left half done is finished first: the backup holds it whole. */
	if (rc == 0)
		rc = redis_keys_recover(job, c, src->prefix, err);
	if (rc == 0)
		rc = has_pexpiretime(c, &kb.absolute, err);
	if (rc == 0)
		rc = repo_put_write(put, REDIS_KEYS_MAGIC, strlen(REDIS_KEYS_MAGIC), err);
	if (rc == 0)
		rc = redis_record_write(put, &source, err);
	if (rc == 0)
		rc = redis_scan(c, job, src->prefix, kb.prefix_len, backup_batch, &kb, err);
	end.keys = kb.keys;
	end.value_bytes = kb.value_bytes;
	if (rc == 0)
		rc = redis_record_write(put, &end, err);
	/* What the backup holds, as its end record says: a drill counts the same. */
	if (rc == 0 && asprintf(&job->contents, "{\"keys\": %llu}", (unsigned long long) kb.keys) < 0)
	{
		job->contents = NULL;
		rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	}
	snprintf(job->detail, sizeof(job->detail), "%llu keys", (unsigned long long) kb.keys);
	redisFree(c);
	return rc;
}
