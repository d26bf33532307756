/*
 * Where the S3 driver's credentials come from, in the order of the AWS SDKs' default
 * chain: the AWS_* environment, the shared credentials and config files (a profile's
 * keys or its credential_process), web identity (STS AssumeRoleWithWebIdentity) and
 * the EC2 instance metadata service (IMDSv2). Temporary credentials carry their
 * expiry and are resolved again before it.
 */
#ifndef TB_S3_CREDENTIALS_H
#define TB_S3_CREDENTIALS_H

#include <stdbool.h>
#include <time.h>

#include "../error.h"

typedef struct s3_credentials
{
	char *access_key;
	char *secret_key;    /* never in a message */
	char *session_token; /* NULL for long-term keys; sent as x-amz-security-token */
	time_t obtained;     /* when they were resolved */
	time_t expiration;   /* 0 when they do not expire */
	char source[320];    /* "the environment", "profile 'x' in FILE", ... for messages */
} s3_credentials;

/*
 * Resolves credentials through the chain into *out (freed with s3_credentials_clear).
 * region is the storage's, used for the regional STS endpoint. A source that is
 * configured but fails (an unreadable file, a credential_process that exits 1, STS
 * refusing the token) is an error naming that source; none configured is an
 * error naming them all. Messages never contain a secret nor a file's content.
 */
int s3_credentials_resolve(s3_credentials *out, const char *region, tb_error *err);

/*
 * Whether temporary credentials are due to be resolved again at now: five minutes
 * before they expire, or halfway through their life when that is shorter.
 */
bool s3_credentials_due(const s3_credentials *creds, time_t now);

/* Wipes and frees what *creds holds, leaving it empty. */
void s3_credentials_clear(s3_credentials *creds);

/*
 * Reads credential_process output: JSON with Version 1, AccessKeyId,
 * SecretAccessKey and optional SessionToken and Expiration (ISO 8601). 0 and *out
 * filled, or -1 with err naming what is wrong (never quoting the output).
 */
int s3_credentials_parse_process_output(const char *json, size_t len, s3_credentials *out, tb_error *err);

/* An ISO 8601 UTC time (2026-12-01T21:15:57Z, fraction and +00:00 allowed); false if not one. */
bool s3_credentials_parse_time(const char *text, time_t *out);

#endif
