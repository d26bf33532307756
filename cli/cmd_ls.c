/* tenant-backup ls: backups from their manifests, newest first. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char ls_usage[] = "Usage: tenant-backup ls [TENANT[/ENGINE]] [OPTIONS]\n"
							   "\n"
							   "Lists backups from their manifests, newest first: finished time, engine,\n"
							   "plaintext bytes, stored bytes, object key. Needs no key. Only what lies below\n"
							   "its own tenant and engine counts; a manifest that is invalid, names another\n"
							   "object or has lost its object, and an object without a manifest, are skipped\n"
							   "with a warning, and the exit status is then 1.\n"
							   "\n"
							   "  --storage URL   file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n";

static int
ls_print(const manifest *m, void *arg)
{
	char finished[CLI_ESCAPED_MAX], object[CLI_ESCAPED_MAX];

	(void) arg;
	printf("%s  %-8s  %14llu  %14llu  %s\n", cli_escape(m->finished, finished, sizeof(finished)), m->engine,
		   (unsigned long long) m->plain_bytes, (unsigned long long) m->stored_bytes,
		   cli_escape(m->object, object, sizeof(object)));
	return 0;
}

static void
ls_warn(const char *key, const char *why, void *arg)
{
	char escaped_key[CLI_ESCAPED_MAX], escaped_why[CLI_ESCAPED_MAX];

	(*(int *) arg)++;
	fprintf(stderr, "tenant-backup ls: skipping %s: %s\n", cli_escape(key, escaped_key, sizeof(escaped_key)),
			cli_escape(why, escaped_why, sizeof(escaped_why)));
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
	int skipped = 0;
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
	rc = cli_list_backups(st, scope[0] ? scope : NULL, engine,
						  &(cli_listing_handlers){.backup = ls_print, .problem = ls_warn, .arg = &skipped}, &err);
	storage_close(st);
	if (rc != 0)
		return cli_fail("ls", &err);
	return skipped ? 1 : 0;
}
