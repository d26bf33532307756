/*
 * The storage round trip of tenant_backup.check() and of 'tenant-backup check': write,
 * read, list and delete one probe object, so that a permission or consistency problem
 * shows now rather than at the next backup.
 */
#ifndef TB_STORAGE_CHECK_H
#define TB_STORAGE_CHECK_H

#include "storage.h"

/* At the storage root, where each new tenant needs to write; no tenant name begins with "_". */
#define STORAGE_CHECK_PREFIX "_check-"

/*
 * One step's outcome: name ("storage write", ...), status "ok" or "error", detail (what
 * happened, naming the probe), hint (what to do; NULL when ok). The strings live only
 * for the call.
 */
typedef void (*storage_check_report_fn)(void *ctx, const char *name, const char *status, const char *detail,
										const char *hint);

/*
 * Writes STORAGE_CHECK_PREFIX<random>.probe holding body, reads it back, finds it in a
 * listing and deletes it, reporting each step (access_hint is the hint of a step that
 * fails for lack of rights). Stops after a failed write; otherwise tries the delete
 * whatever happened before, so no probe is left behind unless deleting fails. Returns
 * 0 when every step was ok, 1 when one failed, -1 with err set when it could not start
 * (no random name).
 */
int storage_check_round_trip(storage *st, const char *body, const char *access_hint, storage_check_report_fn report,
							 void *ctx, tb_error *err);

#endif
