/*
 * The tenant's own key command (bring your own key): a program the tenant controls,
 * typically a KMS client, that wraps and unwraps its tenant keys. Its output is key
 * material or opaque wrapped bytes: it is read into memory only, never logged, never
 * part of an error. See keys.h for the contract.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keys.h"

#define KEY_COMMAND_TIMEOUT_MS 60000
#define KEY_COMMAND_STDERR_MAX 200

/* The first line of what the command said on stderr, printable characters only. */
static void
key_command_first_line(const char *in, size_t len, char *out, size_t size)
{
	size_t n = 0;

	for (size_t i = 0; i < len && in[i] != '\n' && n + 1 < size; i++)
		out[n++] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
	out[n] = '\0';
}

static void
key_command_child(int in_fd, int out_fd, int err_fd, const char *command, const char *op, const char *tenant,
				  const char *key_id)
{
	if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		_exit(127);
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	signal(SIGPIPE, SIG_DFL);
	setenv("TENANT_BACKUP_KEY_OP", op, 1);
	setenv("TENANT_BACKUP_TENANT", tenant, 1);
	setenv("TENANT_BACKUP_KEY_ID", key_id, 1);
	execl("/bin/sh", "sh", "-c", command, (char *) NULL);
	_exit(127);
}

/* Milliseconds left until deadline (a CLOCK_MONOTONIC time in ms), at least 0. */
static int
key_command_ms_left(long long deadline)
{
	struct timespec ts;
	long long now;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	return now >= deadline ? 0 : (int) (deadline - now);
}

int
keys_command_run(const char *command, const char *op, const char *tenant, const char *key_id, const char *input,
				 char *out, size_t out_size, tb_error *err)
{
	int in_sock[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
	char errbuf[KEY_COMMAND_STDERR_MAX + 1];
	size_t out_len = 0, err_len = 0, in_off = 0, in_len = strlen(input);
	bool too_long = false;
	struct timespec ts;
	long long deadline;
	int status = 0;
	pid_t pid;
	int rc = -1;

	if (command == NULL || command[0] == '\0')
		return tb_error_set(err, TB_ERR_INVALID, "tenant '%s' has no key command", tenant);
	/* A socket for its stdin: a command that exits without reading gets no SIGPIPE sent our way. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_sock) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
		pipe2(err_pipe, O_CLOEXEC) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to start the key command of tenant '%s': %s", tenant, strerror(errno));
		goto done;
	}
	pid = fork();
	if (pid < 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to start the key command of tenant '%s': %s", tenant, strerror(errno));
		goto done;
	}
	if (pid == 0)
		key_command_child(in_sock[1], out_pipe[1], err_pipe[1], command, op, tenant, key_id);
	close(in_sock[1]);
	close(out_pipe[1]);
	close(err_pipe[1]);
	in_sock[1] = out_pipe[1] = err_pipe[1] = -1;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	deadline = (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + KEY_COMMAND_TIMEOUT_MS;
	while (out_pipe[0] >= 0 || err_pipe[0] >= 0)
	{
		struct pollfd pfd[3] = {{.fd = in_sock[0], .events = POLLOUT},
								{.fd = out_pipe[0], .events = POLLIN},
								{.fd = err_pipe[0], .events = POLLIN}};
		int ready = poll(pfd, 3, key_command_ms_left(deadline));

		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0)
		{
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			tb_error_set(err, TB_ERR_KEY, "the key command of tenant '%s' did not finish %s key %s within %d s", tenant,
						 strcmp(op, "wrap") == 0 ? "wrapping" : "unwrapping", key_id, KEY_COMMAND_TIMEOUT_MS / 1000);
			goto done;
		}
		if (pfd[0].revents)
		{
			ssize_t n = in_off < in_len ? send(in_sock[0], input + in_off, in_len - in_off, MSG_NOSIGNAL) : 0;

			if (n > 0)
				in_off += (size_t) n;
			if (n <= 0 || in_off == in_len)
			{
				close(in_sock[0]);
				in_sock[0] = -1;
			}
		}
		if (pfd[1].revents)
		{
			char buf[4096];
			ssize_t n = read(out_pipe[0], buf, sizeof(buf));

			if (n > 0 && out_len + (size_t) n < out_size)
			{
				memcpy(out + out_len, buf, (size_t) n);
				out_len += (size_t) n;
			}
			else if (n > 0)
				too_long = true;
			crypto_wipe(buf, sizeof(buf));
			if (n <= 0)
			{
				close(out_pipe[0]);
				out_pipe[0] = -1;
			}
		}
		if (pfd[2].revents)
		{
			char buf[1024];
			ssize_t n = read(err_pipe[0], buf, sizeof(buf));

			if (n > 0 && err_len < KEY_COMMAND_STDERR_MAX)
			{
				size_t take =
					(size_t) n < KEY_COMMAND_STDERR_MAX - err_len ? (size_t) n : KEY_COMMAND_STDERR_MAX - err_len;

				memcpy(errbuf + err_len, buf, take);
				err_len += take;
			}
			if (n <= 0)
			{
				close(err_pipe[0]);
				err_pipe[0] = -1;
			}
		}
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
	{
		char line[KEY_COMMAND_STDERR_MAX + 1];

		key_command_first_line(errbuf, err_len, line, sizeof(line));
		tb_error_set(err, TB_ERR_KEY, "the key command of tenant '%s' failed %s key %s (%s %d)%s%s", tenant,
					 strcmp(op, "wrap") == 0 ? "wrapping" : "unwrapping", key_id,
					 WIFEXITED(status) ? "exit status" : "signal",
					 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), line[0] ? ": " : "", line);
		goto done;
	}
	if (too_long)
	{
		tb_error_set(err, TB_ERR_KEY, "the key command of tenant '%s' printed more than %zu bytes for key %s", tenant,
					 out_size - 1, key_id);
		goto done;
	}
	while (out_len > 0 && (out[out_len - 1] == '\n' || out[out_len - 1] == '\r'))
		out_len--;
	out[out_len] = '\0';
	rc = 0;
done:
	for (int i = 0; i < 2; i++)
	{
		if (in_sock[i] >= 0)
			close(in_sock[i]);
		if (out_pipe[i] >= 0)
			close(out_pipe[i]);
		if (err_pipe[i] >= 0)
			close(err_pipe[i]);
	}
	if (rc != 0)
		crypto_wipe(out, out_size);
	return rc;
}
