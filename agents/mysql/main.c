/* tenant-backup-agent-mysql: backups and restores of MySQL/MariaDB tenants. */
#include "mysql_agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * restore-direct into mysql://user@host:port/NEW: NEW is the restore target, and the
 * locator names the backed-up database (when its manifest says which), so that a
 * sequence default the dump qualifies with that name is pointed at NEW's own sequence,
 * as a restore to a target does. The backed-up database need not exist here.
 */
static int
mysql_direct_target(agent_job *job, const agent_uri *into, const char *source_database, tb_error *err)
{
	const char *path = strstr(job->locator, "://"), *query;
	char *encoded, *locator = NULL;

	if (into->path == NULL || *into->path == '\0')
		return tb_error_set(err, TB_ERR_INVALID, "--into names no database (mysql://user@host:port/NEW)");
	if ((job->restore_target = strdup(into->path)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	if (source_database == NULL || strcmp(source_database, into->path) == 0)
		return 0;
	path = strchr(path + 3, '/');
	query = strchr(path, '?');
	if ((encoded = agent_uri_encode(source_database)) == NULL ||
		asprintf(&locator, "%.*s/%s%s", (int) (path - job->locator), job->locator, encoded, query ? query : "") < 0)
		locator = NULL;
	free(encoded);
	if (locator == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	free(job->locator);
	job->locator = locator;
	return 0;
}

static const agent_engine mysql_engine = {
	.engine = "mysql",
	.program = "tenant-backup-agent-mysql",
	.config_help = "  mysql_user, mysql_password     when the locator has none (the catalog's sealed\n"
				   "                                 password comes first)\n"
				   "  mysql_dump_command             default mariadb-dump (mysqldump for MySQL 8)\n"
				   "  mysql_client_command           default mariadb (mysql for MySQL 8)\n",
	.backup = mysql_backup,
	.restore = mysql_restore,
	.direct_target = mysql_direct_target,
};

int
main(int argc, char **argv)
{
	int rc;

	mysql_library_init(0, NULL, NULL);
	rc = agent_main(&mysql_engine, argc, argv);
	mysql_library_end();
	return rc;
}
