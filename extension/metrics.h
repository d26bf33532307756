/*
 * The metrics worker: tenant_backup.metrics_address and the background worker that
 * serves tenant_backup._metrics() there in the Prometheus text format.
 */
#ifndef TENANT_BACKUP_METRICS_H
#define TENANT_BACKUP_METRICS_H

#include "postgres.h"

#include "utils/guc.h"

/* tenant_backup.metrics_address: host:port to serve metrics on; empty (the default) is off. */
extern char *tb_metrics_address;

/* Check hook of tenant_backup.metrics_address: empty, or a numeric, non-wildcard address and a port. */
bool tb_check_metrics_address(char **newval, void **extra, GucSource source);

PGDLLEXPORT void tenant_backup_metrics_main(Datum arg);

#endif
