/*
 * tenant-backup rotate-master: the tenant key documents in storage re-wrapped by a new
 * master key, so that the old one can be retired. Backups are not rewritten: their
 * data keys are wrapped by tenant keys, which stay the same.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "key_docs.h"
#include "names.h"
#include "repo.h"

static const char rotate_master_usage[] =
	"Usage: tenant-backup rotate-master --master-key OLD --new-master-key NEW [--tenant T] [OPTIONS]\n"
	"\n"
	"Re-wraps with the master key NEW every tenant key document in storage\n"
	"(<tenant>/keys/<key id>.json) that the master key OLD wraps: each one is replaced\n"
	"atomically and read back with NEW. Backups are not rewritten. Running it again is\n"
	"safe: documents NEW wraps already count as already done. Keys wrapped by a tenant's\n"
	"own key command (bring your own key) do not depend on the master key and are left\n"
	"as they are. Prints a line per tenant and a total (rewrapped, already, byok). Exits\n"
	"non-zero if any document could not be re-wrapped (one wrapped by neither key, say):\n"
	"then keep OLD, which still opens that tenant's backups. The control plane's catalog\n"
	"holds its own copies of the tenant keys, which this does not touch.\n"
	"\n"
	"  --master-key OLD       the master key file in use (env TENANT_BACKUP_MASTER_KEY_FILE)\n"
	"  --new-master-key NEW   the master key file to use from now on (tenant-backup keygen)\n"
	"  --tenant T             only tenant T's keys (default: every tenant's)\n"
	"  --storage URL          file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n";

typedef struct rotate_args
{
	const char *new_master_key_file;
	const char *tenant;
} rotate_args;

typedef struct rotate_counts
{
	unsigned long rewrapped, already, byok, failed;
} rotate_counts;

static int
rotate_option(int opt, const char *arg, void *state)
{
	rotate_args *args = state;

	if (opt == 'n')
		args->new_master_key_file = arg;
	else if (opt == 't')
		args->tenant = arg;
	else
		return cli_usage_error("rotate-master", "invalid option");
	return 0;
}

int
cli_key_docs_collect(const char *key, const storage_info *info, void *arg)
{
	cli_key_docs *list = arg;
	const char *slash = strchr(key, '/');
	const char *name;
	tb_error ignored = {0};
	cli_key_doc doc;

	(void) info;
	if (slash == NULL || (size_t) (slash - key) >= sizeof(doc.tenant) || strncmp(slash, "/keys/", 6) != 0)
		return 0;
	memset(&doc, 0, sizeof(doc));
	name = slash + 6;
	if (strlen(name) != KEYS_ID_LEN + 5 || strspn(name, "0123456789abcdef") != KEYS_ID_LEN ||
		strcmp(name + KEYS_ID_LEN, ".json") != 0)
		return 0;
	memcpy(doc.tenant, key, (size_t) (slash - key));
	memcpy(doc.key_id, name, KEYS_ID_LEN);
	if (names_check_tenant(doc.tenant, &ignored) != 0)
		return 0;
	if (list->count == list->cap)
	{
		size_t cap = list->cap ? list->cap * 2 : 64;
		cli_key_doc *grown = realloc(list->docs, cap * sizeof(*grown));

		if (grown == NULL)
		{
			list->out_of_memory = true;
			return 1;
		}
		list->docs = grown;
		list->cap = cap;
	}
	list->docs[list->count++] = doc;
	return 0;
}

/* The id of the master key a document says wraps it, into out ("" if it names none). */
static void
rotate_doc_master_id(const char *json, char *out, size_t size)
{
	json_t *doc = json_loads(json, 0, NULL);
	const char *id = doc ? json_string_value(json_object_get(doc, "master_key_id")) : NULL;

	snprintf(out, size, "%s", id ? id : "");
	json_decref(doc);
}

int
cli_key_doc_opens(const master_key *master, const char *doc, const cli_key_doc *d, tb_error *err)
{
	tenant_key key;
	int rc = keys_tenant_unwrap(master, doc, d->tenant, d->key_id, &key, err);

	keys_tenant_wipe(&key);
	return rc;
}

/* One key document: re-wrapped, already done or BYOK (counted), or -1 with err set. */
static int
rotate_one(storage *st, const master_key *old_master, const master_key *new_master, const cli_key_doc *d,
		   rotate_counts *counts, tb_error *err)
{
	char path[256], master_id[80];
	char *doc = NULL, *new_doc = NULL;
	size_t len;
	int kind, rc = -1;

	snprintf(path, sizeof(path), "%s/keys/%s.json", d->tenant, d->key_id);
	if (storage_get(st, path, CLI_KEY_DOC_MAX, &doc, &len, err) != 0)
		return tb_error_prefix(err, "unable to read key %s of tenant '%s'", d->key_id, d->tenant);
	kind = keys_doc_is_command_wrapped(doc);
	if (kind < 0)
	{
		tb_error_set(err, TB_ERR_CORRUPT, "key %s of tenant '%s' (%s) is not a valid key document", d->key_id,
					 d->tenant, path);
		goto done;
	}
	if (kind == 1)
	{
		counts->byok++;
		rc = 0;
		goto done;
	}
	rotate_doc_master_id(doc, master_id, sizeof(master_id));
	if (strcmp(master_id, new_master->id) == 0)
	{
		if ((rc = cli_key_doc_opens(new_master, doc, d, err)) == 0)
			counts->already++;
		goto done;
	}
	if (strcmp(master_id, old_master->id) != 0)
	{
		tb_error_set(err, TB_ERR_KEY,
					 "key %s of tenant '%s' is wrapped by master key %s, which is neither the old master key %s nor "
					 "the new master key %s; left as it is",
					 d->key_id, d->tenant, master_id[0] ? master_id : "(none named)", old_master->id, new_master->id);
		goto done;
	}
	/* It must open with the old key as what it says it is before it is replaced. */
	if (cli_key_doc_opens(old_master, doc, d, err) != 0 ||
		repo_tenant_key_rewrap(st, old_master, new_master, d->tenant, doc, &new_doc, err) != 0)
		goto done;
	free(doc);
	doc = NULL;
	if (storage_get(st, path, CLI_KEY_DOC_MAX, &doc, &len, err) != 0 || cli_key_doc_opens(new_master, doc, d, err) != 0)
	{
		tb_error_prefix(err, "reading back the re-wrapped key %s of tenant '%s'", d->key_id, d->tenant);
		goto done;
	}
	counts->rewrapped++;
	rc = 0;
done:
	free(doc);
	free(new_doc);
	return rc;
}

static void
rotate_print(const char *label, const rotate_counts *c)
{
	printf("%s: rewrapped %lu, already %lu, byok %lu", label, c->rewrapped, c->already, c->byok);
	if (c->failed)
		printf(", FAILED %lu", c->failed);
	printf("\n");
}

static int
rotate_all(storage *st, const master_key *old_master, const master_key *new_master, const cli_key_docs *list)
{
	rotate_counts total = {0}, tenant = {0};

	for (size_t i = 0; i < list->count; i++)
	{
		const cli_key_doc *d = &list->docs[i];
		tb_error err = {0};

		if (rotate_one(st, old_master, new_master, d, &tenant, &err) != 0)
		{
			tenant.failed++;
			cli_fail("rotate-master", &err);
		}
		/* Listings are in lexical order: a tenant's keys come together. */
		if (i + 1 == list->count || strcmp(d->tenant, list->docs[i + 1].tenant) != 0)
		{
			rotate_print(d->tenant, &tenant);
			fflush(stdout);
			total.rewrapped += tenant.rewrapped;
			total.already += tenant.already;
			total.byok += tenant.byok;
			total.failed += tenant.failed;
			tenant = (rotate_counts){0};
		}
	}
	rotate_print("total", &total);
	if (total.failed)
	{
		fprintf(stderr,
				"tenant-backup rotate-master: %lu key document(s) not re-wrapped: keep the old master key %s, "
				"fix what is named above and run rotate-master again\n",
				total.failed, old_master->id);
		return 1;
	}
	return 0;
}

int
cmd_rotate_master(int argc, char **argv)
{
	static const struct option options[] = {{"new-master-key", required_argument, NULL, 'n'},
											{"tenant", required_argument, NULL, 't'},
											CLI_COMMON_OPTIONS,
											{NULL, 0, NULL, 0}};
	rotate_args args = {0};
	cli_key_docs list = {0};
	cli_context ctx;
	tb_error err = {0};
	master_key old_master, new_master;
	cli_context new_ctx;
	char prefix[128] = "";
	storage *st;
	int rc = cli_parse("rotate-master", rotate_master_usage, argc, argv, options, &ctx, rotate_option, &args);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (optind != argc)
		return cli_usage_error("rotate-master", "unexpected argument '%s'", argv[optind]);
	if (args.new_master_key_file == NULL)
		return cli_usage_error("rotate-master", "--new-master-key FILE is required");
	if (args.tenant)
	{
		if (names_check_tenant(args.tenant, &err) != 0)
			return cli_fail("rotate-master", &err);
		snprintf(prefix, sizeof(prefix), "%s/keys/", args.tenant);
	}
	if ((st = cli_open_storage(&ctx)) == NULL)
		return 2;
	new_ctx = ctx;
	new_ctx.master_key_file = args.new_master_key_file;
	if (cli_load_master_key(&ctx, &old_master) != 0)
	{
		storage_close(st);
		return 2;
	}
	if (cli_load_master_key(&new_ctx, &new_master) != 0)
	{
		keys_master_wipe(&old_master);
		storage_close(st);
		return 2;
	}
	/* Only master-wrapped documents are touched: no key command is ever run here. */
	old_master.key_command = new_master.key_command = NULL;
	if (strcmp(old_master.id, new_master.id) == 0)
		rc = cli_usage_error("rotate-master", "the new master key is the old one (key id %s)", old_master.id);
	else if (storage_list(st, prefix, cli_key_docs_collect, &list, &err) != 0)
		rc = cli_fail("rotate-master", &err);
	else if (list.out_of_memory)
	{
		fprintf(stderr, "tenant-backup rotate-master: out of memory listing the key documents\n");
		rc = 1;
	}
	else if (list.count == 0 && args.tenant)
	{
		fprintf(stderr, "tenant-backup rotate-master: tenant '%s' has no key in storage %s\n", args.tenant,
				storage_describe(st));
		rc = 1;
	}
	else
	{
		if (list.count == 0)
			fprintf(stderr, "tenant-backup rotate-master: no tenant key in storage %s\n", storage_describe(st));
		rc = rotate_all(st, &old_master, &new_master, &list);
	}
	free(list.docs);
	keys_master_wipe(&old_master);
	keys_master_wipe(&new_master);
	storage_close(st);
	return rc;
}
