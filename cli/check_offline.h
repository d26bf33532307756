/* tenant-backup check without the control plane (cmd_check_offline.c), chosen by cmd_check. */
#ifndef TB_CLI_CHECK_OFFLINE_H
#define TB_CLI_CHECK_OFFLINE_H

#include <stdbool.h>

/*
 * Whether "check" runs from storage and the master key alone: --offline, --storage,
 * --master-key or --tenant on its command line, or neither --control nor a PG*
 * connection variable to reach a control plane with.
 */
bool cli_check_wants_offline(int argc, char **argv);

/* The storage round trip and the key checks, one line (or JSON object) each; exit 1 on an error. */
int cmd_check_offline(int argc, char **argv);

#endif
