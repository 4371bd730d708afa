/* The store front: picks the backend the configuration names and holds
 * what both backends share (the connection pool, row release). */
#include "store/store.h"

#include "core/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int store_backend_parse(const char *name, enum store_backend_kind *out)
{
    if (!name || !*name || strcmp(name, "sqlite") == 0) {
        *out = STORE_SQLITE;
        return 0;
    }
    if (strcmp(name, "postgresql") == 0 || strcmp(name, "postgres") == 0 ||
        strcmp(name, "pg") == 0) {
        *out = STORE_POSTGRESQL;
        return 0;
    }
    return -1;
}

void store_config_of(const struct config *cfg, struct store_config *out)
{
    memset(out, 0, sizeof *out);
    if (store_backend_parse(cfg->store_backend, &out->backend) < 0)
        out->backend = STORE_SQLITE;
    out->path = cfg->creds_db;
    out->url = cfg->store_url;
    out->password_file = cfg->store_password_file;
    out->pool_size = cfg->store_pool_size;
}

struct store *store_open(const struct store_config *cfg, char *err, size_t errlen)
{
    struct store *s = calloc(1, sizeof *s);
    if (!s) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->ops = cfg->backend == STORE_POSTGRESQL ? &store_pg_ops : &store_sqlite_ops;
    s->h = s->ops->open(cfg, err, errlen);
    if (!s->h) {
        free(s);
        return NULL;
    }
    return s;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    s->ops->close(s->h);
    free(s);
}

void store_strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void store_cred_free(struct store_cred *c)
{
    if (!c)
        return;
    free(c->name);
    store_strv_free(c->allow_from, c->n_allow_from);
    store_strv_free(c->allow_rcpt, c->n_allow_rcpt);
    free(c);
}

void store_cred_free_list(struct store_cred **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_cred_free(v[i]);
    free(v);
}

int store_strv_push(char ***v, size_t *n, const char *s)
{
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv)
        return -1;
    *v = nv;
    if (!(nv[*n] = strdup(s)))
        return -1;
    (*n)++;
    return 0;
}

/* --- pool --- */

int store_pool_init(struct store_pool *p, size_t n)
{
    memset(p, 0, sizeof *p);
    p->conn = calloc(n, sizeof *p->conn);
    p->busy = calloc(n, sizeof *p->busy);
    if (!p->conn || !p->busy) {
        free(p->conn);
        free(p->busy);
        return -1;
    }
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    return 0;
}

void *store_pool_get(struct store_pool *p, size_t *slot)
{
    pthread_mutex_lock(&p->mu);
    for (;;) {
        for (size_t i = 0; i < p->n; i++)
            if (!p->busy[i]) {
                p->busy[i] = true;
                pthread_mutex_unlock(&p->mu);
                *slot = i;
                return p->conn[i];
            }
        pthread_cond_wait(&p->cv, &p->mu);
    }
}

void store_pool_put(struct store_pool *p, size_t slot)
{
    pthread_mutex_lock(&p->mu);
    p->busy[slot] = false;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void store_pool_destroy(struct store_pool *p)
{
    if (!p->conn)
        return;
    free(p->conn);
    free(p->busy);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    memset(p, 0, sizeof *p);
}
