/*
 * What an agent checks instead of trusting: the database its connection reached (told
 * to the control plane, which refuses another tenant's), where its own fallback
 * credentials may go, and that the backup storage gave back is the one the catalog
 * recorded for the job.
 */
#include "agent_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"

/* <server>/<database>, each percent-encoded, to the control plane as a source's identity or a target's. */
static int
job_identity(agent_job *job, const char *server, const char *database, bool target, const char *key_prefix,
			 tb_error *err)
{
	char *server_part, *database_part, *identity = NULL;
	int rc;

	/* Without a control plane there is no catalog to ask: the master key's holder chose the target. */
	if (job->direct)
		return 0;
	server_part = agent_uri_encode(server);
	database_part = agent_uri_encode(database);
	if (server_part == NULL || database_part == NULL || asprintf(&identity, "%s/%s", server_part, database_part) < 0)
	{
		identity = NULL;
		rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	}
	else if ((rc = control_identity(job->owner, job, identity, target, key_prefix, err)) != 0)
		tb_error_prefix(err, "the %s %s of tenant \"%s\"", job->engine, target ? "restore target" : "database",
						job->tenant);
	/* A backup reads its database once the control plane accepted what it reached. */
	else if (!target && strcmp(job->kind, "backup") == 0)
		agent_job_phase(job, "dump");
	free(identity);
	free(server_part);
	free(database_part);
	return rc;
}

int
agent_job_identity(agent_job *job, const char *server, const char *database, tb_error *err)
{
	return job_identity(job, server, database, false, NULL, err);
}

int
agent_job_target_identity(agent_job *job, const char *server, const char *database, const char *key_prefix,
						  tb_error *err)
{
	return job_identity(job, server, database, true, key_prefix, err);
}

/* One entry of the allow-list against host:port: "host" allows every port. */
static bool
fallback_entry_matches(const char *entry, size_t len, const char *host, int port)
{
	char port_text[16];
	size_t host_len = strlen(host);

	if (len == host_len && strncasecmp(entry, host, len) == 0)
		return true;
	snprintf(port_text, sizeof(port_text), ":%d", port);
	return len == host_len + strlen(port_text) && strncasecmp(entry, host, host_len) == 0 &&
		   strncmp(entry + host_len, port_text, strlen(port_text)) == 0;
}

bool
agent_fallback_credentials_allowed(const agent_job *job, const char *host, int port)
{
	char key[64];
	const char *list;

	snprintf(key, sizeof(key), "%s_fallback_credentials_hosts", job->engine);
	list = agent_config_get(job->config, key);
	while (list && *list)
	{
		size_t len;

		while (*list == ',' || isspace((unsigned char) *list))
			list++;
		len = strcspn(list, ", \t");
		if (len > 0 && fallback_entry_matches(list, len, host, port))
			return true;
		list += len;
	}
	return false;
}

/* The backup id in an object's name: <time>-<backup id>.tbk. */
static bool
object_names_backup_id(const char *object, const char *backup_id)
{
	size_t len = strlen(object), id_len = strlen(backup_id);

	return len > id_len + 5 && strcmp(object + len - 4, ".tbk") == 0 && object[len - 5 - id_len] == '-' &&
		   strncmp(object + len - 4 - id_len, backup_id, id_len) == 0;
}

int
agent_job_check_header(const agent_job *job, const stream_header *hdr, tb_error *err)
{
	if (strcmp(hdr->tenant, job->tenant) != 0 || strcmp(hdr->engine, job->engine) != 0)
		return tb_error_set(err, TB_ERR_CORRUPT, "backup %s belongs to tenant \"%s\" (%s), not to \"%s\" (%s)",
							job->object_key, hdr->tenant, hdr->engine, job->tenant, job->engine);
	if (!object_names_backup_id(job->object_key, hdr->backup_id))
		return tb_error_set(err, TB_ERR_CORRUPT,
							"the object stored as %s is another backup of tenant \"%s\": its header names backup "
							"id %s; restore nothing from it and check who writes to storage",
							job->object_key, job->tenant, hdr->backup_id);
	if (job->backup_key_id == NULL || strcmp(hdr->key_id, job->backup_key_id) != 0)
		return tb_error_set(err, TB_ERR_CORRUPT,
							"the object stored as %s is sealed with key %s, not with key %s that the catalog "
							"recorded for backup %lld of tenant \"%s\"",
							job->object_key, hdr->key_id, job->backup_key_id ? job->backup_key_id : "(none)",
							(long long) job->backup_id, job->tenant);
	return 0;
}

int
agent_job_accept_header(const agent_job *job, const stream_header *hdr, tb_error *err)
{
	if (agent_job_check_header(job, hdr, err) != 0)
		return -1;
	/* The object is the recorded one: what follows reads it into its staging place, authenticating as it goes. */
	agent_job_phase(job, "load");
	return 0;
}

int
agent_job_check_stored(const agent_job *job, const stream_stats *stats, tb_error *err)
{
	char sha[2 * CRYPTO_SHA256_LEN + 1];

	if (!stats->stored_sha256_known)
		return tb_error_set(err, TB_ERR_INTERNAL, "the SHA-256 of backup %s as stored was not computed",
							job->object_key);
	crypto_hex_encode(stats->stored_sha256, sizeof(stats->stored_sha256), sha);
	if (job->backup_sha256 == NULL || strcmp(sha, job->backup_sha256) != 0)
		return tb_error_set(err, TB_ERR_CORRUPT,
							"the object stored as %s is not backup %lld of tenant \"%s\" as the catalog recorded it "
							"(SHA-256 %s, recorded %s); nothing live was changed",
							job->object_key, (long long) job->backup_id, job->tenant, sha,
							job->backup_sha256 ? job->backup_sha256 : "none");
	return 0;
}
