/*
 * Tools an agent runs for a job (mariadb-dump, mariadb), through core's subprocess
 * runner: pipes to their stdin and stdout, their stderr's end kept for the error
 * message, and every wait bounded to a second so that the job's lease is renewed and
 * a stop is noticed while a tool works.
 */
#include "agent.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "subprocess.h"

#define CHILD_WAIT_MS 1000

struct agent_child
{
	subprocess sp;
	const char *tool;
};

agent_child *
agent_child_start(const char *const *argv, int pipes, const int *keep_fds, int nkeep, tb_error *err)
{
	subprocess_options opts = {
		.argv = argv,
		.in = (pipes & AGENT_CHILD_STDIN) ? SUBPROCESS_PIPE : SUBPROCESS_DEVNULL,
		.out = (pipes & AGENT_CHILD_STDOUT) ? SUBPROCESS_PIPE : SUBPROCESS_INHERIT,
		.err = SUBPROCESS_PIPE,
		.keep_fds = keep_fds,
		.nkeep = nkeep,
		/* A larger pipe means fewer wake-ups for a tool that streams gigabytes. */
		.pipe_size = 1024 * 1024,
		/* Its last line is the one that says why. */
		.stderr_tail = true,
	};
	agent_child *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory starting %s", argv[0]), NULL;
	c->tool = argv[0];
	if (subprocess_start(&c->sp, &opts, err) != 0)
	{
		free(c);
		return NULL;
	}
	return c;
}

/*
 * Waits up to a second until fd is ready for events (or the tool's stderr has something),
 * then ticks the job. Returns 1 when fd is ready, 0 to wait again, -1 to stop.
 */
static int
child_wait(agent_child *c, agent_job *job, int fd, short events, tb_error *err)
{
	struct pollfd pfd[2] = {{.fd = fd, .events = events}, {.fd = c->sp.err_fd, .events = POLLIN}};
	int n = poll(pfd, 2, CHILD_WAIT_MS);

	if (n < 0 && errno != EINTR)
		return tb_error_set(err, TB_ERR_IO, "cannot wait for %s: %s", c->tool, strerror(errno));
	if (n > 0 && pfd[1].revents)
		subprocess_read_stderr(&c->sp);
	if (agent_job_tick(job, err) != 0)
		return -1;
	return n > 0 && pfd[0].revents ? 1 : 0;
}

ssize_t
agent_child_read(agent_child *c, agent_job *job, void *buf, size_t len, tb_error *err)
{
	for (;;)
	{
		ssize_t n = read(c->sp.out_fd, buf, len);
		int ready;

		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EINTR)
			return tb_error_set(err, TB_ERR_IO, "cannot read the output of %s: %s", c->tool, strerror(errno));
		do
			ready = child_wait(c, job, c->sp.out_fd, POLLIN, err);
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
		ssize_t n = write(c->sp.in_fd, p, len);
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
			ready = child_wait(c, job, c->sp.in_fd, POLLOUT, err);
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
	const char *said;

	subprocess_close_stdin(&c->sp);
	while (c->sp.err_fd >= 0)
		if (child_wait(c, job, c->sp.err_fd, POLLIN, err) < 0)
			return -1;
	if (subprocess_reap(&c->sp, true) < 0)
		return tb_error_set(err, TB_ERR_IO, "cannot wait for %s: %s", c->tool, strerror(errno));
	status = c->sp.status;
	said = subprocess_stderr_trimmed(&c->sp);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		return tb_error_set(err, TB_ERR_IO, "%s failed (exit status %d): %s", c->tool, WEXITSTATUS(status),
							said[0] ? said : "no message");
	return tb_error_set(err, TB_ERR_IO, "%s was killed by signal %d: %s", c->tool, WTERMSIG(status),
						said[0] ? said : "no message");
}

void
agent_child_kill(agent_child *c)
{
	if (c == NULL)
		return;
	subprocess_end(&c->sp, SIGKILL);
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
