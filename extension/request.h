/*
 * A wait => true request, shared with its request worker through a DSM segment: the
 * caller fills it in, the worker queues the jobs and leaves any error message here.
 */
#ifndef TENANT_BACKUP_REQUEST_H
#define TENANT_BACKUP_REQUEST_H

#include "postgres.h"

#include "utils/timestamp.h"

typedef struct tb_request
{
	char kind[8]; /* backup or restore */
	char tenant[64];
	char engine[16];         /* "" for every engine */
	int64 backup_id;         /* 0 for the latest */
	char target[1024];       /* "" to restore in place */
	bool bare_target;        /* privileges => false: the target without the backup's database grants */
	char token[17];          /* ties the queued jobs to the caller */
	char actor[NAMEDATALEN]; /* the caller's session user, for the audit trail */
	Oid database;
	/* set by the worker when it could not queue the jobs */
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

#endif
