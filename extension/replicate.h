/*
 * Replication to a second storage (replicate.c): the replica URL setting and its
 * checks, and the replication worker the launcher starts per tenant.
 */
#ifndef TENANT_BACKUP_REPLICATE_H
#define TENANT_BACKUP_REPLICATE_H

#include "postgres.h"

#include "utils/guc.h"

/* tenant_backup.replica_storage: empty (no replica) or a storage URL that does not overlap tenant_backup.storage. */
extern char *tb_replica_storage_url;
bool tb_check_replica_storage_url(char **newval, void **extra, GucSource source);

#endif
