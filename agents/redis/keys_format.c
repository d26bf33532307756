/*
 * The logical backup format's records (see redis_agent.h): written straight into the
 * sealed stream, read back through a small buffer so that memory is bounded by the
 * largest single value, never by the number of keys.
 */
#include "redis_agent.h"

#include <stdlib.h>
#include <string.h>

/* A DUMP payload larger than this is not something Redis can have produced. */
#define RECORD_VALUE_MAX ((uint64_t) 16 << 30)

static void
put_le(unsigned char *out, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		out[i] = (unsigned char) (v >> (8 * i));
}

static uint64_t
get_le(const unsigned char *in, int bytes)
{
	uint64_t v = 0;

	for (int i = bytes - 1; i >= 0; i--)
		v = (v << 8) | in[i];
	return v;
}

int
redis_record_write(repo_put *put, const redis_record *rec, tb_error *err)
{
	unsigned char head[32];
	size_t n = 0;

	head[n++] = (unsigned char) rec->type;
	switch (rec->type)
	{
		case 'S':
			put_le(head + n, rec->db, 4);
			put_le(head + n + 4, rec->name_len, 4);
			n += 8;
			return repo_put_write(put, head, n, err) != 0 || repo_put_write(put, rec->name, rec->name_len, err) != 0
					   ? -1
					   : 0;
		case 'K':
			put_le(head + n, rec->name_len, 4);
			n += 4;
			if (repo_put_write(put, head, n, err) != 0 || repo_put_write(put, rec->name, rec->name_len, err) != 0)
				return -1;
			put_le(head, (uint64_t) rec->expires_ms, 8);
			put_le(head + 8, rec->value_len, 8);
			return repo_put_write(put, head, 16, err) != 0 || repo_put_write(put, rec->value, rec->value_len, err) != 0
					   ? -1
					   : 0;
		case 'E':
			put_le(head + n, rec->keys, 8);
			put_le(head + n + 8, rec->value_bytes, 8);
			return repo_put_write(put, head, n + 16, err);
	}
	return tb_error_set(err, TB_ERR_INTERNAL, "unknown record type '%c'", rec->type);
}

struct redis_record_reader
{
	agent_bufread *in;
	char *name, *value;
};

redis_record_reader *
redis_record_reader_open(repo_reader *reader, tb_error *err)
{
	redis_record_reader *rr = calloc(1, sizeof(*rr));

	if (rr == NULL || (rr->in = agent_bufread_open(reader, err)) == NULL)
	{
		if (rr == NULL)
			tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		free(rr);
		return NULL;
	}
	return rr;
}

void
redis_record_reader_close(redis_record_reader *rr)
{
	if (rr == NULL)
		return;
	agent_bufread_close(rr->in);
	free(rr->name);
	free(rr->value);
	free(rr);
}

/* A length-prefixed string into *out (replacing what it held). */
static int
record_read_string(redis_record_reader *rr, char **out, uint64_t len, tb_error *err)
{
	if (len > RECORD_VALUE_MAX)
		return tb_error_set(err, TB_ERR_CORRUPT, "a record claims %llu bytes", (unsigned long long) len);
	free(*out);
	if ((*out = malloc(len ? len : 1)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory for a value of %llu bytes", (unsigned long long) len);
	return agent_bufread_exact(rr->in, *out, len, err);
}

int
redis_record_next(redis_record_reader *rr, redis_record *rec, tb_error *err)
{
	unsigned char head[16];
	char type;
	ssize_t got = agent_bufread_read(rr->in, &type, 1, err);

	if (got <= 0)
		return (int) got;
	memset(rec, 0, sizeof(*rec));
	rec->type = type;
	switch (type)
	{
		case 'S':
			if (agent_bufread_exact(rr->in, head, 8, err) != 0 ||
				record_read_string(rr, &rr->name, get_le(head + 4, 4), err) != 0)
				return -1;
			rec->db = (uint32_t) get_le(head, 4);
			rec->name = rr->name;
			rec->name_len = get_le(head + 4, 4);
			return 1;
		case 'K':
			if (agent_bufread_exact(rr->in, head, 4, err) != 0 ||
				record_read_string(rr, &rr->name, get_le(head, 4), err) != 0)
				return -1;
			rec->name = rr->name;
			rec->name_len = get_le(head, 4);
			if (agent_bufread_exact(rr->in, head, 16, err) != 0 ||
				record_read_string(rr, &rr->value, get_le(head + 8, 8), err) != 0)
				return -1;
			rec->expires_ms = (int64_t) get_le(head, 8);
			rec->value = rr->value;
			rec->value_len = get_le(head + 8, 8);
			return 1;
		case 'E':
			if (agent_bufread_exact(rr->in, head, 16, err) != 0)
				return -1;
			rec->keys = get_le(head, 8);
			rec->value_bytes = get_le(head + 8, 8);
			return 1;
	}
	return tb_error_set(err, TB_ERR_CORRUPT, "unknown record type 0x%02x in the backup", (unsigned char) type);
}
