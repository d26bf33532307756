/*
 * The tenant's own key command (bring your own key): a program the tenant controls,
 * typically a KMS client, that wraps and unwraps its tenant keys. Its output is key
 * material or opaque wrapped bytes: it is read into memory only, never logged, never
 * part of an error. See keys.h for the contract.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "keys.h"
#include "subprocess.h"

#define KEY_COMMAND_TIMEOUT_MS 60000
#define KEY_COMMAND_STDERR_MAX 200

int
keys_command_run(const char *command, const char *op, const char *tenant, const char *key_id, const char *input,
				 char *out, size_t out_size, tb_error *err)
{
	const char *doing = strcmp(op, "wrap") == 0 ? "wrapping" : "unwrapping";
	char env_op[64], env_tenant[128], env_key_id[128], what[192];
	const char *env[] = {env_op, env_tenant, env_key_id, NULL};
	subprocess_options opts = {.env = env, .in = SUBPROCESS_PIPE, .out = SUBPROCESS_PIPE, .err = SUBPROCESS_PIPE};
	subprocess sp;
	tb_error start_err;
	size_t out_len = 0;
	bool too_long = false;
	char **argv;
	int rc = -1, ran;

	if (command == NULL || command[0] == '\0')
		return tb_error_set(err, TB_ERR_INVALID, "tenant '%s' has no key command", tenant);
	snprintf(env_op, sizeof(env_op), "TENANT_BACKUP_KEY_OP=%s", op);
	snprintf(env_tenant, sizeof(env_tenant), "TENANT_BACKUP_TENANT=%s", tenant);
	snprintf(env_key_id, sizeof(env_key_id), "TENANT_BACKUP_KEY_ID=%s", key_id);
	snprintf(what, sizeof(what), "the key command of tenant '%s'", tenant);
	if ((argv = subprocess_words(command, what, true, err)) == NULL)
		return -1;
	opts.argv = (const char *const *) argv;
	if (subprocess_start(&sp, &opts, &start_err) != 0)
	{
		subprocess_words_free(argv);
		return tb_error_set(err, TB_ERR_IO, "unable to start the key command of tenant '%s': %s", tenant,
							start_err.msg);
	}
	subprocess_words_free(argv);
	ran = subprocess_communicate(&sp, input, strlen(input), out, out_size, &out_len, &too_long, KEY_COMMAND_TIMEOUT_MS);
	if (ran == 1)
		tb_error_set(err, TB_ERR_KEY, "the key command of tenant '%s' did not finish %s key %s within %d s", tenant,
					 doing, key_id, KEY_COMMAND_TIMEOUT_MS / 1000);
	else if (ran < 0)
		tb_error_set(err, TB_ERR_IO, "unable to wait for the key command of tenant '%s': %s", tenant, strerror(errno));
	else if (!WIFEXITED(sp.status) || WEXITSTATUS(sp.status) != 0)
	{
		char line[KEY_COMMAND_STDERR_MAX + 1];

		subprocess_stderr_first_line(&sp, line, sizeof(line));
		tb_error_set(err, TB_ERR_KEY, "the key command of tenant '%s' failed %s key %s (%s %d)%s%s", tenant, doing,
					 key_id, WIFEXITED(sp.status) ? "exit status" : "signal",
					 WIFEXITED(sp.status) ? WEXITSTATUS(sp.status) : WTERMSIG(sp.status), line[0] ? ": " : "", line);
	}
	else if (too_long)
		tb_error_set(err, TB_ERR_KEY, "the key command of tenant '%s' printed more than %zu bytes for key %s", tenant,
					 out_size - 1, key_id);
	else
	{
		while (out_len > 0 && (out[out_len - 1] == '\n' || out[out_len - 1] == '\r'))
			out_len--;
		out[out_len] = '\0';
		rc = 0;
	}
	subprocess_end(&sp, SIGKILL);
	if (rc != 0)
		crypto_wipe(out, out_size);
	return rc;
}
