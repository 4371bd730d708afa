/* Export of a stopped node's spool and import into a spool no daemon uses.
 * Both hold var_dir/sluice.lock while they work, so a daemon cannot start on
 * the spool meanwhile; with a daemon running, import goes through its
 * control socket instead (queue_cmd.c). */
#include "cli/queue_transfer.h"

#include "cli/cli.h"
#include "core/config.h"
#include "queue/transfer.h"
#include "spool/spool.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int queue_lock_var_dir(const char *var_dir, int *fd, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/sluice.lock", var_dir);
    /* a node that never ran has no var_dir yet; serve makes it the same way */
    if (mkdir(var_dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", var_dir, strerror(errno));
        return -1;
    }
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (*fd < 0) {
        snprintf(err, errlen, "cannot open the lock file %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(*fd, LOCK_EX | LOCK_NB) == 0)
        return 0;
    int e = errno;
    close(*fd);
    *fd = -1;
    if (e == EWOULDBLOCK)
        return 1;
    snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
    return -1;
}

struct waiter {
    struct event_base *base;
    size_t pending;
    int err;
};

static void on_deleted(void *arg, int err, uint64_t id)
{
    struct waiter *w = arg;
    (void)id;
    if (err && !w->err)
        w->err = err;
    if (--w->pending == 0)
        event_base_loopexit(w->base, NULL);
}

struct ids {
    uint64_t *v;
    size_t n, cap;
};

static void collect(void *arg, const struct spool_msg *m)
{
    struct ids *ids = arg;
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 256;
        uint64_t *p = realloc(ids->v, cap * sizeof *p);
        if (!p)
            return;
        ids->v = p;
        ids->cap = cap;
    }
    ids->v[ids->n++] = m->id;
}

/* Writes the export to path.tmp, syncs it, renames it to path, syncs the
 * folder: once this returns 0 the file survives a crash. */
static int write_export(struct spool *s, const char *path, size_t *n, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%.4090s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    int rc = f ? transfer_export(s, f, n, err, errlen) : -1;
    if (rc == 0 && (fflush(f) != 0 || fsync(fd) != 0)) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (f)
        fclose(f);
    else
        close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        rc = -1;
    }
    if (rc < 0) {
        unlink(tmp);
        return -1;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int cli_queue_export(const struct cli *cli, const char *dest, bool keep)
{
    struct config *cfg = cli_load_config(cli);
    if (!cfg)
        return CLI_EXIT_FAILURE;
    char err[10000], path[4096];
    int lock = -1, rc = CLI_EXIT_FAILURE;
    struct event_base *base = NULL;
    struct spool *s = NULL;
    struct ids ids = {0};
    struct stat st;
    if (stat(dest, &st) == 0 && S_ISDIR(st.st_mode)) {
        char host[128] = "";
        gethostname(host, sizeof host - 1);
        snprintf(path, sizeof path, "%.3800s/sluice-queue-%s-%lld.jsonl", dest, host,
                 (long long)time(NULL));
    } else {
        snprintf(path, sizeof path, "%.4090s", dest);
    }
    int l = queue_lock_var_dir(cfg->var_dir, &lock, err, sizeof err);
    if (l == 1) {
        rc = cli_fail(cli, CLI_ERR_LOCKED,
                      "a daemon runs on var_dir %s: export reads the spool of a stopped node; "
                      "stop it first",
                      cfg->var_dir);
        goto out;
    }
    if (l < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "%s", err);
        goto out;
    }
    base = event_base_new();
    if (!base || spool_open(cfg->spool_dir, base, &s, err, sizeof err) < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "cannot open the spool %s: %s", cfg->spool_dir,
                      base ? err : "no event base");
        goto out;
    }
    spool_foreach(s, collect, &ids);
    size_t n = 0;
    if (write_export(s, path, &n, err, sizeof err) < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "%s", err);
        goto out;
    }
    /* the file is durable: only now do the messages leave this spool */
    struct waiter w = {.base = base};
    for (size_t i = 0; !keep && i < ids.n; i++)
        if (spool_mark(s, ids.v[i], SPOOL_OP_DELETE, -1, 0, "exported", on_deleted, &w) == 0)
            w.pending++;
    if (w.pending)
        event_base_dispatch(base);
    if (w.err) {
        rc = cli_fail(cli, CLI_ERR_IO,
                      "exported %zu messages to %s, but removing them from the spool failed: "
                      "%s; do not start this node before importing the file elsewhere and "
                      "deleting its spool",
                      n, path, strerror(-w.err));
        goto out;
    }
    if (cli->json) {
        json_t *o = json_pack("{s:b,s:{s:s,s:I,s:b}}", "ok", 1, "data", "file", path, "messages",
                              (json_int_t)n, "removed", !keep);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("exported %zu messages to %s%s\n", n, path,
               keep ? " (kept in this spool: do not start this node again with it)"
                    : " (removed from this spool)");
    }
    rc = CLI_EXIT_OK;
out:
    free(ids.v);
    if (s)
        spool_close(s);
    if (base)
        event_base_free(base);
    if (lock >= 0)
        close(lock);
    config_free(cfg);
    return rc;
}

struct local_import {
    struct event_base *base;
    struct transfer_result res;
    bool done;
};

static void on_imported(void *arg, const struct transfer_result *res)
{
    struct local_import *li = arg;
    li->res = *res;
    li->done = true;
    event_base_loopexit(li->base, NULL);
}

int cli_queue_import_local(const struct cli *cli, const struct config *cfg, const char *path)
{
    char err[1024];
    struct local_import li = {.base = event_base_new()};
    struct spool *s = NULL;
    int rc = CLI_EXIT_FAILURE;
    if (!li.base || spool_open(cfg->spool_dir, li.base, &s, err, sizeof err) < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "cannot open the spool %s: %s", cfg->spool_dir,
                      li.base ? err : "no event base");
        goto out;
    }
    if (transfer_import(s, NULL, path, on_imported, &li, err, sizeof err) < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "%s", err);
        goto out;
    }
    while (!li.done)
        event_base_dispatch(li.base);
    if (li.res.error[0]) {
        rc = cli_fail(cli, CLI_ERR_INVALID, "%s: %s (%zu imported before it)", path, li.res.error,
                      li.res.imported);
        goto out;
    }
    if (cli->json)
        printf("{\"ok\":true,\"data\":{\"imported\":%zu,\"skipped\":%zu}}\n", li.res.imported,
               li.res.skipped);
    else
        printf("imported %zu messages, %zu skipped (imported before)\n", li.res.imported,
               li.res.skipped);
    rc = CLI_EXIT_OK;
out:
    if (s)
        spool_close(s);
    if (li.base)
        event_base_free(li.base);
    return rc;
}

int queue_mark_imported(const struct cli *cli, const char *path)
{
    char to[4200];
    snprintf(to, sizeof to, "%.4000s.imported", path);
    if (rename(path, to) != 0)
        return cli_fail(cli, CLI_ERR_IO, "imported %s, but cannot rename it to %s: %s", path, to,
                        strerror(errno));
    return CLI_EXIT_OK;
}
