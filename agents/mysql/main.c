/* tenant-backup-agent-mysql: backups and restores of MySQL/MariaDB tenants. */
#include "mysql_agent.h"

static const agent_engine mysql_engine = {
	.engine = "mysql",
	.program = "tenant-backup-agent-mysql",
	.config_help = "  mysql_user, mysql_password     when the locator has none (the catalog's sealed\n"
				   "                                 password comes first)\n"
				   "  mysql_dump_command             default mariadb-dump (mysqldump for MySQL 8)\n"
				   "  mysql_client_command           default mariadb (mysql for MySQL 8)\n",
	.backup = mysql_backup,
	.restore = mysql_restore,
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
