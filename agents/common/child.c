/*
 * Tools an agent runs for a job (mariadb-dump, mariadb): pipes to their stdin and
 * stdout, their stderr's end kept for the error message, and every wait bounded to a
 * second so that the job's lease is renewed and a stop is noticed while a tool works.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILD_STDERR_KEEP 2048
#define CHILD_WAIT_MS 1000

struct agent_child
{
	pid_t pid;
	const char *tool;
	int in_fd;  /* its stdin, -1 once closed */
	int out_fd; /* its stdout */
	int err_fd; /* its stderr, -1 at its end */
	char stderr_tail[CHILD_STDERR_KEEP + 1];
	size_t stderr_len;
};

/* In the child: only its three pipes and keep_fds stay open, signals as at birth. */
static void
child_exec(const char *const *argv, int in_fd, int out_fd, int err_fd, const int *keep_fds, int nkeep)
{
	sigset_t none;
	int max_fd = (int) sysconf(_SC_OPEN_MAX);

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if ((in_fd >= 0 && dup2(in_fd, 0) < 0) || (out_fd >= 0 && dup2(out_fd, 1) < 0) || dup2(err_fd, 2) < 0)
		_exit(127);
	if (in_fd < 0)
	{
		int devnull = open("/dev/null", O_RDONLY);

		if (devnull < 0 || dup2(devnull, 0) < 0)
			_exit(127);
	}
	for (int fd = 3; fd < max_fd && fd < 65536; fd++)
	{
		bool keep = false;

		for (int i = 0; i < nkeep; i++)
			keep = keep || keep_fds[i] == fd;
		if (!keep)
			close(fd);
	}
	execvp(argv[0], (char *const *) argv);
	dprintf(2, "cannot run %s: %s", argv[0], strerror(errno));
	_exit(127);
}

agent_child *
agent_child_start(const char *const *argv, int pipes, const int *keep_fds, int nkeep, tb_error *err)
{
	int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
	agent_child *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory starting %s", argv[0]), NULL;
	c->tool = argv[0];
	if (((pipes & AGENT_CHILD_STDIN) && pipe2(in_pipe, O_CLOEXEC) != 0) ||
		((pipes & AGENT_CHILD_STDOUT) && pipe2(out_pipe, O_CLOEXEC) != 0) || pipe2(err_pipe, O_CLOEXEC) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "cannot make pipes for %s: %s", argv[0], strerror(errno));
		goto fail;
	}
	/* A larger pipe means fewer wake-ups for a tool that streams gigabytes. */
	if (out_pipe[0] >= 0)
		(void) fcntl(out_pipe[0], F_SETPIPE_SZ, 1024 * 1024);
	if (in_pipe[1] >= 0)
		(void) fcntl(in_pipe[1], F_SETPIPE_SZ, 1024 * 1024);
	c->pid = fork();
	if (c->pid < 0)
	{
		tb_error_set(err, TB_ERR_IO, "cannot start %s: %s", argv[0], strerror(errno));
		goto fail;
	}
	if (c->pid == 0)
		child_exec(argv, in_pipe[0], out_pipe[1], err_pipe[1], keep_fds, nkeep);
	c->in_fd = in_pipe[1];
	c->out_fd = out_pipe[0];
	c->err_fd = err_pipe[0];
	if (in_pipe[0] >= 0)
		close(in_pipe[0]);
	if (out_pipe[1] >= 0)
		close(out_pipe[1]);
	close(err_pipe[1]);
	/* Every wait goes through poll() with a timeout, never a blocking read or write. */
	for (int i = 0; i < 3; i++)
	{
		int fd = i == 0 ? c->in_fd : i == 1 ? c->out_fd : c->err_fd;

		if (fd >= 0)
			fcntl(fd, F_SETFL, O_NONBLOCK);
	}
	return c;
fail:
	for (int i = 0; i < 2; i++)
	{
		if (in_pipe[i] >= 0)
			close(in_pipe[i]);
		if (out_pipe[i] >= 0)
			close(out_pipe[i]);
		if (err_pipe[i] >= 0)
			close(err_pipe[i]);
	}
	free(c);
	return NULL;
}

/* Keeps the last CHILD_STDERR_KEEP bytes of the tool's stderr. */
static void
child_drain_stderr(agent_child *c)
{
	char buf[4096];
	ssize_t n = read(c->err_fd, buf, sizeof(buf));

	if (n <= 0)
	{
		if (n == 0 || (errno != EINTR && errno != EAGAIN))
		{
			close(c->err_fd);
			c->err_fd = -1;
		}
		return;
	}
	if ((size_t) n >= CHILD_STDERR_KEEP)
	{
		memcpy(c->stderr_tail, buf + n - CHILD_STDERR_KEEP, CHILD_STDERR_KEEP);
		c->stderr_len = CHILD_STDERR_KEEP;
	}
	else
	{
		size_t keep = c->stderr_len + (size_t) n > CHILD_STDERR_KEEP ? CHILD_STDERR_KEEP - (size_t) n : c->stderr_len;

		memmove(c->stderr_tail, c->stderr_tail + c->stderr_len - keep, keep);
		memcpy(c->stderr_tail + keep, buf, (size_t) n);
		c->stderr_len = keep + (size_t) n;
	}
	c->stderr_tail[c->stderr_len] = '\0';
}

/*
 * Waits up to a second until fd is ready for events (or the tool's stderr has something),
 * then ticks the job. Returns 1 when fd is ready, 0 to wait again, -1 to stop.
 */
static int
child_wait(agent_child *c, agent_job *job, int fd, short events, tb_error *err)
{
	struct pollfd pfd[2] = {{.fd = fd, .events = events}, {.fd = c->err_fd, .events = POLLIN}};
	int n = poll(pfd, 2, CHILD_WAIT_MS);

	if (n < 0 && errno != EINTR)
		return tb_error_set(err, TB_ERR_IO, "cannot wait for %s: %s", c->tool, strerror(errno));
	if (n > 0 && pfd[1].revents)
		child_drain_stderr(c);
	if (agent_job_tick(job, err) != 0)
		return -1;
	return n > 0 && pfd[0].revents ? 1 : 0;
}

ssize_t
agent_child_read(agent_child *c, agent_job *job, void *buf, size_t len, tb_error *err)
{
	for (;;)
	{
		ssize_t n = read(c->out_fd, buf, len);
		int ready;

		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EINTR)
			return tb_error_set(err, TB_ERR_IO, "cannot read the output of %s: %s", c->tool, strerror(errno));
		do
			ready = child_wait(c, job, c->out_fd, POLLIN, err);
		while (ready == 0);
		if (ready < 0)
			return -1;
	}
}

int
agent_child_write(agent_child *c, agent_job *job, const void *buf, size_t len, tb_error *err)
{
	const char *p = buf;

	while (len > 0)
	{
		ssize_t n = write(c->in_fd, p, len);
		int ready;

		if (n > 0)
		{
			p += n;
			len -= (size_t) n;
			continue;
		}
		if (n < 0 && errno == EPIPE)
			return agent_child_finish(c, job, err) == 0
					   ? tb_error_set(err, TB_ERR_IO, "%s stopped reading its input", c->tool)
					   : -1;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return tb_error_set(err, TB_ERR_IO, "cannot write to %s: %s", c->tool, strerror(errno));
		do
			ready = child_wait(c, job, c->in_fd, POLLOUT, err);
		while (ready == 0);
		if (ready < 0)
			return -1;
	}
	return 0;
}

int
agent_child_finish(agent_child *c, agent_job *job, tb_error *err)
{
	int status;

	if (c->in_fd >= 0)
	{
		close(c->in_fd);
		c->in_fd = -1;
	}
	while (c->err_fd >= 0)
		if (child_wait(c, job, c->err_fd, POLLIN, err) < 0)
			return -1;
	while (waitpid(c->pid, &status, 0) < 0)
		if (errno != EINTR)
			return tb_error_set(err, TB_ERR_IO, "cannot wait for %s: %s", c->tool, strerror(errno));
	c->pid = 0;
	/* Its last line is the one that says why. */
	while (c->stderr_len > 0 &&
		   (c->stderr_tail[c->stderr_len - 1] == '\n' || c->stderr_tail[c->stderr_len - 1] == '\r'))
		c->stderr_tail[--c->stderr_len] = '\0';
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		return tb_error_set(err, TB_ERR_IO, "%s failed (exit status %d): %s", c->tool, WEXITSTATUS(status),
							c->stderr_len ? c->stderr_tail : "no message");
	return tb_error_set(err, TB_ERR_IO, "%s was killed by signal %d: %s", c->tool, WTERMSIG(status),
						c->stderr_len ? c->stderr_tail : "no message");
}

void
agent_child_kill(agent_child *c)
{
	if (c == NULL)
		return;
	if (c->pid > 0)
	{
		kill(c->pid, SIGKILL);
		while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (c->in_fd >= 0)
		close(c->in_fd);
	if (c->out_fd >= 0)
		close(c->out_fd);
	if (c->err_fd >= 0)
		close(c->err_fd);
	free(c);
}

int
agent_secret_pipe(const char *contents, tb_error *err)
{
	int fds[2];
	size_t len = strlen(contents), done = 0;

	/* Not close-on-exec: the tool opens it as /dev/fd/N. */
	if (pipe(fds) != 0)
		return tb_error_set(err, TB_ERR_IO, "cannot make a pipe for a tool's options: %s", strerror(errno));
	if (len >= 65536)
	{
		close(fds[0]);
		close(fds[1]);
		return tb_error_set(err, TB_ERR_INVALID, "a tool's option file is too long for a pipe");
	}
	while (done < len)
	{
		ssize_t n = write(fds[1], contents + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
		{
			close(fds[0]);
			close(fds[1]);
			return tb_error_set(err, TB_ERR_IO, "cannot write a tool's options: %s", strerror(errno));
		}
		done += (size_t) n;
	}
	close(fds[1]);
	return fds[0];
}
