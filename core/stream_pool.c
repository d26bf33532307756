/*
 * Threads that seal one stream writer's chunks in parallel. The calling thread fills
 * chunks and hashes the plaintext; workers compress and seal; one emitter thread
 * hands sealed records to the sink in index order and hashes what is stored. The
 * ring of slots is the only shared state, guarded by one mutex.
 */
#include <pthread.h>
#include <signal.h>
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
	pthread_cond_t work_ready; /* a slot was submitted, or stop */
	pthread_cond_t sealed;     /* a slot was sealed or failed, or stop */
	pthread_cond_t freed;      /* a slot was emitted, or the emitter failed */
	stream_pool_worker *workers;
	int nworkers;
	pthread_t emitter;
	bool emitter_started;
	stream_sealer trailer_sealer;
	stream_pool_slot *slots;
	int nslots;
	int head; /* oldest slot not yet emitted: the emitter's */
	int tail; /* next slot to hand out: the caller's */
	bool stop;
	bool failed; /* sealing or the sink failed; err says why */
	tb_error err;
};

int
stream_thread_start(pthread_t *thread, void *(*run)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(thread, NULL, run, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

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
		pthread_cond_broadcast(&p->sealed);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void *
stream_pool_emit(void *arg)
{
	stream_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	while (!p->failed)
	{
		stream_pool_slot *slot = &p->slots[p->head];
		tb_error err = {0};
		int rc;

		if (slot->state != SLOT_SEALED && slot->state != SLOT_FAILED)
		{
			if (p->stop)
				break;
			pthread_cond_wait(&p->sealed, &p->lock);
			continue;
		}
		if (slot->state == SLOT_FAILED)
		{
			p->err = slot->err;
			p->failed = true;
			break;
		}
		pthread_mutex_unlock(&p->lock);
		rc = stream_writer_emit_chunk(p->writer, &slot->chunk, &err);
		pthread_mutex_lock(&p->lock);
		if (rc != 0)
		{
			p->err = err;
			p->failed = true;
			break;
		}
		slot->state = SLOT_FREE;
		p->head = (p->head + 1) % p->nslots;
		pthread_cond_broadcast(&p->freed);
	}
	pthread_cond_broadcast(&p->freed);
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
	p->nslots = 2 * workers + 2;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work_ready, NULL);
	pthread_cond_init(&p->sealed, NULL);
	pthread_cond_init(&p->freed, NULL);
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
		if (stream_thread_start(&worker->thread, stream_pool_work, worker) != 0)
			goto nothread;
		worker->started = true;
	}
	if (stream_thread_start(&p->emitter, stream_pool_emit, p) != 0)
		goto nothread;
	p->emitter_started = true;
	return p;

nothread:
	tb_error_set(err, TB_ERR_INTERNAL, "unable to start a compression thread");
	goto fail;
nomem:
	tb_error_set(err, TB_ERR_NOMEM, "out of memory for %d chunk buffers", p->nslots);
fail:
	stream_pool_free(p);
	return NULL;
}

stream_chunk *
stream_pool_next_free(stream_pool *p, tb_error *err)
{
	stream_pool_slot *slot = &p->slots[p->tail];

	pthread_mutex_lock(&p->lock);
	while (slot->state != SLOT_FREE && !p->failed)
		pthread_cond_wait(&p->freed, &p->lock);
	if (p->failed)
	{
		*err = p->err;
		pthread_mutex_unlock(&p->lock);
		return NULL;
	}
	slot->state = SLOT_FILLING;
	pthread_mutex_unlock(&p->lock);
	p->tail = (p->tail + 1) % p->nslots;
	return &slot->chunk;
}

int
stream_pool_submit(stream_pool *p, stream_chunk *c, tb_error *err)
{
	stream_pool_slot *slot = (stream_pool_slot *) c;
	int rc = 0;

	pthread_mutex_lock(&p->lock);
	if (p->failed)
	{
		*err = p->err;
		rc = -1;
	}
	else
	{
		slot->state = SLOT_SUBMITTED;
		pthread_cond_signal(&p->work_ready);
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

int
stream_pool_drain(stream_pool *p, tb_error *err)
{
	int rc = 0;

	pthread_mutex_lock(&p->lock);
	while (!p->failed && p->slots[p->head].state != SLOT_FREE)
		pthread_cond_wait(&p->freed, &p->lock);
	if (p->failed)
	{
		*err = p->err;
		rc = -1;
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
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
	pthread_cond_broadcast(&p->sealed);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; p->workers && i < p->nworkers; i++)
	{
		if (p->workers[i].started)
			pthread_join(p->workers[i].thread, NULL);
		stream_sealer_free(&p->workers[i].sealer);
	}
	if (p->emitter_started)
		pthread_join(p->emitter, NULL);
	stream_sealer_free(&p->trailer_sealer);
	for (int i = 0; p->slots && i < p->nslots; i++)
		stream_chunk_release(&p->slots[i].chunk);
	pthread_cond_destroy(&p->work_ready);
	pthread_cond_destroy(&p->sealed);
	pthread_cond_destroy(&p->freed);
	pthread_mutex_destroy(&p->lock);
	free(p->workers);
	free(p->slots);
	free(p);
}
