/*
 * Read-ahead for a stream reader: one thread reads, authenticates and decompresses
 * the next records into a small ring of plaintext buffers while the caller hashes
 * and consumes the current one. Records are handed over strictly in order; an error
 * is handed over in place of the record that failed.
 */
#include <pthread.h>
#include <stdlib.h>

#include "stream_internal.h"

#define STREAM_READAHEAD_SLOTS 3

typedef struct stream_readahead_slot
{
	uint8_t *plain;
	stream_decoded decoded;
	bool full;
	bool failed;
	tb_error err;
} stream_readahead_slot;

struct stream_readahead
{
	stream_reader *reader;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	stream_readahead_slot slots[STREAM_READAHEAD_SLOTS];
	int consumer_slot; /* the slot the caller holds, -1 before the first record */
	int next_to_consume;
	bool stop;
};

static void *
stream_readahead_run(void *arg)
{
	stream_readahead *ra = arg;

	for (int i = 0;; i = (i + 1) % STREAM_READAHEAD_SLOTS)
	{
		stream_readahead_slot *slot = &ra->slots[i];
		bool done;

		pthread_mutex_lock(&ra->lock);
		while (slot->full && !ra->stop)
			pthread_cond_wait(&ra->changed, &ra->lock);
		if (ra->stop)
		{
			pthread_mutex_unlock(&ra->lock);
			break;
		}
		pthread_mutex_unlock(&ra->lock);

		tb_error_clear(&slot->err);
		slot->failed = stream_reader_decode(ra->reader, slot->plain, &slot->decoded, &slot->err) != 0;
		done = slot->failed || slot->decoded.is_trailer;

		pthread_mutex_lock(&ra->lock);
		slot->full = true;
		pthread_cond_broadcast(&ra->changed);
		pthread_mutex_unlock(&ra->lock);
		if (done)
			break;
	}
	return NULL;
}

stream_readahead *
stream_readahead_start(stream_reader *r, tb_error *err)
{
	stream_readahead *ra = calloc(1, sizeof(*ra));

	if (ra == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	ra->reader = r;
	ra->consumer_slot = -1;
	for (int i = 0; i < STREAM_READAHEAD_SLOTS; i++)
		if ((ra->slots[i].plain = malloc(stream_reader_chunk_size(r))) == NULL)
		{
			for (int j = 0; j < i; j++)
				free(ra->slots[j].plain);
			free(ra);
			tb_error_set(err, TB_ERR_NOMEM, "out of memory for read-ahead buffers");
			return NULL;
		}
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->changed, NULL);
	if (stream_thread_start(&ra->thread, stream_readahead_run, ra) != 0)
	{
		tb_error_set(err, TB_ERR_INTERNAL, "unable to start the read-ahead thread");
		for (int i = 0; i < STREAM_READAHEAD_SLOTS; i++)
			free(ra->slots[i].plain);
		pthread_cond_destroy(&ra->changed);
		pthread_mutex_destroy(&ra->lock);
		free(ra);
		return NULL;
	}
	return ra;
}

int
stream_readahead_next(stream_readahead *ra, const uint8_t **plain, stream_decoded *out, tb_error *err)
{
	stream_readahead_slot *slot = &ra->slots[ra->next_to_consume];

	pthread_mutex_lock(&ra->lock);
	if (ra->consumer_slot >= 0)
	{
		ra->slots[ra->consumer_slot].full = false; /* the caller is done with it */
		pthread_cond_broadcast(&ra->changed);
	}
	while (!slot->full)
		pthread_cond_wait(&ra->changed, &ra->lock);
	pthread_mutex_unlock(&ra->lock);
	ra->consumer_slot = ra->next_to_consume;
	ra->next_to_consume = (ra->next_to_consume + 1) % STREAM_READAHEAD_SLOTS;
	if (slot->failed)
	{
		*err = slot->err;
		return -1;
	}
	*plain = slot->plain;
	*out = slot->decoded;
	return 0;
}

void
stream_readahead_stop(stream_readahead *ra)
{
	if (ra == NULL)
		return;
	pthread_mutex_lock(&ra->lock);
	ra->stop = true;
	pthread_cond_broadcast(&ra->changed);
	pthread_mutex_unlock(&ra->lock);
	pthread_join(ra->thread, NULL);
	for (int i = 0; i < STREAM_READAHEAD_SLOTS; i++)
		free(ra->slots[i].plain);
	pthread_cond_destroy(&ra->changed);
	pthread_mutex_destroy(&ra->lock);
	free(ra);
}
