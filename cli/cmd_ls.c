/* tenant-backup ls: backups from their manifests, newest first. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char ls_usage[] =
	"Usage: tenant-backup ls [TENANT[/ENGINE]] [OPTIONS]\n"
	"\n"
	"Lists backups from their manifests, newest first, under a header: finished\n"
	"time, engine, the database the backup is of (\"-\" when its manifest does not say),\n"
	"backup id, plaintext and stored size, object key. Needs no key. Only what lies below\n"
	"its own tenant and engine counts; a manifest that is invalid, names another\n"
	"object or has lost its object, and an object without a manifest, are skipped\n"
	"with a warning, and the exit status is then 1. A storage that does not exist\n"
	"is an error (exit status 1), not an empty list.\n"
	"\n"
	"  --json          one JSON object: {\"backups\": [manifests], \"skipped\": [{\"key\", \"why\"}]}\n"
	"                  (a manifest's \"database\" is null when it does not say)\n"
	"                  (sizes in bytes; skipped keys and reasons escaped as in the text)\n"
	"  --storage URL   file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n"
	"  --replica URL   also list the replica storage: each backup once, from whichever copy\n"
	"                  has it whole; what only one copy lacks is noted (env TENANT_BACKUP_REPLICA_STORAGE)\n";

typedef struct ls_state
{
	int skipped;
	bool header_printed;
	json_t *backups; /* --json */
	json_t *problems;
} ls_state;

/*
 * A manifest's fields were validated (names, times, hex, numbers: plain ASCII); its
 * database has no control characters but any other byte, so it is escaped.
 */
static int
ls_print(const manifest *m, void *arg)
{
	ls_state *state = arg;
	char plain[32], stored[32], database[CLI_ESCAPED_MAX];

	if (state->backups != NULL)
	{
		/* JSON strings are UTF-8: a name that is not comes escaped as in the text. */
		json_t *db = m->database[0] == '\0' ? json_null() : json_string(m->database);

		if (db == NULL)
			db = json_string(cli_escape(m->database, database, sizeof(database)));
		return json_array_append_new(state->backups,
									 json_pack("{s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "tenant",
											   m->tenant, "engine", m->engine, "database", db, "backup_id",
											   m->backup_id, "started", m->started, "finished", m->finished, "object",
											   m->object, "plain_bytes", (json_int_t) m->plain_bytes, "stored_bytes",
											   (json_int_t) m->stored_bytes, "sha256", m->sha256));
	}
	if (!state->header_printed)
		printf("%-20s  %-8s  %-16s  %-10s  %10s  %10s  %s\n", "FINISHED", "ENGINE", "DATABASE", "BACKUP ID", "SIZE",
			   "STORED", "OBJECT");
	state->header_printed = true;
	printf("%-20s  %-8s  %-16s  %-10s  %10s  %10s  %s\n", m->finished, m->engine,
		   m->database[0] ? cli_escape(m->database, database, sizeof(database)) : "-", m->backup_id,
		   cli_human_bytes(m->plain_bytes, plain, sizeof(plain)),
		   cli_human_bytes(m->stored_bytes, stored, sizeof(stored)), m->object);
	return 0;
}

static void
ls_warn(const char *key, const char *why, void *arg)
{
	ls_state *state = arg;
	char escaped_key[CLI_ESCAPED_MAX], escaped_why[CLI_ESCAPED_MAX];

	state->skipped++;
	cli_escape(key, escaped_key, sizeof(escaped_key));
	cli_escape(why, escaped_why, sizeof(escaped_why));
	if (state->problems != NULL)
		json_array_append_new(state->problems, json_pack("{s:s, s:s}", "key", escaped_key, "why", escaped_why));
	fprintf(stderr, "tenant-backup ls: skipping %s: %s\n", escaped_key, escaped_why);
}

static int
ls_option(int opt, const char *arg, void *state)
{
	(void) arg;
	if (opt != 'j')
		return cli_usage_error("ls", "invalid option");
	((ls_state *) state)->backups = json_array();
	((ls_state *) state)->problems = json_array();
	return 0;
}

int
cmd_ls(int argc, char **argv)
{
	static const struct option options[] = {
		{"json", no_argument, NULL, 'j'}, CLI_REPLICA_OPTION, CLI_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
	char scope[128] = "";
	char *engine = NULL;
	cli_context ctx;
	tb_error err = {0};
	cli_copies copies;
	ls_state state = {0};
	int rc = cli_parse("ls", ls_usage, argc, argv, options, &ctx, ls_option, &state);

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
	if (cli_storage_exists(&ctx, &err) != 0)
		return cli_fail("ls", &err);
	if (cli_copies_open(&copies, "ls", &ctx) != 0)
		return 2;
	rc = cli_copies_list(&copies, scope[0] ? scope : NULL, engine,
						 &(cli_listing_handlers){.backup = ls_print, .problem = ls_warn, .arg = &state}, &err);
	cli_copies_close(&copies);
	if (rc == 0 && state.backups != NULL)
		rc = cli_print_json(json_pack("{s:O, s:O}", "backups", state.backups, "skipped", state.problems), &err);
	json_decref(state.backups);
	json_decref(state.problems);
	if (rc != 0)
		return cli_fail("ls", &err);
	return state.skipped ? 1 : 0;
}
