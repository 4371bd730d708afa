/* Runtime configuration: embedded defaults, then the config file (INI syntax
 * read with inih), then SLUICE_* environment variables. Every other module
 * reads settings only from a struct config it is handed. */
#ifndef SLUICE_CORE_CONFIG_H
#define SLUICE_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* An integer setting given as "auto". */
#define CONFIG_AUTO (-1)

enum config_tls_mode { CONFIG_TLS_STARTTLS = 0, CONFIG_TLS_IMPLICIT, CONFIG_TLS_NONE };
enum config_tls_verify { CONFIG_VERIFY_PEER = 0, CONFIG_VERIFY_NONE };
enum config_auth_mech {
    CONFIG_AUTH_NONE = 0,
    CONFIG_AUTH_PLAIN,
    CONFIG_AUTH_LOGIN,
    CONFIG_AUTH_XOAUTH2
};

/* One smarthost, from a section [upstream NAME]. The special kind "capture"
 * writes messages as .eml files instead of sending them. */
struct config_upstream {
    char *name;
    bool capture; /* kind = capture */
    char *host;
    int port;                      /* default 587 (starttls) / 465 (implicit) */
    enum config_tls_mode tls;      /* tls = starttls | implicit | none */
    enum config_tls_verify verify; /* verify = peer | none (none: loopback only) */
    char *tls_pin_sha256;          /* hex SPKI SHA-256, optional */
    char *ca_file;                 /* optional; system store otherwise */
    char *tls_server_name;         /* optional SNI/verify name; default host */
    enum config_auth_mech auth;
    char *username;
    char *secret_file;           /* password/token read from this file ... */
    char *secret_env;            /* ... or from this environment variable */
    int priority;                /* lower first; default 10 */
    int max_connections;         /* default 10 */
    int messages_per_connection; /* default 100 */
    double rate_per_second;      /* 0 = unlimited */
    int timeout;                 /* seconds to wait for a reply, default 300 */
    int connect_timeout;         /* seconds to connect + handshake, default 30 */
};

struct config {
    char *path; /* file read, or NULL for embedded defaults */

    /* [server] */
    char *hostname;               /* default: gethostname() */
    char *listen_submission;      /* "127.0.0.1:2525", STARTTLS; "" disables */
    char *listen_smtps;           /* "127.0.0.1:4650", implicit TLS; "" disables */
    char *var_dir;                /* "./var" */
    char *spool_dir;              /* default <var_dir>/spool */
    long long spool_segment_size; /* bytes, default 64 MiB */
    char *capture_dir;            /* default <var_dir>/capture */
    char *control_socket;         /* default <var_dir>/control.sock */
    char *relay_networks;         /* comma list of CIDRs allowed to relay without AUTH; "" */
    int shutdown_grace;           /* seconds, default 30 */
    int server_threads; /* [server] threads: TLS handshake threads, CONFIG_AUTO = one per core */
    char *server_user;  /* run as this user when started as root; "sluice" */

    /* [tls] */
    char *tls_cert;        /* default <var_dir>/tls/cert.pem (self-signed if absent) */
    char *tls_key;         /* default <var_dir>/tls/key.pem */
    char *tls_min_version; /* "1.2" or "1.3" */
    char *tls_ciphers;     /* TLS 1.2 cipher list */

    /* [auth] */
    char *users_file;              /* default <var_dir>/users; lines "name:$argon2id$..." */
    bool allow_plaintext_loopback; /* AUTH without TLS from 127.0.0.0/8 and ::1; default false */

    /* [limits] */
    long long max_message_size; /* bytes, default 25 MiB */
    int max_recipients;         /* default 100 */
    int max_line_length;        /* command line, default 512 (RFC 5321) */
    int command_timeout;        /* seconds, default 300 (RFC 5321 4.5.3.2.7) */
    int data_timeout;           /* seconds, default 180 (4.5.3.2.6 suggests 10 min) */
    int max_connections;        /* default 1000 */
    int max_connections_per_ip; /* default 100 */
    int max_bad_commands;       /* then 421; default 10 */
    int command_deadline;       /* seconds for one whole command line, default 300 */
    long long data_min_rate;    /* content octets per second, default 500; 0 = off */
    int transaction_deadline;   /* seconds from MAIL to the end-of-data reply, default 3600 */
    int max_unauth_connections; /* not yet authenticated, default 750 */
    int max_unauth_connections_per_ip; /* default 10 */
    long long max_inflight_bytes;      /* message bytes held in memory, all sessions; 256 MiB */

    /* [queue] */
    int retry_base;   /* seconds, default 60 */
    int retry_cap;    /* seconds, default 3600 */
    int max_lifetime; /* seconds, default 5 days */
    bool bounces;     /* send DSNs, default true */

    /* [log] */
    char *log_format; /* "json" | "text" */
    char *log_file;   /* "" = stdout */
    char *log_level;  /* "debug" | "info" | "warn" | "error" */

    /* [auth] (continued) */
    char *creds_db;                 /* SQLite store, default <var_dir>/sluice.db */
    char *store_backend;            /* [store] backend: "sqlite" | "postgresql" */
    char *store_url;                /* [store] url (PostgreSQL), "" = none */
    char *store_password_file;      /* [store] password_file, "" = none */
    int store_pool_size;            /* [store] pool_size, default 4 */
    char *scram_secret_file;        /* default <var_dir>/scram.key */
    int auth_failures_before_delay; /* default 3 */
    int auth_failures_before_block; /* default 10 */
    int auth_block_time;            /* seconds, default 900 */
    int auth_cache_ttl;             /* seconds successful password checks are kept, 300 */
    int auth_cache_size;            /* entries of that cache, default 10000; 0 = off */
    bool tls_request_client_cert;   /* [tls] request_client_cert, default true */
    bool tls_session_tickets;       /* [tls] session_tickets, default true */
    bool tls_ocsp_stapling;         /* [tls] ocsp_stapling, default true */
    int tls_session_cache_size;     /* [tls] session_cache_size, default 20000 */
    int tls_session_lifetime;       /* [tls] session_lifetime, seconds, default 1h */
    char *rate_per_ip;              /* [limits] rate_per_ip, "0" = none */

    /* [policy] */
    char *policy_blocked_extensions; /* "exe,scr,..." */
    char *policy_blocked_types;
    char *policy_required_headers; /* "From" */
    char *policy_relay_allow_from; /* patterns for unauthenticated relay clients */
    char *policy_relay_allow_rcpt;

    /* [log] (continued) */
    bool log_privacy;           /* pseudonymise recipients; default true */
    char *log_privacy_key_file; /* default <var_dir>/privacy.key */

    /* [dkim] */
    char *dkim_key_dir;    /* default <var_dir>/dkim */
    char *dkim_selectors;  /* "sel._domainkey.dom, ..."; "" = all keys in key_dir */
    char *dkim_canon;      /* "relaxed/relaxed" ... */
    int dkim_expire;       /* seconds, 0 = no x= */
    char *dkim_on_failure; /* "defer" | "unsigned" */

    /* [http] */
    char *http_listen; /* "127.0.0.1:9025"; "" disables */

    /* [audit] */
    char *audit_file;     /* default <var_dir>/audit.log; "" disables */
    char *audit_key_file; /* "" = plain hash chain */

    /* [webhook] */
    char *webhook_urls; /* comma list; "" disables */
    char *webhook_secret_file;

    /* [api] */
    char *api_listen;           /* "127.0.0.1:8443"; "" disables */
    int api_request_timeout;    /* seconds */
    int api_idempotency_window; /* seconds */
    int api_event_buffer;       /* delivery events kept in memory */

    /* [sendmail]: the sendmail(1) entry and `sluice send` (docs/SENDMAIL.md) */
    char *sendmail_server;          /* "host:port"; "" = [server] listen_submission */
    char *sendmail_credential_file; /* "user = ..."/"password = ..." file, mode 0600; "" none */
    char *sendmail_outbox_dir;      /* "" = $XDG_DATA_HOME/sluice/outbox per user */
    bool sendmail_forward_outbox;   /* forward waiting messages at each invocation */
    int sendmail_timeout;           /* seconds for each step of the SMTP dialogue */

    struct config_upstream *upstreams; /* sorted by priority; at least one */
    size_t n_upstreams;
};

/* One problem found while loading, with its place. */
struct config_error {
    char *file;    /* NULL for environment/embedded */
    int line;      /* 0 when not from a file line */
    char *message; /* "unknown key 'foo' in [server]" ... */
};

struct config_errors {
    struct config_error *v;
    size_t n;
};

/* Loads defaults, then `path` (NULL: none; a missing explicit file is an
 * error), then the environment `envp` (NULL-terminated "K=V" strings, may be
 * NULL). Allocates *out (even on error, for inspection); returns 0 when no
 * errors were found, otherwise -1 with errs filled. */
int config_load(const char *path, char *const *envp, struct config **out,
                struct config_errors *errs);

void config_free(struct config *cfg);

/* Appends one problem to errs (for checks made outside the loader, such as
 * file modes). */
__attribute__((format(printf, 4, 5))) void
config_errors_add(struct config_errors *errs, const char *file, int line, const char *fmt, ...);
void config_errors_free(struct config_errors *errs);

/* Prints every effective setting as an INI file (secrets elided) to f. */
void config_dump(const struct config *cfg, FILE *f);

/* Parsers for values, exported for tests: "25M", "25MiB", "1024" -> bytes;
 * "30s", "5m", "2h", "5d", "90" -> seconds. Return 0 or -1. */
int config_parse_size(const char *s, long long *out);
int config_parse_duration(const char *s, int *out);

/* As config_load, but reads the INI text from memory; `name` (may be NULL)
 * labels errors and becomes cfg->path. */
int config_load_string(const char *text, const char *name, char *const *envp, struct config **out,
                       struct config_errors *errs);

/* The upstream called `name`, or NULL. */
const struct config_upstream *config_upstream_find(const struct config *cfg, const char *name);

/* Every effective setting as a JSON object {"server": {...}, ..., "upstreams": [...]};
 * the caller owns the reference. */
struct json_t *config_to_json(const struct config *cfg);

/* Writes the Markdown reference of every key (docs/CONFIG.md embeds it). */
void config_docs(FILE *f);
/* The same reference as JSON: {"keys": [{"section", "key", "type", "default",
 * "environment", "description"}, ...]}. Allocates; json_decref it. */
struct json_t *config_keys_json(void);

#endif
