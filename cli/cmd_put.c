/* tenant-backup put: seal standard input as a new backup object of a tenant and engine. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "names.h"
#include "repo.h"

static const char put_usage[] =
	"Usage: tenant-backup put --tenant T --engine E [OPTIONS] < data\n"
	"\n"
	"Seals standard input (compressed with zstd, encrypted with AES-256-GCM under a\n"
	"fresh data key wrapped by the tenant's key) as <tenant>/<engine>/<UTC time>-<id>.tbk,\n"
	"writes its manifest beside it, and prints the object key. The tenant's key is\n"
	"created on first use. Nothing is stored unless the whole input was sealed and stored.\n"
	"\n"
	"With --key-command on the command line, a tenant that has no key yet gets its first\n"
	"key wrapped by that command instead of the master key (bring your own key): reading\n"
	"its backups then needs the command. A tenant's existing key stays as it is wrapped;\n"
	"TENANT_BACKUP_KEY_COMMAND alone only opens keys, it never wraps a new one.\n"
	"\n"
	"  --tenant T           tenant name: [a-z0-9][a-z0-9_-]{0,62}\n"
	"  --engine E           postgres, mysql, mongodb or redis\n"
	"  --level N            zstd level (default 1, as the extension and the agents)\n"
	"  --workers N          compression threads (default 2; 1: none)\n"
	"  --storage URL        file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n"
	"  --master-key FILE    master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n"
	"  --key-command CMD    the tenant's own key command (env TENANT_BACKUP_KEY_COMMAND,\n"
	"                       which opens keys only)\n";

typedef struct put_args
{
	const char *tenant;
	const char *engine;
	repo_put_options put;
} put_args;

static int
put_option(int opt, const char *arg, void *state)
{
	put_args *args = state;

	switch (opt)
	{
		case 't':
			args->tenant = arg;
			return 0;
		case 'e':
			args->engine = arg;
			return 0;
		case 'l':
			args->put.stream.level = atoi(arg);
			if (args->put.stream.level < 1 || args->put.stream.level > 19)
				return cli_usage_error("put", "--level must be 1 to 19");
			return 0;
		case 'w':
			args->put.stream.workers = atoi(arg);
			if (args->put.stream.workers < 1 || args->put.stream.workers > 64)
				return cli_usage_error("put", "--workers must be 1 to 64");
			return 0;
		default:
			return cli_usage_error("put", "invalid option");
	}
}

int
cmd_put(int argc, char **argv)
{
	static const struct option options[] = {{"tenant", required_argument, NULL, 't'},
											{"engine", required_argument, NULL, 'e'},
											{"level", required_argument, NULL, 'l'},
											{"workers", required_argument, NULL, 'w'},
											CLI_COMMON_OPTIONS,
											{NULL, 0, NULL, 0}};
	put_args args = {.put = {.stream = {.workers = 2}}};
	cli_context ctx;
	cli_progress progress;
	tb_error err = {0};
	master_key master;
	tenant_key key;
	manifest m;
	storage *st;
	int rc = cli_parse("put", put_usage, argc, argv, options, &ctx, put_option, &args);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (optind != argc)
		return cli_usage_error("put", "unexpected argument '%s'", argv[optind]);
	if (args.tenant == NULL || args.engine == NULL)
		return cli_usage_error("put", "--tenant and --engine are required");
	if (names_check_tenant(args.tenant, &err) != 0 || names_check_engine(args.engine, &err) != 0)
		return cli_fail("put", &err);
	if (isatty(STDIN_FILENO))
		return cli_usage_error("put", "standard input is a terminal: pipe the data to back up into it");
	if ((st = cli_open_storage(&ctx)) == NULL)
		return 2;
	if (cli_load_master_key(&ctx, &master) != 0)
	{
		storage_close(st);
		return 2;
	}
	rc = repo_tenant_key_current(st, &master, args.tenant, false, &key, &err);
	if (rc != 0 && err.code == TB_ERR_NOT_FOUND)
	{
		/* A key command from the environment alone never makes a tenant BYOK by accident. */
		master.key_command = ctx.key_command_given ? ctx.key_command : NULL;
		err = (tb_error){0};
		rc = repo_tenant_key_create(st, &master, args.tenant, &key, NULL, &err);
	}
	keys_master_wipe(&master);
	if (rc == 0)
	{
		cli_progress_start(&progress, "put");
		args.put.progress = cli_progress_update;
		args.put.progress_ctx = &progress;
		rc = repo_put_fd(st, &key, args.engine, STDIN_FILENO, &args.put, &m, &err);
		cli_progress_end(&progress);
		keys_tenant_wipe(&key);
	}
	storage_close(st);
	if (rc != 0)
		return cli_fail("put", &err);
	printf("%s\n", m.object);
	return 0;
}
