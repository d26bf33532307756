/* Shared pieces of the tenant-backup command: options every command takes, reporting. */
#ifndef TB_CLI_H
#define TB_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "keys.h"
#include "manifest.h"
#include "repo.h"
#include "storage/storage.h"

#define CLI_OPT_STORAGE 1000
#define CLI_OPT_MASTER_KEY 1001
#define CLI_OPT_KEY_COMMAND 1002

/* getopt_long entries for --storage, --master-key, --key-command and --help. */
#define CLI_COMMON_OPTIONS                                                                                             \
	{"storage", required_argument, NULL, CLI_OPT_STORAGE},                                                             \
		{"master-key", required_argument, NULL, CLI_OPT_MASTER_KEY},                                                   \
		{"key-command", required_argument, NULL, CLI_OPT_KEY_COMMAND},                                                 \
	{                                                                                                                  \
		"help", no_argument, NULL, 'h'                                                                                 \
	}

/* The --key-command lines of the commands' usage texts. */
#define CLI_KEY_COMMAND_USAGE                                                                                          \
	"  --key-command CMD   the tenant's own key command, which opens the tenant keys it\n"                             \
	"                      wrapped (bring your own key; env TENANT_BACKUP_KEY_COMMAND)\n"

typedef struct cli_context
{
	const char *storage_url;
	const char *master_key_file;
	/* The tenant's own key command (BYOK), or NULL; never its output anywhere. */
	const char *key_command;
	bool key_command_given; /* by --key-command, not by the environment */
} cli_context;

typedef struct cli_progress
{
	const char *label;
	bool enabled;
	double started;
} cli_progress;

/* Fills ctx from the environment; options override it later. */
void cli_context_init(cli_context *ctx);

/* Handles one of a command's own options; returns 0, or 2 after reporting bad usage. */
typedef int (*cli_option_fn)(int opt, const char *arg, void *command_state);

/*
 * Parses argv with getopt_long: common options into ctx, --help prints usage, the
 * rest goes to on_option. Returns 0 to go on, -1 after --help (exit 0), 2 on bad usage.
 */
int cli_parse(const char *command, const char *usage, int argc, char **argv, const struct option *options,
			  cli_context *ctx, cli_option_fn on_option, void *command_state);

storage *cli_open_storage(const cli_context *ctx);
/* The master key file, with the key command (if any) set to open BYOK tenants' keys. */
int cli_load_master_key(const cli_context *ctx, master_key *out);

/* Prints "tenant-backup COMMAND: message" once (escaped); returns the exit status for the error. */
int cli_fail(const char *command, const tb_error *err);

/* Enough for cli_escape of any key or error message. */
#define CLI_ESCAPED_MAX (4 * TB_ERROR_MSG_MAX + 1)

/*
 * text fit for a terminal, whatever storage put in it: printable ASCII as itself, a
 * backslash as \\, every other byte as \xHH; cut short with "..." if out is too small.
 * Everything printed that came from storage goes through it. Returns out.
 */
const char *cli_escape(const char *text, char *out, size_t size);

/*
 * The manifest of backup object, required: an object without one is not a backup (or
 * was put in the place of one). Read from storage and validated (manifest_from_json:
 * its own sibling, below its tenant and engine, the backup id its name carries). When
 * it is missing, the error is the object header's (opened with master) if that fails.
 */
int cli_backup_manifest(storage *st, const master_key *master, const char *object, manifest *m, tb_error *err);

/*
 * How every command reads a backup: against the manifest it required (and hashing
 * what it reads, for its sha256), decoding ahead, with a progress line or none
 * (NULL). Fills *options and returns it.
 */
const repo_read_options *cli_read_checked(repo_read_options *options, const manifest *required, cli_progress *progress);

typedef struct cli_listing_handlers
{
	/* Each backup whose manifest is valid and whose object is listed, newest first; non-zero stops. */
	int (*backup)(const manifest *m, void *arg);
	/* Everything else found (key and why, both unescaped): bad manifests, lone objects or manifests. */
	void (*problem)(const char *key, const char *why, void *arg);
	void *arg;
	/* With tenant and engine: only what lies below <tenant>/<engine>/<below> ("base/"); NULL: all. */
	const char *below;
} cli_listing_handlers;

/*
 * The backups of tenant (NULL: every tenant) and engine (NULL: every engine) in
 * storage, from their manifests, never trusting the listing: only keys below their
 * own <tenant>/<engine>/ count, archived WAL is left out. Returns 0, or -1 (err set)
 * when the listing itself failed; problems never fail it.
 */
int cli_list_backups(storage *st, const char *tenant, const char *engine, const cli_listing_handlers *handlers,
					 tb_error *err);
int cli_usage_error(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* bytes for people: "512 B", "1.5 KiB", "12.3 MiB", "4.0 GiB"; returns out. */
const char *cli_human_bytes(uint64_t bytes, char *out, size_t size);

/* Prints doc (taken over; NULL: out of memory) as one line of compact JSON; -1 (err set) if it cannot. */
struct json_t;
int cli_print_json(struct json_t *doc, tb_error *err);

/* A file:// storage's directory must exist (a typo is not an empty storage); -1 (err set) if not. */
int cli_storage_exists(const cli_context *ctx, tb_error *err);

/* A progress line on stderr when it is a terminal, nothing otherwise. */
void cli_progress_start(cli_progress *p, const char *label);
void cli_progress_update(void *ctx, uint64_t bytes);
void cli_progress_end(cli_progress *p);

/* The archived WAL segments of a tenant, for finding gaps (cmd_pitr.c). */
typedef struct wal_segments wal_segments;

wal_segments *wal_segments_new(void);
/* Notes an archived file by its object key; only whole segments count. */
void wal_segments_add(wal_segments *w, const char *object, uint64_t segment_bytes);
/* Prints each run of missing segments ("gap ..."); returns how many runs. */
int wal_segments_report_gaps(wal_segments *w);
void wal_segments_free(wal_segments *w);

int cmd_keygen(int argc, char **argv);
int cmd_put(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_restore_rdb(int argc, char **argv);
int cmd_wal_fetch(int argc, char **argv);
int cmd_restore_pitr(int argc, char **argv);
int cmd_rotate_master(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_jobs(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_restore_direct(int argc, char **argv);

#endif
