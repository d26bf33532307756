/*
 * tenant-backup restore-direct of a MySQL/MariaDB, Redis or MongoDB backup: authenticated
 * here whole, then loaded by the engine's own agent in its one-shot restore-direct mode
 * (agents/common/direct.c), so that there is one restore per engine, not two.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "restore_direct.h"

/* The schemes --into may have for each engine. */
static bool
direct_scheme_fits(const char *engine, const char *into, size_t *scheme_len)
{
	static const char *const schemes[][2] = {
		{"mysql", "mysql://"}, {"mysql", "mariadb://"}, {"redis", "redis://"}, {"mongodb", "mongodb://"}};

	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (strcmp(engine, schemes[i][0]) == 0 && strncmp(into, schemes[i][1], strlen(schemes[i][1])) == 0)
		{
			*scheme_len = strlen(schemes[i][1]);
			return true;
		}
	return false;
}

int
direct_agent_into_check(const char *engine, const char *into, tb_error *err)
{
	char password_env[64];
	size_t scheme_len, authority_len;
	const char *at;

	if (!direct_scheme_fits(engine, into, &scheme_len))
		return tb_error_set(err, TB_ERR_INVALID, "--into takes a %s:// URI for engine %s (see --help)", engine, engine);
	authority_len = strcspn(into + scheme_len, "/?");
	at = memrchr(into + scheme_len, '@', authority_len);
	if (at == NULL || memchr(into + scheme_len, ':', (size_t) (at - (into + scheme_len))) == NULL)
		return 0;
	snprintf(password_env, sizeof(password_env), "TENANT_BACKUP_%s_PASSWORD", engine);
	for (char *c = password_env; *c; c++)
		*c = (char) toupper((unsigned char) *c);
	return tb_error_set(err, TB_ERR_INVALID,
						"--into carries a password, which would be visible in the process list: leave it out and give "
						"it with --password-file FILE or %s",
						password_env);
}

/* req->agent, or tenant-backup-agent-<engine> in the directory of this program; it must be executable. */
static int
direct_agent_path(const direct_agent_request *req, char *out, size_t size, tb_error *err)
{
	char self[PATH_MAX];
	ssize_t len;
	char *slash;

	if (req->agent != NULL && strchr(req->agent, '/') == NULL)
		return tb_error_set(err, TB_ERR_INVALID, "--agent takes the agent's path (./tenant-backup-agent-%s)",
							req->engine);
	if (req->agent != NULL)
		snprintf(out, size, "%s", req->agent);
	else
	{
		if ((len = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0)
			return tb_error_set(err, TB_ERR_IO,
								"cannot tell where tenant-backup is (%s): name the agent with --agent PATH",
								strerror(errno));
		self[len] = '\0';
		slash = strrchr(self, '/');
		*slash = '\0';
		/* The engine's name is at most 15 bytes (names_check_engine). */
		if ((size_t) (slash - self) + 64 > size)
			return tb_error_set(err, TB_ERR_INVALID,
								"the path of tenant-backup is too long: name the agent with --agent PATH");
		snprintf(out, size, "%.*s/tenant-backup-agent-%s", (int) (size - 64), self, req->engine);
	}
	if (access(out, X_OK) != 0)
		return tb_error_set(
			err, TB_ERR_NOT_FOUND,
			"cannot run the %s agent %s: %s (install it beside tenant-backup, or name it with --agent PATH)",
			req->engine, out, strerror(errno));
	return 0;
}

int
direct_restore_with_agent(const direct_agent_request *req, const cli_context *ctx, storage *st,
						  const master_key *master, const manifest *m, tb_error *err)
{
	static const char *const names[] = {"tenant",  "object",     "key-id",        "sha256",         "into",
										"storage", "master-key", "password-file", "source-database"};
	const char *values[] = {m->tenant,
							m->object,
							m->key_id,
							m->sha256,
							req->into,
							req->storage_url,
							ctx->master_key_file,
							req->password_file,
							m->database[0] ? m->database : NULL};
	char agent[PATH_MAX], *option_args[sizeof(names) / sizeof(names[0])] = {0};
	const char *argv[sizeof(names) / sizeof(names[0]) + 3] = {agent, "restore-direct"};
	repo_read_options options;
	stream_stats stats;
	cli_progress progress;
	int rc, argc = 2;

	if (direct_agent_path(req, agent, sizeof(agent), err) != 0)
		return -1;
	cli_progress_start(&progress, "restore-direct: authenticating");
	cli_read_checked(&options, m, &progress);
	options.keep_going = direct_keep_going;
	rc = repo_read_to_fd(st, master, m->object, -1, &options, &stats, err);
	cli_progress_end(&progress);
	if (rc != 0)
		return tb_error_prefix(err, "nothing was created: backup %s of tenant '%s' did not authenticate", m->object,
							   m->tenant);
	/* The tenant's own key command (BYOK) goes to the agent as it reads it: from its environment. */
	if (ctx->key_command != NULL && setenv("TENANT_BACKUP_KEY_COMMAND", ctx->key_command, 1) != 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	/* Every value as an option's own (--name=value): never an option itself. */
	for (size_t i = 0; rc == 0 && i < sizeof(names) / sizeof(names[0]); i++)
	{
		if (values[i] == NULL)
			continue;
		if (asprintf(&option_args[i], "--%s=%s", names[i], values[i]) < 0)
		{
			option_args[i] = NULL;
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		}
		argv[argc++] = option_args[i];
	}
	argv[argc] = NULL;
	if (rc == 0)
	{
		*req->loading = true;
		rc = direct_run(argv, NULL, err);
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		free(option_args[i]);
	return rc;
}
