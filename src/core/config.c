/* Runtime configuration. One table lists every key with its section, type,
 * storage, default and description; reading the INI file (through inih), the
 * SLUICE_* environment overrides, validation, the dump and the reference docs
 * all walk that table, so a new setting is one new row. */
#include "core/config.h"
#include "core/config_int.h"

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

const char *const section_names[SEC_COUNT] = {"server",  "tls",    "auth", "limits",   "queue",
                                              "log",     "policy", "dkim", "http",     "audit",
                                              "webhook", "store",  "api",  "sendmail", "upstream"};

const char *const type_names[] = {
    "string", "path",   "host name", "host",          "address:port", "CIDR list",
    "choice", "choice", "choice",    "bool",          "integer",      "duration",
    "size",   "rate",   "hex",       "variable name",
};

static const char *const tls_versions[] = {"1.2", "1.3", NULL};
static const char *const log_formats[] = {"json", "text", NULL};
static const char *const store_backends[] = {"sqlite", "postgresql", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const kinds[] = {"smtp", "capture", NULL};
static const char *const tls_modes[] = {"starttls", "implicit", "none", NULL};
static const char *const verify_modes[] = {"peer", "none", NULL};
const char *const auth_mechs[] = {"none", "plain", "login", "xoauth2", NULL};
static const char *const canons[] = {"relaxed/relaxed", "relaxed/simple", "simple/relaxed",
                                     "simple/simple", NULL};
static const char *const sign_failures[] = {"defer", "unsigned", NULL};

_Static_assert(sizeof(enum config_tls_mode) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum config_tls_verify) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum config_auth_mech) == sizeof(int), "enums are stored as int");

#define S(f) offsetof(struct config, f)
#define U(f) offsetof(struct config_upstream, f)

/* Mozilla "intermediate" TLS 1.2 suites: forward secret AEAD only. */
#define DEFAULT_CIPHERS                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

const struct config_key config_keys[] = {
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
    {SEC_SERVER, "threads", NULL, T_INT, S(server_threads), "auto", 0, 256, .auto_ok = true,
     .doc = "Threads for TLS handshakes beside the event loop; auto: one per core; 0: "
            "handshakes on the event loop."},
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
     .doc = "SQLite credential and accounting store (with [store] backend = sqlite)."},
    {SEC_STORE, "backend", NULL, T_CHOICE, S(store_backend), "sqlite", .choices = store_backends,
     .doc = "Where credentials, accounting and quota counters live: sqlite (the file [auth] "
            "creds_db) or postgresql (url; one database several nodes share, docs/STORE.md)."},
    {SEC_STORE, "url", NULL, T_STRING, S(store_url), "", .empty_ok = true,
     .doc = "PostgreSQL connection: a postgresql://user@host:port/db URL or libpq key=value "
            "string. Put the password in password_file (or SLUICE_STORE_URL in the environment) "
            "rather than here."},
    {SEC_STORE, "password_file", NULL, T_PATH, S(store_password_file), "", .empty_ok = true,
     .doc = "File holding the PostgreSQL password (first line; owner-only mode, like every "
            "secret file); overrides a password in url."},
    {SEC_STORE, "pool_size", NULL, T_INT, S(store_pool_size), "4", 1, 64,
     .doc = "Connections the daemon keeps to the store; each call takes one for its duration."},

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
    {SEC_TLS, "ocsp_stapling", NULL, T_BOOL, S(tls_ocsp_stapling), "true",
     .doc = "Staple the certificate's OCSP status when it names a responder and the chain file "
            "holds its issuer (fetched in the background, refreshed before it expires)."},
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

const size_t config_n_keys = sizeof(config_keys) / sizeof(config_keys[0]);
_Static_assert(sizeof(config_keys) / sizeof(config_keys[0]) <= CONFIG_KEYS_MAX,
               "raise CONFIG_KEYS_MAX in config_int.h");
