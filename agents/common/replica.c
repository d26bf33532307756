/*
 * A restore whose primary copy is missing, fails authentication or cannot be read,
 * run again from the tenant's replica (agent_job_replica): the same engine restore,
 * authenticated the same way (header, every chunk, the catalog's SHA-256).
 */
#include "agent_internal.h"

#include <jansson.h>
#include <stdlib.h>

#include "repo_copy.h"

int
agent_restore_from_replica(agent *a, agent_job *job, tb_error *err, char **result)
{
	const char *how = repo_copy_failure(err);
	tb_error primary = *err, other = {0};
	storage *primary_storage = job->storage, *replica;
	char note[2 * TB_ERROR_MSG_MAX], where[512];
	char *url = NULL;
	json_t *doc;
	int rc;

	*result = NULL;
	if (how == NULL || job->drill || job->direct || job->stop != AGENT_GO)
		return -1;
	if (control_job_replica(a, job, &url, &other) != 0)
		return tb_error_set(err, primary.code, "%s; the tenant's replica could not be looked up: %s", primary.msg,
							other.msg);
	if (url == NULL)
		return -1;
	replica = storage_open(url, &other);
	free(url);
	if (replica == NULL)
		return tb_error_set(err, primary.code, "%s; the tenant's replica storage could not be opened: %s", primary.msg,
							other.msg);
	snprintf(where, sizeof(where), "%s", storage_describe(replica));
	agent_log_at(AGENT_LOG_WARNING, "restore of tenant \"%s\" (job %lld): the primary copy %s; reading the replica %s",
				 job->tenant, (long long) job->id, how, where);
	job->storage = replica;
	job->bytes_done = 0;
	rc = a->engine->restore(job, &other);
	job->storage = primary_storage;
	storage_close(replica);
	if (rc != 0)
		return tb_error_set(
			err, other.code,
			"backup %lld cannot be restored from either copy: the primary copy %s: %s; the replica %s: %s",
			(long long) job->backup_id, how, primary.msg, where, other.msg);
	repo_copy_fallback_note(note, sizeof(note), "restored", where, how, primary.msg);
	agent_log("backup %lld of tenant \"%s\" %s", (long long) job->backup_id, job->tenant, note);
	doc = json_pack("{s:s, s:s, s:s}", "restored_from", "replica", "replica", where, "notice", note);
	*result = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	return 0;
}
