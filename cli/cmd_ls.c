/* tenant-backup ls: backups from their manifests, newest first. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "repo.h"

static const char ls_usage[] = "Usage: tenant-backup ls [TENANT[/ENGINE]] [OPTIONS]\n"
							   "\n"
							   "Lists backups from their manifests, newest first: finished time, engine,\n"
							   "plaintext bytes, stored bytes, object key. Needs no key.\n"
							   "\n"
							   "  --storage URL   file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n";

static int
ls_print(const manifest *m, void *arg)
{
	(void) arg;
	printf("%s  %-8s  %14llu  %14llu  %s\n", m->finished, m->engine, (unsigned long long) m->plain_bytes,
		   (unsigned long long) m->stored_bytes, m->object);
	return 0;
}

int
cmd_ls(int argc, char **argv)
{
	static const struct option options[] = {CLI_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
	char scope[128] = "";
	char *engine = NULL;
	cli_context ctx;
	tb_error err = {0};
	storage *st;
	int rc = cli_parse("ls", ls_usage, argc, argv, options, &ctx, NULL, NULL);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (argc - optind > 1)
		return cli_usage_error("ls", "at most one TENANT[/ENGINE] argument");
	if (optind < argc)
	{
		if (strlen(argv[optind]) >= sizeof(scope))
			return cli_usage_error("ls", "'%s' is too long for TENANT[/ENGINE]", argv[optind]);
		strcpy(scope, argv[optind]);
		engine = strchr(scope, '/');
		if (engine != NULL)
			*engine++ = '\0';
	}
	if ((st = cli_open_storage(&ctx)) == NULL)
		return 2;
	rc = repo_list(st, scope[0] ? scope : NULL, engine, ls_print, NULL, &err);
	storage_close(st);
	return rc == 0 ? 0 : cli_fail("ls", &err);
}
