/* `sluice creds add|list|show|revoke|rotate|delete` and `sluice stats`: the
 * operator's view of the credential store and its accounting counters.
 * Passwords come from stdin, never argv; API keys are printed once. */
#include "cli/cli.h"
#include "cli/creds_import.h"

#include "core/config.h"
#include "policy/accounting.h"
#include "policy/creds.h"
#include "store/store.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_PATTERNS 64
#define PASSWORD_MAX 1024

static const char creds_usage[] =
    "usage: sluice creds add NAME [--password] [--api-key] [--cert FILE|SHA256]\n"
    "                        [--allow-from PATTERN]... [--allow-rcpt PATTERN]...\n"
    "                        [--rate N/PERIOD] [--quota N/day|N/month] [--max-size SIZE]\n"
    "                        [--scope send,read,admin]\n"
    "       sluice creds update NAME [--scope LIST] [--rate N/PERIOD] [--quota N/PERIOD]\n"
    "                        [--max-size SIZE] [--allow-from PATTERN]... [--allow-rcpt "
    "PATTERN]...\n"
    "                        (patterns given replace that kind; 'none' for a limit removes it)\n"
    "       sluice creds list\n"
    "       sluice creds show NAME\n"
    "       sluice creds revoke NAME\n"
    "       sluice creds rotate NAME [--password | --api-key]\n"
    "       sluice creds delete NAME\n"
    "       sluice creds import FILE    (an old users file: name:$argon2id$... lines)\n"
    "All take --json, -c FILE and --init. The store is the configured [store] (default:\n"
    "the SQLite file [auth] creds_db; where it does not exist yet, only --init creates it,\n"
    "'sluice serve' does too; a PostgreSQL store gets its tables on first use).\n"
    "Scopes: send (SMTP submission, the default), read (its own messages and events over\n"
    "the HTTP API), admin (every credential's data).\n"
    "Passwords are read from stdin (one line).\n"
    "Patterns: 'noreply@shop.example', '*@shop.example', '*@*.shop.example'.\n";

static const char stats_usage[] =
    "usage: sluice stats [--cred NAME] [--since 7d|today|YYYY-MM-DD] [--json] [--init]\n"
    "Counters from the configured [auth] creds_db; --init creates an empty store.\n";

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(j);
}

static void iso_time(long long t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *kinds_text(unsigned k, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s%s%s", k & CRED_KIND_PASSWORD ? "password," : "",
             k & CRED_KIND_SCRAM ? "scram-sha-256," : "", k & CRED_KIND_API_KEY ? "api-key," : "",
             k & CRED_KIND_CERT ? "cert," : "");
    size_t n = strlen(buf);
    if (n > 0)
        buf[n - 1] = 0;
    return buf;
}

static json_t *kinds_json(unsigned k)
{
    json_t *a = json_array();
    if (k & CRED_KIND_PASSWORD)
        json_array_append_new(a, json_string("password"));
    if (k & CRED_KIND_SCRAM)
        json_array_append_new(a, json_string("scram-sha-256"));
    if (k & CRED_KIND_API_KEY)
        json_array_append_new(a, json_string("api-key"));
    if (k & CRED_KIND_CERT)
        json_array_append_new(a, json_string("cert"));
    return a;
}

static json_t *strings_json(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *limit_json(const struct cred_limit *l)
{
    char buf[64];
    return l->count > 0 ? json_string(cred_limit_format(l, buf, sizeof buf)) : json_null();
}

static json_t *cred_json(const struct cred *c)
{
    char created[32], rotated[32], scopes[32];
    iso_time(c->created, created);
    iso_time(c->rotated, rotated);
    cred_scopes_format(c->scopes, scopes, sizeof scopes);
    json_t *j = json_pack("{s:s, s:o, s:s?, s:s?, s:o, s:o, s:o, s:o, s:o, s:b, s:s, s:s?}", "name",
                          c->name, "kinds", kinds_json(c->kinds), "api_key_id",
                          c->api_key_id[0] ? c->api_key_id : NULL, "cert_sha256",
                          c->cert_sha256[0] ? c->cert_sha256 : NULL, "allow_from",
                          strings_json(c->allow_from, c->n_allow_from), "allow_rcpt",
                          strings_json(c->allow_rcpt, c->n_allow_rcpt), "rate",
                          limit_json(&c->rate), "quota", limit_json(&c->quota), "max_size",
                          c->max_size > 0 ? json_integer(c->max_size) : json_null(), "revoked",
                          c->revoked, "created", created, "rotated", c->rotated ? rotated : NULL);
    json_t *a = json_array();
    for (char *p = scopes, *save = NULL, *t; (t = strtok_r(p, ",", &save)); p = NULL)
        json_array_append_new(a, json_string(t));
    json_object_set_new(j, "scopes", a);
    return j;
}

static void print_patterns(const char *label, char **v, size_t n, const char *none)
{
    printf("%-12s", label);
    if (n == 0)
        printf("%s", none);
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? ", " : "", v[i]);
    printf("\n");
}

static void print_cred(const struct cred *c)
{
    char buf[128], t[32];
    printf("%-12s%s\n", "name", c->name);
    printf("%-12s%s\n", "status", c->revoked ? "REVOKED" : "active");
    printf("%-12s%s\n", "kinds", kinds_text(c->kinds, buf, sizeof buf));
    printf("%-12s%s\n", "scopes", cred_scopes_format(c->scopes, buf, sizeof buf));
    if (c->api_key_id[0])
        printf("%-12ssk_%s_...\n", "api key", c->api_key_id);
    if (c->cert_sha256[0])
        printf("%-12s%s\n", "cert sha256", c->cert_sha256);
    print_patterns("allow from", c->allow_from, c->n_allow_from, "any sender");
    print_patterns("allow rcpt", c->allow_rcpt, c->n_allow_rcpt, "any recipient");
    printf("%-12s%s\n", "rate", cred_limit_format(&c->rate, buf, sizeof buf));
    printf("%-12s%s\n", "quota", cred_limit_format(&c->quota, buf, sizeof buf));
    if (c->max_size > 0)
        printf("%-12s%lld bytes\n", "max size", c->max_size);
    else
        printf("%-12s%s\n", "max size", "relay default");
    iso_time(c->created, t);
    printf("%-12s%s\n", "created", t);
    if (c->rotated) {
        iso_time(c->rotated, t);
        printf("%-12s%s\n", "rotated", t);
    }
}

/* One line from stdin, without echo on a terminal. */
static int read_password(char *buf, size_t size)
{
    bool tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty && tcgetattr(STDIN_FILENO, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        fprintf(stderr, "password: ");
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    } else {
        tty = false;
    }
    char *ok = fgets(buf, (int)size, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    if (!ok)
        return -1;
    buf[strcspn(buf, "\r\n")] = 0;
    return buf[0] ? 0 : -1;
}

struct opts {
    const struct cli *cli;
    bool json, password, api_key, init;
    const char *cert, *rate, *quota, *max_size, *cred, *since, *scope;
    const char *allow_from[MAX_PATTERNS], *allow_rcpt[MAX_PATTERNS];
    size_t n_from, n_rcpt;
    const char *positional[2];
    size_t n_positional;
};

/* Parses "--opt VALUE" and "--opt=VALUE" forms. Returns 0 or -1 after a
 * message. */
static int parse_opts(int argc, char **argv, int start, struct opts *o, char *why, size_t whylen)
{
    static const char *const valued[] = {"--cert",       "--rate",       "--quota",
                                         "--max-size",   "--cred",       "--since",
                                         "--allow-from", "--allow-rcpt", "--scope"};
    for (int i = start; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strcmp(a, "--password") == 0) {
            o->password = true;
            continue;
        }
        if (strcmp(a, "--api-key") == 0) {
            o->api_key = true;
            continue;
        }
        if (strcmp(a, "--init") == 0) {
            o->init = true;
            continue;
        }
        if (strncmp(a, "--password=", 11) == 0) {
            snprintf(why, whylen, "passwords are read from stdin, never from arguments");
            return -1;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (o->n_positional == 2) {
                snprintf(why, whylen, "unexpected argument '%s'", a);
                return -1;
            }
            o->positional[o->n_positional++] = a;
            continue;
        }
        const char *val = NULL;
        size_t k;
        for (k = 0; k < sizeof valued / sizeof valued[0]; k++) {
            size_t n = strlen(valued[k]);
            if (strcmp(a, valued[k]) == 0) {
                if (i + 1 >= argc) {
                    snprintf(why, whylen, "%s needs a value", a);
                    return -1;
                }
                val = argv[++i];
                break;
            }
            if (strncmp(a, valued[k], n) == 0 && a[n] == '=') {
                val = a + n + 1;
                break;
            }
        }
        if (!val) {
            snprintf(why, whylen, "unknown option '%s'", a);
            return -1;
        }
        const char **dst[] = {&o->cert, &o->rate,  &o->quota, &o->max_size,
                              &o->cred, &o->since, NULL,      NULL};
        if (k < 6) {
            *dst[k] = val;
        } else if (k == 8) {
            o->scope = val;
        } else if (k == 6 || k == 7) {
            size_t *n = k == 6 ? &o->n_from : &o->n_rcpt;
            const char **v = k == 6 ? o->allow_from : o->allow_rcpt;
            if (*n == MAX_PATTERNS) {
                snprintf(why, whylen, "at most %d patterns of each kind", MAX_PATTERNS);
                return -1;
            }
            v[(*n)++] = val;
        }
    }
    return 0;
}

static int cmd_add(struct creds *db, struct opts *o)
{
    struct cred_spec spec = {0};
    char fp[CRED_SHA256_HEX], err[512], pass[PASSWORD_MAX], key[CRED_API_KEY_MAX] = "";
    spec.name = o->positional[1];
    if (!o->password && !o->api_key && !o->cert)
        return cli_fail(o->cli, CLI_ERR_INVALID, "say which kind: --password, --api-key or --cert");
    if (o->cert) {
        if (cred_fingerprint_normalise(o->cert, fp) < 0 &&
            cred_fingerprint_pem_file(o->cert, fp, err, sizeof err) < 0)
            return cli_fail(o->cli, CLI_ERR_INVALID,
                            "--cert: %s (give a PEM file or 64 hex digits)", err);
        spec.cert_sha256 = fp;
    }
    if (o->rate && cred_limit_parse(o->rate, &spec.rate) < 0)
        return cli_fail(o->cli, CLI_ERR_INVALID,
                        "--rate '%s': expected N/s, N/min, N/hour or N/day", o->rate);
    if (o->quota && cred_limit_parse(o->quota, &spec.quota) < 0)
        return cli_fail(o->cli, CLI_ERR_INVALID, "--quota '%s': expected N/day or N/month",
                        o->quota);
    if (o->max_size && cred_size_parse(o->max_size, &spec.max_size) < 0)
        return cli_fail(o->cli, CLI_ERR_INVALID, "--max-size '%s': expected bytes or 512k, 10M, 1G",
                        o->max_size);
    if (o->scope && cred_scopes_parse(o->scope, &spec.scopes) < 0)
        return cli_fail(o->cli, CLI_ERR_INVALID,
                        "--scope '%s': expected a comma list of send, read, admin", o->scope);
    spec.allow_from = o->allow_from;
    spec.n_allow_from = o->n_from;
    spec.allow_rcpt = o->allow_rcpt;
    spec.n_allow_rcpt = o->n_rcpt;
    spec.api_key = o->api_key;
    if (o->password) {
        if (read_password(pass, sizeof pass) < 0)
            return cli_fail(o->cli, CLI_ERR_INVALID, "no password on stdin");
        spec.password = pass;
    }
    int r = creds_add(db, &spec, key, sizeof key, err, sizeof err);
    explicit_bzero(pass, sizeof pass);
    if (r < 0)
        return cli_fail(o->cli,
                        r == CREDS_EEXIST   ? CLI_ERR_EXISTS
                        : r == CREDS_EINVAL ? CLI_ERR_INVALID
                                            : CLI_ERR_IO,
                        "%s", err);
    struct cred *c = NULL;
    if (creds_lookup(db, spec.name, &c) < 0)
        return cli_fail(o->cli, CLI_ERR_IO, "credential added but cannot be read back");
    if (o->json) {
        json_t *j = cred_json(c);
        if (key[0])
            json_object_set_new(j, "api_key", json_string(key));
        print_json(j);
    } else {
        char buf[128];
        printf("credential %s added (%s)\n", c->name, kinds_text(c->kinds, buf, sizeof buf));
        if (key[0])
            printf("API key (shown once, store it now): %s\n", key);
        if (c->n_allow_from == 0)
            fprintf(stderr, "note: no --allow-from given: %s may send as any address\n", c->name);
    }
    explicit_bzero(key, sizeof key);
    creds_free_cred(c);
    return CLI_EXIT_OK;
}

static int cmd_update(struct creds *db, struct opts *o)
{
    struct cred_update u = {0};
    char err[512];
    if (!o->scope && !o->rate && !o->quota && !o->max_size && !o->n_from && !o->n_rcpt)
        return cli_fail(o->cli, CLI_ERR_INVALID,
                        "say what changes: --scope, --rate, --quota, --max-size, --allow-from "
                        "or --allow-rcpt");
    if (o->scope && cred_scopes_parse(o->scope, &u.scopes) < 0)
        return cli_fail(o->cli, CLI_ERR_INVALID,
                        "--scope '%s': expected a comma list of send, read, admin", o->scope);
    if (o->rate && cred_limit_parse(o->rate, &u.rate) < 0)
        return cli_fail(o->cli, CLI_ERR_INVALID,
                        "--rate '%s': expected N/s, N/min, N/hour, N/day or none", o->rate);
    if (o->quota && cred_limit_parse(o->quota, &u.quota) < 0)
        return cli_fail(o->cli, CLI_ERR_INVALID, "--quota '%s': expected N/day, N/month or none",
                        o->quota);
    if (o->max_size && cred_size_parse(o->max_size, &u.max_size) < 0)
        return cli_fail(o->cli, CLI_ERR_INVALID, "--max-size '%s': expected bytes or 512k, 10M, 1G",
                        o->max_size);
    u.set_scopes = o->scope != NULL;
    u.set_rate = o->rate != NULL;
    u.set_quota = o->quota != NULL;
    u.set_max_size = o->max_size != NULL;
    u.set_allow_from = o->n_from > 0;
    u.set_allow_rcpt = o->n_rcpt > 0;
    u.allow_from = o->allow_from;
    u.n_allow_from = o->n_from;
    u.allow_rcpt = o->allow_rcpt;
    u.n_allow_rcpt = o->n_rcpt;
    int r = creds_update(db, o->positional[1], &u, err, sizeof err);
    if (r < 0)
        return cli_fail(o->cli,
                        r == CREDS_ENOTFOUND ? CLI_ERR_NOT_FOUND
                        : r == CREDS_EINVAL  ? CLI_ERR_INVALID
                                             : CLI_ERR_IO,
                        "%s", err);
    struct cred *c = NULL;
    if (creds_lookup(db, o->positional[1], &c) < 0)
        return cli_fail(o->cli, CLI_ERR_IO, "credential updated but cannot be read back");
    if (o->json)
        print_json(cred_json(c));
    else
        printf("credential %s updated\n", c->name);
    creds_free_cred(c);
    return CLI_EXIT_OK;
}

static int cmd_list(struct creds *db, struct opts *o)
{
    struct cred **v;
    size_t n;
    if (creds_list(db, &v, &n) < 0)
        return cli_fail(o->cli, CLI_ERR_IO, "cannot read the store");
    if (o->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, cred_json(v[i]));
        print_json(json_pack("{s:o}", "creds", a));
    } else if (n == 0) {
        printf("no credentials (add one with 'sluice creds add NAME --password')\n");
    } else {
        printf("%-24s %-8s %-32s %-16s %-12s %-12s %s\n", "NAME", "STATUS", "KINDS", "SCOPES",
               "RATE", "QUOTA", "ALLOW FROM");
        for (size_t i = 0; i < n; i++) {
            char k[128], r[48], q[48], sc[32];
            const struct cred *c = v[i];
            printf("%-24s %-8s %-32s %-16s %-12s %-12s ", c->name,
                   c->revoked ? "revoked" : "active", kinds_text(c->kinds, k, sizeof k),
                   cred_scopes_format(c->scopes, sc, sizeof sc),
                   cred_limit_format(&c->rate, r, sizeof r),
                   cred_limit_format(&c->quota, q, sizeof q));
            if (c->n_allow_from == 0)
                printf("any");
            for (size_t j = 0; j < c->n_allow_from; j++)
                printf("%s%s", j ? "," : "", c->allow_from[j]);
            printf("\n");
        }
    }
    creds_free_list(v, n);
    return CLI_EXIT_OK;
}

static int cmd_show(struct creds *db, struct opts *o)
{
    struct cred *c;
    int r = creds_lookup(db, o->positional[1], &c);
    if (r == CREDS_ENOTFOUND)
        return cli_fail(o->cli, CLI_ERR_NOT_FOUND, "no credential named '%s'", o->positional[1]);
    if (r < 0)
        return cli_fail(o->cli, CLI_ERR_IO, "cannot read the store");
    if (o->json)
        print_json(cred_json(c));
    else
        print_cred(c);
    creds_free_cred(c);
    return CLI_EXIT_OK;
}

static int cmd_revoke_delete(struct creds *db, struct opts *o, bool del)
{
    const char *name = o->positional[1];
    int r = del ? creds_delete(db, name) : creds_revoke(db, name);
    if (r == CREDS_ENOTFOUND)
        return cli_fail(o->cli, CLI_ERR_NOT_FOUND, "no credential named '%s'", name);
    if (r < 0)
        return cli_fail(o->cli, CLI_ERR_IO, "cannot write the store");
    if (o->json)
        print_json(json_pack("{s:s, s:b}", "name", name, del ? "deleted" : "revoked", 1));
    else
        printf("credential %s %s\n", name, del ? "deleted" : "revoked");
    return CLI_EXIT_OK;
}

static int cmd_rotate(struct creds *db, struct opts *o)
{
    const char *name = o->positional[1];
    struct cred *c;
    int r = creds_lookup(db, name, &c);
    if (r == CREDS_ENOTFOUND)
        return cli_fail(o->cli, CLI_ERR_NOT_FOUND, "no credential named '%s'", name);
    if (r < 0)
        return cli_fail(o->cli, CLI_ERR_IO, "cannot read the store");
    bool has_pw = c->kinds & (CRED_KIND_PASSWORD | CRED_KIND_SCRAM);
    bool has_key = c->kinds & CRED_KIND_API_KEY;
    bool revoked = c->revoked;
    creds_free_cred(c);
    if (revoked)
        return cli_fail(o->cli, CLI_ERR_INVALID, "'%s' is revoked; add a new credential instead",
                        name);
    bool pw = o->password, key = o->api_key;
    if (!pw && !key) {
        if (has_pw && has_key)
            return cli_fail(o->cli, CLI_ERR_INVALID,
                            "'%s' has a password and an API key: say --password or --api-key",
                            name);
        if (!has_pw && !has_key)
            return cli_fail(o->cli, CLI_ERR_INVALID,
                            "'%s' has only a certificate: add a new credential for a new one",
                            name);
        pw = has_pw;
        key = has_key;
    }
    char newkey[CRED_API_KEY_MAX] = "";
    if (pw) {
        char pass[PASSWORD_MAX];
        if (read_password(pass, sizeof pass) < 0)
            return cli_fail(o->cli, CLI_ERR_INVALID, "no password on stdin");
        r = creds_rotate_password(db, name, pass);
        explicit_bzero(pass, sizeof pass);
        if (r == CREDS_EINVAL)
            return cli_fail(o->cli, CLI_ERR_INVALID, "password too short (at least 8 characters)");
        if (r < 0)
            return cli_fail(o->cli, CLI_ERR_IO, "cannot rotate the password of '%s'", name);
    }
    if (key && (r = creds_rotate_api_key(db, name, newkey, sizeof newkey)) < 0)
        return cli_fail(o->cli, CLI_ERR_IO, "cannot rotate the API key of '%s'", name);
    if (o->json) {
        json_t *j = json_pack("{s:s, s:b}", "name", name, "rotated", 1);
        if (newkey[0])
            json_object_set_new(j, "api_key", json_string(newkey));
        print_json(j);
    } else {
        printf("credential %s rotated%s\n", name, pw ? " (new password)" : "");
        if (newkey[0])
            printf("API key (shown once, store it now): %s\n", newkey);
    }
    explicit_bzero(newkey, sizeof newkey);
    return CLI_EXIT_OK;
}

/* Opens the configured store; a store that does not exist yet is created
 * only with --init, so a command run with the wrong configuration does not
 * quietly start an empty one. */
static int open_store(const struct config *cfg, const struct opts *o, struct creds **db)
{
    char err[512];
    struct store_config sc;
    store_config_of(cfg, &sc);
    int rc = sc.backend == STORE_SQLITE
                 ? cli_need_store(o->cli, "credential store", cfg->creds_db, o->init)
                 : CLI_EXIT_OK;
    if (rc != CLI_EXIT_OK)
        return rc;
    struct store *st = store_open(&sc, err, sizeof err);
    *db = st ? creds_open_store(st, true, err, sizeof err) : NULL;
    return *db ? CLI_EXIT_OK : cli_fail(o->cli, CLI_ERR_IO, "%s", err);
}

int cli_creds(const struct cli *cli, int argc, char **argv)
{
    struct opts o = {.cli = cli};
    char why[256] = "";
    if (cli->help)
        return cli_help(creds_usage);
    if (argc < 2)
        return cli_usage_error(cli, creds_usage, "which creds command?");
    if (parse_opts(argc, argv, 1, &o, why, sizeof why) < 0)
        return cli_usage_error(cli, creds_usage, "%s", why);
    o.json = cli->json;
    const char *verb = o.n_positional ? o.positional[0] : "";
    bool needs_arg = strcmp(verb, "list") != 0;
    static const char *const verbs[] = {"add",    "list",   "show",   "revoke",
                                        "rotate", "delete", "import", "update"};
    bool known = false;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        known |= strcmp(verb, verbs[i]) == 0;
    if (!known)
        return cli_usage_error(cli, creds_usage, "unknown creds command '%s'", verb);
    if (o.n_positional != (needs_arg ? 2u : 1u))
        return cli_usage_error(
            cli, creds_usage,
            o.n_positional < 2 ? "creds %s needs a %s" : "creds %s: unexpected argument '%s'", verb,
            o.n_positional < 2 ? (strcmp(verb, "import") ? "NAME" : "FILE") : o.positional[1]);
    bool is_add = strcmp(verb, "add") == 0, is_rotate = strcmp(verb, "rotate") == 0,
         is_update = strcmp(verb, "update") == 0;
    if ((!is_add && !is_rotate && (o.password || o.api_key)) ||
        (!is_add && !is_update &&
         (o.rate || o.quota || o.max_size || o.n_from || o.n_rcpt || o.scope)) ||
        (!is_add && o.cert) || o.cred || o.since)
        return cli_usage_error(cli, creds_usage, "creds %s does not take that option", verb);
    struct config *cfg = cli_load_config(cli);
    if (!cfg)
        return CLI_EXIT_FAILURE;
    struct creds *db = NULL;
    int rc = open_store(cfg, &o, &db);
    if (db) {
        if (is_add)
            rc = cmd_add(db, &o);
        else if (strcmp(verb, "list") == 0)
            rc = cmd_list(db, &o);
        else if (strcmp(verb, "show") == 0)
            rc = cmd_show(db, &o);
        else if (is_rotate)
            rc = cmd_rotate(db, &o);
        else if (is_update)
            rc = cmd_update(db, &o);
        else if (strcmp(verb, "import") == 0)
            rc = creds_import_users(cli, db, o.positional[1]);
        else
            rc = cmd_revoke_delete(db, &o, strcmp(verb, "delete") == 0);
        creds_close(db);
    }
    config_free(cfg);
    return rc;
}

/* --- stats --- */

struct stat_cred {
    char name[CRED_NAME_MAX + 1];
    long long count[ACCT_EVENT_COUNT];
    long long bytes[ACCT_EVENT_COUNT];
    json_t *reasons; /* {"reason": count} of rejections */
    json_t *days;    /* {"YYYY-MM-DD": {"accepted": n, ...}} */
};

struct stat_table {
    struct stat_cred *v;
    size_t n;
};

static int stat_row(const struct accounting_row *row, void *arg)
{
    struct stat_table *t = arg;
    /* Rows come ordered by cred: only the last entry can match. */
    if (t->n == 0 || strcmp(t->v[t->n - 1].name, row->cred) != 0) {
        struct stat_cred *nv = realloc(t->v, (t->n + 1) * sizeof *nv);
        if (!nv)
            return -1;
        t->v = nv;
        memset(&nv[t->n], 0, sizeof nv[t->n]);
        snprintf(nv[t->n].name, sizeof nv[t->n].name, "%s", row->cred);
        nv[t->n].reasons = json_object();
        nv[t->n].days = json_object();
        t->n++;
    }
    struct stat_cred *s = &t->v[t->n - 1];
    s->count[row->event] += row->count;
    s->bytes[row->event] += row->bytes;
    if (row->event == ACCT_REJECTED) {
        const char *reason = row->reason[0] ? row->reason : "unspecified";
        json_int_t prev = json_integer_value(json_object_get(s->reasons, reason));
        json_object_set_new(s->reasons, reason, json_integer(prev + row->count));
    }
    json_t *day = json_object_get(s->days, row->day);
    if (!day) {
        day = json_object();
        json_object_set_new(s->days, row->day, day);
    }
    const char *ev = accounting_event_name(row->event);
    json_int_t prev = json_integer_value(json_object_get(day, ev));
    json_object_set_new(day, ev, json_integer(prev + row->count));
    return 0;
}

/* "7d" (the last 7 UTC days, today included), "today", or "YYYY-MM-DD". */
static int parse_since(const char *s, time_t now, time_t *out)
{
    char *end;
    if (strcmp(s, "today") == 0) {
        *out = now;
        return 0;
    }
    long n = strtol(s, &end, 10);
    if (end != s && strcmp(end, "d") == 0 && n >= 1 && n <= 36600) {
        *out = now - (time_t)(n - 1) * 86400;
        return 0;
    }
    struct tm tm = {0};
    end = strptime(s, "%Y-%m-%d", &tm);
    if (!end || *end)
        return -1;
    *out = timegm(&tm);
    return 0;
}

int cli_stats(const struct cli *cli, int argc, char **argv)
{
    struct opts o = {.cli = cli};
    char why[256] = "";
    if (cli->help)
        return cli_help(stats_usage);
    if (parse_opts(argc, argv, 1, &o, why, sizeof why) < 0)
        return cli_usage_error(cli, stats_usage, "%s", why);
    if (o.n_positional)
        return cli_usage_error(cli, stats_usage, "unexpected argument '%s'", o.positional[0]);
    if (o.password || o.api_key || o.cert || o.rate || o.quota || o.max_size || o.n_from ||
        o.n_rcpt)
        return cli_usage_error(cli, stats_usage, "stats takes --cred, --since, --json, --init");
    o.json = cli->json;
    time_t now = time(NULL), since;
    if (parse_since(o.since ? o.since : "7d", now, &since) < 0)
        return cli_fail(cli, CLI_ERR_INVALID, "--since '%s': expected Nd, today or YYYY-MM-DD",
                        o.since);
    struct config *cfg = cli_load_config(cli);
    if (!cfg)
        return CLI_EXIT_FAILURE;
    char err[512];
    struct store_config sc;
    store_config_of(cfg, &sc);
    int rc = sc.backend == STORE_SQLITE
                 ? cli_need_store(cli, "credential store", cfg->creds_db, o.init)
                 : CLI_EXIT_OK;
    if (rc != CLI_EXIT_OK) {
        config_free(cfg);
        return rc;
    }
    struct store *st = store_open(&sc, err, sizeof err);
    struct accounting *a = st ? accounting_open_store(st, true, err, sizeof err) : NULL;
    if (!a) {
        config_free(cfg);
        return cli_fail(cli, CLI_ERR_IO, "%s", err);
    }
    struct stat_table t = {0};
    rc = accounting_query(a, o.cred, since, stat_row, &t);
    accounting_close(a);
    config_free(cfg);
    if (rc < 0) {
        for (size_t i = 0; i < t.n; i++) {
            json_decref(t.v[i].reasons);
            json_decref(t.v[i].days);
        }
        free(t.v);
        return cli_fail(cli, CLI_ERR_IO, "cannot read the accounting counters");
    }
    char since_day[16];
    struct tm tm;
    gmtime_r(&since, &tm);
    strftime(since_day, sizeof since_day, "%Y-%m-%d", &tm);
    if (o.json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < t.n; i++) {
            struct stat_cred *s = &t.v[i];
            json_t *j = json_pack("{s:s, s:o, s:o}", "name", s->name, "rejected_by_reason",
                                  s->reasons, "days", s->days);
            for (int e = 0; e < ACCT_EVENT_COUNT; e++)
                json_object_set_new(j, accounting_event_name((enum acct_event)e),
                                    json_integer(s->count[e]));
            json_object_set_new(j, "bytes", json_integer(s->bytes[ACCT_ACCEPTED]));
            json_object_set_new(j, "bytes_delivered", json_integer(s->bytes[ACCT_DELIVERED]));
            json_array_append_new(arr, j);
        }
        print_json(json_pack("{s:s, s:s?, s:o}", "since", since_day, "cred", o.cred, "creds", arr));
    } else {
        printf("since %s (UTC days)\n", since_day);
        if (t.n == 0)
            printf("no events counted\n");
        else
            printf("%-24s %10s %10s %10s %10s %10s %14s\n", "CRED", "ACCEPTED", "DELIVERED",
                   "DEFERRED", "BOUNCED", "REJECTED", "BYTES");
        for (size_t i = 0; i < t.n; i++) {
            struct stat_cred *s = &t.v[i];
            printf("%-24s %10lld %10lld %10lld %10lld %10lld %14lld\n", s->name,
                   s->count[ACCT_ACCEPTED], s->count[ACCT_DELIVERED], s->count[ACCT_DEFERRED],
                   s->count[ACCT_BOUNCED], s->count[ACCT_REJECTED], s->bytes[ACCT_ACCEPTED]);
            const char *reason;
            json_t *n;
            json_object_foreach(s->reasons, reason, n)
            {
                printf("  rejected: %-14s %10lld\n", reason, (long long)json_integer_value(n));
            }
            json_decref(s->reasons);
            json_decref(s->days);
        }
    }
    free(t.v);
    return CLI_EXIT_OK;
}
