/* Inside the configuration: the key table's types, shared by the table
 * (config.c), the value parsers and formatters (config_value.c), the loader
 * (config_load.c) and the dump and reference docs (config_dump.c). Nothing
 * outside src/core/config*.c includes this. */
#ifndef SLUICE_CORE_CONFIG_INT_H
#define SLUICE_CORE_CONFIG_INT_H

#include "core/config.h"

#include <stdbool.h>
#include <stddef.h>

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
    SEC_STORE,
    SEC_API,
    SEC_SENDMAIL,
    SEC_UPSTREAM,
    SEC_COUNT
};
/* Reader states besides a real section. */
#define SEC_NONE (-1)    /* before the first header */
#define SEC_IGNORED (-2) /* inside a header already reported as wrong */

extern const char *const section_names[SEC_COUNT];

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

extern const char *const type_names[];

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
    bool auto_ok;  /* T_INT: "auto" is accepted and stored as CONFIG_AUTO */
    const char *doc;
};

/* THE table: every key, in the order the dump and the docs show them. */
extern const struct config_key config_keys[];
extern const size_t config_n_keys;

#define N_KEYS config_n_keys
/* Room for every key in the per-key arrays of the loader; config.c checks. */
#define CONFIG_KEYS_MAX 256
#define UPSTREAM_NAME_MAX 40
#define CONFIG_FILE_MAX (1024 * 1024)
#define VALUE_QUOTE "%.80s"
#define RATE_MIN (1.0 / 3600)
#define RATE_MAX 1e6

#define DAY (24LL * 3600)
#define KIB 1024LL
#define MIB (1024LL * KIB)
#define GIB (1024LL * MIB)

extern const char *const auth_mechs[];

/* config_value.c: allocation that aborts (running out of memory while the
 * configuration loads is fatal), and one value of a key. */
void *cfg_xrealloc(void *p, size_t n);
char *cfg_xstrdup(const char *s);
char *cfg_xstrndup(const char *s, size_t n);
bool cfg_host_is_loopback(const char *h);
bool cfg_is_string_type(enum value_type t);
/* The allowed range of a numeric key, as text for an error message. */
void cfg_format_range(const struct config_key *k, long long v, char *buf, size_t n);
/* Parses v for k and stores it in base (struct config or config_upstream);
 * returns 0, or -1 with why. */
int cfg_set_value(const struct config_key *k, void *base, const char *v, char *why, size_t n);
/* The stored value of k as text (malloc'd; NULL when unset). */
char *cfg_format_value(const struct config_key *k, const void *base);

#endif
