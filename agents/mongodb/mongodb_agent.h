/* The pieces of tenant-backup-agent-mongodb: where a tenant's database is, and the archive format. */
#ifndef TB_MONGODB_AGENT_H
#define TB_MONGODB_AGENT_H

#include <mongoc/mongoc.h>

#include "agent.h"

/* A tenant's database: a client for the job's locator with its credentials, and the database name. */
typedef struct mongo_source
{
	mongoc_client_t *client;
	char *database;
	char *where; /* host:port list, for messages */
} mongo_source;

/*
 * Refuses a locator naming admin, local or config, or carrying a URI option outside the
 * allow-list (none reads a file); the agent's mongodb_user and mongodb_password go only
 * to servers listed in mongodb_fallback_credentials_hosts.
 */
int mongo_source_open(const agent_job *job, mongo_source *src, tb_error *err);
/* admin, local, config: the server's own. */
bool mongo_is_reserved_database(const char *name);
/*
 * Reports which server and database the client reached (hello's replica set and hosts,
 * or a standalone's own host name in serverStatus) to the control plane, and a restore's
 * target; call it before anything is read or written.
 */
int mongo_claim_identity(mongo_source *src, agent_job *job, tb_error *err);
void mongo_source_close(mongo_source *src);

/* A libmongoc error as err: what was being done, and the server's or driver's words. */
int mongo_error(tb_error *err, const bson_error_t *error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * What a backup holds, as job->contents: {"collections": {"<name>": <documents>, ...}}
 * from collections (name -> int64 count; views are not in it), malloc'd JSON text.
 */
char *mongo_contents_json(const bson_t *collections, tb_error *err);

/* doc's string field key, or otherwise when it has none. */
const char *mongo_field_utf8(const bson_t *doc, const char *key, const char *otherwise);

/*
 * The mongodump archive format (mongo-tools common/archive/spec.md): magic, a header
 * document, one metadata document per collection, terminator, then per collection
 * segments (namespace header, documents, terminator) and an EOF header carrying the
 * CRC-64 (ECMA, as Go's crc64.ECMA) of all its documents, then a terminator.
 */
#define MONGO_ARCHIVE_MAGIC 0x8199e26d
#define MONGO_ARCHIVE_TERMINATOR 0xffffffffu

/* CRC-64/ECMA as the archive uses it; start from 0, feed documents in order. */
uint64_t mongo_crc64(uint64_t crc, const uint8_t *data, size_t len);

int mongo_archive_write_doc(repo_put *put, const bson_t *doc, tb_error *err);
int mongo_archive_write_u32(repo_put *put, uint32_t value, tb_error *err);

/* Reads the archive back one item at a time, memory bounded by the largest document. */
typedef struct mongo_archive_reader mongo_archive_reader;

typedef enum mongo_item
{
	MONGO_ITEM_END = 0,   /* the stream's authenticated end */
	MONGO_ITEM_DOC,       /* a document (valid until the next call) */
	MONGO_ITEM_TERMINATOR /* 0xffffffff */
} mongo_item;

mongo_archive_reader *mongo_archive_reader_open(repo_reader *reader, tb_error *err);
/* Checks the magic number: call once, first. */
int mongo_archive_read_magic(mongo_archive_reader *ar, tb_error *err);
/* The next item; -1 with err set on a malformed archive or a failed read. */
int mongo_archive_next(mongo_archive_reader *ar, mongo_item *item, bson_t *doc, tb_error *err);
void mongo_archive_reader_close(mongo_archive_reader *ar);

int mongo_backup(agent_job *job, repo_put *put, tb_error *err);
int mongo_restore(agent_job *job, tb_error *err);

#endif
