/*
 * Backups as storage holds them, believing nothing it says: a listing is a hint, a
 * manifest is checked field by field and must be its object's, and only keys below
 * their own tenant and engine count. Also the required manifest of one object.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "repo.h"

int
cli_backup_manifest(storage *st, const master_key *master, const char *object, manifest *m, tb_error *err)
{
	char key[MANIFEST_OBJECT_MAX + 8];
	manifest_object_name name;
	repo_reader *r;
	char *json;
	size_t len;
	int rc;

	if (manifest_object_parse(object, &name, err) != 0 || repo_manifest_key(object, key, sizeof(key), err) != 0)
		return tb_error_prefix(err, "object '%s'", object);
	if (storage_get(st, key, MANIFEST_MAX_BYTES, &json, &len, err) != 0)
	{
		if (err->code != TB_ERR_NOT_FOUND)
			return -1;
		/* What its header says first, if that is worse: its tenant key gone, or it belongs elsewhere. */
		if ((r = repo_reader_open(st, master, object, NULL, err)) == NULL)
			return -1;
		repo_reader_close(r);
		return tb_error_set(err, TB_ERR_NOT_FOUND,
							"object '%s' has no manifest: it is not a complete backup, or its manifest was removed "
							"(an object put in another's place is not trusted without one)",
							object);
	}
	rc = manifest_from_json(json, key, m, err);
	free(json);
	return rc;
}

typedef struct listing_key
{
	char *key;
	bool accounted; /* .tbk: its manifest was listed */
} listing_key;

typedef struct listing_keys
{
	listing_key *items;
	size_t count, cap;
} listing_keys;

typedef struct listing
{
	storage *st;
	const char *tenant, *engine;
	const cli_listing_handlers *handlers;
	listing_keys manifests, objects;
	bool out_of_memory;
} listing;

static int
listing_keys_add(listing_keys *keys, const char *key)
{
	if (keys->count == keys->cap)
	{
		size_t cap = keys->cap ? keys->cap * 2 : 64;
		listing_key *grown = realloc(keys->items, cap * sizeof(*grown));

		if (grown == NULL)
			return -1;
		keys->items = grown;
		keys->cap = cap;
	}
	if ((keys->items[keys->count].key = strdup(key)) == NULL)
		return -1;
	keys->items[keys->count++].accounted = false;
	return 0;
}

static void
listing_keys_free(listing_keys *keys)
{
	for (size_t i = 0; i < keys->count; i++)
		free(keys->items[i].key);
	free(keys->items);
}

static int
listing_key_order(const void *a, const void *b)
{
	return strcmp(((const listing_key *) a)->key, ((const listing_key *) b)->key);
}

/* Whether key is directly in a place where only backups live: <tenant>/<engine>/ or <tenant>/postgres/base/. */
static bool
listing_in_backup_place(const listing *l, const char *key)
{
	char copy[MANIFEST_OBJECT_MAX];
	char *parts[4] = {NULL};
	int count = 0;
	tb_error ignored = {0};

	if (strlen(key) >= sizeof(copy))
		return false;
	strcpy(copy, key);
	for (char *p = strtok(copy, "/"); p != NULL; p = strtok(NULL, "/"))
		if (count == 4 || (parts[count++] = p) == NULL)
			return false;
	return (count == 3 || (count == 4 && strcmp(parts[1], "postgres") == 0 && strcmp(parts[2], "base") == 0)) &&
		   names_check_tenant(parts[0], &ignored) == 0 && names_check_engine(parts[1], &ignored) == 0 &&
		   (l->tenant == NULL || strcmp(parts[0], l->tenant) == 0) &&
		   (l->engine == NULL || strcmp(parts[1], l->engine) == 0);
}

/*
 * Keeps the keys of backup objects (.tbk) and of their manifests (.json) below the
 * tenant and engine asked for, by what the key says (the storage server's listing
 * decides nothing); archived WAL, key documents and the like are not backups.
 */
static int
listing_add(const char *key, const storage_info *info, void *arg)
{
	listing *l = arg;
	size_t len = strlen(key);
	char object[MANIFEST_OBJECT_MAX + 8];
	manifest_object_name name;
	tb_error ignored = {0};
	bool is_manifest = len > 5 && strcmp(key + len - 5, ".json") == 0;
	bool is_object = len > 4 && strcmp(key + len - 4, ".tbk") == 0;

	(void) info;
	if ((!is_manifest && !is_object) || len >= sizeof(object) - 1)
		return 0;
	snprintf(object, sizeof(object), "%.*s.tbk", (int) (len - (is_manifest ? 5 : 4)), key);
	if (manifest_object_parse(object, &name, &ignored) != 0)
	{
		if (listing_in_backup_place(l, key))
			l->handlers->problem(key, "not a backup: its name is not <time>-<id>", l->handlers->arg);
		return 0;
	}
	if (name.kind == MANIFEST_OBJECT_WAL || (l->tenant && strcmp(name.tenant, l->tenant) != 0) ||
		(l->engine && strcmp(name.engine, l->engine) != 0))
		return 0;
	if (listing_keys_add(is_manifest ? &l->manifests : &l->objects, key) != 0)
	{
		l->out_of_memory = true;
		return 1;
	}
	return 0;
}

int
cli_manifest_newest_first(const void *a, const void *b)
{
	const manifest *ma = a, *mb = b;
	int c = strcmp(mb->started, ma->started);

	return c != 0 ? c : strcmp(mb->object, ma->object);
}

/* Reads and validates every manifest kept, each of which must have its object listed. */
static manifest *
listing_read_manifests(listing *l, size_t *count)
{
	manifest *valid = calloc(l->manifests.count + 1, sizeof(manifest));

	*count = 0;
	if (valid == NULL)
		return NULL;
	if (l->objects.count > 0)
		qsort(l->objects.items, l->objects.count, sizeof(listing_key), listing_key_order);
	for (size_t i = 0; i < l->manifests.count; i++)
	{
		const char *key = l->manifests.items[i].key;
		char sibling[MANIFEST_OBJECT_MAX + 8];
		tb_error err = {0};
		listing_key wanted = {.key = sibling}, *object;
		char *json;
		size_t len;
		int rc;

		/* Its object is reported with the manifest's problem, not a second time. */
		snprintf(sibling, sizeof(sibling), "%.*s.tbk", (int) (strlen(key) - 5), key);
		object = l->objects.count == 0
					 ? NULL
					 : bsearch(&wanted, l->objects.items, l->objects.count, sizeof(listing_key), listing_key_order);
		if (object != NULL)
			object->accounted = true;
		if (storage_get(l->st, key, MANIFEST_MAX_BYTES, &json, &len, &err) != 0)
		{
			if (err.code != TB_ERR_NOT_FOUND) /* else removed while listing */
				l->handlers->problem(key, err.msg, l->handlers->arg);
			continue;
		}
		rc = manifest_from_json(json, key, &valid[*count], &err);
		free(json);
		if (rc != 0)
			l->handlers->problem(key, err.msg, l->handlers->arg);
		else if (object == NULL)
			l->handlers->problem(key, "its backup object is missing", l->handlers->arg);
		else
			(*count)++;
	}
	return valid;
}

int
cli_list_backups(storage *st, const char *tenant, const char *engine, const cli_listing_handlers *handlers,
				 tb_error *err)
{
	listing l = {.st = st, .tenant = tenant, .engine = engine, .handlers = handlers};
	char prefix[128] = "";
	manifest *valid = NULL;
	size_t count = 0;
	int rc;

	if ((tenant && names_check_tenant(tenant, err) != 0) || (engine && names_check_engine(engine, err) != 0))
		return -1;
	if (tenant)
		snprintf(prefix, sizeof(prefix), "%s/%s%s%s", tenant, engine ? engine : "", engine ? "/" : "",
				 engine && handlers->below ? handlers->below : "");
	rc = storage_list(st, prefix, listing_add, &l, err);
	if (rc == 0 && !l.out_of_memory && (valid = listing_read_manifests(&l, &count)) == NULL)
		l.out_of_memory = true;
	if (l.out_of_memory)
		rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory listing backups");
	if (rc == 0)
	{
		for (size_t i = 0; i < l.objects.count; i++)
			if (!l.objects.items[i].accounted)
				handlers->problem(l.objects.items[i].key, "a backup object without a manifest", handlers->arg);
		if (count > 0)
			qsort(valid, count, sizeof(manifest), cli_manifest_newest_first);
		for (size_t i = 0; i < count; i++)
			if (handlers->backup(&valid[i], handlers->arg) != 0)
				break;
	}
	free(valid);
	listing_keys_free(&l.manifests);
	listing_keys_free(&l.objects);
	return rc;
}
