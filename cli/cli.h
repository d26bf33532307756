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
#define CLI_OPT_REPLICA 1003

/* getopt_long entries for --storage, --master-key, --key-command and --help. */
#define CLI_COMMON_OPTIONS                                                                                             \
	{"storage", required_argument, NULL, CLI_OPT_STORAGE},                                                             \
		{"master-key", required_argument, NULL, CLI_OPT_MASTER_KEY},                                                   \
		{"key-command", required_argument, NULL, CLI_OPT_KEY_COMMAND},                                                 \
	{                                                                                                                  \
		"help", no_argument, NULL, 'h'                                                                                 \
	}

/* The reading commands' --replica (cli_copies). */
#define CLI_REPLICA_OPTION                                                                                             \
	{                                                                                                                  \
		"replica", required_argument, NULL, CLI_OPT_REPLICA                                                            \
	}
#define CLI_REPLICA_USAGE                                                                                              \
	"  --replica URL       the replica storage: what is missing or fails authentication in\n"                          \
	"                      --storage is read from there, saying so (env TENANT_BACKUP_REPLICA_STORAGE)\n"

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
	bool key_command_given;  /* by --key-command, not by the environment */
	const char *replica_url; /* --replica: the reading commands' second copy, or NULL */
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

/* Orders manifests newest first (started, then object key), for qsort. */
int cli_manifest_newest_first(const void *a, const void *b);

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

/*
 * The storages a reading command reads (copies.c): the primary (--storage) and, with
 * --replica, the replica, which holds the same keys (objects, manifests, key documents).
 */
typedef struct cli_copies
{
	const char *command;
	storage *primary;
	storage *replica; /* NULL without --replica */
} cli_copies;

/* Opens ctx's storages, reporting on stderr why one cannot be opened (-1). */
int cli_copies_open(cli_copies *c, const char *command, const cli_context *ctx);
void cli_copies_close(cli_copies *c);

/* One read of a backup from one storage, st: 0, or -1 with err set. */
typedef struct cli_copy_read cli_copy_read;
struct cli_copy_read
{
	int (*read)(cli_copy_read *r, storage *st, tb_error *err);
	void *arg;
	/* Set by read once some of the data went out (cat's stdout): a failure after that is final. */
	bool handed_on;
};

/*
 * Reads object with r: from the primary, and when that failed because the primary's
 * copy is at fault (missing, failing authentication, unreadable: repo_copy_failure)
 * and there is a replica, once more from the replica, saying so on stderr. 0, or -1
 * with err set (both copies' reasons when both failed).
 */
int cli_copies_read(cli_copies *c, const char *object, cli_copy_read *r, tb_error *err);

/*
 * As cli_list_backups, over both copies: each backup once (the primary's manifest when
 * both have it), newest first. A problem of one copy whose backup the other has whole
 * is noted on stderr, not passed on; the others are passed on as "in <copy>: why".
 * One storage that cannot be listed is noted; both: -1 with err set.
 */
int cli_copies_list(cli_copies *c, const char *tenant, const char *engine, const cli_listing_handlers *handlers,
					tb_error *err);

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
