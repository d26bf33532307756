/*
 * Settings checked when they are set (GUC check hooks), and what needs the file
 * system checked at reload (tb_settings_warn); tenant_backup.check() lives beside them.
 */
#ifndef TENANT_BACKUP_CHECK_H
#define TENANT_BACKUP_CHECK_H

#include "postgres.h"

#include "utils/guc.h"

/* tenant_backup.storage: empty, or a URL storage_open() accepts (scheme, absolute path, known options). */
bool tb_check_storage_url(char **newval, void **extra, GucSource source);

/* Empty, or a rate core's S3 driver takes as max_bandwidth (such as 50MB/s). */
bool tb_check_max_bandwidth(char **newval, void **extra, GucSource source);

/* tenant_backup.master_key_file: empty or an absolute path. */
bool tb_check_key_file_path(char **newval, void **extra, GucSource source);

/* tenant_backup.bin_dir: empty or an absolute path. */
bool tb_check_bin_dir(char **newval, void **extra, GucSource source);

/* tenant_backup.archive_tenant: empty or a tenant name. */
bool tb_check_tenant_name(char **newval, void **extra, GucSource source);

/*
 * WARNINGs for what the settings name but the hooks cannot see: a master key file that
 * is missing, not a regular file or readable by others, a bin_dir without pg_dump, a
 * file:// storage directory that is missing or not writable. For the launcher to call
 * after it reloads the configuration; never raises an error.
 */
void tb_settings_warn(void);

#endif
