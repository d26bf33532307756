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
/* tenant_backup.replica_storage_allowed: more replica URLs operators may give a tenant (comma-separated). */
extern char *tb_replica_storage_allowed;
bool tb_check_replica_storage_allowed(char **newval, void **extra, GucSource source);

/*
 * The launcher's replication pass, each round: at start and when replica_storage
 * changed, marks the backups that gained or lost a replica; then starts a replication
 * worker for each tenant with a copy due, up to tenant_backup.max_workers at once
 * (apart from the job workers), never waiting on storage itself.
 */
void tb_replicate_pass(void);

/* The replication worker of the tenant named in bgw_extra: everything due, once, then it exits. */
PGDLLEXPORT void tenant_backup_replicate_main(Datum arg);

#endif
