/* Option handling, storage and key loading, error and progress reporting for every command. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

void
cli_context_init(cli_context *ctx)
{
	ctx->storage_url = getenv("TENANT_BACKUP_STORAGE");
	ctx->master_key_file = getenv("TENANT_BACKUP_MASTER_KEY_FILE");
	ctx->key_command = getenv("TENANT_BACKUP_KEY_COMMAND");
	ctx->key_command_given = false;
	ctx->replica_url = getenv("TENANT_BACKUP_REPLICA_STORAGE");
}

int
cli_parse(const char *command, const char *usage, int argc, char **argv, const struct option *options, cli_context *ctx,
		  cli_option_fn on_option, void *command_state)
{
	int opt;

	cli_context_init(ctx);
	opterr = 0; /* reported below, once, with the command's name */
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1)
	{
		int rc;

		switch (opt)
		{
			case CLI_OPT_STORAGE:
				ctx->storage_url = optarg;
				break;
			case CLI_OPT_MASTER_KEY:
				ctx->master_key_file = optarg;
				break;
			case CLI_OPT_KEY_COMMAND:
				ctx->key_command = optarg;
				ctx->key_command_given = true;
				break;
			case CLI_OPT_REPLICA:
				ctx->replica_url = optarg;
				break;
			case 'h':
				fputs(usage, stdout);
				return -1;
			case '?':
			case ':':
				return cli_usage_error(command, "invalid option or missing value: '%s'", argv[optind - 1]);
			default:
				rc = on_option ? on_option(opt, optarg, command_state) : cli_usage_error(command, "invalid option");
				if (rc != 0)
					return rc;
		}
	}
	/* An empty command (--key-command '') means none, also over the environment's. */
	if (ctx->key_command != NULL && ctx->key_command[0] == '\0')
		ctx->key_command = NULL;
	return 0;
}

const char *
cli_escape(const char *text, char *out, size_t size)
{
	size_t used = 0;

	for (const unsigned char *c = (const unsigned char *) text; *c; c++)
	{
		char one[5];
		size_t n;

		if (*c == '\\')
			n = (size_t) snprintf(one, sizeof(one), "\\\\");
		else if (*c >= 0x20 && *c < 0x7f)
			n = (size_t) snprintf(one, sizeof(one), "%c", *c);
		else
			n = (size_t) snprintf(one, sizeof(one), "\\x%02x", *c);
		if (used + n + 4 > size)
		{
			snprintf(out + used, size - used, "...");
			return out;
		}
		memcpy(out + used, one, n);
		used += n;
	}
	out[used] = '\0';
	return out;
}

int
cli_fail(const char *command, const tb_error *err)
{
	char msg[CLI_ESCAPED_MAX];

	fprintf(stderr, "tenant-backup %s: %s\n", command, cli_escape(err->msg, msg, sizeof(msg)));
	return err->code == TB_ERR_INVALID ? 2 : 1;
}

int
cli_usage_error(const char *command, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "tenant-backup %s: ", command);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'tenant-backup %s --help'.\n", command);
	return 2;
}

const char *
cli_human_bytes(uint64_t bytes, char *out, size_t size)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
	double value = (double) bytes;
	int unit = -1;

	while (value >= 1024 && unit < 4)
	{
		value /= 1024;
		unit++;
	}
	if (unit < 0)
		snprintf(out, size, "%llu B", (unsigned long long) bytes);
	else
		snprintf(out, size, "%.1f %s", value, units[unit]);
	return out;
}

int
cli_print_json(json_t *doc, tb_error *err)
{
	char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	json_decref(doc);
	if (text == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory writing the output as JSON");
	printf("%s\n", text);
	free(text);
	return 0;
}

int
cli_storage_exists(const cli_context *ctx, tb_error *err)
{
	struct stat sb;
	const char *url = ctx->storage_url;

	if (url == NULL || strncmp(url, "file://", 7) != 0)
		return 0;
	if (stat(url + 7, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return tb_error_set(err, TB_ERR_NOT_FOUND,
							"storage directory '%s' does not exist: check --storage (or TENANT_BACKUP_STORAGE)",
							url + 7);
	return 0;
}

storage *
cli_open_storage(const cli_context *ctx)
{
	tb_error err = {0};
	storage *st = storage_open(ctx->storage_url, &err);

	char msg[CLI_ESCAPED_MAX];

	if (st == NULL)
		fprintf(stderr, "tenant-backup: %s\n", cli_escape(err.msg, msg, sizeof(msg)));
	return st;
}

int
cli_load_master_key(const cli_context *ctx, master_key *out)
{
	tb_error err = {0};

	if (keys_master_load(ctx->master_key_file, out, &err) != 0)
	{
		char msg[CLI_ESCAPED_MAX];

		fprintf(stderr, "tenant-backup: %s\n", cli_escape(err.msg, msg, sizeof(msg)));
		return -1;
	}
	out->key_command = ctx->key_command;
	return 0;
}

static double
cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

void
cli_progress_start(cli_progress *p, const char *label)
{
	p->label = label;
	p->enabled = isatty(STDERR_FILENO);
	p->started = cli_now();
}

void
cli_progress_update(void *ctx, uint64_t bytes)
{
	cli_progress *p = ctx;
	double elapsed = cli_now() - p->started;

	if (!p->enabled)
		return;
	fprintf(stderr, "\r%s: %.1f MiB, %.1f MiB/s   ", p->label, (double) bytes / 1048576.0,
			elapsed > 0 ? (double) bytes / 1048576.0 / elapsed : 0.0);
	fflush(stderr);
}

void
cli_progress_end(cli_progress *p)
{
	if (p->enabled)
		fprintf(stderr, "\r\033[K");
}
