/*
 * Database locators of agent engines: mysql://user@host:port/db, redis://host/3,
 * mongodb://host/acme. The catalog keeps them without their password; a password
 * sealed from one is still percent-encoded as it was written, hence agent_uri_decode.
 */
#include "agent.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char) tolower((unsigned char) c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int
agent_uri_decode(const char *in, size_t len, char **out, tb_error *err)
{
	char *buf = malloc(len + 1);
	size_t n = 0;

	if (buf == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory decoding a URI");
	for (size_t i = 0; i < len; i++)
	{
		if (in[i] != '%')
		{
			buf[n++] = in[i];
			continue;
		}
		if (i + 2 >= len)
		{
			free(buf);
			return tb_error_set(err, TB_ERR_INVALID, "a %% escape in a URI is cut short");
		}
		/* %00 too: a NUL would cut the value short. */
		if (hex_value(in[i + 1]) < 0 || hex_value(in[i + 2]) < 0 || (in[i + 1] == '0' && in[i + 2] == '0'))
		{
			free(buf);
			return tb_error_set(err, TB_ERR_INVALID, "a URI holds an invalid %% escape (%%%c%c)", in[i + 1], in[i + 2]);
		}
		buf[n++] = (char) (hex_value(in[i + 1]) * 16 + hex_value(in[i + 2]));
		i += 2;
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

char *
agent_uri_encode(const char *text)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(3 * strlen(text) + 1), *p = out;

	if (out == NULL)
		return NULL;
	for (const unsigned char *c = (const unsigned char *) text; *c; c++)
	{
		if (isalnum(*c) || strchr("_-.:@", *c))
			*p++ = (char) *c;
		else
		{
			*p++ = '%';
			*p++ = hex[*c >> 4];
			*p++ = hex[*c & 15];
		}
	}
	*p = '\0';
	return out;
}

static int
decode_part(const char *start, const char *end, char **out, tb_error *err)
{
	return agent_uri_decode(start, (size_t) (end - start), out, err);
}

int
agent_uri_parse(const char *text, agent_uri *out, tb_error *err)
{
	const char *p = strstr(text, "://");
	const char *authority, *auth_end, *at, *host, *host_end, *colon;

	memset(out, 0, sizeof(*out));
	if (p == NULL || p == text)
		return tb_error_set(err, TB_ERR_INVALID, "'%s' is not a URI (scheme://host/...)", text);
	out->scheme = strndup(text, (size_t) (p - text));
	authority = p + 3;
	auth_end = authority + strcspn(authority, "/?#");
	/* user:password@ ends at the last '@' of the authority: a password may hold '@'. */
	at = NULL;
	for (const char *c = authority; c < auth_end; c++)
		if (*c == '@')
			at = c;
	host = authority;
	if (at)
	{
		const char *sep = memchr(authority, ':', (size_t) (at - authority));

		if (decode_part(authority, sep ? sep : at, &out->user, err) != 0 ||
			(sep && decode_part(sep + 1, at, &out->password, err) != 0))
			goto fail;
		host = at + 1;
	}
	if (*host == '[')
	{
		host_end = memchr(host, ']', (size_t) (auth_end - host));
		if (host_end == NULL)
		{
			tb_error_set(err, TB_ERR_INVALID, "unclosed '[' in the host of URI '%s'", text);
			goto fail;
		}
		out->host = strndup(host + 1, (size_t) (host_end - host - 1));
		colon = host_end + 1 < auth_end && host_end[1] == ':' ? host_end + 1 : NULL;
	}
	else
	{
		colon = memchr(host, ':', (size_t) (auth_end - host));
		if (decode_part(host, colon ? colon : auth_end, &out->host, err) != 0)
			goto fail;
	}
	if (colon)
	{
		char *port_end;
		long port = strtol(colon + 1, &port_end, 10);

		if (port_end != auth_end || port < 1 || port > 65535)
		{
			tb_error_set(err, TB_ERR_INVALID, "invalid port in URI '%s'", text);
			goto fail;
		}
		out->port = (int) port;
	}
	if (*auth_end == '/')
	{
		const char *path_end = auth_end + 1 + strcspn(auth_end + 1, "?#");

		if (path_end > auth_end + 1 && decode_part(auth_end + 1, path_end, &out->path, err) != 0)
			goto fail;
		auth_end = path_end;
	}
	if (*auth_end == '?')
		out->query = strndup(auth_end + 1, strcspn(auth_end + 1, "#"));
	return 0;
fail:
	agent_uri_free(out);
	return -1;
}

char *
agent_uri_param(const agent_uri *uri, const char *name)
{
	size_t name_len = strlen(name);
	const char *p = uri->query;
	tb_error err;

	while (p && *p)
	{
		size_t len = strcspn(p, "&");

		if (len > name_len && strncmp(p, name, name_len) == 0 && p[name_len] == '=')
		{
			char *value;

			if (agent_uri_decode(p + name_len + 1, len - name_len - 1, &value, &err) != 0)
				return NULL;
			return value;
		}
		p += len + (p[len] == '&');
	}
	return NULL;
}

void
agent_uri_free(agent_uri *uri)
{
	free(uri->scheme);
	free(uri->user);
	if (uri->password)
	{
		explicit_bzero(uri->password, strlen(uri->password));
		free(uri->password);
	}
	free(uri->host);
	free(uri->path);
	free(uri->query);
	memset(uri, 0, sizeof(*uri));
}
