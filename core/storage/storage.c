/*
 * Storage dispatch: the one place that maps a URL scheme to a driver, plus the
 * small-object helpers every caller shares.
 */
#include "storage.h"

#include <stdlib.h>
#include <string.h>

static const storage_driver *const storage_drivers[] = {&storage_file_driver, &storage_s3_driver};

/* The driver of url's scheme; NULL with err set when it has none or no driver serves it. */
static const storage_driver *
storage_driver_of(const char *url, tb_error *err)
{
	const char *colon;
	size_t scheme_len;

	if (url == NULL || url[0] == '\0')
	{
		tb_error_set(err, TB_ERR_INVALID, "no storage URL given (use --storage or TENANT_BACKUP_STORAGE)");
		return NULL;
	}
	colon = strstr(url, "://");
	if (colon == NULL)
	{
		tb_error_set(err, TB_ERR_INVALID, "storage URL '%s' has no scheme: use file:///dir or s3://bucket/prefix", url);
		return NULL;
	}
	scheme_len = (size_t) (colon - url);
	for (size_t i = 0; i < sizeof(storage_drivers) / sizeof(storage_drivers[0]); i++)
	{
		const storage_driver *driver = storage_drivers[i];

		if (strlen(driver->scheme) == scheme_len && strncmp(driver->scheme, url, scheme_len) == 0)
			return driver;
	}
	tb_error_set(err, TB_ERR_INVALID, "unsupported storage scheme in '%.*s://…': use file:// or s3://",
				 (int) scheme_len, url);
	return NULL;
}

storage *
storage_open(const char *url, tb_error *err)
{
	const storage_driver *driver = storage_driver_of(url, err);

	return driver ? driver->open(url, err) : NULL;
}

int
storage_check_url(const char *url, tb_error *err)
{
	const storage_driver *driver = storage_driver_of(url, err);
	storage *st;

	if (driver == NULL)
		return -1;
	if (driver->check_url != NULL)
		return driver->check_url(url, err);
	if ((st = driver->open(url, err)) == NULL)
		return -1;
	storage_close(st);
	return 0;
}

void
storage_close(storage *st)
{
	if (st != NULL)
		st->driver->close(st);
}

const char *
storage_describe(const storage *st)
{
	return st->description;
}

int
storage_key_check(const char *key, tb_error *err)
{
	const char *part = key;

	if (key == NULL || key[0] == '\0')
		return tb_error_set(err, TB_ERR_INVALID, "empty storage key");
	for (;;)
	{
		const char *slash = strchr(part, '/');
		size_t len = slash ? (size_t) (slash - part) : strlen(part);

		if (len == 0 || (len == 1 && part[0] == '.') || (len == 2 && part[0] == '.' && part[1] == '.'))
			return tb_error_set(err, TB_ERR_INVALID, "invalid storage key '%s'", key);
		if (slash == NULL)
			break;
		part = slash + 1;
	}
	for (const char *c = key; *c; c++)
		if ((unsigned char) *c < 0x20 || *c == '\\')
			return tb_error_set(err, TB_ERR_INVALID, "invalid character in storage key '%s'", key);
	return 0;
}

storage_write *
storage_write_open(storage *st, const char *key, tb_error *err)
{
	if (storage_key_check(key, err) != 0)
		return NULL;
	return st->driver->write_open(st, key, err);
}

int
storage_write_append(storage_write *w, const void *buf, size_t len, tb_error *err)
{
	return w->st->driver->write_append(w, buf, len, err);
}

int
storage_write_commit(storage_write *w, tb_error *err)
{
	return w->st->driver->write_commit(w, err);
}

void
storage_write_abort(storage_write *w)
{
	if (w != NULL)
		w->st->driver->write_abort(w);
}

storage_read *
storage_read_open(storage *st, const char *key, uint64_t offset, uint64_t length, tb_error *err)
{
	if (storage_key_check(key, err) != 0)
		return NULL;
	return st->driver->read_open(st, key, offset, length, err);
}

ssize_t
storage_read_next(storage_read *r, void *buf, size_t len, tb_error *err)
{
	return r->st->driver->read_next(r, buf, len, err);
}

void
storage_read_close(storage_read *r)
{
	if (r != NULL)
		r->st->driver->read_close(r);
}

int
storage_head(storage *st, const char *key, storage_info *info, tb_error *err)
{
	if (storage_key_check(key, err) != 0)
		return -1;
	return st->driver->head(st, key, info, err);
}

int
storage_delete(storage *st, const char *key, tb_error *err)
{
	if (storage_key_check(key, err) != 0)
		return -1;
	return st->driver->delete (st, key, err);
}

int
storage_list(storage *st, const char *prefix, storage_list_cb cb, void *arg, tb_error *err)
{
	return st->driver->list(st, prefix, cb, arg, err);
}

int
storage_list_unfinished(storage *st, const char *prefix, storage_unfinished_cb cb, void *arg, tb_error *err)
{
	/* A driver without unfinished writes that outlive their writer lists none. */
	if (st->driver->list_unfinished == NULL)
		return 0;
	return st->driver->list_unfinished(st, prefix, cb, arg, err);
}

int
storage_abort_unfinished(storage *st, const char *key, const char *upload, tb_error *err)
{
	if (storage_key_check(key, err) != 0)
		return -1;
	if (st->driver->abort_unfinished == NULL)
		return tb_error_set(err, TB_ERR_INVALID, "%s has no unfinished writes to remove", st->description);
	return st->driver->abort_unfinished(st, key, upload, err);
}

int
storage_put(storage *st, const char *key, const void *buf, size_t len, tb_error *err)
{
	storage_write *w = storage_write_open(st, key, err);

	if (w == NULL)
		return -1;
	if (storage_write_append(w, buf, len, err) != 0)
	{
		storage_write_abort(w);
		return -1;
	}
	return storage_write_commit(w, err);
}

int
storage_get(storage *st, const char *key, size_t max, char **buf, size_t *len, tb_error *err)
{
	storage_read *r = storage_read_open(st, key, 0, 0, err);
	size_t cap = 4096;
	size_t used = 0;
	char *data;

	if (r == NULL)
		return -1;
	data = malloc(cap + 1);
	if (data == NULL)
	{
		storage_read_close(r);
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory reading '%s'", key);
	}
	for (;;)
	{
		ssize_t n;

		if (used == cap)
		{
			char *bigger;

			if (cap >= max)
			{
				free(data);
				storage_read_close(r);
				return tb_error_set(err, TB_ERR_CORRUPT, "object '%s' is larger than the %zu bytes expected", key, max);
			}
			cap = cap * 2 > max ? max : cap * 2;
			bigger = realloc(data, cap + 1);
			if (bigger == NULL)
			{
				free(data);
				storage_read_close(r);
				return tb_error_set(err, TB_ERR_NOMEM, "out of memory reading '%s'", key);
			}
			data = bigger;
		}
		n = storage_read_next(r, data + used, cap - used, err);
		if (n < 0)
		{
			free(data);
			storage_read_close(r);
			return -1;
		}
		if (n == 0)
			break;
		used += (size_t) n;
	}
	storage_read_close(r);
	data[used] = '\0';
	*buf = data;
	*len = used;
	return 0;
}
