/*
 * Tools run as child processes of a job worker by core's subprocess runner, waited on
 * through the latch (see child.h). Not popen(): a blocked fread or pclose would stop
 * the worker from renewing its lease, and the launcher would give a live job to
 * another attempt.
 */
#include "tenant_backup.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "child.h"
#include "pg_engine.h"

#define TB_CHILD_WAIT_MS 1000

bool
tb_child_start(tb_child *child, const char *const *argv, const char *messages, bool reading)
{
	subprocess_options opts = {.argv = argv,
							   .in = reading ? SUBPROCESS_DEVNULL : SUBPROCESS_PIPE,
							   .out = reading ? SUBPROCESS_PIPE : SUBPROCESS_INHERIT,
							   .err = messages ? SUBPROCESS_FD : SUBPROCESS_INHERIT,
							   .err_fd = -1};
	tb_error err = {0};
	int saved_errno;
	bool started;

	memset(child, 0, sizeof(*child));
	child->fd = -1;
	if (messages != NULL && (opts.err_fd = open(messages, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		return false;
	started = subprocess_start(&child->sp, &opts, &err) == 0;
	saved_errno = errno;
	if (opts.err_fd >= 0)
		close(opts.err_fd);
	errno = saved_errno;
	if (!started)
		return false;
	child->fd = reading ? child->sp.out_fd : child->sp.in_fd;
	child->events = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(child->events, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(child->events, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(child->events, reading ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE, child->fd, NULL, NULL);
	return true;
}

/* Sets child->stopped when the job must not go on: its lease was lost, or its time is up. */
static void
tb_child_check_job(tb_child *child, tb_job *job)
{
	if (child->stopped == NULL && !tb_job_progress(job, job->bytes_done, false))
		child->stopped = pstrdup(TB_LEASE_LOST);
	if (child->stopped == NULL)
		child->stopped = tb_job_overdue(job);
}

/* Waits for the pipe (or a timeout), serving interrupts; false once the job must stop (child->stopped). */
static bool
tb_child_wait(tb_child *child, tb_job *job)
{
	WaitEvent event;

	if (WaitEventSetWait(child->events, TB_CHILD_WAIT_MS, &event, 1, PG_WAIT_EXTENSION) > 0 &&
		(event.events & WL_LATCH_SET))
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	tb_child_check_job(child, job);
	return child->stopped == NULL;
}

ssize_t
tb_child_read(tb_child *child, tb_job *job, void *buf, size_t len)
{
	/* Checked here too: a tool that streams without pause never makes us wait. */
	if ((child->stopped = child->stopped ? child->stopped : tb_job_overdue(job)) != NULL)
		return -1;
	for (;;)
	{
		ssize_t n = read(child->fd, buf, len);

		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1;
		if (!tb_child_wait(child, job))
			return -1;
	}
}

int
tb_child_write(tb_child *child, tb_job *job, const void *buf, size_t len)
{
	const char *p = buf;

	if ((child->stopped = child->stopped ? child->stopped : tb_job_overdue(job)) != NULL)
		return -1;
	while (len > 0)
	{
		ssize_t n = write(child->fd, p, len);

		if (n > 0)
		{
			p += n;
			len -= (size_t) n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1;
		if (!tb_child_wait(child, job))
			return -1;
	}
	return 0;
}

/* Our end of the pipe and its wait set go; the tool sees EOF (or EPIPE). */
static void
tb_child_close(tb_child *child)
{
	if (child->events != NULL)
		FreeWaitEventSet(child->events);
	child->events = NULL;
	if (child->fd >= 0)
		close(child->fd);
	if (child->fd == child->sp.in_fd)
		child->sp.in_fd = -1;
	else if (child->fd == child->sp.out_fd)
		child->sp.out_fd = -1;
	child->fd = -1;
}

int
tb_child_finish(tb_child *child, tb_job *job)
{
	tb_child_close(child);
	for (;;)
	{
		int rc = subprocess_reap(&child->sp, false);

		if (rc > 0)
			return child->sp.status;
		if (rc < 0 && errno != EINTR)
			return -1;
		/* Woken when it exits where the kernel gives a pidfd; otherwise the timeout paces the loop. */
		(void) WaitLatchOrSocket(MyLatch,
								 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH |
									 (child->sp.exit_fd >= 0 ? WL_SOCKET_READABLE : 0),
								 child->sp.exit_fd, child->sp.exit_fd >= 0 ? TB_CHILD_WAIT_MS : 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		/* A job that must stop (lease lost, time up) ends its tool instead of waiting for it. */
		if (child->stopped == NULL)
		{
			tb_child_check_job(child, job);
			if (child->stopped != NULL)
				subprocess_signal(&child->sp, SIGTERM);
		}
	}
}

void
tb_child_kill(tb_child *child)
{
	tb_child_close(child);
	subprocess_end(&child->sp, SIGTERM);
}
