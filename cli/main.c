/*
 * tenant-backup: list, read, verify, write and restore backups straight from storage with
 * only the master key; back up, restore and watch tenants through the control plane.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct cli_command
{
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} cli_command;

static const cli_command cli_commands[] = {
	{"keygen", cmd_keygen, "create a new master key file"},
	{"put", cmd_put, "seal standard input as a new backup of a tenant"},
	{"ls", cmd_ls, "list backups, newest first"},
	{"cat", cmd_cat, "authenticate and decrypt a backup to standard output"},
	{"verify", cmd_verify, "authenticate backups without writing their data"},
	{"restore-rdb", cmd_restore_rdb, "write a Redis RDB snapshot backup as DIR/dump.rdb"},
	{"restore-pitr", cmd_restore_pitr, "set up a dedicated PostgreSQL tenant's cluster to recover to a point in time"},
	{"wal-fetch", cmd_wal_fetch, "decrypt one archived WAL file (PostgreSQL's restore_command)"},
	{"rotate-master", cmd_rotate_master, "re-wrap the tenant keys in storage with a new master key"},
	{"restore-direct", cmd_restore_direct, "restore a tenant's newest backup from storage alone (no control plane)"},
	{"backup", cmd_backup, "control plane: queue (and --wait for) a tenant's backup"},
	{"restore", cmd_restore, "control plane: restore a tenant and follow the restore"},
	{"status", cmd_status, "control plane: last success, overdue, running and queued jobs per database"},
	{"jobs", cmd_jobs, "control plane: the newest jobs with state, phase, bytes and errors"},
	{"check", cmd_check, "control plane: tenant_backup.check(), one line per check"},
};

static void
cli_main_usage(FILE *out)
{
	fprintf(out, "Usage: tenant-backup COMMAND [OPTIONS]\n\nCommands:\n");
	for (size_t i = 0; i < sizeof(cli_commands) / sizeof(cli_commands[0]); i++)
		fprintf(out, "  %-15s %s\n", cli_commands[i].name, cli_commands[i].summary);
	fprintf(out, "\nCommon options:\n"
				 "  --version           print the program's name and version, then exit\n"
				 "  --storage URL       file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n"
				 "  --master-key FILE   master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n" CLI_KEY_COMMAND_USAGE
				 "\n'tenant-backup COMMAND --help' describes each command.\n");
}

int
main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
	{
		cli_main_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "--version") == 0)
	{
		printf("tenant-backup %s\n", TB_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cli_commands) / sizeof(cli_commands[0]); i++)
		if (strcmp(argv[1], cli_commands[i].name) == 0)
			return cli_commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "tenant-backup: unknown command '%s'\n", argv[1]);
	cli_main_usage(stderr);
	return 2;
}
