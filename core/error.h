/*
 * Error reporting for the core library: every fallible call fills a tb_error with
 * a code and a message that names the tenant, object or chunk involved.
 * core/ never exits or prints; callers decide how to report.
 */
#ifndef TB_ERROR_H
#define TB_ERROR_H

typedef enum tb_errcode
{
	TB_OK = 0,
	TB_ERR_INVALID,      /* bad input from the caller: names, options, URLs */
	TB_ERR_IO,           /* local I/O failure */
	TB_ERR_NOT_FOUND,    /* object, key or file does not exist */
	TB_ERR_EXISTS,       /* refusing to overwrite */
	TB_ERR_CORRUPT,      /* object fails authentication or is malformed */
	TB_ERR_KEY,          /* wrong master or tenant key */
	TB_ERR_STORAGE,      /* storage service error after retries */
	TB_ERR_STORAGE_AUTH, /* storage rejected our credentials */
	TB_ERR_NOMEM,
	TB_ERR_INTERNAL
} tb_errcode;

#define TB_ERROR_MSG_MAX 1024

typedef struct tb_error
{
	tb_errcode code;
	char msg[TB_ERROR_MSG_MAX];
} tb_error;

/* Records an error; always returns -1 so callers can `return tb_error_set(...)`. */
int tb_error_set(tb_error *err, tb_errcode code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prepends context ("while uploading 'x': ") to an error already set; returns -1. */
int tb_error_prefix(tb_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void tb_error_clear(tb_error *err);

const char *tb_errcode_name(tb_errcode code);

#endif
