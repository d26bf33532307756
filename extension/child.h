/*
 * A tool (pg_dump, pg_restore) run as our own child process, with every wait done on
 * the latch: the job's lease is renewed, interrupts are served and postmaster death
 * is noticed while the tool works, even when it sends or takes no data for minutes
 * (a lock wait, an index build).
 */
#ifndef TENANT_BACKUP_CHILD_H
#define TENANT_BACKUP_CHILD_H

#include "postgres.h"

#include "job.h"
#include "subprocess.h"

struct WaitEventSet;

typedef struct tb_child
{
	subprocess sp;
	int fd;                      /* our end of the pipe: the tool's stdout (reading) or stdin (writing) */
	struct WaitEventSet *events; /* latch, postmaster death and fd: built once, waited on often */
	char *stopped;               /* why we stopped waiting for the tool (lease lost, job timeout); NULL: we did not */
} tb_child;

/*
 * Starts argv (argv[0]: a path, or a name looked up in PATH; no shell) with a pipe to
 * its stdout (reading) or its stdin, and its stderr into the file messages (created
 * 0600) or, when NULL, the server's. false (errno set) if it could not be started.
 */
bool tb_child_start(tb_child *child, const char *const *argv, const char *messages, bool reading);

/* Bytes read, 0 at the end, -1 on error, a lost lease or the job's time limit (child->stopped). */
ssize_t tb_child_read(tb_child *child, tb_job *job, void *buf, size_t len);

/* 0, or -1 on error (the tool went away), a lost lease or the job's time limit (child->stopped). */
int tb_child_write(tb_child *child, tb_job *job, const void *buf, size_t len);

/* Closes our end and waits for the tool to exit (ending it past the job's time limit): its wait status, or -1. */
int tb_child_finish(tb_child *child, tb_job *job);

/* For error paths: closes our end, ends the tool and reaps it. */
void tb_child_kill(tb_child *child);

#endif
