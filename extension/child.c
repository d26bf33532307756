/*
 * Tools run as child processes of a job worker, waited on through the latch (see
 * child.h). Not popen(): a blocked fread or pclose would stop the worker from
 * renewing its lease, and the launcher would give a live job to another attempt.
 */
#include "tenant_backup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "child.h"
#include "pg_engine.h"

#define TB_CHILD_WAIT_MS 1000

bool
tb_child_start(tb_child *child, const char *command, bool reading)
{
	int fds[2];

	memset(child, 0, sizeof(*child));
	child->fd = -1;
	if (pipe(fds) != 0)
		return false;
	fflush(NULL);
	child->pid = fork();
	if (child->pid < 0)
	{
		close(fds[0]);
		close(fds[1]);
		return false;
	}
	if (child->pid == 0)
	{
		sigset_t none;

		/* The tool gets default signal handling, not the backend's. */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (int sig = 1; sig < NSIG; sig++)
			signal(sig, SIG_DFL);
		dup2(reading ? fds[1] : fds[0], reading ? STDOUT_FILENO : STDIN_FILENO);
		close(fds[0]);
		close(fds[1]);
		execl("/bin/sh", "sh", "-c", command, (char *) NULL);
		_exit(127);
	}
	child->fd = reading ? fds[0] : fds[1];
	close(reading ? fds[1] : fds[0]);
	fcntl(child->fd, F_SETFL, fcntl(child->fd, F_GETFL) | O_NONBLOCK);
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
	child->fd = -1;
}

int
tb_child_finish(tb_child *child, tb_job *job)
{
	int status;

	tb_child_close(child);
	for (;;)
	{
		pid_t rc = waitpid(child->pid, &status, WNOHANG);

		if (rc == child->pid)
			return status;
		if (rc < 0 && errno != EINTR)
			return -1;
		/* No fd to wait on any more: the latch and the timeout pace the loop. */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		/* A job that must stop (lease lost, time up) ends its tool instead of waiting for it. */
		if (child->stopped == NULL)
		{
			tb_child_check_job(child, job);
			if (child->stopped != NULL)
				kill(child->pid, SIGTERM);
		}
	}
}

void
tb_child_kill(tb_child *child)
{
	int status;

	tb_child_close(child);
	if (child->pid > 0)
	{
		kill(child->pid, SIGTERM);
		while (waitpid(child->pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	child->pid = 0;
}
