/*
 * tenant-backup check from a host without the control plane: the storage round trip
 * tenant_backup.check() runs (core's), the master key file, and whether it opens every
 * tenant's key documents in storage.
 */
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_offline.h"
#include "cli.h"
#include "cli_control.h"
#include "key_docs.h"
#include "names.h"
#include "storage/check.h"

static const char check_offline_usage[] =
	"Usage: tenant-backup check --storage URL --master-key FILE [--tenant T] [--json]\n"
	"                           [--offline] [OPTIONS]\n"
	"\n"
	"Without a control plane (no --control and no PG* variable, or --offline): writes,\n"
	"reads, lists and deletes a probe object at the storage root (" STORAGE_CHECK_PREFIX "*.probe,\n"
	"removed again), loads the master key file (mode 0600: a file others can read is an\n"
	"error, as for the server) and opens every key document of every tenant in storage\n"
	"(or of tenant T) with it. One line per check: ok, warning or error, with a hint.\n"
	"\n"
	"  --tenant T          check only tenant T's keys\n"
	"  --json              one JSON array of the checks (name, status, detail, hint)\n"
	"  --offline           never look for a control plane\n"
	"  --storage URL       file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n"
	"  --master-key FILE   master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n" CLI_KEY_COMMAND_USAGE
	"\nExit status: 0 no check in error, 1 a check in error, 2 bad usage.\n";

typedef struct check_args
{
	const char *tenant;
	bool json;
} check_args;

/* Where the rows go: printed as they come, or gathered into one JSON array. */
typedef struct check_out
{
	json_t *rows; /* --json */
	bool failed;
} check_out;

static void
check_report(void *ctx, const char *name, const char *status, const char *detail, const char *hint)
{
	check_out *out = ctx;
	char detail_text[CLI_ESCAPED_MAX], hint_text[CLI_ESCAPED_MAX];

	if (strcmp(status, "error") == 0)
		out->failed = true;
	if (out->rows != NULL)
	{
		json_array_append_new(out->rows, json_pack("{s:s, s:s, s:s, s:s?}", "name", name, "status", status, "detail",
												   detail, "hint", hint));
		return;
	}
	printf("%-18s %-7s %s%s%s\n", name, status, cli_escape(detail, detail_text, sizeof(detail_text)),
		   hint ? "; hint: " : "", hint ? cli_escape(hint, hint_text, sizeof(hint_text)) : "");
}

static bool
arg_is(const char *arg, const char *option)
{
	size_t len = strlen(option);

	return strncmp(arg, option, len) == 0 && (arg[len] == '\0' || arg[len] == '=');
}

bool
cli_check_wants_offline(int argc, char **argv)
{
	static const char *const pg_variables[] = {"PGHOST", "PGHOSTADDR", "PGPORT",       "PGDATABASE",
											   "PGUSER", "PGSERVICE",  "PGSERVICEFILE"};
	bool control = false;

	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
	{
		if (arg_is(argv[i], "--offline") || arg_is(argv[i], "--storage") || arg_is(argv[i], "--master-key") ||
			arg_is(argv[i], "--tenant"))
			return true;
		control = control || arg_is(argv[i], "--control");
	}
	for (size_t i = 0; !control && i < sizeof(pg_variables) / sizeof(pg_variables[0]); i++)
		control = getenv(pg_variables[i]) != NULL;
	return !control;
}

static int
check_option(int opt, const char *arg, void *state)
{
	check_args *args = state;

	if (opt == 't')
		args->tenant = arg;
	else if (opt == 'j')
		args->json = true;
	else if (opt != 'o')
		return cli_usage_error("check", "invalid option");
	return 0;
}

/* What to do about storage this user cannot use. */
static void
check_access_hint(const char *url, char *out, size_t size)
{
	struct passwd *pw = getpwuid(geteuid());

	if (strncmp(url, "file://", 7) == 0)
		snprintf(out, size,
				 "This runs as user \"%s\": give it write access to the storage directory and everything below it.",
				 pw ? pw->pw_name : "?");
	else
		snprintf(out, size,
				 "The credentials (AWS_* environment, shared files, web identity or instance metadata) "
				 "need s3:PutObject, s3:GetObject, s3:ListBucket and s3:DeleteObject on the bucket and "
				 "prefix.");
}

/* The count key documents of one tenant: one row, an error naming the first that does not open. */
static void
check_tenant_keys(check_out *out, storage *st, const master_key *master, const cli_key_doc *docs, size_t count)
{
	char name[96], detail[TB_ERROR_MSG_MAX + 256], hint[512];
	size_t opened = 0, byok = 0;

	snprintf(name, sizeof(name), "keys of %s", docs[0].tenant);
	for (size_t i = 0; i < count; i++)
	{
		char path[128];
		char *doc = NULL;
		size_t len;
		tb_error err = {0};
		int rc;

		snprintf(path, sizeof(path), "%s/keys/%s.json", docs[i].tenant, docs[i].key_id);
		if (storage_get(st, path, CLI_KEY_DOC_MAX, &doc, &len, &err) != 0)
		{
			snprintf(detail, sizeof(detail), "key %s of tenant '%s' cannot be read: %s", docs[i].key_id, docs[i].tenant,
					 err.msg);
			check_report(out, name, "error", detail, "Without its key document that key's backups cannot be read.");
			return;
		}
		if (keys_doc_is_command_wrapped(doc) == 1 && master->key_command == NULL)
		{
			byok++;
			free(doc);
			continue;
		}
		rc = cli_key_doc_opens(master, doc, &docs[i], &err);
		free(doc);
		if (rc != 0)
		{
			snprintf(detail, sizeof(detail), "key %s of tenant '%s' does not open: %s", docs[i].key_id, docs[i].tenant,
					 err.msg);
			snprintf(hint, sizeof(hint),
					 "This is not the master key tenant '%s''s keys were wrapped with: use the key file the control "
					 "plane and the agents use, or finish the master key rotation (tenant-backup rotate-master).",
					 docs[i].tenant);
			check_report(out, name, "error", detail, hint);
			return;
		}
		opened++;
	}
	if (byok > 0)
	{
		snprintf(detail, sizeof(detail),
				 "%zu key document(s) of tenant '%s' open with master key %s; %zu are wrapped by the tenant's own key "
				 "command and were not opened",
				 opened, docs[0].tenant, master->id, byok);
		check_report(out, name, "warning", detail, "Give --key-command (the tenant's own) to check those too.");
		return;
	}
	snprintf(detail, sizeof(detail), "%zu key document(s) of tenant '%s' open with master key %s", opened,
			 docs[0].tenant, master->id);
	check_report(out, name, "ok", detail, NULL);
}

/* Every tenant's key documents in storage (or tenant's), a row per tenant. */
static void
check_keys(check_out *out, storage *st, const master_key *master, const char *tenant)
{
	cli_key_docs list = {0};
	char prefix[128] = "", detail[TB_ERROR_MSG_MAX + 128];
	tb_error err = {0};
	size_t first = 0;

	if (tenant)
		snprintf(prefix, sizeof(prefix), "%s/keys/", tenant);
	if (storage_list(st, prefix, cli_key_docs_collect, &list, &err) != 0 || list.out_of_memory)
	{
		check_report(out, "tenant keys", "error",
					 list.out_of_memory ? "out of memory listing the key documents" : err.msg,
					 "The keys are found by listing the storage: it must list what it holds.");
		free(list.docs);
		return;
	}
	if (list.count == 0 && tenant)
	{
		snprintf(detail, sizeof(detail), "tenant '%s' has no key in storage %s", tenant, storage_describe(st));
		check_report(out, "tenant keys", "error", detail,
					 "Check the tenant's name and --storage: every tenant has its key documents under <tenant>/keys/.");
	}
	else if (list.count == 0)
	{
		snprintf(detail, sizeof(detail), "no tenant key in storage %s", storage_describe(st));
		check_report(out, "tenant keys", "warning", detail,
					 "A storage that holds backups holds their tenants' keys: check --storage.");
	}
	for (size_t i = 1; i <= list.count; i++)
		if (i == list.count || strcmp(list.docs[i].tenant, list.docs[first].tenant) != 0)
		{
			check_tenant_keys(out, st, master, &list.docs[first], i - first);
			first = i;
		}
	free(list.docs);
}

/* The master key file: it loads (0600, 64 hex digits); false with an error row when not. */
static bool
check_master_key(check_out *out, const cli_context *ctx, master_key *master)
{
	char detail[TB_ERROR_MSG_MAX + 128];
	tb_error err = {0};

	if (keys_master_load(ctx->master_key_file, master, &err) != 0)
	{
		check_report(out, "master key", "error", err.msg,
					 "Give --master-key (or TENANT_BACKUP_MASTER_KEY_FILE) the file of mode 0600 that 'tenant-backup "
					 "keygen' wrote, the one the control plane and the agents use.");
		return false;
	}
	master->key_command = ctx->key_command;
	snprintf(detail, sizeof(detail), "the master key file %s loads, mode 0600, key id %s", ctx->master_key_file,
			 master->id);
	check_report(out, "master key", "ok", detail, NULL);
	return true;
}

int
cmd_check_offline(int argc, char **argv)
{
	static const struct option options[] = {CLI_COMMON_OPTIONS,
											{"tenant", required_argument, NULL, 't'},
											{"json", no_argument, NULL, 'j'},
											{"offline", no_argument, NULL, 'o'},
											{NULL, 0, NULL, 0}};
	check_args args = {0};
	check_out out = {0};
	cli_context ctx;
	master_key master;
	tb_error err = {0};
	storage *st = NULL;
	char body[96], access_hint[512];
	int rc = cli_parse("check", check_offline_usage, argc, argv, options, &ctx, check_option, &args);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (optind != argc)
		return cli_usage_error("check", "unexpected argument '%s'", argv[optind]);
	if (args.tenant && names_check_tenant(args.tenant, &err) != 0)
		return cli_fail("check", &err);
	if (args.json && (out.rows = json_array()) == NULL)
		return cli_usage_error("check", "out of memory");

	if (ctx.storage_url == NULL || ctx.storage_url[0] == '\0')
		check_report(&out, "storage", "error", "no storage given, and no control plane to ask",
					 "Give --storage file:///dir or s3://bucket/prefix (or TENANT_BACKUP_STORAGE); for the control "
					 "plane's own check give --control or the PG* variables.");
	else if ((st = storage_open(ctx.storage_url, &err)) == NULL)
		check_report(&out, "storage", "error", err.msg, "Fix --storage (or TENANT_BACKUP_STORAGE).");
	else
	{
		check_report(&out, "storage", "ok", storage_describe(st), NULL);
		snprintf(body, sizeof(body), "tenant-backup check probe of process %ld", (long) getpid());
		check_access_hint(ctx.storage_url, access_hint, sizeof(access_hint));
		if (storage_check_round_trip(st, body, access_hint, check_report, &out, &err) < 0)
			check_report(&out, "storage write", "error", err.msg, "Retry: this machine could not make random bytes.");
	}
	if (check_master_key(&out, &ctx, &master))
	{
		if (st != NULL)
			check_keys(&out, st, &master, args.tenant);
		keys_master_wipe(&master);
	}
	if (st != NULL)
		storage_close(st);
	if (out.rows != NULL && cli_print_json(out.rows, &err) != 0)
		return cli_fail("check", &err);
	return out.failed ? CLI_EXIT_FAILED : CLI_EXIT_OK;
}
