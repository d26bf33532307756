/*
 * Backups and raw objects being written, owned by the process: a repo_put or a
 * storage_write begun here is aborted when the memory context current at its start is
 * reset or deleted, and at process exit (ERROR or FATAL, pg_terminate_backend
 * included), so no temporary object or unfinished upload outlives its writer.
 * Commit and abort them with these functions only.
 */
#ifndef TB_PUT_GUARD_H
#define TB_PUT_GUARD_H

#include "repo.h"

/* repo_put_begin, owned as above; NULL with err set as repo_put_begin. */
repo_put *tb_put_begin(storage *st, const tenant_key *key, const char *engine, const repo_put_options *options,
					   tb_error *err);
/* repo_put_commit and repo_put_abort of a put begun with tb_put_begin. */
int tb_put_commit(repo_put *put, manifest *out, tb_error *err);
void tb_put_abort(repo_put *put);

/* storage_write_open, owned as above (a raw copy); commit and abort it with these only. */
storage_write *tb_write_begin(storage *st, const char *key, tb_error *err);
int tb_write_commit(storage_write *write, tb_error *err);
void tb_write_abort(storage_write *write);

#endif
