/*
 * A backup's plaintext read as records: small reads come out of a buffer, large ones go
 * straight into the caller's memory, so a record format costs no more than the stream.
 */
#include "agent.h"

#include <stdlib.h>
#include <string.h>

#define BUFREAD_SIZE (256 * 1024)

struct agent_bufread
{
	repo_reader *reader;
	unsigned char *buf;
	size_t pos, len;
	bool eof;
};

agent_bufread *
agent_bufread_open(repo_reader *reader, tb_error *err)
{
	agent_bufread *b = calloc(1, sizeof(*b));

	if (b == NULL || (b->buf = malloc(BUFREAD_SIZE)) == NULL)
	{
		free(b);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	b->reader = reader;
	return b;
}

void
agent_bufread_close(agent_bufread *b)
{
	if (b == NULL)
		return;
	free(b->buf);
	free(b);
}

ssize_t
agent_bufread_read(agent_bufread *b, void *out, size_t len, tb_error *err)
{
	size_t done = 0;

	while (done < len)
	{
		size_t take;

		if (b->pos == b->len)
		{
			ssize_t got;

			if (b->eof)
				break;
			if (len - done >= BUFREAD_SIZE)
			{
				got = repo_reader_read(b->reader, (char *) out + done, len - done, err);
				if (got < 0)
					return -1;
				b->eof = got == 0;
				done += (size_t) got;
				continue;
			}
			got = repo_reader_read(b->reader, b->buf, BUFREAD_SIZE, err);
			if (got < 0)
				return -1;
			b->eof = got == 0;
			b->pos = 0;
			b->len = (size_t) got;
			continue;
		}
		take = b->len - b->pos < len - done ? b->len - b->pos : len - done;
		memcpy((char *) out + done, b->buf + b->pos, take);
		b->pos += take;
		done += take;
	}
	return (ssize_t) done;
}

int
agent_bufread_exact(agent_bufread *b, void *out, size_t len, tb_error *err)
{
	ssize_t got = agent_bufread_read(b, out, len, err);

	if (got < 0)
		return -1;
	if ((size_t) got < len)
		return tb_error_set(err, TB_ERR_CORRUPT, "the backup ends inside a record");
	return 0;
}
