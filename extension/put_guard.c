/*
 * Ownership of the backups and raw objects a process is writing (put_guard.h): each
 * open repo_put or storage_write is on a list, released by a reset callback of its
 * memory context and by a before_shmem_exit callback, whichever comes first, unless
 * committed or aborted.
 */
#include "tenant_backup.h"

#include "lib/ilist.h"
#include "storage/ipc.h"
#include "utils/memutils.h"

#include "put_guard.h"

typedef struct tb_put_owner
{
	dlist_node node;
	repo_put *put;        /* NULL once committed or aborted */
	storage_write *write; /* a raw object write instead of a backup */
	MemoryContextCallback on_reset;
} tb_put_owner;

static dlist_head tb_open_puts = DLIST_STATIC_INIT(tb_open_puts);
static bool tb_exit_callback_registered;

/* Forgets owner's put, returning it (NULL if it was released already). */
static repo_put *
tb_put_release(tb_put_owner *owner)
{
	repo_put *put = owner->put;

	if (put != NULL)
	{
		owner->put = NULL;
		dlist_delete(&owner->node);
	}
	return put;
}

/* The same for a raw object write. */
static storage_write *
tb_write_release(tb_put_owner *owner)
{
	storage_write *write = owner->write;

	if (write != NULL)
	{
		owner->write = NULL;
		dlist_delete(&owner->node);
	}
	return write;
}

static void
tb_put_on_reset(void *arg)
{
	repo_put *put = tb_put_release(arg);
	storage_write *write = tb_write_release(arg);

	if (put != NULL)
		repo_put_abort(put);
	if (write != NULL)
		storage_write_abort(write);
}

/* The process exits: every put still open is aborted (its temporary or upload removed). */
static void
tb_put_on_exit(int code, Datum arg)
{
	(void) code;
	(void) arg;
	while (!dlist_is_empty(&tb_open_puts))
		tb_put_on_reset(dlist_container(tb_put_owner, node, dlist_head_node(&tb_open_puts)));
}

/* A new owner on the list, released with CurrentMemoryContext. */
static tb_put_owner *
tb_put_owner_new(repo_put *put, storage_write *write)
{
	tb_put_owner *owner = palloc0(sizeof(*owner));

	owner->put = put;
	owner->write = write;
	dlist_push_head(&tb_open_puts, &owner->node);
	owner->on_reset.func = tb_put_on_reset;
	owner->on_reset.arg = owner;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &owner->on_reset);
	return owner;
}

static void
tb_put_exit_callback(void)
{
	if (!tb_exit_callback_registered)
	{
		before_shmem_exit(tb_put_on_exit, (Datum) 0);
		tb_exit_callback_registered = true;
	}
}

repo_put *
tb_put_begin(storage *st, const tenant_key *key, const char *engine, const repo_put_options *options, tb_error *err)
{
	repo_put *put;

	tb_put_exit_callback();
	put = repo_put_begin(st, key, engine, options, err);
	if (put != NULL)
		tb_put_owner_new(put, NULL);
	return put;
}

storage_write *
tb_write_begin(storage *st, const char *key, tb_error *err)
{
	storage_write *write;

	tb_put_exit_callback();
	write = storage_write_open(st, key, err);
	if (write != NULL)
		tb_put_owner_new(NULL, write);
	return write;
}

/* The owner of put or write (one of them NULL), which must be open. */
static tb_put_owner *
tb_put_owner_of(repo_put *put, storage_write *write)
{
	dlist_iter it;

	dlist_foreach(it, &tb_open_puts)
	{
		tb_put_owner *owner = dlist_container(tb_put_owner, node, it.cur);

		if (put != NULL ? owner->put == put : owner->write == write)
			return owner;
	}
	elog(ERROR, "tenant_backup: a write not begun with tb_put_begin or tb_write_begin");
	return NULL;
}

int
tb_put_commit(repo_put *put, manifest *out, tb_error *err)
{
	return repo_put_commit(tb_put_release(tb_put_owner_of(put, NULL)), out, err);
}

void
tb_put_abort(repo_put *put)
{
	repo_put_abort(tb_put_release(tb_put_owner_of(put, NULL)));
}

int
tb_write_commit(storage_write *write, tb_error *err)
{
	return storage_write_commit(tb_write_release(tb_put_owner_of(NULL, write)), err);
}

void
tb_write_abort(storage_write *write)
{
	storage_write_abort(tb_write_release(tb_put_owner_of(NULL, write)));
}
