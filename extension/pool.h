/*
 * Idle job workers, in shared memory. A job worker with no backup left waits up to
 * tenant_backup.worker_idle_time for the next one instead of exiting; while it waits it
 * is listed here, so that a queued job's commit can wake it and a wait => true call can
 * hand it its request. Neither then waits for a background worker to start.
 */
#ifndef TENANT_BACKUP_POOL_H
#define TENANT_BACKUP_POOL_H

#include "postgres.h"

#include "storage/dsm.h"
#include "storage/latch.h"

/* tenant_backup.worker_idle_time (ms): how long a job worker waits for the next backup; 0: it exits at once. */
extern int tb_worker_idle_ms;

/* From _PG_init while shared_preload_libraries loads us: asks for the pool's shared memory. */
void tb_pool_shmem_request(void);

/* The job worker lists itself as idle. */
void tb_pool_idle_enter(void);

/*
 * The job worker is no longer idle: it leaves the list and returns the request a
 * caller handed it meanwhile (it must serve it), or DSM_HANDLE_INVALID.
 */
dsm_handle tb_pool_idle_leave(void);

/*
 * A caller hands request to an idle job worker and sets its latch; returns the
 * worker's pid, or 0 when none is idle (or the pool does not exist).
 */
int tb_pool_hand_request(dsm_handle request);

/* on_dsm_detach callback of the caller's request segment: a worker that did not take it yet never will. */
void tb_pool_revoke_request(dsm_segment *seg, Datum handle);

/* True while a job worker is idle (and so will look at the queue when woken). */
bool tb_pool_any_idle(void);

/* Calls wake(latch) for every idle job worker (the latches are in shared memory). */
void tb_pool_each_idle(void (*wake)(Latch *latch));

#endif
