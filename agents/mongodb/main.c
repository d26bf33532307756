/* tenant-backup-agent-mongodb: backups and restores of MongoDB tenants. */
#include "mongodb_agent.h"

static const agent_engine mongodb_engine = {
	.engine = "mongodb",
	.program = "tenant-backup-agent-mongodb",
	.config_help = "  mongodb_user, mongodb_password when the locator has none (the catalog's sealed\n"
				   "                                 password comes first); SCRAM, never argv\n",
	.backup = mongo_backup,
	.restore = mongo_restore,
};

int
main(int argc, char **argv)
{
	int rc;

	mongoc_init();
	rc = agent_main(&mongodb_engine, argc, argv);
	mongoc_cleanup();
	return rc;
}
