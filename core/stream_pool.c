/*
 * Worker threads that compress and seal chunks in parallel for one stream writer.
 * The calling thread fills chunks, hashes them and emits sealed records in order;
 * workers only touch chunks handed to them, so the only shared state is the ring.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "stream_internal.h"

typedef enum stream_slot_state
{
	SLOT_FREE,
	SLOT_FILLING,
	SLOT_SUBMITTED,
	SLOT_SEALING,
	SLOT_SEALED,
	SLOT_FAILED
} stream_slot_state;

typedef struct stream_pool_slot
{
	stream_chunk chunk; /* first, so a chunk pointer is its slot's */
	stream_slot_state state;
	tb_error err;
} stream_pool_slot;

typedef struct stream_pool_worker
{
	stream_pool *pool;
	stream_sealer sealer;
	pthread_t thread;
	bool started;
} stream_pool_worker;

struct stream_pool
{
	stream_writer *writer;
	pthread_mutex_t lock;
	pthread_cond_t work_ready;
	pthread_cond_t work_done;
	stream_pool_worker *workers;
	int nworkers;
	stream_sealer trailer_sealer;
	stream_pool_slot *slots;
	int nslots;
	int head; /* oldest slot not yet emitted */
	int tail; /* next slot to hand out */
	bool stop;
};

static void *
stream_pool_work(void *arg)
{
	stream_pool_worker *worker = arg;
	stream_pool *p = worker->pool;

	pthread_mutex_lock(&p->lock);
	for (;;)
	{
		stream_pool_slot *slot = NULL;

		for (int i = 0; i < p->nslots && slot == NULL; i++)
		{
			stream_pool_slot *s = &p->slots[(p->head + i) % p->nslots];

			if (s->state == SLOT_SUBMITTED)
				slot = s;
		}
		if (slot == NULL)
		{
			if (p->stop)
				break;
			pthread_cond_wait(&p->work_ready, &p->lock);
			continue;
		}
		slot->state = SLOT_SEALING;
		pthread_mutex_unlock(&p->lock);
		tb_error_clear(&slot->err);
		int rc = stream_seal_chunk(&worker->sealer, &slot->chunk, &slot->err);
		pthread_mutex_lock(&p->lock);
		slot->state = rc == 0 ? SLOT_SEALED : SLOT_FAILED;
		pthread_cond_broadcast(&p->work_done);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

stream_pool *
stream_pool_new(stream_writer *w, const uint8_t data_key[CRYPTO_KEY_LEN], const uint8_t prefix[STREAM_NONCE_PREFIX_LEN],
				const uint8_t digest[CRYPTO_SHA256_LEN], int level, int workers, uint32_t chunk_size, tb_error *err)
{
	stream_pool *p = calloc(1, sizeof(*p));

	if (p == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	p->writer = w;
	p->nworkers = workers;
	p->nslots = 2 * workers + 1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work_ready, NULL);
	pthread_cond_init(&p->work_done, NULL);
	p->workers = calloc((size_t) workers, sizeof(stream_pool_worker));
	p->slots = calloc((size_t) p->nslots, sizeof(stream_pool_slot));
	if (p->workers == NULL || p->slots == NULL)
		goto nomem;
	for (int i = 0; i < p->nslots; i++)
		if (stream_chunk_alloc(&p->slots[i].chunk, chunk_size) != 0)
			goto nomem;
	if (stream_sealer_init(&p->trailer_sealer, data_key, prefix, digest, level, err) != 0)
		goto fail;
	for (int i = 0; i < workers; i++)
	{
		stream_pool_worker *worker = &p->workers[i];

		worker->pool = p;
		if (stream_sealer_init(&worker->sealer, data_key, prefix, digest, level, err) != 0)
			goto fail;
		if (pthread_create(&worker->thread, NULL, stream_pool_work, worker) != 0)
		{
			tb_error_set(err, TB_ERR_INTERNAL, "unable to start a compression thread");
			goto fail;
		}
		worker->started = true;
	}
	return p;

nomem:
	tb_error_set(err, TB_ERR_NOMEM, "out of memory for %d chunk buffers", p->nslots);
fail:
	stream_pool_free(p);
	return NULL;
}

static stream_slot_state
stream_pool_state(stream_pool *p, int index)
{
	stream_slot_state state;

	pthread_mutex_lock(&p->lock);
	state = p->slots[index].state;
	pthread_mutex_unlock(&p->lock);
	return state;
}

/* Emits the oldest in-flight chunk, waiting for it to be sealed. */
static int
stream_pool_emit_head(stream_pool *p, tb_error *err)
{
	stream_pool_slot *slot = &p->slots[p->head];
	stream_slot_state state;

	pthread_mutex_lock(&p->lock);
	while (slot->state == SLOT_SUBMITTED || slot->state == SLOT_SEALING)
		pthread_cond_wait(&p->work_done, &p->lock);
	state = slot->state;
	pthread_mutex_unlock(&p->lock);
	if (state == SLOT_FAILED)
	{
		*err = slot->err;
		return -1;
	}
	if (stream_writer_emit_chunk(p->writer, &slot->chunk, err) != 0)
		return -1;
	pthread_mutex_lock(&p->lock);
	slot->state = SLOT_FREE;
	pthread_mutex_unlock(&p->lock);
	p->head = (p->head + 1) % p->nslots;
	return 0;
}

stream_chunk *
stream_pool_next_free(stream_pool *p, tb_error *err)
{
	stream_pool_slot *slot = &p->slots[p->tail];

	/* The ring is full only when the next slot is the oldest one in flight. */
	while (stream_pool_state(p, p->tail) != SLOT_FREE)
		if (stream_pool_emit_head(p, err) != 0)
			return NULL;
	slot->state = SLOT_FILLING;
	p->tail = (p->tail + 1) % p->nslots;
	return &slot->chunk;
}

int
stream_pool_submit(stream_pool *p, stream_chunk *c, tb_error *err)
{
	stream_pool_slot *slot = (stream_pool_slot *) c;

	pthread_mutex_lock(&p->lock);
	slot->state = SLOT_SUBMITTED;
	pthread_cond_signal(&p->work_ready);
	pthread_mutex_unlock(&p->lock);
	/* Keep the sink busy with whatever is already sealed, without waiting. */
	for (stream_slot_state s = stream_pool_state(p, p->head); s == SLOT_SEALED || s == SLOT_FAILED;
		 s = stream_pool_state(p, p->head))
		if (stream_pool_emit_head(p, err) != 0)
			return -1;
	return 0;
}

int
stream_pool_drain(stream_pool *p, tb_error *err)
{
	while (stream_pool_state(p, p->head) != SLOT_FREE)
		if (stream_pool_emit_head(p, err) != 0)
			return -1;
	return 0;
}

stream_sealer *
stream_pool_sealer(stream_pool *p)
{
	return &p->trailer_sealer;
}

void
stream_pool_free(stream_pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->work_ready);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; p->workers && i < p->nworkers; i++)
	{
		if (p->workers[i].started)
			pthread_join(p->workers[i].thread, NULL);
		stream_sealer_free(&p->workers[i].sealer);
	}
	stream_sealer_free(&p->trailer_sealer);
	for (int i = 0; p->slots && i < p->nslots; i++)
		stream_chunk_release(&p->slots[i].chunk);
	pthread_cond_destroy(&p->work_ready);
	pthread_cond_destroy(&p->work_done);
	pthread_mutex_destroy(&p->lock);
	free(p->workers);
	free(p->slots);
	free(p);
}
