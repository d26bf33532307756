/*
 * The backup repository on top of storage: where tenant keys and backup objects
 * live (<tenant>/keys/<key id>.json, <tenant>/<engine>/<time>-<id>.tbk + .json), how
 * a backup is sealed into it and read back. Used by the CLI, the extension and agents.
 */
#ifndef TB_REPO_H
#define TB_REPO_H

#include <stdbool.h>

#include "keys.h"
#include "manifest.h"
#include "storage/storage.h"
#include "stream.h"

/* Called with the plaintext bytes handled so far; for progress lines and catalog reports. */
typedef void (*repo_progress_fn)(void *ctx, uint64_t bytes);

typedef struct repo_put_options
{
	stream_writer_options stream;
	const char *backup_id; /* NULL: a random one */
	/*
	 * NULL: the object is <tenant>/<engine>/<time>-<backup id>.tbk. Otherwise its name
	 * below <tenant>/<engine>/, ending in .tbk ("wal/00000001/000000010000000000000003.tbk");
	 * storage replaces an object of the same name, so the caller checks first.
	 */
	const char *object_name;
	/* The database the backup is of, for its manifest; NULL, or one manifest_database_valid refuses: not recorded. */
	const char *database;
	repo_progress_fn progress;
	void *progress_ctx;
} repo_put_options;

typedef struct repo_put repo_put;
typedef struct repo_reader repo_reader;

/*
 * Creates a tenant key and stores it wrapped by the master key, or by the tenant's own
 * command when master->key_command is set. With wrapped_doc, the stored document is
 * also returned there (the caller frees it).
 */
int repo_tenant_key_create(storage *st, const master_key *master, const char *tenant, tenant_key *out,
						   char **wrapped_doc, tb_error *err);

/*
 * Master key rotation of one key document (wrapped by old_master, or already by
 * new_master after an earlier attempt): stores it wrapped by new_master in storage and
 * returns that document in *new_doc (the caller frees it).
 */
int repo_tenant_key_rewrap(storage *st, const master_key *old_master, const master_key *new_master, const char *tenant,
						   const char *doc, char **new_doc, tb_error *err);

/* Deletes a backup object and its manifest (the manifest first); *bytes: the object's size, 0 if already gone. */
int repo_delete_backup(storage *st, const char *object, uint64_t *bytes, tb_error *err);

/* Deletes every object whose key begins with prefix; counts them and their bytes. */
int repo_delete_prefix(storage *st, const char *prefix, uint64_t *objects, uint64_t *bytes, tb_error *err);

/* Loads and unwraps key_id of tenant from storage. */
int repo_tenant_key_load(storage *st, const master_key *master, const char *tenant, const char *key_id, tenant_key *out,
						 tb_error *err);

/*
 * <tenant>/keys/active.json, the key the control plane's catalog made active, sealed
 * with the master key: put writes it, get reads key_id (KEYS_ID_LEN + 1 bytes) back;
 * -1 with TB_ERR_NOT_FOUND if there is none, TB_ERR_CORRUPT or TB_ERR_KEY if it is not
 * one the master key sealed for this tenant. object: its name.
 */
int repo_active_key_object(const char *tenant, char *out, size_t size, tb_error *err);
int repo_active_key_put(storage *st, const master_key *master, const char *tenant, const char *key_id, tb_error *err);
int repo_active_key_get(storage *st, const master_key *master, const char *tenant, char *key_id, tb_error *err);

/*
 * The tenant key new backups use: the one active.json names; without it (a repository
 * the CLI alone writes), the newest key; with create, makes the first one if the tenant
 * has none.
 */
int repo_tenant_key_current(storage *st, const master_key *master, const char *tenant, bool create, tenant_key *out,
							tb_error *err);

/*
 * A backup being written: begin, write any number of times, then commit (object, then
 * manifest) or abort. Until commit succeeds nothing is visible; a failed commit or an
 * abort leaves neither object nor manifest. The handle is freed by commit or abort.
 */
repo_put *repo_put_begin(storage *st, const tenant_key *key, const char *engine, const repo_put_options *options,
						 tb_error *err);
int repo_put_write(repo_put *put, const void *buf, size_t len, tb_error *err);
int repo_put_commit(repo_put *put, manifest *out, tb_error *err);
void repo_put_abort(repo_put *put);

/* Seals everything readable from fd as one backup. */
int repo_put_fd(storage *st, const tenant_key *key, const char *engine, int fd, const repo_put_options *options,
				manifest *out, tb_error *err);

/*
 * Opens object for reading: checks the object key names the tenant and engine in its
 * header, loads that tenant key from storage, authenticates the header. options: as
 * for stream_reader_open.
 */
repo_reader *repo_reader_open(storage *st, const master_key *master, const char *object,
							  const stream_reader_options *options, tb_error *err);

/* As stream_reader_read: data is trustworthy only once this returned 0. */
ssize_t repo_reader_read(repo_reader *r, void *buf, size_t len, tb_error *err);
const stream_header *repo_reader_header(const repo_reader *r);
void repo_reader_stats(const repo_reader *r, stream_stats *stats);
void repo_reader_close(repo_reader *r);

typedef struct repo_read_options
{
	repo_progress_fn progress;
	void *progress_ctx;
	bool check_sha256; /* also hash the stored object and compare with its manifest */
	bool readahead;    /* decode the next chunks in a thread meanwhile */
	/* Called with progress_ctx after each read; non-zero (err set) stops the read. */
	int (*keep_going)(void *ctx, tb_error *err);
	/*
	 * The object's manifest as the caller already read and validated it: the object
	 * must match it (required), and the one in storage is not read again. NULL: the
	 * manifest in storage, when there is one.
	 */
	const manifest *manifest;
} repo_read_options;

/*
 * Authenticates all of object and writes the plaintext to fd (-1: nowhere, to verify
 * only). Its manifest (options->manifest, else the one in storage when it exists)
 * must describe this object: same backup id, key id and size (and SHA-256 with
 * check_sha256).
 */
int repo_read_to_fd(storage *st, const master_key *master, const char *object, int fd, const repo_read_options *options,
					stream_stats *stats, tb_error *err);

/*
 * As repo_read_to_fd, into the file name in directory dir (an absolute path), which
 * must not exist yet: the file appears, fsynced, only once everything checked out.
 */
int repo_read_to_file(storage *st, const master_key *master, const char *object, const char *dir, const char *name,
					  const repo_read_options *options, stream_stats *stats, tb_error *err);

/* Manifest key for an object key (.tbk -> .json). */
int repo_manifest_key(const char *object, char *out, size_t size, tb_error *err);

/* Manifests of tenant (NULL: all) and engine (NULL: all), newest first. */
typedef int (*repo_list_cb)(const manifest *m, void *arg);
int repo_list(storage *st, const char *tenant, const char *engine, repo_list_cb cb, void *arg, tb_error *err);

#endif
