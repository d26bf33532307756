/*
 * file:///dir storage driver, the embedded default. Writes go to a hidden temporary
 * file beside the target, are fsynced, renamed into place and the directory fsynced,
 * so a key is either absent or complete. What lies below the root is untrusted: paths
 * are walked one directory at a time with O_NOFOLLOW, so no symbolic link leads out
 * of the root, and only regular files are objects (a link, FIFO, socket or device in
 * place of one is refused, never opened for blocking I/O nor followed).
 */
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Our keys are a few levels deep; anything much deeper is not ours. */
#define STORAGE_FILE_MAX_DEPTH 32
#define STORAGE_FILE_TMP_TRIES 16

typedef struct storage_file
{
	storage base;
	char *root;
} storage_file;

typedef struct storage_file_write
{
	storage_write base;
	int dir_fd; /* the key's parent directory */
	int fd;     /* the temporary file in it */
	char *key;
	const char *leaf; /* the key's last part, in key */
	char tmp_name[NAME_MAX + 1];
} storage_file_write;

typedef struct storage_file_read
{
	storage_read base;
	int fd;
	char *key;
	uint64_t remaining; /* UINT64_MAX: to the end */
} storage_file_read;

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

/* What a directory entry that is not a regular file is, for messages. */
static const char *
storage_file_kind(mode_t mode)
{
	if (S_ISREG(mode))
		return "regular file";
	if (S_ISLNK(mode))
		return "symbolic link";
	if (S_ISDIR(mode))
		return "directory";
	if (S_ISFIFO(mode))
		return "FIFO";
	if (S_ISSOCK(mode))
		return "socket";
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return "device";
	return "special file";
}

/*
 * Refuses the first name_len bytes of key, found in dir_fd as name, for not being
 * what was expected there (a regular file, or a directory on the way to one).
 */
static int
storage_file_refuse(const storage_file *sf, int dir_fd, const char *name, const char *key, int name_len,
					const char *expected, tb_errcode code, tb_error *err)
{
	struct stat sb;
	const char *kind =
		fstatat(dir_fd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 ? storage_file_kind(sb.st_mode) : "special file";

	return tb_error_set(err, code, "'%.*s' in %s is a %s, not a %s: refused (remove it from the storage directory)",
						name_len, key, sf->base.description, kind, expected);
}

/* mkdir -p of the root; the root is configuration, not storage content. */
static int
storage_file_make_root(const char *root, tb_error *err)
{
	char *copy = strdup(root);

	if (copy == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	for (char *p = copy + 1;; p++)
	{
		bool end = *p == '\0';

		if (*p != '/' && !end)
			continue;
		*p = '\0';
		if (mkdir(copy, 0750) != 0 && errno != EEXIST)
		{
			tb_error_set(err, TB_ERR_IO, "unable to create directory '%s': %s", copy, strerror(errno));
			free(copy);
			return -1;
		}
		if (end)
			break;
		*p = '/';
	}
	free(copy);
	return 0;
}

/*
 * The root directory, made when missing if create. A symbolic link in the root's own
 * path is followed: the root is what the operator configured.
 */
static int
storage_file_open_root(const storage_file *sf, bool create, tb_error *err)
{
	int fd = open(sf->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 && errno == ENOENT && create)
	{
		if (storage_file_make_root(sf->root, err) != 0)
			return -1;
		fd = open(sf->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (fd < 0)
		tb_error_set(err, errno == ENOENT ? TB_ERR_NOT_FOUND : TB_ERR_IO, "unable to open storage directory '%s': %s",
					 sf->root, strerror(errno));
	return fd;
}

/* The directory name in dir_fd, never through a symbolic link; made first if missing and create. */
static int
storage_file_open_dir(int dir_fd, const char *name, bool create)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd >= 0 || errno != ENOENT || !create)
		return fd;
	if (mkdirat(dir_fd, name, 0750) != 0 && errno != EEXIST)
		return -1;
	if (fsync(dir_fd) != 0) /* the new entry survives a crash */
		return -1;
	return openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/*
 * Opens the directory holding key's last part, walking from the root one part at a
 * time, so that no part is followed through a symbolic link; with create, missing
 * directories are made. Sets *leaf to key's last part. Returns the directory's
 * descriptor, or -1 with err set: TB_ERR_NOT_FOUND when a directory is missing,
 * TB_ERR_CORRUPT when a part is a symbolic link or not a directory.
 */
static int
storage_file_open_parent(const storage_file *sf, const char *key, bool create, const char **leaf, tb_error *err)
{
	int dir_fd = storage_file_open_root(sf, create, err);
	const char *part = key;
	const char *slash;

	while (dir_fd >= 0 && (slash = strchr(part, '/')) != NULL)
	{
		char name[NAME_MAX + 1];
		size_t len = (size_t) (slash - part);
		int next = -1;
		int saved;

		if (len > NAME_MAX)
			tb_error_set(err, TB_ERR_INVALID, "storage key '%s' has a part longer than %d bytes", key, NAME_MAX);
		else
		{
			memcpy(name, part, len);
			name[len] = '\0';
			next = storage_file_open_dir(dir_fd, name, create);
			saved = errno;
			if (next < 0 && (saved == ELOOP || saved == ENOTDIR))
				storage_file_refuse(sf, dir_fd, name, key, (int) (slash - key), "directory", TB_ERR_CORRUPT, err);
			else if (next < 0)
				tb_error_set(err, saved == ENOENT ? TB_ERR_NOT_FOUND : TB_ERR_IO,
							 "unable to open directory '%.*s' in %s: %s", (int) (slash - key), key,
							 sf->base.description, strerror(saved));
		}
		close(dir_fd);
		dir_fd = next;
		part = slash + 1;
	}
	*leaf = part;
	return dir_fd;
}

/*
 * Opens key for reading if it is a regular file below the root. The open does not
 * block (O_NONBLOCK, cleared after fstat) nor follow a link, so a FIFO or a link in
 * its place is refused with TB_ERR_CORRUPT; TB_ERR_NOT_FOUND if it does not exist.
 */
static int
storage_file_open_object(const storage_file *sf, const char *key, tb_error *err)
{
	const char *leaf;
	int dir_fd = storage_file_open_parent(sf, key, false, &leaf, err);
	struct stat sb;
	int fd;
	int saved;
	int flags;

	if (dir_fd < 0)
		return -1;
	fd = openat(dir_fd, leaf, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	saved = errno;
	if (fd >= 0 && fstat(fd, &sb) != 0)
	{
		saved = errno;
		close(fd);
		fd = -1;
	}
	else if (fd >= 0 && !S_ISREG(sb.st_mode))
	{
		close(fd);
		fd = -1;
		saved = ELOOP;
	}
	if (fd < 0)
	{
		if (saved == ELOOP || saved == ENXIO)
			storage_file_refuse(sf, dir_fd, leaf, key, (int) strlen(key), "regular file", TB_ERR_CORRUPT, err);
		else
			tb_error_set(err, saved == ENOENT ? TB_ERR_NOT_FOUND : TB_ERR_IO, "unable to open '%s' in %s for read: %s",
						 key, sf->base.description, strerror(saved));
		close(dir_fd);
		return -1;
	}
	close(dir_fd);
	if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to open '%s' in %s for read: %s", key, sf->base.description,
					 strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static storage_write *
storage_file_write_open(storage *st, const char *key, tb_error *err)
{
	storage_file *sf = (storage_file *) st;
	storage_file_write *w = calloc(1, sizeof(*w));

	if (w == NULL || (w->key = strdup(key)) == NULL)
	{
		free(w);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory writing '%s'", key);
		return NULL;
	}
	w->fd = -1;
	if ((w->dir_fd = storage_file_open_parent(sf, w->key, true, &w->leaf, err)) < 0)
	{
		tb_error_prefix(err, "unable to write '%s'", key);
		free(w->key);
		free(w);
		return NULL;
	}
	/* O_EXCL | O_NOFOLLOW: never an existing file, nor one a link points to */
	for (int i = 0; w->fd < 0 && i < STORAGE_FILE_TMP_TRIES; i++)
	{
		snprintf(w->tmp_name, sizeof(w->tmp_name), ".%s.tmp-%08x", w->leaf, arc4random());
		w->fd = openat(w->dir_fd, w->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (w->fd < 0 && errno != EEXIST)
			break;
	}
	if (w->fd < 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to create a temporary file for '%s' in %s: %s", key, st->description,
					 strerror(errno));
		close(w->dir_fd);
		free(w->key);
		free(w);
		return NULL;
	}
	w->base.st = st;
	return &w->base;
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
			return tb_error_set(err, TB_ERR_IO, "unable to write '%s' in %s: %s", w->key, base->st->description,
								strerror(errno));
		p += n;
		len -= (size_t) n;
	}
	return 0;
}

static void
storage_file_write_free(storage_file_write *w)
{
	close(w->dir_fd);
	free(w->key);
	free(w);
}

static void
storage_file_write_abort(storage_write *base)
{
	storage_file_write *w = (storage_file_write *) base;

	if (w->fd >= 0)
		close(w->fd);
	unlinkat(w->dir_fd, w->tmp_name, 0);
	storage_file_write_free(w);
}

static int
storage_file_write_commit(storage_write *base, tb_error *err)
{
	storage_file_write *w = (storage_file_write *) base;
	const char *where = base->st->description;

	if (fsync(w->fd) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to sync '%s' in %s: %s", w->key, where, strerror(errno));
		storage_file_write_abort(base);
		return -1;
	}
	if (close(w->fd) != 0)
	{
		w->fd = -1;
		tb_error_set(err, TB_ERR_IO, "unable to close '%s' in %s: %s", w->key, where, strerror(errno));
		storage_file_write_abort(base);
		return -1;
	}
	w->fd = -1;
	/* within one directory held open: a link in the target's place is replaced, not followed */
	if (renameat(w->dir_fd, w->tmp_name, w->dir_fd, w->leaf) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to rename the temporary file into '%s' in %s: %s", w->key, where,
					 strerror(errno));
		storage_file_write_abort(base);
		return -1;
	}
	if (fsync(w->dir_fd) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to sync the directory of '%s' in %s: %s", w->key, where, strerror(errno));
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

	if (r == NULL || (r->key = strdup(key)) == NULL)
	{
		free(r);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory reading '%s'", key);
		return NULL;
	}
	if ((r->fd = storage_file_open_object(sf, key, err)) < 0)
	{
		free(r->key);
		free(r);
		return NULL;
	}
	if (offset > 0 && lseek(r->fd, (off_t) offset, SEEK_SET) < 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to seek in '%s' in %s: %s", key, st->description, strerror(errno));
		close(r->fd);
		free(r->key);
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
		return tb_error_set(err, TB_ERR_IO, "unable to read '%s' in %s: %s", r->key, base->st->description,
							strerror(errno));
	if (r->remaining != UINT64_MAX)
		r->remaining -= (uint64_t) n;
	return n;
}

static void
storage_file_read_close(storage_read *base)
{
	storage_file_read *r = (storage_file_read *) base;

	close(r->fd);
	free(r->key);
	free(r);
}

/* Anything but a regular file below the root (a link, FIFO, or a link on the way) is no object: TB_ERR_NOT_FOUND. */
static int
storage_file_head(storage *st, const char *key, storage_info *info, tb_error *err)
{
	storage_file *sf = (storage_file *) st;
	const char *leaf;
	int dir_fd = storage_file_open_parent(sf, key, false, &leaf, err);
	struct stat sb;
	int rc = 0;

	if (dir_fd < 0)
	{
		if (err->code == TB_ERR_CORRUPT)
			err->code = TB_ERR_NOT_FOUND;
		return -1;
	}
	if (fstatat(dir_fd, leaf, &sb, AT_SYMLINK_NOFOLLOW) != 0)
		rc = tb_error_set(err, errno == ENOENT || errno == ENOTDIR ? TB_ERR_NOT_FOUND : TB_ERR_IO,
						  "unable to stat '%s' in %s: %s", key, st->description, strerror(errno));
	else if (!S_ISREG(sb.st_mode))
		rc = storage_file_refuse(sf, dir_fd, leaf, key, (int) strlen(key), "regular file", TB_ERR_NOT_FOUND, err);
	else
	{
		info->size = (uint64_t) sb.st_size;
		info->mtime = sb.st_mtime;
	}
	close(dir_fd);
	return rc;
}

/* Removes the directory entry itself: a link in its place goes, its target stays. */
static int
storage_file_delete(storage *st, const char *key, tb_error *err)
{
	storage_file *sf = (storage_file *) st;
	const char *leaf;
	int dir_fd = storage_file_open_parent(sf, key, false, &leaf, err);
	int rc = 0;

	if (dir_fd < 0)
	{
		if (err->code != TB_ERR_NOT_FOUND)
			return -1;
		tb_error_clear(err);
		return 0;
	}
	if (unlinkat(dir_fd, leaf, 0) != 0 && errno != ENOENT)
		rc = tb_error_set(err, TB_ERR_IO, "unable to delete '%s' in %s: %s", key, st->description, strerror(errno));
	close(dir_fd);
	return rc;
}

typedef struct storage_file_entry
{
	char *key;
	storage_info info;
} storage_file_entry;

typedef struct storage_file_listing
{
	storage_file_entry *entries;
	size_t count;
	size_t cap;
} storage_file_listing;

static int
storage_file_listing_add(storage_file_listing *l, char *key, const struct stat *sb, tb_error *err)
{
	if (l->count == l->cap)
	{
		size_t cap = l->cap ? l->cap * 2 : 64;
		storage_file_entry *entries = realloc(l->entries, cap * sizeof(*entries));

		if (entries == NULL)
			return tb_error_set(err, TB_ERR_NOMEM, "out of memory listing storage");
		l->entries = entries;
		l->cap = cap;
	}
	l->entries[l->count++] = (storage_file_entry){
		.key = key,
		.info = {.size = (uint64_t) sb->st_size, .mtime = sb->st_mtime},
	};
	return 0;
}

/*
 * Collects the regular files below the directory dir_fd (key dir_key, "" for the
 * root; closed here) whose keys start with prefix; with temporaries, the temporary
 * files of unfinished writes instead (the hidden names). Links, FIFOs, sockets and
 * devices are no objects and are skipped, and directories are entered only through
 * O_NOFOLLOW.
 */
/*
 * Whether name is a temporary file of storage_file_write_open (".<leaf>.tmp-<8 hex
 * digits>"); its leaf, the object it was for, goes to leaf.
 */
static bool
storage_file_temporary(const char *name, char *leaf, size_t size)
{
	size_t len = strlen(name);
	const size_t suffix = strlen(".tmp-") + 8;

	if (len < 2 + suffix || name[0] != '.' || strncmp(name + len - suffix, ".tmp-", 5) != 0 ||
		strspn(name + len - 8, "0123456789abcdef") != 8 || len - suffix - 1 >= size)
		return false;
	memcpy(leaf, name + 1, len - suffix - 1);
	leaf[len - suffix - 1] = '\0';
	return true;
}

static int
storage_file_walk(const storage_file *sf, int dir_fd, const char *dir_key, int depth, const char *prefix,
				  bool temporaries, storage_file_listing *l, tb_error *err)
{
	DIR *dir = fdopendir(dir_fd);
	struct dirent *de;
	size_t prefix_len = strlen(prefix);
	int rc = 0;

	if (dir == NULL)
	{
		close(dir_fd);
		return tb_error_set(err, TB_ERR_IO, "unable to list '%s' in %s: %s", dir_key, sf->base.description,
							strerror(errno));
	}
	if (depth > STORAGE_FILE_MAX_DEPTH)
		rc = tb_error_set(err, TB_ERR_CORRUPT,
						  "'%s' in %s is nested more than %d directories deep, which no backup is: remove it", dir_key,
						  sf->base.description, STORAGE_FILE_MAX_DEPTH);
	while (rc == 0 && (errno = 0, de = readdir(dir)) != NULL)
	{
		struct stat sb;
		char *key;
		size_t key_len;
		char leaf[NAME_MAX + 1];
		bool temporary = de->d_name[0] == '.';

		if (temporary && !(temporaries && storage_file_temporary(de->d_name, leaf, sizeof(leaf))))
			continue;
		if (asprintf(&key, "%s%s%s", dir_key, dir_key[0] ? "/" : "", de->d_name) < 0)
		{
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory listing storage");
			break;
		}
		key_len = strlen(key);
		if (strncmp(key, prefix, key_len < prefix_len ? key_len : prefix_len) != 0 ||
			fstatat(dirfd(dir), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) /* gone since readdir */
		{
			free(key);
			continue;
		}
		if (S_ISDIR(sb.st_mode))
		{
			int sub = openat(dirfd(dir), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			/* replaced by something else since fstatat: skipped like it */
			if (sub >= 0)
				rc = storage_file_walk(sf, sub, key, depth + 1, prefix, temporaries, l, err);
			else if (errno != ENOENT && errno != ELOOP && errno != ENOTDIR)
				rc = tb_error_set(err, TB_ERR_IO, "unable to list '%s' in %s: %s", key, sf->base.description,
								  strerror(errno));
		}
		else if (S_ISREG(sb.st_mode) && key_len >= prefix_len && temporary == temporaries)
		{
			if ((rc = storage_file_listing_add(l, key, &sb, err)) == 0)
				continue; /* the listing owns key */
		}
		free(key);
	}
	if (rc == 0 && errno != 0)
		rc = tb_error_set(err, TB_ERR_IO, "unable to list '%s' in %s: %s", dir_key, sf->base.description,
						  strerror(errno));
	closedir(dir);
	return rc;
}

static int
storage_file_entry_compare(const void *a, const void *b)
{
	return strcmp(((const storage_file_entry *) a)->key, ((const storage_file_entry *) b)->key);
}

/* The regular files (or, with temporaries, the temporary files) below prefix, sorted. */
static int
storage_file_collect(storage_file *sf, const char *prefix, bool temporaries, storage_file_listing *l, tb_error *err)
{
	int root_fd = storage_file_open_root(sf, false, err);
	int rc;

	if (root_fd < 0)
	{
		if (err->code != TB_ERR_NOT_FOUND)
			return -1;
		tb_error_clear(err);
		return 0; /* nothing stored yet */
	}
	rc = storage_file_walk(sf, root_fd, "", 0, prefix ? prefix : "", temporaries, l, err);
	if (rc == 0 && l->count > 0)
		qsort(l->entries, l->count, sizeof(*l->entries), storage_file_entry_compare);
	return rc;
}

static void
storage_file_listing_free(storage_file_listing *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->entries[i].key);
	free(l->entries);
}

static int
storage_file_list(storage *st, const char *prefix, storage_list_cb cb, void *arg, tb_error *err)
{
	storage_file_listing l = {0};
	int rc = storage_file_collect((storage_file *) st, prefix, false, &l, err);

	for (size_t i = 0; rc == 0 && i < l.count; i++)
		if (cb(l.entries[i].key, &l.entries[i].info, arg) != 0)
			break;
	storage_file_listing_free(&l);
	return rc;
}

/* Each temporary file: the key of the object it was for, and its own name as the upload. */
static int
storage_file_list_unfinished(storage *st, const char *prefix, storage_unfinished_cb cb, void *arg, tb_error *err)
{
	storage_file_listing l = {0};
	int rc = storage_file_collect((storage_file *) st, prefix, true, &l, err);

	for (size_t i = 0; rc == 0 && i < l.count; i++)
	{
		char *name = strrchr(l.entries[i].key, '/');
		char leaf[NAME_MAX + 1];
		char *key;
		int stop;

		name = name ? name + 1 : l.entries[i].key;
		if (!storage_file_temporary(name, leaf, sizeof(leaf)) ||
			asprintf(&key, "%.*s%s", (int) (name - l.entries[i].key), l.entries[i].key, leaf) < 0)
		{
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory listing storage");
			break;
		}
		stop = cb(key, name, &l.entries[i].info, arg);
		free(key);
		if (stop != 0)
			break;
	}
	storage_file_listing_free(&l);
	return rc;
}

/* Only a temporary file of key itself: upload names nothing else. */
static int
storage_file_abort_unfinished(storage *st, const char *key, const char *upload, tb_error *err)
{
	storage_file *sf = (storage_file *) st;
	char leaf[NAME_MAX + 1];
	const char *key_leaf;
	int dir_fd, rc = 0;

	if (!storage_file_temporary(upload, leaf, sizeof(leaf)) || strchr(upload, '/') != NULL)
		return tb_error_set(err, TB_ERR_INVALID, "'%s' is not a temporary file of storage", upload);
	if ((dir_fd = storage_file_open_parent(sf, key, false, &key_leaf, err)) < 0)
	{
		if (err->code != TB_ERR_NOT_FOUND)
			return -1;
		tb_error_clear(err);
		return 0;
	}
	if (strcmp(key_leaf, leaf) != 0)
		rc = tb_error_set(err, TB_ERR_INVALID, "'%s' is not a temporary file of '%s'", upload, key);
	else if (unlinkat(dir_fd, upload, 0) != 0 && errno != ENOENT)
		rc = tb_error_set(err, TB_ERR_IO, "unable to remove the temporary file of '%s' in %s: %s", key, st->description,
						  strerror(errno));
	close(dir_fd);
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
	.list_unfinished = storage_file_list_unfinished,
	.abort_unfinished = storage_file_abort_unfinished,
};
