/* Loading the configuration: the INI file through inih, the SLUICE_*
 * environment, defaults and derived values, the checks across keys, with
 * every error placed at its file line or variable. */
#include "core/config_int.h"

#include "core/env_file.h"

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
#include <stdio.h>

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
    errs->v = cfg_xrealloc(errs->v, (errs->n + 1) * sizeof(*errs->v));
    errs->v[errs->n].file = file ? cfg_xstrdup(file) : NULL;
    errs->v[errs->n].line = line;
    errs->v[errs->n].message = cfg_xstrdup(msg);
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
    struct origin keys[CONFIG_KEYS_MAX];
};

enum line_kind { LINE_OTHER, LINE_KEY, LINE_CONTINUATION };

struct loader {
    struct config *cfg;
    struct config_errors *errs;
    const char *file;
    const char *base_dir; /* folder of the config file: relative paths start there */
    struct origin main_keys[CONFIG_KEYS_MAX];
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
    size_t i = (size_t)(k - config_keys);
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
    char *abs = cfg_xrealloc(NULL, bl + vl + 2);
    snprintf(abs, bl + vl + 2, "%s%s%s", ld->base_dir, dot ? "" : "/", dot ? "" : v);
    free(*sp);
    *sp = abs;
}

static void apply(struct loader *ld, const struct config_key *k, long up, const char *v,
                  const struct origin *o)
{
    void *base = up < 0 ? (void *)ld->cfg : (void *)&ld->cfg->upstreams[up];
    char why[400], name[UPSTREAM_NAME_MAX + 2];
    if (cfg_set_value(k, base, v, why, sizeof(why)) == 0) {
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
        if (config_keys[i].section == section && config_keys[i].def && config_keys[i].def[0] != '$')
            apply(ld, &config_keys[i], up, config_keys[i].def, &def);
}

static const struct config_key *find_key(int section, const char *name, size_t len)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
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
    cfg->upstreams = cfg_xrealloc(cfg->upstreams, cfg->n_upstreams * sizeof(*cfg->upstreams));
    ld->meta = cfg_xrealloc(ld->meta, cfg->n_upstreams * sizeof(*ld->meta));
    memset(&cfg->upstreams[i], 0, sizeof(cfg->upstreams[i]));
    memset(&ld->meta[i], 0, sizeof(ld->meta[i]));
    cfg->upstreams[i].name = cfg_xstrndup(name, len);
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
           "dkim, http, audit, webhook, store, api, sendmail or upstream NAME)",
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
    char *joined = cfg_xrealloc(NULL, plen + 1 + (size_t)(e - v) + 1);
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
    ld->pending = cfg_xstrdup(value);
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
     * (mailauth/dns.c), the public suffix list (mailauth/psl.c), the
     * sendmail credential (cli/sendmail_submit.c), and the test harness. */
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
        size_t kl = strlen(config_keys[i].name);
        if (config_keys[i].section != SEC_UPSTREAM || kl + 2 > len || rest[len - kl - 1] != '_')
            continue;
        if (strncasecmp(rest + len - kl, config_keys[i].name, kl) != 0)
            continue;
        if (!best || kl > strlen(best->name)) {
            best = &config_keys[i];
            *name_len = len - kl - 1;
        }
    }
    return best;
}

/* Finds the key a variable name (without "SLUICE_", rlen bytes) sets; an
 * upstream it names is created. 1: found; 0: no such key; -1: reported. */
static int env_key(struct loader *ld, const char *rest, size_t rlen, const struct origin *o,
                   const struct config_key **kp, long *upp)
{
    for (int sec = 0; sec < SEC_COUNT; sec++) {
        size_t sl = strlen(section_names[sec]);
        if (rlen <= sl + 1 || strncasecmp(rest, section_names[sec], sl) != 0 || rest[sl] != '_')
            continue;
        if (sec != SEC_UPSTREAM) {
            *kp = find_key(sec, rest + sl + 1, rlen - sl - 1);
            *upp = -1;
            return *kp ? 1 : 0;
        }
        size_t name_len = 0;
        *kp = split_upstream_env(rest + sl + 1, rlen - sl - 1, &name_len);
        if (!*kp)
            return 0;
        const char *name = rest + sl + 1;
        if (!valid_upstream_name(name, name_len)) {
            report(ld, o, "'%.*s' is not a valid upstream name", (int)name_len, name);
            return -1;
        }
        long up = find_upstream_env(ld, name, name_len);
        if (up < 0) {
            up = (long)add_upstream(ld, name, name_len, o);
            for (char *c = ld->cfg->upstreams[up].name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        }
        *upp = up;
        return 1;
    }
    return 0;
}

/* SLUICE_<SECTION>_<KEY>=value, or SLUICE_<SECTION>_<KEY>_FILE=path whose
 * file holds the value (a mounted secret). A name that is a key itself
 * (SLUICE_LOG_FILE, SLUICE_UPSTREAM_X_SECRET_FILE) keeps its meaning. */
static bool apply_env_entry(struct loader *ld, const char *entry)
{
    const char *eq = strchr(entry, '=');
    size_t nlen = (size_t)(eq - entry), vlen;
    const char *rest = entry + 7, *v = eq + 1;
    size_t rlen = nlen - 7;
    struct origin o = {O_ENV, 0, entry, (int)nlen};
    const struct config_key *k = NULL;
    long up = -1;
    bool from_file = false;

    int found = env_key(ld, rest, rlen, &o, &k, &up);
    if (found == 0 && rlen > 5 && strncasecmp(rest + rlen - 5, "_FILE", 5) == 0) {
        found = env_key(ld, rest, rlen - 5, &o, &k, &up);
        from_file = found == 1;
    }
    if (found <= 0)
        return found < 0;

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
    char *value = cfg_xstrndup(v, vlen);
    if (from_file) {
        char *content = NULL, err[1200];
        if (env_file_read(value, &content, err, sizeof err) < 0) {
            report(ld, &o, "%s", err);
            free(value);
            return true;
        }
        free(value);
        value = content;
    }
    apply(ld, k, up, value, &o);
    explicit_bzero(value, strlen(value));
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
    return m->keys[k - config_keys].kind != O_DEFAULT ? &m->keys[k - config_keys] : &m->header;
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
    } else if (!cfg_host_is_loopback(u->host)) {
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
        if (config_keys[k].section != SEC_UPSTREAM)
            apply_derived(ld, &config_keys[k], -1);
        else
            for (size_t u = 0; u < cfg->n_upstreams; u++)
                apply_derived(ld, &config_keys[k], (long)u);
    }

    if (cfg->retry_base > cfg->retry_cap) {
        const struct config_key *k = find_key(SEC_QUEUE, "retry_base", 10);
        report(ld, origin_of(ld, k, -1), "[queue] retry_base (%d s) exceeds retry_cap (%d s)",
               cfg->retry_base, cfg->retry_cap);
    }
    if (cfg->store_backend && strcmp(cfg->store_backend, "postgresql") == 0 &&
        (!cfg->store_url || !*cfg->store_url)) {
        const struct config_key *k = find_key(SEC_STORE, "backend", 7);
        report(ld, origin_of(ld, k, -1),
               "[store] backend = postgresql needs [store] url (postgresql://user@host/db)");
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
    ld.cfg->path = name && text ? cfg_xstrdup(name) : NULL;
    *out = ld.cfg;

    for (int sec = 0; sec < SEC_UPSTREAM; sec++)
        apply_defaults(&ld, sec, -1);
    if (text)
        load_text(&ld, text);
    while (envp && envp[n_env])
        n_env++;
    bool *unknown = cfg_xrealloc(NULL, (n_env + 1) * sizeof(bool));
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
        return cfg_xstrdup("/");
    if (path[0] != '/' && !getcwd(cwd, sizeof(cwd)))
        return NULL;
    size_t dl = slash ? (size_t)(slash - path) : 0;
    size_t cap = strlen(cwd) + dl + 2;
    char *dir = cfg_xrealloc(NULL, path[0] == '/' ? dl + 1 : cap);
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
            text = cfg_xrealloc(NULL, CONFIG_FILE_MAX + 1);
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
            errs->v = cfg_xrealloc(errs->v, (errs->n + 1) * sizeof(*errs->v));
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
        if (!cfg_is_string_type(config_keys[i].type))
            continue;
        if (config_keys[i].section != SEC_UPSTREAM) {
            free(*(char **)((char *)cfg + config_keys[i].offset));
            continue;
        }
        for (size_t u = 0; u < cfg->n_upstreams; u++)
            free(*(char **)((char *)&cfg->upstreams[u] + config_keys[i].offset));
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
