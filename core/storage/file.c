/*
 * file:///dir storage driver, the embedded default. Writes go to a hidden temporary
 * file beside the target, are fsynced, renamed into place and the directory fsynced,
 * so a key is either absent or complete.
 */
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct storage_file
{
	storage base;
	char *root;
} storage_file;

typedef struct storage_file_write
{
	storage_write base;
	int fd;
	char *path;
	char *tmp_path;
} storage_file_write;

typedef struct storage_file_read
{
	storage_read base;
	int fd;
	char *path;
	uint64_t remaining; /* UINT64_MAX: to the end */
} storage_file_read;

static char *
storage_file_path(const storage_file *sf, const char *key)
{
	char *path;

	if (asprintf(&path, "%s/%s", sf->root, key) < 0)
		return NULL;
	return path;
}

static storage *
storage_file_open(const char *url, tb_error *err)
{
	const char *dir = url + strlen("file://");
	storage_file *sf;
	size_t len;

	if (dir[0] != '/')
	{
		tb_error_set(err, TB_ERR_INVALID, "file storage URL '%s' must name an absolute directory, as file:///path",
					 url);
		return NULL;
	}
	if (strchr(dir, '?') != NULL)
	{
		tb_error_set(err, TB_ERR_INVALID, "file storage URL '%s' takes no options", url);
		return NULL;
	}
	sf = calloc(1, sizeof(*sf));
	if (sf == NULL || (sf->root = strdup(dir)) == NULL || (sf->base.description = strdup(url)) == NULL)
	{
		if (sf != NULL)
		{
			free(sf->root);
			free(sf);
		}
		tb_error_set(err, TB_ERR_NOMEM, "out of memory opening storage '%s'", url);
		return NULL;
	}
	len = strlen(sf->root);
	while (len > 1 && sf->root[len - 1] == '/')
		sf->root[--len] = '\0';
	sf->base.driver = &storage_file_driver;
	return &sf->base;
}

static void
storage_file_close(storage *st)
{
	storage_file *sf = (storage_file *) st;

	free(sf->root);
	free(sf->base.description);
	free(sf);
}

/* mkdir -p for every directory above path, fsyncing each parent it creates into. */
static int
storage_file_make_parents(const char *path, tb_error *err)
{
	char *copy = strdup(path);

	if (copy == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	for (char *p = copy + 1; *p; p++)
	{
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0750) != 0 && errno != EEXIST)
		{
			tb_error_set(err, TB_ERR_IO, "unable to create directory '%s': %s", copy, strerror(errno));
			free(copy);
			return -1;
		}
		*p = '/';
	}
	free(copy);
	return 0;
}

static int
storage_file_sync_dir(const char *path, tb_error *err)
{
	char *dir = strdup(path);
	char *slash;
	int fd;

	if (dir == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd < 0 || fsync(fd) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to sync directory '%s': %s", dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(dir);
		return -1;
	}
	close(fd);
	free(dir);
	return 0;
}

static storage_write *
storage_file_write_open(storage *st, const char *key, tb_error *err)
{
	storage_file *sf = (storage_file *) st;
	storage_file_write *w = calloc(1, sizeof(*w));
	char *slash;

	if (w == NULL || (w->path = storage_file_path(sf, key)) == NULL)
	{
		free(w);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory writing '%s'", key);
		return NULL;
	}
	slash = strrchr(w->path, '/');
	if (asprintf(&w->tmp_path, "%.*s/.%s.tmp-XXXXXX", (int) (slash - w->path), w->path, slash + 1) < 0)
	{
		free(w->path);
		free(w);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory writing '%s'", key);
		return NULL;
	}
	if (storage_file_make_parents(w->path, err) != 0)
		goto fail;
	w->fd = mkostemp(w->tmp_path, O_CLOEXEC);
	if (w->fd < 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to open file '%s' for write: %s", w->tmp_path, strerror(errno));
		goto fail;
	}
	w->base.st = st;
	return &w->base;

fail:
	free(w->tmp_path);
	free(w->path);
	free(w);
	return NULL;
}

static int
storage_file_write_append(storage_write *base, const void *buf, size_t len, tb_error *err)
{
	storage_file_write *w = (storage_file_write *) base;
	const char *p = buf;

	while (len > 0)
	{
		ssize_t n = write(w->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return tb_error_set(err, TB_ERR_IO, "unable to write file '%s': %s", w->tmp_path, strerror(errno));
		p += n;
		len -= (size_t) n;
	}
	return 0;
}

static void
storage_file_write_free(storage_file_write *w)
{
	free(w->path);
	free(w->tmp_path);
	free(w);
}

static void
storage_file_write_abort(storage_write *base)
{
	storage_file_write *w = (storage_file_write *) base;

	if (w->fd >= 0)
		close(w->fd);
	unlink(w->tmp_path);
	storage_file_write_free(w);
}

static int
storage_file_write_commit(storage_write *base, tb_error *err)
{
	storage_file_write *w = (storage_file_write *) base;

	if (fsync(w->fd) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to sync file '%s': %s", w->tmp_path, strerror(errno));
		storage_file_write_abort(base);
		return -1;
	}
	if (close(w->fd) != 0)
	{
		w->fd = -1;
		tb_error_set(err, TB_ERR_IO, "unable to close file '%s': %s", w->tmp_path, strerror(errno));
		storage_file_write_abort(base);
		return -1;
	}
	w->fd = -1;
	if (rename(w->tmp_path, w->path) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to rename '%s' to '%s': %s", w->tmp_path, w->path, strerror(errno));
		storage_file_write_abort(base);
		return -1;
	}
	if (storage_file_sync_dir(w->path, err) != 0)
	{
		storage_file_write_free(w);
		return -1;
	}
	storage_file_write_free(w);
	return 0;
}

static storage_read *
storage_file_read_open(storage *st, const char *key, uint64_t offset, uint64_t length, tb_error *err)
{
	storage_file *sf = (storage_file *) st;
	storage_file_read *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->path = storage_file_path(sf, key)) == NULL)
	{
		free(r);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory reading '%s'", key);
		return NULL;
	}
	r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0)
	{
		tb_error_set(err, errno == ENOENT ? TB_ERR_NOT_FOUND : TB_ERR_IO, "unable to open file '%s' for read: %s",
					 r->path, strerror(errno));
		free(r->path);
		free(r);
		return NULL;
	}
	if (offset > 0 && lseek(r->fd, (off_t) offset, SEEK_SET) < 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to seek in file '%s': %s", r->path, strerror(errno));
		close(r->fd);
		free(r->path);
		free(r);
		return NULL;
	}
	posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	r->remaining = length > 0 ? length : UINT64_MAX;
	r->base.st = st;
	return &r->base;
}

static ssize_t
storage_file_read_next(storage_read *base, void *buf, size_t len, tb_error *err)
{
	storage_file_read *r = (storage_file_read *) base;
	ssize_t n;

	if (r->remaining < len)
		len = (size_t) r->remaining;
	if (len == 0)
		return 0;
	do
		n = read(r->fd, buf, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return tb_error_set(err, TB_ERR_IO, "unable to read file '%s': %s", r->path, strerror(errno));
	if (r->remaining != UINT64_MAX)
		r->remaining -= (uint64_t) n;
	return n;
}

static void
storage_file_read_close(storage_read *base)
{
	storage_file_read *r = (storage_file_read *) base;

	close(r->fd);
	free(r->path);
	free(r);
}

static int
storage_file_head(storage *st, const char *key, storage_info *info, tb_error *err)
{
	char *path = storage_file_path((storage_file *) st, key);
	struct stat sb;

	if (path == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	if (stat(path, &sb) != 0)
	{
		tb_error_set(err, errno == ENOENT || errno == ENOTDIR ? TB_ERR_NOT_FOUND : TB_ERR_IO,
					 "unable to stat file '%s': %s", path, strerror(errno));
		free(path);
		return -1;
	}
	if (!S_ISREG(sb.st_mode))
	{
		tb_error_set(err, TB_ERR_NOT_FOUND, "'%s' is not a regular file", path);
		free(path);
		return -1;
	}
	free(path);
	info->size = (uint64_t) sb.st_size;
	info->mtime = sb.st_mtime;
	return 0;
}

static int
storage_file_delete(storage *st, const char *key, tb_error *err)
{
	char *path = storage_file_path((storage_file *) st, key);

	if (path == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	if (unlink(path) != 0 && errno != ENOENT)
	{
		tb_error_set(err, TB_ERR_IO, "unable to delete file '%s': %s", path, strerror(errno));
		free(path);
		return -1;
	}
	free(path);
	return 0;
}

typedef struct storage_file_listing
{
	char **keys;
	size_t count;
	size_t cap;
} storage_file_listing;

static int
storage_file_listing_add(storage_file_listing *l, const char *key, tb_error *err)
{
	if (l->count == l->cap)
	{
		size_t cap = l->cap ? l->cap * 2 : 64;
		char **keys = realloc(l->keys, cap * sizeof(char *));

		if (keys == NULL)
			return tb_error_set(err, TB_ERR_NOMEM, "out of memory listing storage");
		l->keys = keys;
		l->cap = cap;
	}
	if ((l->keys[l->count] = strdup(key)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory listing storage");
	l->count++;
	return 0;
}

/* Collects keys below dir_key ("" for the root) that start with prefix; hidden names are temp files. */
static int
storage_file_walk(const storage_file *sf, const char *dir_key, const char *prefix, storage_file_listing *l,
				  tb_error *err)
{
	char *path;
	DIR *dir;
	struct dirent *de;
	int rc = 0;

	if (asprintf(&path, "%s/%s", sf->root, dir_key) < 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory listing storage");
	dir = opendir(path);
	if (dir == NULL)
	{
		rc = errno == ENOENT || errno == ENOTDIR
				 ? 0
				 : tb_error_set(err, TB_ERR_IO, "unable to list directory '%s': %s", path, strerror(errno));
		free(path);
		return rc;
	}
	while (rc == 0 && (de = readdir(dir)) != NULL)
	{
		char *key;
		size_t cmp;

		if (de->d_name[0] == '.')
			continue;
		if (asprintf(&key, "%s%s%s", dir_key, dir_key[0] ? "/" : "", de->d_name) < 0)
		{
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory listing storage");
			break;
		}
		cmp = strlen(key) < strlen(prefix) ? strlen(key) : strlen(prefix);
		if (strncmp(key, prefix, cmp) == 0)
		{
			if (de->d_type == DT_DIR)
				rc = storage_file_walk(sf, key, prefix, l, err);
			else if (de->d_type == DT_REG && strlen(key) >= strlen(prefix))
				rc = storage_file_listing_add(l, key, err);
		}
		free(key);
	}
	closedir(dir);
	free(path);
	return rc;
}

static int
storage_file_key_compare(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static int
storage_file_list(storage *st, const char *prefix, storage_list_cb cb, void *arg, tb_error *err)
{
	storage_file *sf = (storage_file *) st;
	storage_file_listing l = {0};
	int rc = storage_file_walk(sf, "", prefix ? prefix : "", &l, err);

	if (rc == 0 && l.count > 0)
		qsort(l.keys, l.count, sizeof(char *), storage_file_key_compare);
	for (size_t i = 0; rc == 0 && i < l.count; i++)
	{
		storage_info info = {0};

		if (storage_file_head(st, l.keys[i], &info, err) != 0)
		{
			if (err->code == TB_ERR_NOT_FOUND)
				continue; /* deleted while listing */
			rc = -1;
			break;
		}
		if (cb(l.keys[i], &info, arg) != 0)
			break;
	}
	for (size_t i = 0; i < l.count; i++)
		free(l.keys[i]);
	free(l.keys);
	return rc;
}

const storage_driver storage_file_driver = {
	.scheme = "file",
	.open = storage_file_open,
	.close = storage_file_close,
	.write_open = storage_file_write_open,
	.write_append = storage_file_write_append,
	.write_commit = storage_file_write_commit,
	.write_abort = storage_file_write_abort,
	.read_open = storage_file_read_open,
	.read_next = storage_file_read_next,
	.read_close = storage_file_read_close,
	.head = storage_file_head,
	.delete = storage_file_delete,
	.list = storage_file_list,
};
