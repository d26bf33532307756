/*
 * The list of idle job workers in shared memory (pool.h): a slot per waiting worker,
 * its latch, and the request a wait => true call handed it. A spinlock guards it;
 * every critical section is a few assignments.
 */
#include "tenant_backup.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "pool.h"

int tb_worker_idle_ms = 10 * 1000;

/* max_workers is at most 64, and so are the launcher's workers; a worker that finds no slot just exits when idle. */
#define TB_POOL_SLOTS 64

typedef struct tb_pool_slot
{
	int pid;            /* 0: free */
	Latch *latch;       /* its PGPROC's, in shared memory */
	dsm_handle request; /* a caller's wait => true request, or DSM_HANDLE_INVALID */
} tb_pool_slot;

typedef struct tb_pool
{
	slock_t mutex;
	tb_pool_slot slots[TB_POOL_SLOTS];
} tb_pool;

static tb_pool *pool = NULL;
static int my_slot = -1;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
tb_pool_request_space(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(tb_pool));
}

static void
tb_pool_startup(void)
{
	bool found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pool = ShmemInitStruct("tenant_backup idle job workers", sizeof(tb_pool), &found);
	if (!found)
	{
		memset(pool, 0, sizeof(*pool));
		SpinLockInit(&pool->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
tb_pool_shmem_request(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = tb_pool_request_space;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = tb_pool_startup;
}

/* A worker that exits while idle (terminated, or the postmaster went) frees its slot; a request in it was never served.
 */
static void
tb_pool_at_exit(int code, Datum arg)
{
	(void) code;
	(void) arg;
	(void) tb_pool_idle_leave();
}

void
tb_pool_idle_enter(void)
{
	static bool exit_callback = false;

	if (pool == NULL || my_slot >= 0)
		return;
	if (!exit_callback)
	{
		before_shmem_exit(tb_pool_at_exit, (Datum) 0);
		exit_callback = true;
	}
	SpinLockAcquire(&pool->mutex);
	for (int i = 0; i < TB_POOL_SLOTS; i++)
		if (pool->slots[i].pid == 0)
		{
			pool->slots[i].pid = MyProcPid;
			pool->slots[i].latch = &MyProc->procLatch;
			pool->slots[i].request = DSM_HANDLE_INVALID;
			my_slot = i;
			break;
		}
	SpinLockRelease(&pool->mutex);
}

dsm_handle
tb_pool_idle_leave(void)
{
	dsm_handle request;

	if (pool == NULL || my_slot < 0)
		return DSM_HANDLE_INVALID;
	SpinLockAcquire(&pool->mutex);
	request = pool->slots[my_slot].request;
	pool->slots[my_slot].pid = 0;
	pool->slots[my_slot].latch = NULL;
	pool->slots[my_slot].request = DSM_HANDLE_INVALID;
	SpinLockRelease(&pool->mutex);
	my_slot = -1;
	return request;
}

int
tb_pool_hand_request(dsm_handle request)
{
	Latch *latch = NULL;
	int pid = 0;

	if (pool == NULL)
		return 0;
	SpinLockAcquire(&pool->mutex);
	for (int i = 0; i < TB_POOL_SLOTS && pid == 0; i++)
		if (pool->slots[i].pid != 0 && pool->slots[i].request == DSM_HANDLE_INVALID)
		{
			pool->slots[i].request = request;
			pid = pool->slots[i].pid;
			latch = pool->slots[i].latch;
		}
	SpinLockRelease(&pool->mutex);
	if (latch != NULL)
		SetLatch(latch);
	return pid;
}

void
tb_pool_revoke_request(dsm_segment *seg, Datum handle)
{
	(void) seg;
	if (pool == NULL)
		return;
	SpinLockAcquire(&pool->mutex);
	for (int i = 0; i < TB_POOL_SLOTS; i++)
		if (pool->slots[i].pid != 0 && pool->slots[i].request == DatumGetUInt32(handle))
			pool->slots[i].request = DSM_HANDLE_INVALID;
	SpinLockRelease(&pool->mutex);
}

bool
tb_pool_any_idle(void)
{
	bool any = false;

	if (pool == NULL)
		return false;
	SpinLockAcquire(&pool->mutex);
	for (int i = 0; i < TB_POOL_SLOTS && !any; i++)
		any = pool->slots[i].pid != 0;
	SpinLockRelease(&pool->mutex);
	return any;
}

void
tb_pool_each_idle(void (*wake)(Latch *latch))
{
	Latch *latches[TB_POOL_SLOTS];
	int n = 0;

	if (pool == NULL)
		return;
	SpinLockAcquire(&pool->mutex);
	for (int i = 0; i < TB_POOL_SLOTS; i++)
		if (pool->slots[i].pid != 0 && pool->slots[i].request == DSM_HANDLE_INVALID)
			latches[n++] = pool->slots[i].latch;
	SpinLockRelease(&pool->mutex);
	for (int i = 0; i < n; i++)
		wake(latches[i]);
}
