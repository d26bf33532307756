/*
 * A wait => true request, shared through a DSM segment with the worker that queues its
 * jobs (an idle job worker, or else a request worker started for it): the caller fills
 * it in, the worker queues the jobs and leaves any error message here.
 */
#ifndef TENANT_BACKUP_REQUEST_H
#define TENANT_BACKUP_REQUEST_H

#include "postgres.h"

#include "utils/timestamp.h"

/* The first member of every request: a worker attaching a segment the caller already dropped (its handle reused) sees
 * another. */
#define TB_REQUEST_MAGIC 0x74627271

typedef struct tb_request
{
	uint32 magic; /* TB_REQUEST_MAGIC */
	char kind[8]; /* backup or restore */
	char tenant[64];
	char engine[16];         /* "" for every engine */
	int64 backup_id;         /* 0 for the latest */
	char target[1024];       /* "" to restore in place */
	bool bare_target;        /* privileges => false: the target without the backup's database grants */
	char token[17];          /* ties the queued jobs to the caller */
	char actor[NAMEDATALEN]; /* the caller's session user, for the audit trail */
	Oid database;
	int caller_pid; /* woken when the jobs are queued (an idle job worker's request) and when they end */
	/* set by the worker: done once it queued the jobs or knows why it could not */
	bool done;
	bool handed_back; /* done, but an idle job worker gave it up (a lock it would wait for): a request worker queues it
					   */
	int sqlerrcode;
	char error[1024];
	char hint[512];
} tb_request;

/* tenant_backup.agent_wait: seconds a wait => true call waits without any agent for a queued job's engine; 0: forever.
 */
extern int tb_agent_wait_s;

/*
 * For a wait => true call waiting since waiting_since on the jobs of request token
 * (inside the caller's SPI connection): raises an ERROR naming the engine, the job and
 * how long no agent for it was seen once a job of the request is still queued for an
 * engine none of whose agents was seen within agent_wait, counted from the newer of the
 * agents' last heartbeat and waiting_since. The job stays queued.
 */
void tb_request_check_agents(const char *token, TimestampTz waiting_since);

/* What else a worker does in the transaction that queues a request's jobs (SPI connected). */
typedef void (*tb_request_then)(void *arg);

/*
 * Queues req's jobs in a transaction of its own (their end wakes req->caller_pid),
 * with then(arg) in it unless then is NULL, or leaves in req why it could not; then
 * marks it done and wakes the caller. For a background worker connected to
 * req->database, outside a transaction. lock_timeout_ms > 0 (an idle job worker, which
 * counts in max_workers, must not wait on a lock a session holds): a lock not had by
 * then hands the request back instead.
 */
void tb_request_enqueue(tb_request *req, int lock_timeout_ms, tb_request_then then, void *arg);

#endif
