/* The PostgreSQL backend: one database several nodes share, so credentials
 * made once are seen by all and quota counters hold across them (one
 * atomic conditional upsert per reservation). Each call takes a pooled
 * connection; a lost connection is made again on the next call, at most
 * once a second, so an unreachable server costs callers an immediate error
 * (STORE_EDB: the daemon answers 4xx), not a wait. */
#include "store/store_pg_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG_CONNECT_TIMEOUT "2"
#define PG_RETRY_SECONDS 1

struct pg_conn {
    PGconn *c;
    time_t retry_at;   /* no new connection before this after a failure */
    uint32_t prepared; /* bit i: statement "s<i>" is prepared on c */
    struct pg *owner;
};

/* Statements of the hot path (AUTH, MAIL), prepared once per connection:
 * parsing and planning cost more than the loopback round trip. */
enum hot {
    HOT_GET_BY_NAME,
    HOT_GET_BY_KEY_ID,
    HOT_GET_BY_CERT,
    HOT_PASSWORD_BY_NAME,
    HOT_KEY_HASH_BY_ID,
    HOT_GENERATION,
    HOT_COUNTER_TAKE,
};

struct pg {
    struct store_pool pool;
    struct pg_conn *conns;
    char *url;
    char password[256];
};

static int seterr(char *err, size_t errlen, const char *msg, const char *detail)
{
    if (err && errlen)
        snprintf(err, errlen, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
    return STORE_EDB;
}

/* Server notices ("relation already exists, skipping") are not errors and
 * must not reach stderr, where the daemon's log may go. */
static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *connect_db(struct pg *p, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "password", NULL};
    const char *vals[] = {p->url, PG_CONNECT_TIMEOUT, "sluice", p->password, NULL};
    if (!p->password[0])
        keys[3] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", c ? PQerrorMessage(c) : "out of memory");
        msg[strcspn(msg, "\n")] = 0;
        seterr(err, errlen, "cannot connect to PostgreSQL", msg);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    return c;
}

/* A pooled connection that is up, or NULL (then *slot is released). */
static struct pg_conn *take(struct pg *p, size_t *slot)
{
    struct pg_conn *pc = store_pool_get(&p->pool, slot);
    /* a connection left inside a transaction by a failed call is not
     * trusted with the next one */
    if (pc->c && (PQstatus(pc->c) != CONNECTION_OK || PQtransactionStatus(pc->c) != PQTRANS_IDLE)) {
        PQfinish(pc->c);
        pc->c = NULL;
        pc->prepared = 0;
    }
    if (!pc->c) {
        time_t now = time(NULL);
        if (now >= pc->retry_at && !(pc->c = connect_db(p, NULL, 0)))
            pc->retry_at = now + PG_RETRY_SECONDS;
    }
    if (!pc->c) {
        store_pool_put(&p->pool, *slot);
        return NULL;
    }
    return pc;
}

static void give(struct pg *p, size_t slot)
{
    store_pool_put(&p->pool, slot);
}

static void read_password(const char *path, char *out, size_t size)
{
    out[0] = 0;
    FILE *f = path && *path ? fopen(path, "re") : NULL;
    if (!f)
        return;
    if (fgets(out, (int)size, f))
        out[strcspn(out, "\r\n")] = 0;
    fclose(f);
}

static void pg_close(void *h)
{
    struct pg *p = h;
    if (!p)
        return;
    for (size_t i = 0; i < p->pool.n; i++)
        PQfinish(p->conns[i].c);
    store_pool_destroy(&p->pool);
    free(p->conns);
    free(p->url);
    memset(p->password, 0, sizeof p->password);
    free(p);
}

static void *pg_open(const struct store_config *cfg, char *err, size_t errlen)
{
    if (!cfg->url || !*cfg->url) {
        seterr(err, errlen, "[store] backend = postgresql needs [store] url", NULL);
        return NULL;
    }
    size_t n = cfg->pool_size > 0 ? (size_t)cfg->pool_size : STORE_POOL_DEFAULT;
    if (n > STORE_POOL_MAX)
        n = STORE_POOL_MAX;
    struct pg *p = calloc(1, sizeof *p);
    if (!p || !(p->conns = calloc(n, sizeof *p->conns)) || !(p->url = strdup(cfg->url)) ||
        store_pool_init(&p->pool, n) < 0) {
        if (p) {
            free(p->conns);
            free(p->url);
        }
        free(p);
        seterr(err, errlen, "out of memory", NULL);
        return NULL;
    }
    read_password(cfg->password_file, p->password, sizeof p->password);
    for (size_t i = 0; i < n; i++) {
        p->conns[i].owner = p;
        p->pool.conn[i] = &p->conns[i];
    }
    /* the first connection is made now, so a wrong URL or password fails
     * the start; the others follow on demand */
    if (!(p->conns[0].c = connect_db(p, err, errlen)) ||
        store_pg_migrate(p->conns[0].c, err, errlen) < 0) {
        pg_close(p);
        return NULL;
    }
    return p;
}

/* Runs one statement with text parameters. NULL params are SQL NULL. */
static PGresult *run(PGconn *c, const char *sql, int n, const char *const *v)
{
    return PQexecParams(c, sql, n, NULL, v, NULL, NULL, 0);
}

static bool ok(PGresult *res)
{
    ExecStatusType s = PQresultStatus(res);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* Runs hot statement id (text sql), preparing it on first use. */
static PGresult *run_hot_once(struct pg_conn *pc, enum hot id, const char *sql, int n,
                              const char *const *v)
{
    char name[8];
    snprintf(name, sizeof name, "s%d", (int)id);
    if (!(pc->prepared & (1u << id))) {
        PGresult *res = PQprepare(pc->c, name, sql, n, NULL);
        bool good = ok(res);
        PQclear(res);
        if (!good)
            return run(pc->c, sql, n, v);
        pc->prepared |= 1u << id;
    }
    return PQexecPrepared(pc->c, name, n, v, NULL, NULL, 0);
}

/* Runs hot statement id (text sql), preparing it on first use. A
 * connection the server dropped since its last call (a restart) gets one
 * new connection and one more try, so a restart costs no refused MAIL. A
 * reservation retried so may count twice (never too few). NULL when the
 * server cannot be reached. */
static PGresult *run_hot(struct pg_conn *pc, enum hot id, const char *sql, int n,
                         const char *const *v)
{
    PGresult *res = run_hot_once(pc, id, sql, n, v);
    if (ok(res) || PQstatus(pc->c) == CONNECTION_OK)
        return res;
    PQclear(res);
    PQfinish(pc->c);
    pc->prepared = 0;
    if (!(pc->c = connect_db(pc->owner, NULL, 0))) {
        pc->retry_at = time(NULL) + PG_RETRY_SECONDS;
        return NULL;
    }
    return run_hot_once(pc, id, sql, n, v);
}

static int exec_ok(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    bool good = ok(res);
    PQclear(res);
    return good ? 0 : -1;
}

static int pg_schema_version(void *h, int *version)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    *version = store_pg_read_version(pc->c);
    give(h, slot);
    return *version < 0 ? STORE_EDB : 0;
}

/* --- reading --- */

#define CRED_COLUMNS                                                                               \
    "id, name, password_hash IS NOT NULL, scram_stored_key IS NOT NULL, api_key_id, cert_sha256, " \
    "rate_count, rate_per, quota_count, quota_per, max_size, revoked, created, rotated, scopes, "  \
    "(SELECT coalesce(json_agg(json_build_array(kind, pattern) ORDER BY kind, pattern), '[]')"     \
    " FROM cred_patterns WHERE cred_id = creds.id)"
#define CRED_NCOLS 16

static const char *key_column(enum store_key by)
{
    return by == STORE_BY_API_KEY_ID ? "api_key_id" : by == STORE_BY_CERT ? "cert_sha256" : "name";
}

static long long col_ll(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static void col_text(PGresult *r, int row, int col, char *out, size_t size)
{
    snprintf(out, size, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

static int cred_from_row(PGresult *r, int row, struct store_cred **out)
{
    struct store_cred *c = calloc(1, sizeof *c);
    if (!c)
        return STORE_EDB;
    c->id = col_ll(r, row, 0);
    c->name = strdup(PQgetvalue(r, row, 1));
    c->has_password = PQgetvalue(r, row, 2)[0] == 't';
    c->has_scram = PQgetvalue(r, row, 3)[0] == 't';
    col_text(r, row, 4, c->api_key_id, sizeof c->api_key_id);
    col_text(r, row, 5, c->cert_sha256, sizeof c->cert_sha256);
    c->rate_count = col_ll(r, row, 6);
    col_text(r, row, 7, c->rate_per, sizeof c->rate_per);
    c->quota_count = col_ll(r, row, 8);
    col_text(r, row, 9, c->quota_per, sizeof c->quota_per);
    c->max_size = col_ll(r, row, 10);
    c->revoked = col_ll(r, row, 11) != 0;
    c->created = col_ll(r, row, 12);
    c->rotated = col_ll(r, row, 13);
    c->scopes = (unsigned)col_ll(r, row, 14);
    json_t *pats = json_loads(PQgetvalue(r, row, 15), 0, NULL);
    int rc = c->name && json_is_array(pats) ? 0 : STORE_EDB;
    size_t i;
    json_t *pair;
    json_array_foreach(pats, i, pair)
    {
        const char *kind = json_string_value(json_array_get(pair, 0));
        const char *pat = json_string_value(json_array_get(pair, 1));
        if (!kind || !pat || rc < 0)
            continue;
        if ((strcmp(kind, "from") == 0
                 ? store_strv_push(&c->allow_from, &c->n_allow_from, pat)
                 : store_strv_push(&c->allow_rcpt, &c->n_allow_rcpt, pat)) < 0)
            rc = STORE_EDB;
    }
    json_decref(pats);
    if (rc < 0) {
        store_cred_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static int pg_cred_get(void *h, enum store_key by, const char *value, struct store_cred **out,
                       struct store_secret *pw)
{
    *out = NULL;
    char sql[640];
    snprintf(sql, sizeof sql, "SELECT " CRED_COLUMNS ", password_hash FROM creds WHERE %s = $1",
             key_column(by));
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    PGresult *res = run_hot(pc, (enum hot)(HOT_GET_BY_NAME + (int)by), sql, 1, &value);
    int r = !ok(res)              ? STORE_EDB
            : PQntuples(res) == 0 ? STORE_ENOTFOUND
                                  : cred_from_row(res, 0, out);
    if (r == 0 && pw) {
        pw->id = (*out)->id;
        pw->revoked = (*out)->revoked;
        col_text(res, 0, CRED_NCOLS, pw->hash, sizeof pw->hash);
    }
    PQclear(res);
    give(h, slot);
    return r;
}

static int pg_cred_list(void *h, struct store_cred ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    PGresult *res = PQexec(pc->c, "SELECT " CRED_COLUMNS " FROM creds ORDER BY name");
    int r = ok(res) ? 0 : STORE_EDB;
    int rows = r == 0 ? PQntuples(res) : 0;
    if (rows > 0 && !(*out = calloc((size_t)rows, sizeof **out)))
        r = STORE_EDB;
    for (int i = 0; i < rows && r == 0; i++)
        if ((r = cred_from_row(res, i, &(*out)[*n])) == 0)
            (*n)++;
    PQclear(res);
    give(h, slot);
    if (r < 0) {
        store_cred_free_list(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return r;
}

static int pg_secret_get(void *h, enum store_key by, const char *value, struct store_secret *out)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT %s, revoked, id FROM creds WHERE %s = $1",
             by == STORE_BY_API_KEY_ID ? "api_key_hash" : "password_hash", key_column(by));
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    PGresult *res = by == STORE_BY_NAME         ? run_hot(pc, HOT_PASSWORD_BY_NAME, sql, 1, &value)
                    : by == STORE_BY_API_KEY_ID ? run_hot(pc, HOT_KEY_HASH_BY_ID, sql, 1, &value)
                                                : run(pc->c, sql, 1, &value);
    int r = !ok(res) ? STORE_EDB : STORE_ENOTFOUND;
    if (ok(res) && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) &&
        strlen(PQgetvalue(res, 0, 0)) < sizeof out->hash) {
        snprintf(out->hash, sizeof out->hash, "%s", PQgetvalue(res, 0, 0));
        out->revoked = col_ll(res, 0, 1) != 0;
        out->id = col_ll(res, 0, 2);
        r = 0;
    }
    PQclear(res);
    give(h, slot);
    return r;
}

/* A hex column (encode(x, 'hex')) into bytes; the length or -1. */
static int hex_into(const char *hex, unsigned char *out, size_t size)
{
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > size)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    return (int)(n / 2);
}

static int pg_scram_get(void *h, const char *name, struct store_scram *out)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    PGresult *res = run(pc->c,
                        "SELECT encode(scram_salt, 'hex'), scram_iterations,"
                        " encode(scram_stored_key, 'hex'), encode(scram_server_key, 'hex'),"
                        " revoked FROM creds WHERE name = $1 AND scram_salt IS NOT NULL",
                        1, &name);
    int r = !ok(res) ? STORE_EDB : STORE_ENOTFOUND;
    if (ok(res) && PQntuples(res) == 1) {
        int sl = hex_into(PQgetvalue(res, 0, 0), out->salt, sizeof out->salt);
        if (sl > 0 &&
            hex_into(PQgetvalue(res, 0, 2), out->stored_key, STORE_SCRAM_KEY_LEN) ==
                STORE_SCRAM_KEY_LEN &&
            hex_into(PQgetvalue(res, 0, 3), out->server_key, STORE_SCRAM_KEY_LEN) ==
                STORE_SCRAM_KEY_LEN) {
            out->salt_len = (size_t)sl;
            out->iterations = (int)col_ll(res, 0, 1);
            out->revoked = col_ll(res, 0, 4) != 0;
            r = 0;
        }
    }
    PQclear(res);
    give(h, slot);
    return r;
}

static int pg_generation(void *h, uint64_t *out)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    *out = 0;
    if (!pc)
        return STORE_EDB;
    PGresult *res =
        run_hot(pc, HOT_GENERATION, "SELECT value FROM generation WHERE id = 1", 0, NULL);
    if (ok(res) && PQntuples(res) == 1)
        *out = (uint64_t)col_ll(res, 0, 0);
    PQclear(res);
    give(h, slot);
    return *out ? 0 : STORE_EDB;
}

/* --- writing --- */

static void hex_of(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", in[i]);
    out[2 * n] = 0;
}

static int insert_patterns(PGconn *c, const char *id, const char *kind, const char *const *v,
                           size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *p[3] = {id, kind, v[i]};
        PGresult *res = run(c,
                            "INSERT INTO cred_patterns VALUES ($1, $2, $3)"
                            " ON CONFLICT DO NOTHING",
                            3, p);
        bool good = ok(res);
        PQclear(res);
        if (!good)
            return -1;
    }
    return 0;
}

/* Maps a failed statement to a result, naming a taken unique value. */
static int write_error(PGconn *c, PGresult *res, char *err, size_t errlen)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *cons = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    if (state && strcmp(state, "23505") == 0) {
        const char *what = cons && strstr(cons, "name")   ? "a credential with that name exists"
                           : cons && strstr(cons, "cert") ? "that certificate belongs to another "
                                                            "credential"
                                                          : "already exists";
        seterr(err, errlen, what, NULL);
        return STORE_EEXIST;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
    msg[strcspn(msg, "\n")] = 0;
    return seterr(err, errlen, "database error", msg);
}

static int pg_cred_put(void *h, const struct store_cred_new *n, char *err, size_t errlen)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return seterr(err, errlen, "cannot reach PostgreSQL", NULL);
    char rate[24], quota[24], size[24], created[24], scopes[24], iters[16];
    char salt[2 * STORE_SCRAM_SALT_MAX + 1], stored[65], server[65];
    snprintf(rate, sizeof rate, "%lld", n->rate_per && n->rate_count > 0 ? n->rate_count : 0);
    snprintf(quota, sizeof quota, "%lld", n->quota_per && n->quota_count > 0 ? n->quota_count : 0);
    snprintf(size, sizeof size, "%lld", n->max_size);
    snprintf(created, sizeof created, "%lld", n->created);
    snprintf(scopes, sizeof scopes, "%u", n->scopes);
    const struct store_password *pw = n->password;
    bool scram = pw && pw->scram.iterations > 0;
    if (scram) {
        snprintf(iters, sizeof iters, "%d", pw->scram.iterations);
        hex_of(pw->scram.salt, pw->scram.salt_len, salt);
        hex_of(pw->scram.stored_key, STORE_SCRAM_KEY_LEN, stored);
        hex_of(pw->scram.server_key, STORE_SCRAM_KEY_LEN, server);
    }
    const char *p[16] = {n->name,
                         pw ? pw->hash : NULL,
                         n->api_key_id,
                         n->api_key_id ? n->api_key_hash : NULL,
                         n->cert_sha256,
                         rate,
                         n->rate_count > 0 ? n->rate_per : NULL,
                         quota,
                         n->quota_count > 0 ? n->quota_per : NULL,
                         size,
                         created,
                         scram ? salt : NULL,
                         scram ? iters : NULL,
                         scram ? stored : NULL,
                         scram ? server : NULL,
                         scopes};
    int r = STORE_EDB;
    if (exec_ok(pc->c, "BEGIN") < 0) {
        r = write_error(pc->c, NULL, err, errlen);
        give(h, slot);
        return r;
    }
    PGresult *res = run(pc->c,
                        "INSERT INTO creds (name, password_hash, api_key_id, api_key_hash,"
                        " cert_sha256, rate_count, rate_per, quota_count, quota_per, max_size,"
                        " created, scram_salt, scram_iterations, scram_stored_key,"
                        " scram_server_key, scopes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
                        " $9, $10, $11, decode($12, 'hex'), $13, decode($14, 'hex'),"
                        " decode($15, 'hex'), $16) RETURNING id",
                        16, p);
    if (ok(res) && PQntuples(res) == 1) {
        const char *id = PQgetvalue(res, 0, 0);
        if (insert_patterns(pc->c, id, "from", n->allow_from, n->n_allow_from) == 0 &&
            insert_patterns(pc->c, id, "rcpt", n->allow_rcpt, n->n_allow_rcpt) == 0 &&
            exec_ok(pc->c, "COMMIT") == 0)
            r = 0;
        else
            r = write_error(pc->c, NULL, err, errlen);
    } else {
        r = write_error(pc->c, res, err, errlen);
    }
    PQclear(res);
    if (r < 0)
        exec_ok(pc->c, "ROLLBACK");
    give(h, slot);
    return r;
}

/* One statement with parameters: 0 if it changed a row, else
 * STORE_ENOTFOUND or STORE_EDB. */
static int change(void *h, const char *sql, int n, const char *const *p)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    PGresult *res = run(pc->c, sql, n, p);
    int r = !ok(res) ? STORE_EDB : atoi(PQcmdTuples(res)) > 0 ? 0 : STORE_ENOTFOUND;
    PQclear(res);
    give(h, slot);
    return r;
}

static int pg_cred_revoke(void *h, const char *name)
{
    return change(h, "UPDATE creds SET revoked = 1 WHERE name = $1", 1, &name);
}

static int pg_cred_delete(void *h, const char *name)
{
    return change(h, "DELETE FROM creds WHERE name = $1", 1, &name);
}

static int pg_cred_set_password(void *h, const char *name, const struct store_password *pw,
                                long long rotated)
{
    char salt[2 * STORE_SCRAM_SALT_MAX + 1], stored[65], server[65], iters[16], rot[24];
    hex_of(pw->scram.salt, pw->scram.salt_len, salt);
    hex_of(pw->scram.stored_key, STORE_SCRAM_KEY_LEN, stored);
    hex_of(pw->scram.server_key, STORE_SCRAM_KEY_LEN, server);
    snprintf(iters, sizeof iters, "%d", pw->scram.iterations);
    snprintf(rot, sizeof rot, "%lld", rotated);
    const char *p[7] = {name, pw->hash, salt, iters, stored, server, rot};
    return change(h,
                  "UPDATE creds SET password_hash = $2, scram_salt = decode($3, 'hex'),"
                  " scram_iterations = $4, scram_stored_key = decode($5, 'hex'),"
                  " scram_server_key = decode($6, 'hex'), rotated = $7"
                  " WHERE name = $1 AND revoked = 0",
                  7, p);
}

static int pg_cred_set_api_key(void *h, const char *name, const char *key_id, const char *key_hash,
                               long long rotated)
{
    char rot[24];
    snprintf(rot, sizeof rot, "%lld", rotated);
    const char *p[4] = {name, key_id, key_hash, rot};
    return change(h,
                  "UPDATE creds SET api_key_id = $2, api_key_hash = $3, rotated = $4"
                  " WHERE name = $1 AND revoked = 0",
                  4, p);
}

static int pg_api_key_rehash(void *h, const char *key_id, const char *old_hash,
                             const char *new_hash)
{
    const char *p[3] = {key_id, new_hash, old_hash};
    return change(h,
                  "UPDATE creds SET api_key_hash = $2 WHERE api_key_id = $1"
                  " AND api_key_hash = $3",
                  3, p);
}

static int replace_patterns(PGconn *c, const char *id, const char *kind, const char *const *v,
                            size_t n)
{
    const char *p[2] = {id, kind};
    PGresult *res = run(c, "DELETE FROM cred_patterns WHERE cred_id = $1 AND kind = $2", 2, p);
    bool good = ok(res);
    PQclear(res);
    return good ? insert_patterns(c, id, kind, v, n) : -1;
}

static int pg_cred_update(void *h, const char *name, const struct store_cred_change *ch)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    char rate[24], quota[24], size[24], scopes[24];
    snprintf(rate, sizeof rate, "%lld", ch->rate_per && ch->rate_count > 0 ? ch->rate_count : 0);
    snprintf(quota, sizeof quota, "%lld",
             ch->quota_per && ch->quota_count > 0 ? ch->quota_count : 0);
    snprintf(size, sizeof size, "%lld", ch->max_size);
    snprintf(scopes, sizeof scopes, "%u", ch->scopes);
    const char *p[9] = {name,
                        ch->set_rate ? "t" : "f",
                        rate,
                        ch->rate_count > 0 ? ch->rate_per : NULL,
                        ch->set_quota ? "t" : "f",
                        quota,
                        ch->quota_count > 0 ? ch->quota_per : NULL,
                        ch->set_max_size ? size : NULL,
                        ch->set_scopes ? scopes : NULL};
    int r = STORE_EDB;
    PGresult *res = NULL;
    if (exec_ok(pc->c, "BEGIN") < 0)
        goto out;
    res = run(pc->c,
              "UPDATE creds SET"
              " rate_count = CASE WHEN $2::boolean THEN $3::bigint ELSE rate_count END,"
              " rate_per = CASE WHEN $2::boolean THEN $4 ELSE rate_per END,"
              " quota_count = CASE WHEN $5::boolean THEN $6::bigint ELSE quota_count END,"
              " quota_per = CASE WHEN $5::boolean THEN $7 ELSE quota_per END,"
              " max_size = coalesce($8::bigint, max_size),"
              " scopes = coalesce($9::integer, scopes) WHERE name = $1 RETURNING id",
              9, p);
    if (ok(res) && PQntuples(res) == 0)
        r = STORE_ENOTFOUND;
    if (ok(res) && PQntuples(res) == 1) {
        const char *id = PQgetvalue(res, 0, 0);
        if ((!ch->set_allow_from ||
             replace_patterns(pc->c, id, "from", ch->allow_from, ch->n_allow_from) == 0) &&
            (!ch->set_allow_rcpt ||
             replace_patterns(pc->c, id, "rcpt", ch->allow_rcpt, ch->n_allow_rcpt) == 0) &&
            exec_ok(pc->c, "COMMIT") == 0)
            r = 0;
    }
    if (r < 0)
        exec_ok(pc->c, "ROLLBACK");
out:
    PQclear(res);
    give(h, slot);
    return r;
}

/* --- accounting and counters --- */

static int pg_acct_add(void *h, const struct store_acct_add *v, size_t n)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    int r = exec_ok(pc->c, "BEGIN") == 0 ? 0 : STORE_EDB;
    for (size_t i = 0; i < n && r == 0; i++) {
        char count[24], bytes[24];
        snprintf(count, sizeof count, "%lld", v[i].count);
        snprintf(bytes, sizeof bytes, "%lld", v[i].bytes);
        const char *p[6] = {v[i].cred, v[i].day, v[i].event, v[i].reason ? v[i].reason : "",
                            count,     bytes};
        PGresult *res = run(pc->c,
                            "INSERT INTO accounting (cred, day, event, reason, count, bytes)"
                            " VALUES ($1, $2, $3, $4, $5, $6)"
                            " ON CONFLICT (cred, day, event, reason) DO UPDATE SET"
                            " count = accounting.count + excluded.count,"
                            " bytes = accounting.bytes + excluded.bytes",
                            6, p);
        if (!ok(res))
            r = STORE_EDB;
        PQclear(res);
    }
    if (r == 0 && exec_ok(pc->c, "COMMIT") < 0)
        r = STORE_EDB;
    if (r < 0)
        exec_ok(pc->c, "ROLLBACK");
    give(h, slot);
    return r;
}

static int pg_acct_query(void *h, const char *cred, const char *since, bool accepted_only,
                         store_acct_fn fn, void *arg)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    const char *p[3] = {since, cred, accepted_only ? "t" : "f"};
    PGresult *res = run(pc->c,
                        "SELECT cred, day, event, reason, SUM(count), SUM(bytes)"
                        " FROM accounting WHERE day >= $1 AND ($2::text IS NULL OR cred = $2)"
                        " AND (NOT $3::boolean OR event = 'accepted')"
                        " GROUP BY cred, day, event, reason ORDER BY cred, day, event, reason",
                        3, p);
    int r = ok(res) ? 0 : STORE_EDB;
    /* copied out first: the callback may call the store again */
    int rows = r == 0 ? PQntuples(res) : 0;
    for (int i = 0; i < rows; i++) {
        struct store_acct_row row = {PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                                     PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                                     col_ll(res, i, 4),     col_ll(res, i, 5)};
        if (fn(&row, arg) != 0)
            break;
    }
    give(h, slot);
    PQclear(res);
    return r;
}

static int pg_counter_take(void *h, const char *key, const char *period, long long limit,
                           long long seed, long long *used)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    char lim[24], sd[24];
    snprintf(lim, sizeof lim, "%lld", limit);
    snprintf(sd, sizeof sd, "%lld", seed + 1);
    const char *p[4] = {key, period, lim, sd};
    /* ON CONFLICT DO UPDATE locks the row and checks the condition against
     * its latest version: two nodes never both take the last unit. The
     * commit of this one statement does not wait for the WAL flush (an
     * fsync on the event loop, milliseconds): only a crash of the server
     * itself can forget the reservations of its last moments
     * (docs/STORE.md gives the bound). */
    PGresult *res = run_hot(pc, HOT_COUNTER_TAKE,
                            "WITH async AS (SELECT set_config('synchronous_commit', 'off', true))"
                            " INSERT INTO counters (key, period, value) SELECT $1, $2, $4::bigint"
                            " FROM async ON CONFLICT (key, period) DO UPDATE"
                            " SET value = counters.value + 1"
                            " WHERE counters.value < $3::bigint RETURNING value",
                            4, p);
    int r = STORE_EDB;
    if (ok(res)) {
        r = 0;
        if (PQntuples(res) == 1) {
            *used = col_ll(res, 0, 0);
            r = *used <= limit ? 1 : 0;
        }
    }
    PQclear(res);
    give(h, slot);
    return r;
}

static int pg_counter_give(void *h, const char *key, const char *period)
{
    size_t slot;
    struct pg_conn *pc = take(h, &slot);
    if (!pc)
        return STORE_EDB;
    const char *p[2] = {key, period};
    PGresult *res = run(pc->c,
                        "UPDATE counters SET value = value - 1"
                        " WHERE key = $1 AND period = $2 AND value > 0",
                        2, p);
    int r = ok(res) ? 0 : STORE_EDB;
    PQclear(res);
    give(h, slot);
    return r;
}

const struct store_ops store_pg_ops = {
    .name = "postgresql",
    .shared = true,
    .open = pg_open,
    .close = pg_close,
    .schema_version = pg_schema_version,
    .cred_get = pg_cred_get,
    .cred_list = pg_cred_list,
    .cred_put = pg_cred_put,
    .cred_update = pg_cred_update,
    .cred_revoke = pg_cred_revoke,
    .cred_delete = pg_cred_delete,
    .cred_set_password = pg_cred_set_password,
    .cred_set_api_key = pg_cred_set_api_key,
    .api_key_rehash = pg_api_key_rehash,
    .secret_get = pg_secret_get,
    .scram_get = pg_scram_get,
    .generation = pg_generation,
    .acct_add = pg_acct_add,
    .acct_query = pg_acct_query,
    .counter_take = pg_counter_take,
    .counter_give = pg_counter_give,
};
