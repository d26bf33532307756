/*
 * The reading commands' two copies of every backup: the primary storage (--storage)
 * and, with --replica, the replica, which holds the same keys. A backup is read from
 * the primary, and from the replica when the primary's copy is missing or fails
 * authentication; listings show each backup once, from whichever copy has it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "repo_copy.h"

int
cli_copies_open(cli_copies *c, const char *command, const cli_context *ctx)
{
	tb_error err = {0};
	char msg[CLI_ESCAPED_MAX];
	cli_context replica_ctx;

	c->command = command;
	c->replica = NULL;
	if ((c->primary = cli_open_storage(ctx)) == NULL)
		return -1;
	if (ctx->replica_url == NULL || ctx->replica_url[0] == '\0')
		return 0;
	/* A file:// replica that does not exist is a typo, not an empty copy (as for --storage). */
	replica_ctx = *ctx;
	replica_ctx.storage_url = ctx->replica_url;
	if (cli_storage_exists(&replica_ctx, &err) != 0 || (c->replica = storage_open(ctx->replica_url, &err)) == NULL)
	{
		fprintf(stderr, "tenant-backup %s: --replica: %s\n", command, cli_escape(err.msg, msg, sizeof(msg)));
		storage_close(c->primary);
		return -1;
	}
	return 0;
}

void
cli_copies_close(cli_copies *c)
{
	storage_close(c->primary);
	storage_close(c->replica);
}

int
cli_copies_read(cli_copies *c, const char *object, cli_copy_read *r, tb_error *err)
{
	const char *how;
	tb_error primary = {0};
	char note[2 * TB_ERROR_MSG_MAX], shown[4 * sizeof(note) + 1], where[CLI_ESCAPED_MAX], escaped[CLI_ESCAPED_MAX];

	r->handed_on = false;
	if (r->read(r, c->primary, &primary) == 0)
		return 0;
	how = repo_copy_failure(&primary);
	if (c->replica == NULL || how == NULL || r->handed_on)
	{
		*err = primary;
		return -1;
	}
	cli_escape(storage_describe(c->replica), where, sizeof(where));
	if (r->read(r, c->replica, err) != 0)
		return tb_error_prefix(err, "the primary copy %s: %s; the replica %s", how, primary.msg, where);
	repo_copy_fallback_note(note, sizeof(note), "read", where, how, primary.msg);
	fprintf(stderr, "tenant-backup %s: %s %s\n", c->command, cli_escape(object, escaped, sizeof(escaped)),
			cli_escape(note, shown, sizeof(shown)));
	return 0;
}

/* One storage's listing, kept: its valid backups and its problems. */
typedef struct copy_listing
{
	manifest *backups;
	size_t count, cap;
	struct
	{
		char *key, *why;
	} * problems;
	size_t nproblems, problems_cap;
	bool out_of_memory;
} copy_listing;

static int
copy_listing_backup(const manifest *m, void *arg)
{
	copy_listing *l = arg;

	if (l->count == l->cap)
	{
		size_t cap = l->cap ? l->cap * 2 : 64;
		manifest *grown = realloc(l->backups, cap * sizeof(*grown));

		if (grown == NULL)
		{
			l->out_of_memory = true;
			return 1;
		}
		l->backups = grown;
		l->cap = cap;
	}
	l->backups[l->count++] = *m;
	return 0;
}

static void
copy_listing_problem(const char *key, const char *why, void *arg)
{
	copy_listing *l = arg;

	if (l->nproblems == l->problems_cap)
	{
		size_t cap = l->problems_cap ? l->problems_cap * 2 : 16;
		void *grown = realloc(l->problems, cap * sizeof(*l->problems));

		if (grown == NULL)
		{
			l->out_of_memory = true;
			return;
		}
		l->problems = grown;
		l->problems_cap = cap;
	}
	l->problems[l->nproblems].key = strdup(key);
	l->problems[l->nproblems].why = strdup(why);
	if (l->problems[l->nproblems].key == NULL || l->problems[l->nproblems].why == NULL)
		l->out_of_memory = true;
	l->nproblems++;
}

static void
copy_listing_free(copy_listing *l)
{
	for (size_t i = 0; i < l->nproblems; i++)
	{
		free(l->problems[i].key);
		free(l->problems[i].why);
	}
	free(l->problems);
	free(l->backups);
}

static int
copy_listing_by_object(const void *a, const void *b)
{
	return strcmp(((const manifest *) a)->object, ((const manifest *) b)->object);
}

/* Whether l (its backups sorted by copy_listing_by_object) holds a valid backup whose object or manifest is key. */
static bool
copy_listing_has(const copy_listing *l, const char *key)
{
	manifest wanted;
	size_t len = strlen(key);

	if (len >= sizeof(wanted.object))
		return false;
	/* A manifest's key names its object: <stem>.json -> <stem>.tbk. */
	if (len > 5 && strcmp(key + len - 5, ".json") == 0)
		snprintf(wanted.object, sizeof(wanted.object), "%.*s.tbk", (int) (len - 5), key);
	else
		snprintf(wanted.object, sizeof(wanted.object), "%s", key);
	return l->count > 0 && bsearch(&wanted, l->backups, l->count, sizeof(manifest), copy_listing_by_object) != NULL;
}

/*
 * A problem of one copy (in: "the primary storage", "the replica") is the caller's
 * unless the other copy has that backup whole: then it is only noted on stderr.
 */
static void
copy_listing_report(const cli_copies *c, const copy_listing *l, const copy_listing *other, const char *in,
					const cli_listing_handlers *handlers)
{
	char key[CLI_ESCAPED_MAX], why[CLI_ESCAPED_MAX], text[2 * TB_ERROR_MSG_MAX];

	for (size_t i = 0; i < l->nproblems; i++)
	{
		if (copy_listing_has(other, l->problems[i].key))
		{
			fprintf(stderr, "tenant-backup %s: in %s, %s: %s; the other copy is used\n", c->command, in,
					cli_escape(l->problems[i].key, key, sizeof(key)), cli_escape(l->problems[i].why, why, sizeof(why)));
			continue;
		}
		snprintf(text, sizeof(text), "in %s: %s", in, l->problems[i].why);
		handlers->problem(l->problems[i].key, text, handlers->arg);
	}
}

int
cli_copies_list(cli_copies *c, const char *tenant, const char *engine, const cli_listing_handlers *handlers,
				tb_error *err)
{
	copy_listing primary = {0}, replica = {0};
	cli_listing_handlers collect = {
		.backup = copy_listing_backup, .problem = copy_listing_problem, .below = handlers->below};
	tb_error primary_err = {0}, replica_err = {0};
	char msg[CLI_ESCAPED_MAX], where[CLI_ESCAPED_MAX];
	int primary_rc, replica_rc, rc = 0;
	manifest *merged = NULL;
	size_t count = 0;

	if (c->replica == NULL)
		return cli_list_backups(c->primary, tenant, engine, handlers, err);
	collect.arg = &primary;
	primary_rc = cli_list_backups(c->primary, tenant, engine, &collect, &primary_err);
	collect.arg = &replica;
	replica_rc = cli_list_backups(c->replica, tenant, engine, &collect, &replica_err);
	if (primary_rc != 0 && replica_rc != 0)
		rc = tb_error_set(err, primary_err.code, "%s; the replica %s: %s", primary_err.msg,
						  storage_describe(c->replica), replica_err.msg);
	else if (primary.out_of_memory || replica.out_of_memory ||
			 (merged = calloc(primary.count + replica.count + 1, sizeof(manifest))) == NULL)
		rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory listing backups");
	if (rc == 0)
	{
		/* One storage that cannot be listed leaves the other's backups: said, not fatal. */
		if (primary_rc != 0)
			fprintf(stderr, "tenant-backup %s: the primary storage cannot be listed (%s); listing the replica %s\n",
					c->command, cli_escape(primary_err.msg, msg, sizeof(msg)),
					cli_escape(storage_describe(c->replica), where, sizeof(where)));
		if (replica_rc != 0)
			fprintf(stderr, "tenant-backup %s: the replica cannot be listed: %s\n", c->command,
					cli_escape(replica_err.msg, msg, sizeof(msg)));
		if (primary.count > 0)
			qsort(primary.backups, primary.count, sizeof(manifest), copy_listing_by_object);
		if (replica.count > 0)
			qsort(replica.backups, replica.count, sizeof(manifest), copy_listing_by_object);
		copy_listing_report(c, &primary, &replica, "the primary storage", handlers);
		copy_listing_report(c, &replica, &primary, "the replica", handlers);
		for (size_t i = 0; i < primary.count; i++)
			merged[count++] = primary.backups[i];
		for (size_t i = 0; i < replica.count; i++)
			if (!copy_listing_has(&primary, replica.backups[i].object))
				merged[count++] = replica.backups[i];
		if (count > 0)
			qsort(merged, count, sizeof(manifest), cli_manifest_newest_first);
		for (size_t i = 0; i < count; i++)
			if (handlers->backup(&merged[i], handlers->arg) != 0)
				break;
	}
	free(merged);
	copy_listing_free(&primary);
	copy_listing_free(&replica);
	return rc;
}
