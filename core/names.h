/* Validation of the names that become parts of storage keys: tenants, engines, WAL files. */
#ifndef TB_NAMES_H
#define TB_NAMES_H

#include <stddef.h>

#include "error.h"

#define NAMES_TENANT_MAX 63

/* [a-z0-9][a-z0-9_-]{0,62} */
int names_check_tenant(const char *tenant, tb_error *err);

/* postgres, mysql, mongodb or redis. */
int names_check_engine(const char *engine, tb_error *err);

/*
 * Where an archived WAL file of a dedicated PostgreSQL tenant lives below
 * <tenant>/postgres/: wal/<timeline>/<file>.tbk, and the backup id its header carries
 * (the file name in lower case, '.' as '-'), which ties the object to that one file.
 * file: a segment (000000010000000000000003), a timeline history (00000002.history),
 * a backup history (...00000028.backup) or a partial segment (....partial).
 */
#define NAMES_WAL_OBJECT_MAX 128
int names_wal_object(const char *file, char *object, size_t object_size, char *backup_id, size_t id_size,
					 tb_error *err);

#endif
