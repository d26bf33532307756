/*
 * Object storage behind one interface. The driver is chosen by URL scheme in
 * storage_open() and nowhere else: file:///dir (embedded default) or
 * s3://bucket/prefix. Keys are relative to the URL's directory or prefix and are
 * built by callers from validated parts only.
 *
 * Writes are atomic: nothing is visible under the key until storage_write_commit()
 * succeeds, and storage_write_abort() (or a failed commit) leaves nothing behind.
 *
 * Storage is untrusted: the drivers refuse what no well-behaved storage holds (a
 * link, FIFO or device in place of a file object; an S3 listing that would never end
 * or names keys outside its prefix) with TB_ERR_CORRUPT or TB_ERR_STORAGE, and every
 * operation ends in bounded time.
 */
#ifndef TB_STORAGE_H
#define TB_STORAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../error.h"

typedef struct storage storage;
typedef struct storage_write storage_write;
typedef struct storage_read storage_read;

typedef struct storage_info
{
	uint64_t size;
	int64_t mtime; /* seconds since the epoch, 0 when unknown */
} storage_info;

/* Called once per key by storage_list(); a non-zero return stops the listing. */
typedef int (*storage_list_cb)(const char *key, const storage_info *info, void *arg);

/* Opens storage for a URL; NULL with err set on a bad URL or missing credentials. */
storage *storage_open(const char *url, tb_error *err);

/*
 * Checks a storage URL's form and options as storage_open would, without resolving
 * credentials or touching a file or the network (for settings' check hooks). 0, or -1
 * with err set.
 */
int storage_check_url(const char *url, tb_error *err);
void storage_close(storage *st);

/* The URL with nothing secret in it, for messages. */
const char *storage_describe(const storage *st);

/* Streaming write; the handle is freed by commit or abort, whatever their outcome. */
storage_write *storage_write_open(storage *st, const char *key, tb_error *err);
int storage_write_append(storage_write *w, const void *buf, size_t len, tb_error *err);
int storage_write_commit(storage_write *w, tb_error *err);
void storage_write_abort(storage_write *w);

/*
 * Streaming read of length bytes from offset (length 0: to the end).
 * storage_read_next returns bytes read, 0 at the end, -1 on error.
 */
storage_read *storage_read_open(storage *st, const char *key, uint64_t offset, uint64_t length, tb_error *err);
ssize_t storage_read_next(storage_read *r, void *buf, size_t len, tb_error *err);
void storage_read_close(storage_read *r);

/* 0 and *info filled if the key exists; -1 with TB_ERR_NOT_FOUND if it does not. */
int storage_head(storage *st, const char *key, storage_info *info, tb_error *err);

/* Deleting a key that does not exist succeeds. */
int storage_delete(storage *st, const char *key, tb_error *err);

/* Every key below prefix (recursively), in lexical order. */
int storage_list(storage *st, const char *prefix, storage_list_cb cb, void *arg, tb_error *err);

/*
 * Unfinished writes: begun and neither committed nor aborted (the writer died). key is
 * the object the write would have made, upload the driver's name for the write (file:
 * the hidden temporary file, s3: the multipart upload id), info->mtime when it was last
 * written (file) or begun (s3). A non-zero return of cb stops the listing.
 */
typedef int (*storage_unfinished_cb)(const char *key, const char *upload, const storage_info *info, void *arg);
int storage_list_unfinished(storage *st, const char *prefix, storage_unfinished_cb cb, void *arg, tb_error *err);

/* Removes an unfinished write listed by storage_list_unfinished; one already gone succeeds. */
int storage_abort_unfinished(storage *st, const char *key, const char *upload, tb_error *err);

/* Small objects (manifests, keys): whole-object put, and get of at most max bytes. */
int storage_put(storage *st, const char *key, const void *buf, size_t len, tb_error *err);
int storage_get(storage *st, const char *key, size_t max, char **buf, size_t *len, tb_error *err);

/* ---- driver side ---- */

typedef struct storage_driver
{
	const char *scheme; /* "file", "s3" */
	storage *(*open)(const char *url, tb_error *err);
	int (*check_url)(const char *url, tb_error *err); /* NULL: open and close are cheap enough */
	void (*close)(storage *st);
	storage_write *(*write_open)(storage *st, const char *key, tb_error *err);
	int (*write_append)(storage_write *w, const void *buf, size_t len, tb_error *err);
	int (*write_commit)(storage_write *w, tb_error *err);
	void (*write_abort)(storage_write *w);
	storage_read *(*read_open)(storage *st, const char *key, uint64_t offset, uint64_t length, tb_error *err);
	ssize_t (*read_next)(storage_read *r, void *buf, size_t len, tb_error *err);
	void (*read_close)(storage_read *r);
	int (*head)(storage *st, const char *key, storage_info *info, tb_error *err);
	int (*delete)(storage *st, const char *key, tb_error *err);
	int (*list)(storage *st, const char *prefix, storage_list_cb cb, void *arg, tb_error *err);
	int (*list_unfinished)(storage *st, const char *prefix, storage_unfinished_cb cb, void *arg, tb_error *err);
	int (*abort_unfinished)(storage *st, const char *key, const char *upload, tb_error *err);
} storage_driver;

/* Every storage, write and read handle starts with this header. */
struct storage
{
	const storage_driver *driver;
	char *description;
};

struct storage_write
{
	storage *st;
};

struct storage_read
{
	storage *st;
};

extern const storage_driver storage_file_driver;
extern const storage_driver storage_s3_driver;

/* Rejects keys that could escape the storage root (empty parts, "..", leading '/'). */
int storage_key_check(const char *key, tb_error *err);

#endif
