/* The pieces of tenant-backup-agent-redis: where a tenant's keys are, and how to reach them. */
#ifndef TB_REDIS_AGENT_H
#define TB_REDIS_AGENT_H

#include <hiredis/hiredis.h>

#include "agent.h"

/*
 * A tenant's keys: a database number on a shared server (prefix ""), a key prefix in
 * one, or a dedicated server's whole dataset (rdb).
 */
typedef struct redis_source
{
	char *host;
	int port;
	int db;
	char *prefix; /* "" for the whole database */
	bool rdb;     /* back up the whole server as an RDB snapshot */
	char *user;   /* NULL: the default user */
	char *password;
} redis_source;

int redis_source_from_job(const agent_job *job, redis_source *src, tb_error *err);
void redis_source_free(redis_source *src);

/* Connected, authenticated and on database db; NULL with err set. */
redisContext *redis_connect(const redis_source *src, int db, tb_error *err);

/*
 * Reports the server c reached (its run_id) and the source's database number to the
 * control plane, which refuses keys overlapping another tenant's on that server. Call
 * it on the working connection before anything is read or written.
 */
#define REDIS_RUN_ID_LEN 40
int redis_claim_identity(redisContext *c, const redis_source *src, agent_job *job, char run_id[REDIS_RUN_ID_LEN + 1],
						 tb_error *err);

/* A reply that is an error (or none: the connection failed) as err, naming what was done. */
int redis_reply_error(redisContext *c, const redisReply *reply, const char *what, tb_error *err);

/* A SCAN MATCH pattern for every key beginning with prefix (glob characters escaped); caller frees. */
char *redis_prefix_pattern(const char *prefix, size_t len);

/*
 * Where a restore stages its keys before they take the live ones' places: inside the
 * destination's own namespace, so that they go nowhere another tenant looks, under
 * <prefix>tenant-backup:restore:<job>:<token>: where the token (32 hex digits) is an
 * HMAC-SHA-256 of the job id under the master key. Any agent retrying the job finds the
 * same names; a tenant cannot make a key that passes for one, so a user key named like
 * that is data like any other.
 */
#define REDIS_STAGING_MARK "tenant-backup:restore:"
#define REDIS_STAGING_TOKEN_LEN 32

/* The staging mark of job ("tenant-backup:restore:<job>:<token>:"), without the prefix, into out. */
void redis_staging_mark(const master_key *master, int64_t job_id, char *out, size_t size);

/* Whether key (of a namespace prefix_len bytes long) is a restore's staged key (its token checks), not data. */
bool redis_is_staging_key(const master_key *master, const char *key, size_t len, size_t prefix_len);

/* Every key of prefix (escaped pattern), in SCAN batches: fn gets each batch's keys; job (if any) ticks. */
typedef int (*redis_scan_fn)(redisContext *c, redisReply **keys, size_t n, void *arg, tb_error *err);
int redis_scan(redisContext *c, agent_job *job, const char *prefix, size_t prefix_len, redis_scan_fn fn, void *arg,
			   tb_error *err);

/* The wall clock in milliseconds: TTLs are stored as the time a key expires. */
int64_t redis_now_ms(void);

/*
 * The logical format, all integers little-endian:
 *   "TBREDIS1"
 *   'S' u32 db, u32 prefix length, prefix               where the keys were
 *   'K' u32 key length, key without the prefix, i64 the time it expires in ms since
 *       the epoch (0: never), u64 value length, value as DUMP gave it    per key
 *   'E' u64 keys, u64 value bytes                        end: what came before
 */
#define REDIS_KEYS_MAGIC "TBREDIS1"

typedef struct redis_record
{
	char type; /* 'S', 'K' or 'E' */
	uint32_t db;
	char *name; /* S: prefix, K: key (malloc'd) */
	size_t name_len;
	int64_t expires_ms;
	char *value; /* K: DUMP payload (malloc'd) */
	size_t value_len;
	uint64_t keys, value_bytes; /* E */
} redis_record;

int redis_record_write(repo_put *put, const redis_record *rec, tb_error *err);

/* Reads records from a backup whose magic was read; memory bounded by the largest value. */
typedef struct redis_record_reader redis_record_reader;
redis_record_reader *redis_record_reader_open(repo_reader *reader, tb_error *err);
/* 1 with a record (valid until the next call), 0 at the stream's authenticated end, -1. */
int redis_record_next(redis_record_reader *rr, redis_record *rec, tb_error *err);
void redis_record_reader_close(redis_record_reader *rr);

/*
 * Logical backups of a database number or key prefix; job->contents {"keys": n}, the
 * keys written. A drill loads reader into the staging as the restore does, and removes
 * it again; live keys are never touched.
 */
int redis_keys_backup(agent_job *job, const redis_source *src, repo_put *put, tb_error *err);
int redis_keys_restore(agent_job *job, const redis_source *src, repo_reader *reader, tb_error *err);
int redis_keys_drill(agent_job *job, const redis_source *src, repo_reader *reader, tb_error *err);
/*
 * Finishes what restores and drills of other jobs left in the keyspace prefix of c's
 * database: a swap whose journal is there is taken to its end (the backup it restores
 * had authenticated and loaded), the staged keys of one that died before are removed.
 * Every job in a keyspace runs it first; 0, or -1 with err.
 */
int redis_keys_recover(agent_job *job, redisContext *c, const char *prefix, tb_error *err);

/*
 * RDB snapshots of a dedicated server; job->contents {"rdb_crc64": "<16 hex digits>"},
 * the checksum the snapshot ends with, its 8 bytes in their order in the file.
 */
int redis_rdb_backup(agent_job *job, const redis_source *src, repo_put *put, tb_error *err);
/*
 * Writes dump.rdb into redis_restore_dir, or into the target directory inside it (a
 * path relative to it, or absolute under it), never over an existing file or through a
 * symbolic link, and creating no directory.
 */
int redis_rdb_restore(agent_job *job, tb_error *err);
/*
 * Writes dump.rdb into a new scratch directory (under redis_restore_dir, else the temp
 * directory), has redis-check-rdb check it, reads its checksum, and removes the directory.
 */
int redis_rdb_drill(agent_job *job, tb_error *err);

#endif
