/*
 * A wait => true request, shared with its request worker through a DSM segment: the
 * caller fills it in, the worker queues the jobs and leaves any error message here.
 */
#ifndef TENANT_BACKUP_REQUEST_H
#define TENANT_BACKUP_REQUEST_H

#include "postgres.h"

typedef struct tb_request
{
	char kind[8]; /* backup or restore */
	char tenant[64];
	char engine[16];         /* "" for every engine */
	int64 backup_id;         /* 0 for the latest */
	char target[1024];       /* "" to restore in place */
	char token[17];          /* ties the queued jobs to the caller */
	char actor[NAMEDATALEN]; /* the caller's session user, for the audit trail */
	Oid database;
	/* set by the worker when it could not queue the jobs */
	int sqlerrcode;
	char error[1024];
	char hint[512];
} tb_request;

#endif
