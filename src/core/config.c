/* Runtime configuration. One table lists every key with its section, type,
 * storage, default and description; reading the INI file (through inih), the
 * SLUICE_* environment overrides, validation, the dump and the reference docs
 * all walk that table, so a new setting is one new row. */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum section {
    SEC_SERVER,
    SEC_TLS,
    SEC_AUTH,
    SEC_LIMITS,
    SEC_QUEUE,
    SEC_LOG,
    SEC_POLICY,
    SEC_DKIM,
    SEC_HTTP,
    SEC_AUDIT,
    SEC_WEBHOOK,
    SEC_API,
    SEC_SENDMAIL,
    SEC_UPSTREAM,
    SEC_COUNT
};
/* Reader states besides a real section. */
#define SEC_NONE (-1)    /* before the first header */
#define SEC_IGNORED (-2) /* inside a header already reported as wrong */

static const char *const section_names[SEC_COUNT] = {
    "server", "tls",  "auth",  "limits",  "queue", "log",      "policy",
    "dkim",   "http", "audit", "webhook", "api",   "sendmail", "upstream"};

enum value_type {
    T_STRING,   /* free text */
    T_PATH,     /* file system path */
    T_HOSTNAME, /* DNS host name */
    T_HOST,     /* host name or IP literal */
    T_LISTEN,   /* "host:port" or "[v6]:port"; "" disables */
    T_CIDRS,    /* comma list of networks */
    T_CHOICE,   /* string from `choices` */
    T_ENUM,     /* int index into `choices` */
    T_KIND,     /* bool: "capture" (true) or "smtp" (false) */
    T_BOOL,
    T_INT,
    T_DURATION, /* int seconds */
    T_SIZE,     /* long long bytes */
    T_RATE,     /* double per second */
    T_PIN,      /* 64 hex digits */
    T_ENVNAME,  /* environment variable name */
};

static const char *const type_names[] = {
    "string", "path",   "host name", "host",          "address:port", "CIDR list",
    "choice", "choice", "choice",    "bool",          "integer",      "duration",
    "size",   "rate",   "hex",       "variable name",
};

struct config_key {
    int section;
    const char *name;
    const char *alias; /* older spelling, also accepted */
    enum value_type type;
    size_t offset; /* in struct config, or struct config_upstream for SEC_UPSTREAM */
    /* Default as text, read by the same parser as a file value. NULL: unset.
     * "${...}" is derived once the other values are final. */
    const char *def;
    long long min, max;
    const char *const *choices;
    char list_sep; /* lists may continue on indented lines */
    bool empty_ok; /* "" is a meaningful value (not "unset", not an error) */
    const char *doc;
};

static const char *const tls_versions[] = {"1.2", "1.3", NULL};
static const char *const log_formats[] = {"json", "text", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const kinds[] = {"smtp", "capture", NULL};
static const char *const tls_modes[] = {"starttls", "implicit", "none", NULL};
static const char *const verify_modes[] = {"peer", "none", NULL};
static const char *const auth_mechs[] = {"none", "plain", "login", "xoauth2", NULL};
static const char *const canons[] = {"relaxed/relaxed", "relaxed/simple", "simple/relaxed",
                                     "simple/simple", NULL};
static const char *const sign_failures[] = {"defer", "unsigned", NULL};

_Static_assert(sizeof(enum config_tls_mode) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum config_tls_verify) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum config_auth_mech) == sizeof(int), "enums are stored as int");

#define DAY (24LL * 3600)
#define KIB 1024LL
#define MIB (1024LL * KIB)
#define GIB (1024LL * MIB)
#define S(f) offsetof(struct config, f)
#define U(f) offsetof(struct config_upstream, f)

/* Mozilla "intermediate" TLS 1.2 suites: forward secret AEAD only. */
#define DEFAULT_CIPHERS                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static const struct config_key keys[] = {
    {SEC_SERVER, "hostname", NULL, T_HOSTNAME, S(hostname), "${hostname}",
     .doc = "Name in the SMTP greeting, EHLO and Received headers."},
    {SEC_SERVER, "listen_submission", NULL, T_LISTEN, S(listen_submission), "127.0.0.1:2525",
     .empty_ok = true, .doc = "Submission listener (STARTTLS); empty disables it."},
    {SEC_SERVER, "listen_smtps", NULL, T_LISTEN, S(listen_smtps), "127.0.0.1:4650",
     .empty_ok = true, .doc = "Implicit-TLS submission listener; empty disables it."},
    {SEC_SERVER, "var_dir", NULL, T_PATH, S(var_dir), "./var",
     .doc = "Base directory for state; the paths below default to it."},
    {SEC_SERVER, "spool_dir", NULL, T_PATH, S(spool_dir), "${var_dir}/spool",
     .doc = "Durable message spool."},
    {SEC_SERVER, "spool_segment_size", NULL, T_SIZE, S(spool_segment_size), "64MiB", 64 * KIB, GIB,
     .doc = "Spool segment files are started anew past this size."},
    {SEC_SERVER, "capture_dir", NULL, T_PATH, S(capture_dir), "${var_dir}/capture",
     .doc = "Where capture upstreams write .eml files."},
    {SEC_SERVER, "control_socket", NULL, T_PATH, S(control_socket), "${var_dir}/control.sock",
     .doc = "Unix socket of the CLI control channel."},
    {SEC_SERVER, "relay_networks", NULL, T_CIDRS, S(relay_networks), "auto", .list_sep = ',',
     .empty_ok = true,
     .doc = "Comma list of CIDRs that may relay without AUTH; empty: none. \"auto\": loopback "
            "while every upstream is a capture upstream (a local mail catcher), none as soon as "
            "a real upstream is configured."},
    {SEC_SERVER, "shutdown_grace", NULL, T_DURATION, S(shutdown_grace), "30s", 0, DAY,
     .doc = "How long a stop waits for sessions and deliveries in flight."},
    {SEC_SERVER, "user", NULL, T_STRING, S(server_user), "sluice",
     .doc = "Started as root, 'sluice serve' opens its listeners, stores and keys, then runs as "
            "this user (it must exist); root keeps root (with a warning). Ignored when not "
            "started as root."},

    {SEC_TLS, "cert", "tls_cert", T_PATH, S(tls_cert), "${var_dir}/tls/cert.pem",
     .doc = "Server certificate chain (PEM); self-signed one generated if absent."},
    {SEC_TLS, "key", "tls_key", T_PATH, S(tls_key), "${var_dir}/tls/key.pem",
     .doc = "Private key of the certificate (PEM)."},
    {SEC_TLS, "min_version", "tls_min_version", T_CHOICE, S(tls_min_version), "1.2",
     .choices = tls_versions, .doc = "Oldest TLS version accepted: 1.2 or 1.3."},
    {SEC_TLS, "ciphers", "tls_ciphers", T_STRING, S(tls_ciphers), DEFAULT_CIPHERS, .list_sep = ':',
     .empty_ok = true,
     .doc = "OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are fixed); empty: OpenSSL default."},

    {SEC_AUTH, "users_file", NULL, T_PATH, S(users_file), "${var_dir}/users",
     .doc = "Retired users file (lines name:$argon2id$...), still read; move it into the "
            "credential store with sluice creds import FILE."},
    {SEC_AUTH, "allow_plaintext_loopback", NULL, T_BOOL, S(allow_plaintext_loopback), "false",
     .doc = "Allow AUTH without TLS from 127.0.0.0/8 and ::1."},

    {SEC_LIMITS, "max_message_size", NULL, T_SIZE, S(max_message_size), "25MiB", 1, GIB,
     .doc = "Largest message accepted (SIZE, RFC 1870)."},
    {SEC_LIMITS, "max_recipients", NULL, T_INT, S(max_recipients), "100", 1, 100000,
     .doc = "Recipients per message."},
    {SEC_LIMITS, "max_line_length", NULL, T_INT, S(max_line_length), "512", 512, 65536,
     .doc = "Longest command line (RFC 5321 4.5.3.1.4: at least 512)."},
    {SEC_LIMITS, "command_timeout", NULL, T_DURATION, S(command_timeout), "5m", 1, DAY,
     .doc = "Idle time allowed between commands (RFC 5321 4.5.3.2.7)."},
    {SEC_LIMITS, "data_timeout", NULL, T_DURATION, S(data_timeout), "3m", 1, DAY,
     .doc = "Idle time allowed inside DATA (RFC 5321 4.5.3.2.6)."},
    {SEC_LIMITS, "max_connections", NULL, T_INT, S(max_connections), "1000", 1, 1000000,
     .doc = "Concurrent client connections."},
    {SEC_LIMITS, "max_connections_per_ip", NULL, T_INT, S(max_connections_per_ip), "100", 1,
     1000000, .doc = "Concurrent client connections from one address."},
    {SEC_LIMITS, "max_bad_commands", NULL, T_INT, S(max_bad_commands), "10", 1, 1000,
     .doc = "Rejected commands before the session is closed with 421."},
    {SEC_LIMITS, "command_deadline", NULL, T_DURATION, S(command_deadline), "5m", 1, DAY,
     .doc = "Whole time allowed for one command line, from the reply before it to its CRLF; "
            "trickling octets does not extend it."},
    {SEC_LIMITS, "data_min_rate", NULL, T_SIZE, S(data_min_rate), "500", 0, GIB,
     .doc = "DATA/BDAT content must arrive at this many octets per second on average; each "
            "octet extends the data_timeout allowance by 1/rate seconds. 0 turns it off."},
    {SEC_LIMITS, "transaction_deadline", NULL, T_DURATION, S(transaction_deadline), "1h", 1, DAY,
     .doc = "Whole time allowed from MAIL to the reply after the message content."},
    {SEC_LIMITS, "max_unauth_connections", NULL, T_INT, S(max_unauth_connections), "750", 1,
     1000000,
     .doc = "Concurrent connections not yet authenticated (nor from relay_networks); below "
            "max_connections, the rest is kept for authenticated sessions."},
    {SEC_LIMITS, "max_unauth_connections_per_ip", NULL, T_INT, S(max_unauth_connections_per_ip),
     "10", 1, 1000000,
     .doc = "Concurrent not yet authenticated connections from one address (after AUTH, "
            "max_connections_per_ip applies)."},
    {SEC_LIMITS, "max_inflight_bytes", NULL, T_SIZE, S(max_inflight_bytes), "256MiB", 64 * KIB,
     1024 * GIB,
     .doc = "Memory all messages being received may hold together; past it MAIL SIZE= and "
            "content get 452 4.3.1."},

    {SEC_QUEUE, "retry_base", NULL, T_DURATION, S(retry_base), "1m", 1, DAY,
     .doc = "First retry delay; doubles per attempt (with jitter)."},
    {SEC_QUEUE, "retry_cap", NULL, T_DURATION, S(retry_cap), "1h", 1, 30 * DAY,
     .doc = "Longest retry delay."},
    {SEC_QUEUE, "max_lifetime", NULL, T_DURATION, S(max_lifetime), "5d", 60, 90 * DAY,
     .doc = "Age at which an undelivered message fails."},
    {SEC_QUEUE, "bounces", NULL, T_BOOL, S(bounces), "true",
     .doc = "Send delivery status notifications (RFC 3464) for failed messages."},

    {SEC_LOG, "format", "log_format", T_CHOICE, S(log_format), "json", .choices = log_formats,
     .doc = "Log line format: json or text."},
    {SEC_LOG, "file", "log_file", T_PATH, S(log_file), "", .empty_ok = true,
     .doc = "Log file; empty: standard output."},
    {SEC_LOG, "level", "log_level", T_CHOICE, S(log_level), "info", .choices = log_levels,
     .doc = "Least severe level logged: debug, info, warn or error."},

    {SEC_AUTH, "creds_db", NULL, T_PATH, S(creds_db), "${var_dir}/sluice.db",
     .doc = "SQLite credential and accounting store."},

    {SEC_LOG, "privacy", NULL, T_BOOL, S(log_privacy), "true",
     .doc = "Pseudonymise recipient addresses in logs with a keyed hash (HMAC-SHA-256)."},
    {SEC_LOG, "privacy_key_file", NULL, T_PATH, S(log_privacy_key_file), "${var_dir}/privacy.key",
     .doc = "Key for the recipient pseudonyms; made on first start."},

    {SEC_TLS, "session_tickets", NULL, T_BOOL, S(tls_session_tickets), "true",
     .doc = "Issue TLS session tickets (keys random per process, rotated every session_lifetime)."},
    {SEC_TLS, "session_cache_size", NULL, T_INT, S(tls_session_cache_size), "20000", 0, 1000000,
     .doc = "Server-side TLS session cache entries; 0 turns the cache off."},
    {SEC_TLS, "session_lifetime", NULL, T_DURATION, S(tls_session_lifetime), "1h", 60, 7 * DAY,
     .doc = "How long a TLS session may be resumed; ticket keys rotate at this period."},
    {SEC_TLS, "request_client_cert", NULL, T_BOOL, S(tls_request_client_cert), "true",
     .doc =
         "Ask clients for a certificate; one registered with 'sluice creds add --cert' logs in."},
    {SEC_AUTH, "scram_secret_file", NULL, T_PATH, S(scram_secret_file), "${var_dir}/scram.key",
     .doc = "Key for SCRAM answers about unknown users; made on first start."},
    {SEC_AUTH, "failures_before_delay", NULL, T_INT, S(auth_failures_before_delay), "3", 1, 1000,
     .doc = "Failed AUTH from one address before answers are slowed down."},
    {SEC_AUTH, "failures_before_block", NULL, T_INT, S(auth_failures_before_block), "10", 1, 100000,
     .doc = "Failed AUTH from one address before it is blocked."},
    {SEC_AUTH, "block_time", NULL, T_DURATION, S(auth_block_time), "15m", 1, DAY,
     .doc = "How long an address stays blocked after too many failures."},
    {SEC_AUTH, "cache_ttl", NULL, T_DURATION, S(auth_cache_ttl), "5m", 0, DAY,
     .doc = "How long a successful password check (AUTH PLAIN/LOGIN) is remembered, so the same "
            "user and password log in again without argon2id; a changed, revoked or deleted "
            "credential is never answered from it. 0 turns the cache off."},
    {SEC_AUTH, "cache_size", NULL, T_INT, S(auth_cache_size), "10000", 0, 1000000,
     .doc = "Successful password checks remembered at most (about 64 bytes each); the least "
            "recently used give way. 0 turns the cache off."},
    {SEC_LIMITS, "rate_per_ip", NULL, T_STRING, S(rate_per_ip), "0", .empty_ok = true,
     .doc = "Messages per source address, e.g. 600/min; 0: no limit."},

    {SEC_POLICY, "blocked_extensions", NULL, T_STRING, S(policy_blocked_extensions),
     "exe,scr,com,bat,cmd,pif,vbs,vbe,js,jse,wsf,wsh,msi,msp,ps1,jar,hta,cpl,lnk,reg",
     .empty_ok = true, .list_sep = ',', .doc = "Attachment file extensions refused (554 5.7.1)."},
    {SEC_POLICY, "blocked_types", NULL, T_STRING, S(policy_blocked_types),
     "application/x-msdownload,application/x-dosexec,application/x-ms-installer", .empty_ok = true,
     .list_sep = ',', .doc = "Attachment content types refused."},
    {SEC_POLICY, "required_headers", NULL, T_STRING, S(policy_required_headers), "From",
     .empty_ok = true, .list_sep = ',',
     .doc = "Header fields every message must carry (Date and Message-ID are added if missing)."},
    {SEC_POLICY, "relay_allow_from", NULL, T_STRING, S(policy_relay_allow_from), "",
     .empty_ok = true, .list_sep = ',',
     .doc = "Sender patterns for clients in relay_networks without AUTH; empty: any."},
    {SEC_POLICY, "relay_allow_rcpt", NULL, T_STRING, S(policy_relay_allow_rcpt), "",
     .empty_ok = true, .list_sep = ',',
     .doc = "Recipient patterns for clients in relay_networks without AUTH; empty: any."},

    {SEC_DKIM, "key_dir", NULL, T_PATH, S(dkim_key_dir), "${var_dir}/dkim",
     .doc = "Private keys named SELECTOR._domainkey.DOMAIN.key (as 'sluice dkim keygen' writes)."},
    {SEC_DKIM, "selectors", NULL, T_STRING, S(dkim_selectors), "", .empty_ok = true,
     .list_sep = ',',
     .doc = "Active keys as SELECTOR._domainkey.DOMAIN, comma-separated; empty: every key in "
            "key_dir. Change and SIGHUP to rotate."},
    {SEC_DKIM, "canonicalization", NULL, T_CHOICE, S(dkim_canon), "relaxed/relaxed",
     .choices = canons, .doc = "Header/body canonicalisation (RFC 6376 3.4)."},
    {SEC_DKIM, "expire", NULL, T_DURATION, S(dkim_expire), "0", 0, 365 * DAY,
     .doc = "Signature lifetime written as x= (0: no x= tag)."},
    {SEC_DKIM, "on_failure", NULL, T_CHOICE, S(dkim_on_failure), "defer", .choices = sign_failures,
     .doc = "When signing fails: defer (answer 451, the client retries) or unsigned (accept)."},

    {SEC_HTTP, "listen", NULL, T_LISTEN, S(http_listen), "127.0.0.1:9025", .empty_ok = true,
     .doc = "Metrics (/metrics), /healthz and /readyz; empty disables."},

    {SEC_AUDIT, "file", NULL, T_PATH, S(audit_file), "${var_dir}/audit.log", .empty_ok = true,
     .doc = "Append-only, hash-chained audit log of security events; empty disables."},
    {SEC_AUDIT, "key_file", NULL, T_PATH, S(audit_key_file), "", .empty_ok = true,
     .doc = "Optional key: the chain becomes an HMAC chain that needs it to verify."},

    {SEC_WEBHOOK, "urls", NULL, T_STRING, S(webhook_urls), "", .empty_ok = true, .list_sep = ',',
     .doc = "Delivery events are POSTed as signed JSON to these URLs; empty disables."},
    {SEC_WEBHOOK, "secret_file", NULL, T_PATH, S(webhook_secret_file), "", .empty_ok = true,
     .doc = "HMAC-SHA-256 key for the X-Sluice-Signature header."},

    {SEC_API, "listen", NULL, T_LISTEN, S(api_listen), "127.0.0.1:8443", .empty_ok = true,
     .doc = "HTTPS submission API (docs/API.md), TLS with the [tls] certificate; empty "
            "disables."},
    {SEC_API, "request_timeout", NULL, T_DURATION, S(api_request_timeout), "60s", 1, 3600,
     .doc = "Longest time to read a request or write an answer; an idle keep-alive "
            "connection is closed after it too."},
    {SEC_API, "idempotency_window", NULL, T_DURATION, S(api_idempotency_window), "24h", 60,
     30 * DAY,
     .doc = "How long an Idempotency-Key is remembered per credential (the first answer is "
            "replayed)."},
    {SEC_API, "event_buffer", NULL, T_INT, S(api_event_buffer), "10000", 16, 10000000,
     .doc = "Recent delivery events kept in memory for GET /v1/events and message state."},
    {SEC_SENDMAIL, "server", NULL, T_LISTEN, S(sendmail_server), "", .empty_ok = true,
     .doc = "Where 'sluice sendmail' and 'sluice send' submit (STARTTLS when offered; plaintext "
            "only to loopback); empty: [server] listen_submission."},
    {SEC_SENDMAIL, "credential_file", NULL, T_PATH, S(sendmail_credential_file), "",
     .empty_ok = true,
     .doc = "File with 'user = NAME' and 'password = SECRET' lines for AUTH; it must belong to "
            "the calling user and have mode 0600 or stricter. Empty: SLUICE_SENDMAIL_USER and "
            "SLUICE_SENDMAIL_PASSWORD, else no AUTH (relay_networks)."},
    {SEC_SENDMAIL, "outbox_dir", NULL, T_PATH, S(sendmail_outbox_dir), "", .empty_ok = true,
     .doc = "Where messages wait while the relay is unreachable or answers 4xx; empty: "
            "$XDG_DATA_HOME/sluice/outbox (~/.local/share/sluice/outbox) of the calling user."},
    {SEC_SENDMAIL, "forward_outbox", NULL, T_BOOL, S(sendmail_forward_outbox), "true",
     .doc = "Each sendmail invocation first forwards the messages waiting in the outbox."},
    {SEC_SENDMAIL, "timeout", NULL, T_DURATION, S(sendmail_timeout), "60s", 1, 3600,
     .doc = "Limit on connecting and on each reply of the submission dialogue."},

    {SEC_UPSTREAM, "kind", NULL, T_KIND, U(capture), "smtp", .choices = kinds,
     .doc = "smtp: relay to host; capture: write .eml files to capture_dir."},
    {SEC_UPSTREAM, "host", NULL, T_HOST, U(host), NULL,
     .doc = "Smarthost name or IP address (required for kind = smtp)."},
    {SEC_UPSTREAM, "port", NULL, T_INT, U(port), "${port}", 1, 65535, .doc = "TCP port."},
    {SEC_UPSTREAM, "tls", NULL, T_ENUM, U(tls), "starttls", .choices = tls_modes,
     .doc = "starttls, implicit (TLS from the first byte) or none (loopback only)."},
    {SEC_UPSTREAM, "verify", NULL, T_ENUM, U(verify), "peer", .choices = verify_modes,
     .doc = "peer: verify the certificate and name; none: loopback only."},
    {SEC_UPSTREAM, "tls_pin_sha256", NULL, T_PIN, U(tls_pin_sha256), NULL,
     .doc = "Also require this SHA-256 of the server's public key (SPKI), 64 hex digits."},
    {SEC_UPSTREAM, "ca_file", NULL, T_PATH, U(ca_file), NULL,
     .doc = "CA bundle to verify against instead of the system store."},
    {SEC_UPSTREAM, "tls_server_name", NULL, T_HOSTNAME, U(tls_server_name), NULL,
     .doc = "Name sent in SNI and verified; default: host."},
    {SEC_UPSTREAM, "auth", NULL, T_ENUM, U(auth), "none", .choices = auth_mechs,
     .doc = "SASL mechanism: none, plain, login or xoauth2."},
    {SEC_UPSTREAM, "username", NULL, T_STRING, U(username), NULL, .doc = "AUTH user name."},
    {SEC_UPSTREAM, "secret_file", NULL, T_PATH, U(secret_file), NULL,
     .doc = "File holding the password or token."},
    {SEC_UPSTREAM, "secret_env", NULL, T_ENVNAME, U(secret_env), NULL,
     .doc = "Environment variable holding the password or token."},
    {SEC_UPSTREAM, "priority", NULL, T_INT, U(priority), "10", 0, 1000000,
     .doc = "Lower is tried first; failover goes to the next."},
    {SEC_UPSTREAM, "max_connections", NULL, T_INT, U(max_connections), "10", 1, 10000,
     .doc = "Parallel sessions to this upstream."},
    {SEC_UPSTREAM, "messages_per_connection", NULL, T_INT, U(messages_per_connection), "100", 1,
     1000000, .doc = "Messages sent on one session before it is closed."},
    {SEC_UPSTREAM, "timeout", NULL, T_DURATION, U(timeout), "5m", 1, DAY,
     .doc = "Longest wait for any reply (RFC 5321 4.5.3.2; the final '.' gets at least this)."},
    {SEC_UPSTREAM, "connect_timeout", NULL, T_DURATION, U(connect_timeout), "30s", 1, 3600,
     .doc = "Longest wait to connect and finish the TLS handshake."},
    {SEC_UPSTREAM, "rate", NULL, T_RATE, U(rate_per_second), "0",
     .doc = "Most messages sent per time unit, e.g. 50/s or 600/min; 0: unlimited."},
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))
#define UPSTREAM_NAME_MAX 40
#define CONFIG_FILE_MAX (1024 * 1024)
#define VALUE_QUOTE "%.80s"
#define RATE_MIN (1.0 / 3600)
#define RATE_MAX 1e6

/* ---- allocation: running out of memory while loading the config is fatal ---- */

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = strndup(s, n);
    if (!d)
        abort();
    return d;
}

/* ---- value parsers ---- */

static int parse_digits(const char **sp, long long *out)
{
    const char *s = *sp;
    long long v = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    for (; isdigit((unsigned char)*s); s++) {
        if (v > (LLONG_MAX - (*s - '0')) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    *sp = s;
    *out = v;
    return 0;
}

int config_parse_size(const char *s, long long *out)
{
    static const struct {
        const char *unit;
        long long mult;
    } units[] = {
        {"", 1},      {"b", 1},          {"k", KIB},         {"kb", KIB},        {"kib", KIB},
        {"m", MIB},   {"mb", MIB},       {"mib", MIB},       {"g", GIB},         {"gb", GIB},
        {"gib", GIB}, {"t", 1024 * GIB}, {"tb", 1024 * GIB}, {"tib", 1024 * GIB}};
    long long v;
    if (!s || parse_digits(&s, &v) < 0)
        return -1;
    while (*s == ' ')
        s++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(s, units[i].unit) == 0) {
            if (v > LLONG_MAX / units[i].mult)
                return -1;
            *out = v * units[i].mult;
            return 0;
        }
    }
    return -1;
}

int config_parse_duration(const char *s, int *out)
{
    long long v, mult;
    if (!s || parse_digits(&s, &v) < 0)
        return -1;
    if (*s == '\0' || strcmp(s, "s") == 0)
        mult = 1;
    else if (strcmp(s, "m") == 0)
        mult = 60;
    else if (strcmp(s, "h") == 0)
        mult = 3600;
    else if (strcmp(s, "d") == 0)
        mult = DAY;
    else
        return -1;
    if (v > INT_MAX / mult)
        return -1;
    *out = (int)(v * mult);
    return 0;
}

/* "50/s", "2.5/s", "600/min", "3600/h"; "0" means unlimited. */
static int parse_rate(const char *s, double *out)
{
    size_t int_len = strspn(s, "0123456789"), len = int_len;
    double v;
    const char *p;
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return 0;
    }
    if (int_len == 0)
        return -1;
    if (s[len] == '.') {
        size_t frac = strspn(s + len + 1, "0123456789");
        if (frac == 0)
            return -1;
        len += 1 + frac;
    }
    if (int_len > 10 || len > 40)
        return -1;
    char num[48];
    memcpy(num, s, len);
    num[len] = '\0';
    v = strtod(num, NULL); /* only digits and one '.' reach here */
    for (p = s + len; *p == ' '; p++)
        ;
    if (*p++ != '/')
        return -1;
    while (*p == ' ')
        p++;
    if (!strcmp(p, "s") || !strcmp(p, "sec") || !strcmp(p, "second"))
        *out = v;
    else if (!strcmp(p, "m") || !strcmp(p, "min") || !strcmp(p, "minute"))
        *out = v / 60;
    else if (!strcmp(p, "h") || !strcmp(p, "hour"))
        *out = v / 3600;
    else
        return -1;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return 0;
        }
    }
    return -1;
}

static int parse_int(const char *s, long long *out)
{
    bool neg = *s == '-';
    long long v;
    if (neg)
        s++;
    if (parse_digits(&s, &v) < 0 || *s)
        return -1;
    *out = neg ? -v : v;
    return 0;
}

static int choice_index(const char *const *choices, const char *s)
{
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], s) == 0)
            return i;
    return -1;
}

/* RFC 1123 2.1 host name: labels of letters, digits and inner hyphens. */
static bool valid_hostname(const char *s, size_t len)
{
    size_t label = 0;
    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
        } else if (isalnum((unsigned char)c) || (c == '-' && label > 0)) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return s[len - 1] != '-';
}

static bool is_ip_literal(const char *s, size_t len, int *family)
{
    char buf[INET6_ADDRSTRLEN + 1];
    unsigned char addr[16];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, buf, addr) == 1) {
        *family = AF_INET6;
        return true;
    }
    return false;
}

static bool host_is_loopback(const char *h)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(h, "localhost") == 0 || strcasecmp(h, "localhost.") == 0)
        return true;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

/* One network "addr/prefix" (a bare address means a single host). Only
 * checked here; net/cidr parses the list for matching. */
struct cidr_check {
    int family;
    unsigned char addr[16];
    int prefix;
};

/* Returns 0, -1 for bad syntax, -2 when bits beyond the prefix are set. */
static int parse_cidr(const char *s, size_t len, struct cidr_check *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    int bits;
    memset(out, 0, sizeof(*out));
    if (alen == 0 || alen >= sizeof(buf))
        return -1;
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    if (inet_pton(AF_INET, buf, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, buf, out->addr) == 1)
        out->family = AF_INET6;
    else
        return -1;
    bits = out->family == AF_INET ? 32 : 128;
    out->prefix = bits;
    if (slash) {
        const char *p = slash + 1;
        long long v;
        if (p == s + len || !isdigit((unsigned char)*p) || (s + len - p) > 3)
            return -1;
        char num[4] = {0};
        memcpy(num, p, (size_t)(s + len - p));
        if (parse_int(num, &v) < 0 || v > bits)
            return -1;
        out->prefix = (int)v;
    }
    for (int b = out->prefix; b < bits; b++)
        if (out->addr[b / 8] & (0x80 >> (b % 8)))
            return -2;
    return 0;
}

/* ---- one value: parse, check and store ---- */

static bool is_string_type(enum value_type t)
{
    return t <= T_CHOICE || t == T_PIN || t == T_ENVNAME;
}

__attribute__((format(printf, 3, 4))) static int fail(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return -1;
}

static void format_duration(long long v, char *buf, size_t n)
{
    if (v != 0 && v % DAY == 0)
        snprintf(buf, n, "%lldd", v / DAY);
    else if (v != 0 && v % 3600 == 0)
        snprintf(buf, n, "%lldh", v / 3600);
    else if (v != 0 && v % 60 == 0)
        snprintf(buf, n, "%lldm", v / 60);
    else
        snprintf(buf, n, "%llds", v);
}

static void format_size(long long v, char *buf, size_t n)
{
    if (v != 0 && v % GIB == 0)
        snprintf(buf, n, "%lldGiB", v / GIB);
    else if (v != 0 && v % MIB == 0)
        snprintf(buf, n, "%lldMiB", v / MIB);
    else if (v != 0 && v % KIB == 0)
        snprintf(buf, n, "%lldKiB", v / KIB);
    else
        snprintf(buf, n, "%lld", v);
}

static void format_rate(double r, char *buf, size_t n)
{
    static const struct {
        double per;
        const char *unit;
    } units[] = {{1, "s"}, {60, "min"}, {3600, "h"}};
    if (r == 0) {
        snprintf(buf, n, "0");
        return;
    }
    /* The first unit in which the rate is a whole number that reads back to
     * exactly the same value. */
    for (size_t i = 0; i < 3; i++) {
        long long whole = (long long)(r * units[i].per + 0.5);
        if (whole >= 1 && (double)whole / units[i].per == r) {
            snprintf(buf, n, "%lld/%s", whole, units[i].unit);
            return;
        }
    }
    snprintf(buf, n, "%.17g/s", r);
}

static void format_range(const struct config_key *k, long long v, char *buf, size_t n)
{
    if (k->type == T_DURATION)
        format_duration(v, buf, n);
    else if (k->type == T_SIZE)
        format_size(v, buf, n);
    else
        snprintf(buf, n, "%lld", v);
}

static void join_choices(const char *const *c, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; c[i] && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? (c[i + 1] ? ", " : " or ") : "",
                                 c[i]);
}

static int check_listen(const char *v, char *why, size_t n)
{
    const char *colon, *host = v;
    size_t hlen;
    long long port;
    int family;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (!close || close[1] != ':')
            return fail(why, n, "expected [IPv6]:port, got '" VALUE_QUOTE "'", v);
        host = v + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
        if (!is_ip_literal(host, hlen, &family) || family != AF_INET6)
            return fail(why, n, "'%.*s' is not an IPv6 address", (int)hlen, host);
    } else {
        colon = strrchr(v, ':');
        if (!colon)
            return fail(why, n, "expected host:port, got '" VALUE_QUOTE "'", v);
        hlen = (size_t)(colon - v);
        if (memchr(v, ':', hlen))
            return fail(why, n, "IPv6 addresses need brackets, as in [::1]:2525");
        if (!is_ip_literal(host, hlen, &family))
            return fail(why, n,
                        "'%.*s' is not an IP address (listen on 127.0.0.1:2525, "
                        "0.0.0.0:587 or [::1]:2525, not on a name)",
                        (int)hlen, host);
    }
    if (parse_int(colon + 1, &port) < 0 || colon[1] == '-' || port < 1 || port > 65535)
        return fail(why, n, "port must be 1-65535, got '" VALUE_QUOTE "'", colon + 1);
    return 0;
}

static int check_cidrs(const char *v, char *why, size_t n)
{
    struct cidr_check c;
    const char *p = v;
    if (strcmp(v, "auto") == 0)
        return 0;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && isspace((unsigned char)*p))
            p++, len--;
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        if (len == 0)
            return fail(why, n, "empty entry in the network list");
        int rc = parse_cidr(p, len, &c);
        if (rc == -2)
            return fail(why, n, "'%.*s' has address bits set beyond the /%d prefix", (int)len, p,
                        c.prefix);
        if (rc < 0)
            return fail(why, n, "'%.*s' is not a valid CIDR such as 10.0.0.0/8 or fd00::/8",
                        (int)len, p);
        if (!end)
            return 0;
        p = end + 1;
    }
}

static int check_string(const struct config_key *k, const char *v, char *why, size_t n)
{
    int family;
    size_t len = strlen(v);
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return fail(why, n, "control characters are not allowed");
        if (*p == ';' && (p == v || isspace((unsigned char)p[-1])))
            return fail(why, n, "';' at the start or after a space begins a comment");
    }
    if (isspace((unsigned char)v[0]) || isspace((unsigned char)v[len - 1]))
        return fail(why, n, "leading or trailing white space is not allowed");
    switch (k->type) {
    case T_HOSTNAME:
        if (!valid_hostname(v, len))
            return fail(why, n, "'" VALUE_QUOTE "' is not a valid host name", v);
        return 0;
    case T_HOST:
        if (!is_ip_literal(v, len, &family) && !valid_hostname(v, len))
            return fail(why, n, "'" VALUE_QUOTE "' is neither an IP address nor a host name%s", v,
                        v[0] == '[' ? " (write IPv6 addresses without brackets)" : "");
        return 0;
    case T_LISTEN:
        return check_listen(v, why, n);
    case T_CIDRS:
        return check_cidrs(v, why, n);
    case T_PIN:
        if (len != 64 || strspn(v, "0123456789abcdefABCDEF") != 64)
            return fail(why, n,
                        "expected 64 hex digits (SHA-256 of the public key), got %zu "
                        "characters",
                        len);
        return 0;
    case T_ENVNAME:
        if (!(isalpha((unsigned char)v[0]) || v[0] == '_') ||
            strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != len)
            return fail(why, n, "'" VALUE_QUOTE "' is not an environment variable name", v);
        return 0;
    default:
        return 0;
    }
}

/* Lists are kept as "a, b, c" (or "a:b:c") so that a value read back from
 * a dump, where long lists are wrapped, is the same string. */
static char *canonical_list(const char *v, char sep)
{
    char *out = xrealloc(NULL, 2 * strlen(v) + 1), *o = out;
    for (const char *p = v;;) {
        const char *end = strchr(p, sep);
        const char *e = end ? end : p + strlen(p);
        while (p < e && isspace((unsigned char)*p))
            p++;
        while (e > p && isspace((unsigned char)e[-1]))
            e--;
        memcpy(o, p, (size_t)(e - p));
        o += e - p;
        if (!end)
            break;
        *o++ = sep;
        if (sep == ',')
            *o++ = ' ';
        p = end + 1;
    }
    while (o > out && o[-1] == ' ')
        o--;
    *o = '\0';
    return out;
}

static int store_string(const struct config_key *k, char **sp, const char *v, char *why, size_t n);

/* Parses `v` for key `k` into the struct at `base`. On failure leaves the old
 * value and writes the reason to why. */
static int set_value(const struct config_key *k, void *base, const char *v, char *why, size_t n)
{
    void *p = (char *)base + k->offset;
    char lo[32], hi[32], list[128];
    long long ll = 0;
    int idx;
    double d;
    bool b;

    switch (k->type) {
    case T_BOOL:
        if (parse_bool(v, &b) < 0)
            return fail(why, n, "expected true/false, yes/no, on/off or 1/0, got '" VALUE_QUOTE "'",
                        v);
        *(bool *)p = b;
        return 0;
    case T_INT:
    case T_DURATION:
    case T_SIZE:
        if (k->type == T_INT && parse_int(v, &ll) < 0)
            return fail(why, n, "expected an integer, got '" VALUE_QUOTE "'", v);
        if (k->type == T_DURATION) {
            if (config_parse_duration(v, &idx) < 0)
                return fail(
                    why, n,
                    "expected a duration such as 90, 30s, 5m, 2h or 5d, got '" VALUE_QUOTE "'", v);
            ll = idx;
        }
        if (k->type == T_SIZE && config_parse_size(v, &ll) < 0)
            return fail(why, n,
                        "expected a size such as 1024, 10K, 25M or 1G, got '" VALUE_QUOTE "'", v);
        if (ll < k->min || ll > k->max) {
            format_range(k, k->min, lo, sizeof(lo));
            format_range(k, k->max, hi, sizeof(hi));
            return fail(why, n, "'" VALUE_QUOTE "' is out of range (%s to %s)", v, lo, hi);
        }
        if (k->type == T_SIZE)
            *(long long *)p = ll;
        else
            *(int *)p = (int)ll;
        return 0;
    case T_RATE:
        if (*v == '\0')
            d = 0;
        else if (parse_rate(v, &d) < 0)
            return fail(why, n, "expected a rate such as 50/s, 600/min or 0, got '" VALUE_QUOTE "'",
                        v);
        else if (d != 0 && (d < RATE_MIN || d > RATE_MAX))
            return fail(why, n, "'" VALUE_QUOTE "' is out of range (1/h to 1000000/s, or 0)", v);
        *(double *)p = d;
        return 0;
    case T_ENUM:
    case T_KIND:
        if ((idx = choice_index(k->choices, v)) < 0) {
            join_choices(k->choices, list, sizeof(list));
            return fail(why, n, "expected %s, got '" VALUE_QUOTE "'", list, v);
        }
        if (k->type == T_KIND)
            *(bool *)p = idx == 1;
        else
            *(int *)p = idx;
        return 0;
    default:
        break;
    }

    /* String types. */
    char **sp = p;
    char *canon = NULL;
    if (k->list_sep && *v) {
        canon = canonical_list(v, k->list_sep);
        v = canon;
    }
    int rc = store_string(k, sp, v, why, n);
    free(canon);
    return rc;
}

static int store_string(const struct config_key *k, char **sp, const char *v, char *why, size_t n)
{
    char list[128];
    if (*v == '\0') {
        if (!k->def) {
            free(*sp);
            *sp = NULL;
            return 0;
        }
        if (!k->empty_ok)
            return fail(why, n, "must not be empty");
    } else if (check_string(k, v, why, n) < 0) {
        return -1;
    } else if (k->type == T_CHOICE && choice_index(k->choices, v) < 0) {
        join_choices(k->choices, list, sizeof(list));
        return fail(why, n, "expected %s, got '" VALUE_QUOTE "'", list, v);
    }
    free(*sp);
    *sp = xstrdup(v);
    if (k->type == T_PIN)
        for (char *c = *sp; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    return 0;
}

/* Text of the current value, as a file would spell it; caller frees. */
static char *format_value(const struct config_key *k, const void *base)
{
    const void *p = (const char *)base + k->offset;
    char buf[64];
    switch (k->type) {
    case T_BOOL:
        return xstrdup(*(const bool *)p ? "true" : "false");
    case T_INT:
        snprintf(buf, sizeof(buf), "%d", *(const int *)p);
        return xstrdup(buf);
    case T_DURATION:
        format_duration(*(const int *)p, buf, sizeof(buf));
        return xstrdup(buf);
    case T_SIZE:
        format_size(*(const long long *)p, buf, sizeof(buf));
        return xstrdup(buf);
    case T_RATE:
        format_rate(*(const double *)p, buf, sizeof(buf));
        return xstrdup(buf);
    case T_ENUM:
        return xstrdup(k->choices[*(const int *)p]);
    case T_KIND:
        return xstrdup(k->choices[*(const bool *)p ? 1 : 0]);
    default: {
        const char *s = *(char *const *)p;
        return xstrdup(s ? s : "");
    }
    }
}

/* ---- errors ---- */

__attribute__((format(printf, 4, 5))) void
config_errors_add(struct config_errors *errs, const char *file, int line, const char *fmt, ...)
{
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Values are quoted back; keep terminals safe from what a file contained. */
    for (char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    errs->v = xrealloc(errs->v, (errs->n + 1) * sizeof(*errs->v));
    errs->v[errs->n].file = file ? xstrdup(file) : NULL;
    errs->v[errs->n].line = line;
    errs->v[errs->n].message = xstrdup(msg);
    errs->n++;
}

void config_errors_free(struct config_errors *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->n; i++) {
        free(errs->v[i].file);
        free(errs->v[i].message);
    }
    free(errs->v);
    errs->v = NULL;
    errs->n = 0;
}

/* ---- loading ---- */

enum origin_kind { O_DEFAULT = 0, O_FILE, O_ENV };

/* Where a value came from, to place later errors and catch duplicates. */
struct origin {
    enum origin_kind kind;
    int line;
    const char *env; /* "NAME=value" entry of envp */
    int env_len;     /* length of NAME */
};

struct upstream_meta {
    struct origin header;
    struct origin keys[N_KEYS];
};

enum line_kind { LINE_OTHER, LINE_KEY, LINE_CONTINUATION };

struct loader {
    struct config *cfg;
    struct config_errors *errs;
    const char *file;
    const char *base_dir; /* folder of the config file: relative paths start there */
    struct origin main_keys[N_KEYS];
    struct upstream_meta *meta; /* parallel to cfg->upstreams until sorted */

    /* Line reader state; inih asks for lines one at a time. */
    const char *pos;
    int line;
    enum line_kind kind;
    bool prev_named; /* mirrors inih: an indented line after a key continues it */
    int section;     /* enum section, SEC_NONE or SEC_IGNORED */
    size_t up;       /* current upstream when section == SEC_UPSTREAM */
    int section_line[SEC_UPSTREAM];

    /* The last key read; applied once its continuation lines are known. */
    const struct config_key *pending_key;
    long pending_up;
    char *pending;
    struct origin pending_origin;
};

__attribute__((format(printf, 3, 4))) static void report(struct loader *ld, const struct origin *o,
                                                         const char *fmt, ...)
{
    char msg[560];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (o->kind == O_FILE)
        config_errors_add(ld->errs, ld->file, o->line, "%s", msg);
    else if (o->kind == O_ENV)
        config_errors_add(ld->errs, NULL, 0, "%.*s: %s", o->env_len, o->env, msg);
    else
        config_errors_add(ld->errs, NULL, 0, "%s", msg);
}

static const char *upstream_label(struct loader *ld, long up, char *buf, size_t n)
{
    if (up < 0)
        return "";
    snprintf(buf, n, " %s", ld->cfg->upstreams[up].name);
    return buf;
}

static struct origin *origin_of(struct loader *ld, const struct config_key *k, long up)
{
    size_t i = (size_t)(k - keys);
    return up < 0 ? &ld->main_keys[i] : &ld->meta[up].keys[i];
}

/* With a config file, a relative path from the file or from the defaults
 * names a place beside the file, wherever the command runs; one from the
 * environment stays relative to the working directory, as in a shell. */
static void resolve_path(struct loader *ld, char **sp, const struct origin *o)
{
    const char *v = *sp;
    if (!ld->base_dir || o->kind == O_ENV || !v || !*v || *v == '/')
        return;
    while (v[0] == '.' && v[1] == '/')
        for (v += 2; *v == '/'; v++)
            ;
    size_t bl = strlen(ld->base_dir), vl = strlen(v);
    bool dot = strcmp(v, ".") == 0 || vl == 0;
    char *abs = xrealloc(NULL, bl + vl + 2);
    snprintf(abs, bl + vl + 2, "%s%s%s", ld->base_dir, dot ? "" : "/", dot ? "" : v);
    free(*sp);
    *sp = abs;
}

static void apply(struct loader *ld, const struct config_key *k, long up, const char *v,
                  const struct origin *o)
{
    void *base = up < 0 ? (void *)ld->cfg : (void *)&ld->cfg->upstreams[up];
    char why[400], name[UPSTREAM_NAME_MAX + 2];
    if (set_value(k, base, v, why, sizeof(why)) == 0) {
        /* ${var_dir}/... derives from a var_dir resolved already */
        bool derived = o->kind == O_DEFAULT && k->def && k->def[0] == '$';
        if (k->type == T_PATH && !derived)
            resolve_path(ld, (char **)((char *)base + k->offset), o);
        return;
    }
    if (o->kind == O_ENV)
        report(ld, o, "%s", why);
    else
        report(ld, o, "[%s%s] %s%s: %s", section_names[k->section],
               upstream_label(ld, up, name, sizeof(name)), k->name,
               o->kind == O_DEFAULT ? " (default)" : "", why);
}

static void apply_defaults(struct loader *ld, int section, long up)
{
    static const struct origin def = {O_DEFAULT, 0, NULL, 0};
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].section == section && keys[i].def && keys[i].def[0] != '$')
            apply(ld, &keys[i], up, keys[i].def, &def);
}

static const struct config_key *find_key(int section, const char *name, size_t len)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &keys[i];
        if (k->section != section)
            continue;
        if ((strlen(k->name) == len && strncasecmp(k->name, name, len) == 0) ||
            (k->alias && strlen(k->alias) == len && strncasecmp(k->alias, name, len) == 0))
            return k;
    }
    return NULL;
}

/* Upstream names meet in SLUICE_UPSTREAM_<NAME>_*: upper case, '-' as '_'. */
static bool env_name_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        int ca = a[i] == '-' ? '_' : toupper((unsigned char)a[i]);
        int cb = b[i] == '-' ? '_' : toupper((unsigned char)b[i]);
        if (ca != cb)
            return false;
    }
    return true;
}

static long find_upstream_env(struct loader *ld, const char *name, size_t len)
{
    for (size_t i = 0; i < ld->cfg->n_upstreams; i++) {
        const char *n = ld->cfg->upstreams[i].name;
        if (env_name_equal(n, strlen(n), name, len))
            return (long)i;
    }
    return -1;
}

static size_t add_upstream(struct loader *ld, const char *name, size_t len, const struct origin *o)
{
    struct config *cfg = ld->cfg;
    size_t i = cfg->n_upstreams++;
    cfg->upstreams = xrealloc(cfg->upstreams, cfg->n_upstreams * sizeof(*cfg->upstreams));
    ld->meta = xrealloc(ld->meta, cfg->n_upstreams * sizeof(*ld->meta));
    memset(&cfg->upstreams[i], 0, sizeof(cfg->upstreams[i]));
    memset(&ld->meta[i], 0, sizeof(ld->meta[i]));
    cfg->upstreams[i].name = xstrndup(name, len);
    ld->meta[i].header = *o;
    apply_defaults(ld, SEC_UPSTREAM, (long)i);
    return i;
}

static void flush_pending(struct loader *ld)
{
    if (!ld->pending)
        return;
    apply(ld, ld->pending_key, ld->pending_up, ld->pending, &ld->pending_origin);
    free(ld->pending);
    ld->pending = NULL;
}

static bool valid_upstream_name(const char *s, size_t len)
{
    if (len == 0 || len > UPSTREAM_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

/* A "[...]" line: s..e is the trimmed line. */
static void read_header(struct loader *ld, const char *s, const char *e)
{
    struct origin o = {O_FILE, ld->line, NULL, 0};
    const char *close = memchr(s, ']', (size_t)(e - s));
    const char *in, *in_end, *rest;

    ld->section = SEC_IGNORED;
    if (!close) {
        report(ld, &o, "section header without ']'");
        return;
    }
    for (rest = close + 1; rest < e && isspace((unsigned char)*rest); rest++)
        ;
    if (rest < e && *rest != ';' && *rest != '#') {
        report(ld, &o, "unexpected text after the section header");
        return;
    }
    for (in = s + 1; in < close && isspace((unsigned char)*in); in++)
        ;
    for (in_end = close; in_end > in && isspace((unsigned char)in_end[-1]); in_end--)
        ;
    size_t len = (size_t)(in_end - in);

    for (int sec = 0; sec < SEC_UPSTREAM; sec++) {
        if (strlen(section_names[sec]) != len || strncmp(in, section_names[sec], len) != 0)
            continue;
        if (ld->section_line[sec]) {
            report(ld, &o, "section [%s] appears twice (first at line %d)", section_names[sec],
                   ld->section_line[sec]);
            return;
        }
        ld->section_line[sec] = ld->line;
        ld->section = sec;
        return;
    }
    if (len >= 8 && strncmp(in, "upstream", 8) == 0 &&
        (len == 8 || isspace((unsigned char)in[8]))) {
        const char *name = in + 8;
        while (name < in_end && isspace((unsigned char)*name))
            name++;
        size_t nlen = (size_t)(in_end - name);
        if (nlen == 0) {
            report(ld, &o, "[upstream] needs a name, as in [upstream sendgrid]");
            return;
        }
        if (!valid_upstream_name(name, nlen)) {
            report(ld, &o, "upstream name '%.*s' must be 1-%d letters, digits, '-' or '_'",
                   (int)nlen, name, UPSTREAM_NAME_MAX);
            return;
        }
        long dup = find_upstream_env(ld, name, nlen);
        if (dup >= 0) {
            const char *other = ld->cfg->upstreams[dup].name;
            if (strlen(other) == nlen && memcmp(other, name, nlen) == 0)
                report(ld, &o, "duplicate upstream '%s' (first at line %d)", other,
                       ld->meta[dup].header.line);
            else
                report(ld, &o,
                       "upstream names '%.*s' and '%s' (line %d) share the environment prefix "
                       "SLUICE_UPSTREAM_%.*s_",
                       (int)nlen, name, other, ld->meta[dup].header.line, (int)nlen, name);
            return;
        }
        ld->up = add_upstream(ld, name, nlen, &o);
        ld->section = SEC_UPSTREAM;
        return;
    }
    report(ld, &o,
           "unknown section [%.*s] (expected server, tls, auth, limits, queue, log, policy, "
           "dkim, http, audit, webhook, sendmail or upstream NAME)",
           (int)len, in);
}

/* Mirrors inih's test for a "name = value" line: '=' or ':' before any
 * inline comment (';' after white space). */
static bool has_assignment(const char *s, const char *e)
{
    bool was_space = false;
    for (; s < e; s++) {
        if (*s == '=' || *s == ':')
            return true;
        if (was_space && *s == ';')
            return false;
        was_space = isspace((unsigned char)*s);
    }
    return false;
}

/* inih reader: hands inih one physical line at a time, classifying it first
 * so that sections, line numbers and continuation lines are tracked here
 * (inih itself truncates section names and reports only the first syntax
 * error). Lines with problems are reported and handed over blank. */
static char *read_line(char *str, int num, void *stream)
{
    struct loader *ld = stream;
    const char *line = ld->pos, *eol, *s, *e;
    size_t len;

    if (*line == '\0')
        return NULL;
    eol = strchr(line, '\n');
    len = eol ? (size_t)(eol - line) : strlen(line);
    ld->pos = line + len + (eol ? 1 : 0);
    ld->line++;
    ld->kind = LINE_OTHER;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (ld->line == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
        line += 3, len -= 3;
    snprintf(str, (size_t)num, "\n");

    for (s = line; s < line + len && isspace((unsigned char)*s); s++)
        ;
    for (e = line + len; e > s && isspace((unsigned char)e[-1]); e--)
        ;
    if (s == e || *s == ';' || *s == '#')
        return str;
    if (len + 2 > (size_t)num) {
        struct origin o = {O_FILE, ld->line, NULL, 0};
        flush_pending(ld);
        report(ld, &o, "line longer than %d characters", num - 2);
        return str;
    }
    if (*s == '[') {
        flush_pending(ld);
        read_header(ld, s, e);
        ld->prev_named = false;
        snprintf(str, (size_t)num, "[x]\n");
        return str;
    }
    if (s > line && ld->prev_named) {
        ld->kind = LINE_CONTINUATION;
    } else if (has_assignment(s, e)) {
        const char *eq = s;
        while (*eq != '=' && *eq != ':')
            eq++;
        flush_pending(ld);
        ld->kind = LINE_KEY;
        ld->prev_named = eq > s; /* inih continues only named keys */
    } else {
        struct origin o = {O_FILE, ld->line, NULL, 0};
        flush_pending(ld);
        report(ld, &o, "expected 'key = value', a [section] or a comment");
        return str;
    }
    memcpy(str, line, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

static void continue_value(struct loader *ld, const char *value)
{
    struct origin o = {O_FILE, ld->line, NULL, 0};
    const char *v = value, *e;
    bool was_space = false;
    char sep;

    if (!ld->pending)
        return; /* continues a line already reported */
    if (!ld->pending_key->list_sep) {
        report(ld, &o, "indented line continues '%s', which is not a list; remove the indentation",
               ld->pending_key->name);
        return;
    }
    sep = ld->pending_key->list_sep;
    for (e = v; *e && !(was_space && *e == ';'); e++)
        was_space = isspace((unsigned char)*e);
    while (e > v && isspace((unsigned char)e[-1]))
        e--;
    while (v < e && (*v == sep || isspace((unsigned char)*v)))
        v++;
    if (v == e)
        return;
    size_t plen = strlen(ld->pending);
    while (plen && isspace((unsigned char)ld->pending[plen - 1]))
        plen--;
    bool need_sep = plen > 0 && ld->pending[plen - 1] != sep;
    char *joined = xrealloc(NULL, plen + 1 + (size_t)(e - v) + 1);
    memcpy(joined, ld->pending, plen);
    if (need_sep)
        joined[plen++] = sep;
    memcpy(joined + plen, v, (size_t)(e - v));
    joined[plen + (size_t)(e - v)] = '\0';
    free(ld->pending);
    ld->pending = joined;
}

static int on_ini_value(void *user, const char *section, const char *name, const char *value)
{
    struct loader *ld = user;
    struct origin o = {O_FILE, ld->line, NULL, 0};
    char label[UPSTREAM_NAME_MAX + 2];
    long up = ld->section == SEC_UPSTREAM ? (long)ld->up : -1;
    (void)section; /* tracked by read_line: inih truncates long names */

    if (ld->kind == LINE_CONTINUATION) {
        continue_value(ld, value);
        return 1;
    }
    if (ld->section == SEC_IGNORED)
        return 1;
    if (ld->section == SEC_NONE) {
        report(ld, &o, "'%s' comes before any [section]", name);
        return 1;
    }
    const struct config_key *k = find_key(ld->section, name, strlen(name));
    /* Case matters in the file; only environment names are folded. */
    if (!k || (strcmp(name, k->name) != 0 && (!k->alias || strcmp(name, k->alias) != 0))) {
        report(ld, &o, "unknown key '%s' in [%s%s]", name, section_names[ld->section],
               upstream_label(ld, up, label, sizeof(label)));
        return 1;
    }
    struct origin *first = origin_of(ld, k, up);
    if (first->kind == O_FILE) {
        report(ld, &o, "duplicate key '%s' in [%s%s] (first set at line %d)", name,
               section_names[ld->section], upstream_label(ld, up, label, sizeof(label)),
               first->line);
        return 1;
    }
    *first = o;
    ld->pending_key = k;
    ld->pending_up = up;
    ld->pending_origin = o;
    ld->pending = xstrdup(value);
    return 1;
}

static void load_text(struct loader *ld, const char *text)
{
    ld->pos = text;
    ld->section = SEC_NONE;
    int rc = ini_parse_stream(read_line, ld, on_ini_value, ld);
    flush_pending(ld);
    if (rc > 0 && ld->errs->n == 0)
        config_errors_add(ld->errs, ld->file, rc, "syntax error");
}

/* ---- environment ---- */

static bool env_is_other_use(struct loader *ld, const char *name, size_t len)
{
    /* Read by other parts directly: the config path, the DNSSEC trust anchor
     * (mailauth/dns.c), the public suffix list (mailauth/psl.c), and the
     * test harness. */
    static const char *const reserved[] = {
        "SLUICE_CONFIG",   "SLUICE_DNS_TRUST_ANCHOR", "SLUICE_PSL_FILE",
        "SLUICE_TESTDATA", "SLUICE_SOURCE_ROOT",      "SLUICE_BIN",
        "SLUICE_ASAN_BIN", "SLUICE_SENDMAIL_USER",    "SLUICE_SENDMAIL_PASSWORD",
    };
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strlen(reserved[i]) == len && memcmp(reserved[i], name, len) == 0)
            return true;
    /* Upstream secrets may be named SLUICE_* too. */
    for (size_t i = 0; i < ld->cfg->n_upstreams; i++) {
        const char *se = ld->cfg->upstreams[i].secret_env;
        if (se && strlen(se) == len && memcmp(se, name, len) == 0)
            return true;
    }
    return false;
}

/* SLUICE_UPSTREAM_<NAME>_<KEY>: keys contain '_', so match the longest key
 * suffix. Returns the key and sets the name span, or NULL. */
static const struct config_key *split_upstream_env(const char *rest, size_t len, size_t *name_len)
{
    const struct config_key *best = NULL;
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t kl = strlen(keys[i].name);
        if (keys[i].section != SEC_UPSTREAM || kl + 2 > len || rest[len - kl - 1] != '_')
            continue;
        if (strncasecmp(rest + len - kl, keys[i].name, kl) != 0)
            continue;
        if (!best || kl > strlen(best->name)) {
            best = &keys[i];
            *name_len = len - kl - 1;
        }
    }
    return best;
}

static bool apply_env_entry(struct loader *ld, const char *entry)
{
    const char *eq = strchr(entry, '=');
    size_t nlen = (size_t)(eq - entry), vlen;
    const char *rest = entry + 7, *v = eq + 1;
    size_t rlen = nlen - 7;
    struct origin o = {O_ENV, 0, entry, (int)nlen};
    const struct config_key *k = NULL;
    long up = -1;

    for (int sec = 0; sec < SEC_COUNT && !k; sec++) {
        size_t sl = strlen(section_names[sec]);
        if (rlen <= sl + 1 || strncasecmp(rest, section_names[sec], sl) != 0 || rest[sl] != '_')
            continue;
        if (sec == SEC_UPSTREAM) {
            size_t name_len = 0;
            k = split_upstream_env(rest + sl + 1, rlen - sl - 1, &name_len);
            if (!k)
                return false;
            const char *name = rest + sl + 1;
            if (!valid_upstream_name(name, name_len)) {
                report(ld, &o, "'%.*s' is not a valid upstream name", (int)name_len, name);
                return true;
            }
            up = find_upstream_env(ld, name, name_len);
            if (up < 0) {
                up = (long)add_upstream(ld, name, name_len, &o);
                for (char *c = ld->cfg->upstreams[up].name; *c; c++)
                    *c = (char)tolower((unsigned char)*c);
            }
        } else {
            k = find_key(sec, rest + sl + 1, rlen - sl - 1);
            if (!k)
                return false;
        }
    }
    if (!k)
        return false;

    struct origin *first = origin_of(ld, k, up);
    if (first->kind == O_ENV) {
        report(ld, &o, "set twice in the environment (also as %.*s)", first->env_len, first->env);
        return true;
    }
    *first = o;
    /* Trim like the file parser does. */
    while (isspace((unsigned char)*v))
        v++;
    vlen = strlen(v);
    while (vlen && isspace((unsigned char)v[vlen - 1]))
        vlen--;
    char *value = xstrndup(v, vlen);
    apply(ld, k, up, value, &o);
    free(value);
    return true;
}

static void load_env(struct loader *ld, char *const *envp, bool *unknown)
{
    for (size_t i = 0; envp && envp[i]; i++) {
        const char *eq = strchr(envp[i], '=');
        unknown[i] = false;
        if (strncmp(envp[i], "SLUICE_", 7) != 0 || !eq)
            continue;
        if (env_is_other_use(ld, envp[i], (size_t)(eq - envp[i])))
            continue;
        unknown[i] = !apply_env_entry(ld, envp[i]);
    }
}

/* ---- derived values and checks across keys ---- */

static void apply_derived(struct loader *ld, const struct config_key *k, long up)
{
    static const struct origin def = {O_DEFAULT, 0, NULL, 0};
    char buf[512];
    const char *d = k->def;
    if (!d || d[0] != '$' || origin_of(ld, k, up)->kind != O_DEFAULT)
        return;
    if (strncmp(d, "${var_dir}", 10) == 0) {
        const char *vd = ld->cfg->var_dir ? ld->cfg->var_dir : ".";
        size_t vl = strlen(vd);
        while (vl > 1 && vd[vl - 1] == '/')
            vl--;
        snprintf(buf, sizeof(buf), "%.*s%s", (int)vl, vd, d + 10);
    } else if (strcmp(d, "${hostname}") == 0) {
        if (gethostname(buf, sizeof(buf)) < 0 || buf[0] == '\0')
            snprintf(buf, sizeof(buf), "localhost");
        buf[sizeof(buf) - 1] = '\0';
    } else { /* ${port}: RFC 8314 3.3 implicit TLS submission, else RFC 6409 */
        snprintf(buf, sizeof(buf), "%d",
                 ld->cfg->upstreams[up].tls == CONFIG_TLS_IMPLICIT ? 465 : 587);
    }
    apply(ld, k, up, buf, &def);
}

/* Where to place an error about `key`: where it was set, else the section. */
static const struct origin *place(struct upstream_meta *m, const char *key)
{
    const struct config_key *k = find_key(SEC_UPSTREAM, key, strlen(key));
    return m->keys[k - keys].kind != O_DEFAULT ? &m->keys[k - keys] : &m->header;
}

static void check_upstream(struct loader *ld, size_t i)
{
    const struct config_upstream *u = &ld->cfg->upstreams[i];
    struct upstream_meta *m = &ld->meta[i];
    static const char loopback_only[] =
        "is allowed only for loopback upstreams (127.0.0.0/8, ::1, localhost)";

    if (u->secret_file && u->secret_env)
        report(ld, place(m, "secret_env"),
               "upstream '%s': set only one of secret_file and secret_env", u->name);
    if (u->capture)
        return;
    if (!u->host) {
        report(ld, place(m, "kind"), "upstream '%s': kind = smtp needs host", u->name);
    } else if (!host_is_loopback(u->host)) {
        if (u->verify == CONFIG_VERIFY_NONE)
            report(ld, place(m, "verify"), "upstream '%s': verify = none %s", u->name,
                   loopback_only);
        if (u->tls == CONFIG_TLS_NONE)
            report(ld, place(m, "tls"), "upstream '%s': tls = none %s", u->name, loopback_only);
    }
    if (u->auth != CONFIG_AUTH_NONE && !u->username)
        report(ld, place(m, "auth"), "upstream '%s': auth = %s needs username", u->name,
               auth_mechs[u->auth]);
    if (u->auth != CONFIG_AUTH_NONE && !u->secret_file && !u->secret_env)
        report(ld, place(m, "auth"), "upstream '%s': auth = %s needs secret_file or secret_env",
               u->name, auth_mechs[u->auth]);
}

static void finish(struct loader *ld, char *const *envp, const bool *unknown)
{
    static const struct origin def = {O_DEFAULT, 0, NULL, 0};
    struct config *cfg = ld->cfg;

    /* Nothing leaves the machine until an upstream is configured. */
    if (cfg->n_upstreams == 0) {
        size_t i = add_upstream(ld, "capture", 7, &def);
        apply(ld, find_key(SEC_UPSTREAM, "kind", 4), (long)i, "capture", &def);
    }
    for (size_t k = 0; k < N_KEYS; k++) {
        if (keys[k].section != SEC_UPSTREAM)
            apply_derived(ld, &keys[k], -1);
        else
            for (size_t u = 0; u < cfg->n_upstreams; u++)
                apply_derived(ld, &keys[k], (long)u);
    }

    if (cfg->retry_base > cfg->retry_cap) {
        const struct config_key *k = find_key(SEC_QUEUE, "retry_base", 10);
        report(ld, origin_of(ld, k, -1), "[queue] retry_base (%d s) exceeds retry_cap (%d s)",
               cfg->retry_base, cfg->retry_cap);
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        check_upstream(ld, i);
    for (size_t i = 0; envp && envp[i]; i++) {
        const char *eq = strchr(envp[i], '=');
        /* secret_env names are known only now */
        if (unknown[i] && !env_is_other_use(ld, envp[i], (size_t)(eq - envp[i])))
            config_errors_add(ld->errs, NULL, 0,
                              "%.*s: unknown setting (SLUICE_<SECTION>_<KEY> or "
                              "SLUICE_UPSTREAM_<NAME>_<KEY>)",
                              (int)(eq - envp[i]), envp[i]);
    }

    /* Stable: equal priorities keep file order. */
    for (size_t i = 1; i < cfg->n_upstreams; i++) {
        struct config_upstream tmp = cfg->upstreams[i];
        size_t j = i;
        for (; j > 0 && cfg->upstreams[j - 1].priority > tmp.priority; j--)
            cfg->upstreams[j] = cfg->upstreams[j - 1];
        cfg->upstreams[j] = tmp;
    }
}

static int load(const char *text, const char *name, const char *base_dir, char *const *envp,
                struct config **out, struct config_errors *errs)
{
    struct loader ld;
    size_t n_env = 0;
    memset(&ld, 0, sizeof(ld));
    ld.cfg = calloc(1, sizeof(*ld.cfg));
    if (!ld.cfg)
        abort();
    ld.errs = errs;
    ld.file = name ? name : "<config>";
    ld.base_dir = base_dir;
    ld.cfg->path = name && text ? xstrdup(name) : NULL;
    *out = ld.cfg;

    for (int sec = 0; sec < SEC_UPSTREAM; sec++)
        apply_defaults(&ld, sec, -1);
    if (text)
        load_text(&ld, text);
    while (envp && envp[n_env])
        n_env++;
    bool *unknown = xrealloc(NULL, (n_env + 1) * sizeof(bool));
    load_env(&ld, envp, unknown);
    finish(&ld, envp, unknown);
    free(unknown);
    free(ld.meta);
    return errs->n ? -1 : 0;
}

int config_load_string(const char *text, const char *name, char *const *envp, struct config **out,
                       struct config_errors *errs)
{
    errs->v = NULL;
    errs->n = 0;
    return load(text, name, NULL, envp, out, errs);
}

/* The absolute folder of a config file's path, without "." and ".."
 * (realpath); malloc'd, or NULL when the working directory is unknown. */
static char *config_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char cwd[4096] = "";
    if (slash == path)
        return xstrdup("/");
    if (path[0] != '/' && !getcwd(cwd, sizeof(cwd)))
        return NULL;
    size_t dl = slash ? (size_t)(slash - path) : 0;
    size_t cap = strlen(cwd) + dl + 2;
    char *dir = xrealloc(NULL, path[0] == '/' ? dl + 1 : cap);
    if (path[0] == '/')
        snprintf(dir, dl + 1, "%.*s", (int)dl, path);
    else if (dl == 0 || (dl == 1 && path[0] == '.'))
        snprintf(dir, cap, "%s", cwd);
    else
        snprintf(dir, cap, "%s/%.*s", strcmp(cwd, "/") ? cwd : "", (int)dl, path);
    /* "../etc" reads better as the folder it names */
    char *real = realpath(dir, NULL);
    if (real) {
        free(dir);
        dir = real;
    }
    return dir;
}

int config_load(const char *path, char *const *envp, struct config **out,
                struct config_errors *errs)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    errs->v = NULL;
    errs->n = 0;
    if (path) {
        FILE *f = fopen(path, "r");
        if (!f) {
            config_errors_add(errs, path, 0, "cannot open: %s", strerror(errno));
        } else {
            text = xrealloc(NULL, CONFIG_FILE_MAX + 1);
            len = fread(text, 1, CONFIG_FILE_MAX + 1, f);
            if (ferror(f))
                config_errors_add(errs, path, 0, "cannot read: %s", strerror(errno));
            else if (len > CONFIG_FILE_MAX)
                config_errors_add(errs, path, 0, "larger than %d bytes", CONFIG_FILE_MAX);
            fclose(f);
            text[len > CONFIG_FILE_MAX ? CONFIG_FILE_MAX : len] = '\0';
            if (strlen(text) != len && len <= CONFIG_FILE_MAX) {
                int line = 1;
                for (const char *c = text; *c; c++)
                    line += *c == '\n';
                config_errors_add(errs, path, line, "NUL byte in the file");
            }
        }
    }
    if (errs->n) {
        /* Still hand back the defaults for inspection. */
        struct config_errors more = {NULL, 0};
        load(NULL, path, NULL, envp, out, &more);
        for (size_t i = 0; i < more.n; i++) {
            errs->v = xrealloc(errs->v, (errs->n + 1) * sizeof(*errs->v));
            errs->v[errs->n++] = more.v[i];
        }
        free(more.v);
        free(text);
        return -1;
    }
    char *dir = path ? config_dir(path) : NULL;
    rc = load(text, path, dir, envp, out, errs);
    free(dir);
    free(text);
    return rc;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (!is_string_type(keys[i].type))
            continue;
        if (keys[i].section != SEC_UPSTREAM) {
            free(*(char **)((char *)cfg + keys[i].offset));
            continue;
        }
        for (size_t u = 0; u < cfg->n_upstreams; u++)
            free(*(char **)((char *)&cfg->upstreams[u] + keys[i].offset));
    }
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        free(cfg->upstreams[u].name);
    free(cfg->upstreams);
    free(cfg->path);
    free(cfg);
}

const struct config_upstream *config_upstream_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (strcmp(cfg->upstreams[i].name, name) == 0)
            return &cfg->upstreams[i];
    return NULL;
}

/* ---- output ---- */

/* Lists longer than this are wrapped onto indented continuation lines, which
 * keeps every line inside inih's line buffer. */
#define DUMP_WRAP 72

static void dump_section(FILE *f, int section, const void *base)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &keys[i];
        if (k->section != section)
            continue;
        char *v = format_value(k, base);
        size_t len = strlen(v);
        if (!k->list_sep || len <= DUMP_WRAP) {
            fprintf(f, "%s =%s%s\n", k->name, len ? " " : "", v);
            free(v);
            continue;
        }
        fprintf(f, "%s =", k->name);
        const char *p = v;
        bool first = true;
        while (*p) {
            const char *cut = p + strlen(p);
            if ((size_t)(cut - p) > DUMP_WRAP) {
                const char *sep = p + DUMP_WRAP;
                while (sep > p && *sep != k->list_sep)
                    sep--;
                if (sep == p)
                    sep = strchr(p + DUMP_WRAP, k->list_sep);
                if (sep)
                    cut = sep + 1;
            }
            fprintf(f, "%s%.*s\n", first ? " " : "    ", (int)(cut - p), p);
            first = false;
            p = cut;
        }
        free(v);
    }
}

void config_dump(const struct config *cfg, FILE *f)
{
    fprintf(f, "# Effective sluice configuration%s%s\n", cfg->path ? " from " : "",
            cfg->path ? cfg->path : " (embedded defaults)");
    for (int sec = 0; sec < SEC_UPSTREAM; sec++) {
        fprintf(f, "%s[%s]\n", sec ? "\n" : "", section_names[sec]);
        dump_section(f, sec, cfg);
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        fprintf(f, "\n[upstream %s]\n", cfg->upstreams[i].name);
        dump_section(f, SEC_UPSTREAM, &cfg->upstreams[i]);
    }
}

static json_t *value_json(const struct config_key *k, const void *base)
{
    const void *p = (const char *)base + k->offset;
    switch (k->type) {
    case T_BOOL:
        return json_boolean(*(const bool *)p);
    case T_INT:
    case T_DURATION:
        return json_integer(*(const int *)p);
    case T_SIZE:
        return json_integer(*(const long long *)p);
    case T_RATE:
        return json_real(*(const double *)p);
    case T_ENUM:
        return json_string(k->choices[*(const int *)p]);
    case T_KIND:
        return json_string(k->choices[*(const bool *)p ? 1 : 0]);
    default: {
        const char *s = *(char *const *)p;
        return s ? json_string(s) : json_null();
    }
    }
}

static json_t *section_json(int section, const void *base)
{
    json_t *o = json_object();
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].section == section)
            json_object_set_new(o, keys[i].name, value_json(&keys[i], base));
    return o;
}

json_t *config_to_json(const struct config *cfg)
{
    json_t *root = json_object(), *ups = json_array();
    json_object_set_new(root, "path", cfg->path ? json_string(cfg->path) : json_null());
    for (int sec = 0; sec < SEC_UPSTREAM; sec++)
        json_object_set_new(root, section_names[sec], section_json(sec, cfg));
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        json_t *u = section_json(SEC_UPSTREAM, &cfg->upstreams[i]);
        json_object_set_new(u, "name", json_string(cfg->upstreams[i].name));
        json_array_append_new(ups, u);
    }
    json_object_set_new(root, "upstreams", ups);
    return root;
}

void config_docs(FILE *f)
{
    for (int sec = 0; sec < SEC_COUNT; sec++) {
        fprintf(f, "%s### [%s%s]\n\n", sec ? "\n" : "", section_names[sec],
                sec == SEC_UPSTREAM ? " NAME" : "");
        fprintf(f, "| Key | Type | Default | Environment | Description |\n");
        fprintf(f, "|-----|------|---------|-------------|-------------|\n");
        for (size_t i = 0; i < N_KEYS; i++) {
            const struct config_key *k = &keys[i];
            char def[160], env[96], type[96];
            if (k->section != sec)
                continue;
            if (!k->def)
                snprintf(def, sizeof(def), "(unset)");
            else if (strncmp(k->def, "${var_dir}", 10) == 0)
                snprintf(def, sizeof(def), "`<var_dir>%s`", k->def + 10);
            else if (strcmp(k->def, "${hostname}") == 0)
                snprintf(def, sizeof(def), "system host name");
            else if (strcmp(k->def, "${port}") == 0)
                snprintf(def, sizeof(def), "`587`; `465` with tls = implicit");
            else if (k->def[0] == '\0')
                snprintf(def, sizeof(def), "(empty)");
            else if (strlen(k->def) > 40)
                snprintf(def, sizeof(def), "`%.24s...`", k->def);
            else
                snprintf(def, sizeof(def), "`%s`", k->def);
            if (k->choices) {
                size_t used = 0;
                type[0] = '\0';
                for (int c = 0; k->choices[c]; c++)
                    used += (size_t)snprintf(type + used, sizeof(type) - used, "%s%s",
                                             c ? " \\| " : "", k->choices[c]);
            } else if (k->min || k->max) {
                char lo[32], hi[32];
                format_range(k, k->min, lo, sizeof(lo));
                format_range(k, k->max, hi, sizeof(hi));
                snprintf(type, sizeof(type), "%s, %s to %s", type_names[k->type], lo, hi);
            } else {
                snprintf(type, sizeof(type), "%s", type_names[k->type]);
            }
            snprintf(env, sizeof(env), "SLUICE_%s%s_%s", section_names[sec],
                     sec == SEC_UPSTREAM ? "_<NAME>" : "", k->name);
            for (char *c = env; *c; c++)
                *c = (char)toupper((unsigned char)*c);
            fprintf(f, "| `%s`%s%s%s | %s | %s | `%s` | %s |\n", k->name, k->alias ? " (or `" : "",
                    k->alias ? k->alias : "", k->alias ? "`)" : "", type, def, env, k->doc);
        }
    }
}

json_t *config_keys_json(void)
{
    json_t *a = json_array();
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &keys[i];
        char env[96];
        snprintf(env, sizeof(env), "SLUICE_%s%s_%s", section_names[k->section],
                 k->section == SEC_UPSTREAM ? "_<NAME>" : "", k->name);
        for (char *c = env; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s?, s:s, s:s?}", "section",
                                           section_names[k->section], "key", k->name, "type",
                                           type_names[k->type], "default", k->def, "environment",
                                           env, "description", k->doc));
    }
    return json_pack("{s:o}", "keys", a);
}
