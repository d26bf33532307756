/*
 * The metrics worker: a background worker of its own (a slow scraper never delays the
 * launcher) that serves tenant_backup._metrics() as the Prometheus text format on
 * GET /metrics at tenant_backup.metrics_address, one short request at a time.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "job.h"
#include "tenant_backup.h"

/* A client has this long to send its request head, and to take the answer. */
#define TB_METRICS_READ_TIMEOUT_MS 3000
#define TB_METRICS_WRITE_TIMEOUT_MS 30000
#define TB_METRICS_REQUEST_MAX 8192
/* tenant_audit_verify() reads every audit row and storage: at most this often (and at each reload). */
#define TB_METRICS_AUDIT_EVERY_MS (5 * 60 * 1000)

char *tb_metrics_address = NULL;

/*
 * Parses "a.b.c.d:port" or "[v6]:port" into addr. Returns NULL, or why the value is
 * refused (a constant that quotes nothing of the value).
 */
static const char *
tb_metrics_parse_address(const char *value, struct sockaddr_storage *addr, socklen_t *addr_len)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *host_start, *port_text;
	size_t host_len;
	bool bracketed = value[0] == '[';
	long port;

	memset(addr, 0, sizeof(*addr));
	if (bracketed)
	{
		const char *close = strchr(value, ']');

		if (close == NULL || close[1] != ':')
			return "An IPv6 address goes in brackets before the port, such as [::1]:9187.";
		host_start = value + 1;
		host_len = close - host_start;
		port_text = close + 2;
	}
	else
	{
		const char *colon = strrchr(value, ':');

		if (colon == NULL)
			return "The value must be host:port, such as 127.0.0.1:9187.";
		host_start = value;
		host_len = colon - value;
		port_text = colon + 1;
	}
	if (port_text[0] == '\0' || strlen(port_text) > 5 || strspn(port_text, "0123456789") != strlen(port_text) ||
		(port = strtol(port_text, NULL, 10)) < 1 || port > 65535)
		return "The port must be a number from 1 to 65535.";
	if (host_len == 0 || host_len >= sizeof(host))
		return "The host must be a numeric IP address, such as 127.0.0.1 or [::1]; names are not resolved.";
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	if (!bracketed)
	{
		struct sockaddr_in *in4 = (struct sockaddr_in *) addr;

		if (inet_pton(AF_INET, host, &in4->sin_addr) != 1)
			return "The host must be a numeric IP address, such as 127.0.0.1 or [::1]; names are not resolved.";
		if (in4->sin_addr.s_addr == htonl(INADDR_ANY))
			return "Metrics name every tenant: give the address of one interface (127.0.0.1 for this host only), "
				   "not the wildcard 0.0.0.0.";
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16) port);
		*addr_len = sizeof(*in4);
	}
	else
	{
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) addr;

		if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
			return "The host in brackets must be a numeric IPv6 address, such as [::1].";
		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			return "Metrics name every tenant: give the address of one interface ([::1] for this host only), "
				   "not the wildcard [::].";
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16) port);
		*addr_len = sizeof(*in6);
	}
	return NULL;
}

bool
tb_check_metrics_address(char **newval, void **extra, GucSource source)
{
	struct sockaddr_storage addr;
	socklen_t addr_len;
	const char *problem;

	(void) extra;
	(void) source;
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	problem = tb_metrics_parse_address(*newval, &addr, &addr_len);
	if (problem != NULL)
	{
		GUC_check_errdetail("%s", problem);
		GUC_check_errhint("Set tenant_backup.metrics_address to host:port, such as 127.0.0.1:9187, or to '' (off).");
		return false;
	}
	return true;
}

/* The listening socket on tenant_backup.metrics_address, non-blocking; FATAL if it cannot be had. */
static pgsocket
tb_metrics_listen(void)
{
	struct sockaddr_storage addr;
	socklen_t addr_len = 0;
	const char *problem = tb_metrics_parse_address(tb_metrics_address, &addr, &addr_len);
	int one = 1;
	pgsocket fd;

	if (problem != NULL)
		ereport(FATAL, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("tenant_backup.metrics_address is invalid"),
						errdetail("%s", problem)));
	fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == PGINVALID_SOCKET)
		ereport(FATAL, (errcode_for_socket_access(), errmsg("tenant_backup metrics: could not create a socket: %m")));
	(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (addr.ss_family == AF_INET6)
		(void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *) &addr, addr_len) != 0 || listen(fd, 16) != 0)
		ereport(FATAL, (errcode_for_socket_access(),
						errmsg("tenant_backup metrics could not listen on %s: %m", tb_metrics_address),
						errhint("Free that port or set tenant_backup.metrics_address to another and restart; "
								"the worker tries again every 10 s.")));
	return fd;
}

/*
 * tb_sql, with an error turned into a WARNING naming what failed: the worker stays up
 * and the transaction is rolled back. False on error (*result untouched).
 */
static bool
tb_metrics_sql(const char *what, const char *sql, int nargs, const char *const *args, char **result)
{
	MemoryContext caller = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		*result = tb_sql(sql, nargs, args);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		ereport(WARNING, (errmsg("tenant_backup metrics: %s failed: %s", what, edata->message),
						  errhint("The next scrape tries again.")));
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Waits until fd has one of events or the deadline passes (false); stops the worker on SIGTERM. */
static bool
tb_metrics_wait(pgsocket fd, int events, TimestampTz deadline)
{
	for (;;)
	{
		long left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		int rc;

		if (left <= 0)
			return false;
		rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | events, fd, left,
							   PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (rc & events)
			return true;
	}
}

/*
 * Reads a request head (up to its blank line) into buf within the read timeout. False
 * if the client was too slow, sent too much, or closed: it gets no answer.
 */
static bool
tb_metrics_read_request(pgsocket fd, char *buf, size_t size)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), TB_METRICS_READ_TIMEOUT_MS);
	size_t len = 0;

	buf[0] = '\0';
	while (len < size - 1)
	{
		ssize_t n;

		if (!tb_metrics_wait(fd, WL_SOCKET_READABLE, deadline))
			return false;
		n = recv(fd, buf + len, size - 1 - len, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			continue;
		if (n <= 0)
			return false;
		len += n;
		buf[len] = '\0';
		if (strstr(buf, "\r\n\r\n") != NULL || strstr(buf, "\n\n") != NULL)
			return true;
	}
	return false;
}

/* Sends all of data before the deadline; false if the client does not take it. */
static bool
tb_metrics_send_all(pgsocket fd, const char *data, size_t len, TimestampTz deadline)
{
	while (len > 0)
	{
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		{
			if (!tb_metrics_wait(fd, WL_SOCKET_WRITEABLE, deadline))
				return false;
			continue;
		}
		if (n <= 0)
			return false;
		data += n;
		len -= n;
	}
	return true;
}

/* An HTTP/1.0-style answer that closes the connection. */
static void
tb_metrics_respond(pgsocket fd, const char *status, const char *content_type, const char *body)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), TB_METRICS_WRITE_TIMEOUT_MS);
	size_t body_len = strlen(body);
	char *head = psprintf("HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
						  content_type, body_len);

	if (tb_metrics_send_all(fd, head, strlen(head), deadline))
		(void) tb_metrics_send_all(fd, body, body_len, deadline);
	pfree(head);
}

/* The request line is GET /metrics (a query string is ignored) and an HTTP version. */
static bool
tb_metrics_is_scrape(const char *request)
{
	static const char prefix[] = "GET /metrics";
	const char *rest = request + strlen(prefix);

	if (strncmp(request, prefix, strlen(prefix)) != 0)
		return false;
	if (*rest == '?')
		rest += strcspn(rest, " \r\n");
	return strncmp(rest, " HTTP/1.", 8) == 0;
}

/* The audit chain's state as last verified, passed to _metrics(); NULL until verified once. */
static char *tb_metrics_audit_ok = NULL;
static char tb_metrics_audit_at[32];

static void
tb_metrics_audit_refresh(void)
{
	char *ok = NULL;

	pgstat_report_activity(STATE_RUNNING, "tenant_backup metrics: tenant_audit_verify()");
	if (tb_metrics_sql("verifying the audit chain", "SELECT ok::text FROM tenant_backup.tenant_audit_verify()", 0, NULL,
					   &ok) &&
		ok != NULL)
	{
		if (tb_metrics_audit_ok != NULL)
			pfree(tb_metrics_audit_ok);
		tb_metrics_audit_ok = MemoryContextStrdup(TopMemoryContext, ok);
		snprintf(tb_metrics_audit_at, sizeof(tb_metrics_audit_at), "%.3f",
				 (double) (GetCurrentTimestamp() - SetEpochTimestamp()) / USECS_PER_SEC);
	}
	pgstat_report_activity(STATE_IDLE, NULL);
}

static bool
tb_metrics_extension_installed(void)
{
	char *found = NULL;

	return tb_metrics_sql("looking for the extension", "SELECT 1 FROM pg_extension WHERE extname = 'tenant_backup'", 0,
						  NULL, &found) &&
		   found != NULL;
}

/* Serves one client: its request, one answer, closed. */
static void
tb_metrics_serve(pgsocket client)
{
	char request[TB_METRICS_REQUEST_MAX];
	const char *args[2] = {tb_metrics_audit_ok, tb_metrics_audit_ok ? tb_metrics_audit_at : NULL};
	char *body = NULL;

	if (!tb_metrics_read_request(client, request, sizeof(request)))
		return;
	if (!tb_metrics_is_scrape(request))
	{
		tb_metrics_respond(client, "404 Not Found", "text/plain; charset=utf-8",
						   "tenant_backup serves GET /metrics only\n");
		return;
	}
	if (!tb_metrics_extension_installed())
	{
		tb_metrics_respond(client, "503 Service Unavailable", "text/plain; charset=utf-8",
						   psprintf("tenant_backup is not installed in database \"%s\" "
									"(tenant_backup.database): run CREATE EXTENSION tenant_backup there\n",
									tb_database));
		return;
	}
	pgstat_report_activity(STATE_RUNNING, "tenant_backup metrics: scrape");
	if (!tb_metrics_sql("a scrape",
						"SELECT coalesce(tenant_backup._metrics($1::boolean, to_timestamp($2::float8)), '')"
						" || coalesce(tenant_backup._metrics_replication(), '')",
						2, args, &body))
		tb_metrics_respond(client, "500 Internal Server Error", "text/plain; charset=utf-8",
						   "tenant_backup could not read its catalog: see the server log\n");
	else
		tb_metrics_respond(client, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body ? body : "");
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
tenant_backup_metrics_main(Datum arg)
{
	MemoryContext scrape;
	WaitEventSet *events;
	pgsocket listener;
	TimestampTz audit_due = 0;

	(void) arg;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(tb_database, NULL, 0);
	pgstat_report_appname("tenant_backup metrics");
	listener = tb_metrics_listen();
	ereport(LOG, (errmsg("tenant_backup metrics listening on %s (database \"%s\")", tb_metrics_address, tb_database)));
	/* Everything one request allocates goes here and is freed before the next. */
	scrape = AllocSetContextCreate(TopMemoryContext, "tenant_backup metrics scrape", ALLOCSET_DEFAULT_SIZES);
	events = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(events, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(events, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(events, WL_SOCKET_READABLE, listener, NULL, NULL);

	for (;;)
	{
		WaitEvent event;
		long audit_wait = Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), audit_due), 0);
		int ready;

		MemoryContextReset(scrape);
		MemoryContextSwitchTo(scrape);
		ready = WaitEventSetWait(events, audit_wait, &event, 1, PG_WAIT_EXTENSION);
		if (ready == 1 && (event.events & WL_LATCH_SET))
			ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* A reload (say, of the master key) is a reason to look at the chain again now. */
			audit_due = 0;
		}
		if (GetCurrentTimestamp() >= audit_due)
		{
			if (tb_metrics_extension_installed())
				tb_metrics_audit_refresh();
			audit_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), TB_METRICS_AUDIT_EVERY_MS);
		}
		if (ready == 1 && (event.events & WL_SOCKET_READABLE))
		{
			pgsocket client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

			if (client != PGINVALID_SOCKET)
			{
				tb_metrics_serve(client);
				closesocket(client);
			}
		}
	}
}
