/* Error recording for the core library (see error.h). */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int
tb_error_set(tb_error *err, tb_errcode code, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return -1;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return -1;
}

int
tb_error_prefix(tb_error *err, const char *fmt, ...)
{
	char prefix[TB_ERROR_MSG_MAX];
	char joined[2 * TB_ERROR_MSG_MAX + 2];
	va_list ap;

	if (err == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	snprintf(joined, sizeof(joined), "%s: %s", prefix, err->msg);
	joined[sizeof(err->msg) - 1] = '\0';
	memcpy(err->msg, joined, sizeof(err->msg));
	return -1;
}

void
tb_error_clear(tb_error *err)
{
	err->code = TB_OK;
	err->msg[0] = '\0';
}

const char *
tb_errcode_name(tb_errcode code)
{
	switch (code)
	{
		case TB_OK:
			return "ok";
		case TB_ERR_INVALID:
			return "invalid input";
		case TB_ERR_IO:
			return "I/O error";
		case TB_ERR_NOT_FOUND:
			return "not found";
		case TB_ERR_EXISTS:
			return "already exists";
		case TB_ERR_CORRUPT:
			return "corrupt or tampered object";
		case TB_ERR_KEY:
			return "wrong key";
		case TB_ERR_STORAGE:
			return "storage error";
		case TB_ERR_STORAGE_AUTH:
			return "storage authentication error";
		case TB_ERR_NOMEM:
			return "out of memory";
		case TB_ERR_INTERNAL:
			return "internal error";
	}
	return "unknown error";
}
