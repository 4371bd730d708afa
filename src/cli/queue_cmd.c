/* `sluice queue ...`: asks the running daemon over its control socket and
 * prints the answer for people, or as JSON with --json. Listings are read
 * and printed a line at a time, so their length costs no memory here. */
#include "cli/cli.h"
#include "cli/queue_transfer.h"

#include "core/config.h"
#include "queue/control_request.h"

#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static char queue_usage[2048];

static const char *usage_text(void)
{
    snprintf(queue_usage, sizeof queue_usage,
             "usage: sluice queue [--json] [-c CONFIG] COMMAND\n"
             "  list [--state active|held|dead|all] [--limit N] [--after ID]\n"
             "                                  a page of messages, oldest first (default\n"
             "                                  limit %u; --limit 0 lists them all); the\n"
             "                                  next page starts after the printed cursor\n"
             "  show ID                         one message, with the upstream's last reply\n"
             "  retry ID                        attempt now (also a held or dead message)\n"
             "  retry --all [--dead]            every deferred and held message now; dead\n"
             "                                  letters only with --dead (never bounced again)\n"
             "  hold ID                         stop attempts\n"
             "  release ID | release --all      resume a held message / every held message\n"
             "  delete ID                       remove for good\n"
             "  dead [--limit N] [--after ID]   the dead-letter list\n"
             "  flush                           attempt every deferred message now\n"
             "  stats                           counters and queue depth\n"
             "  export FILE|DIR [--keep]        write a stopped node's messages to FILE (or\n"
             "                                  a new file in DIR) and remove them from its\n"
             "                                  spool (--keep: leave them)\n"
             "  import FILE                     add the messages of an export file (through\n"
             "                                  the daemon when it runs); run twice, it adds\n"
             "                                  nothing twice\n"
             "Asks the running daemon over the configured [server] control_socket.\n",
             CONTROL_LIST_DEFAULT_LIMIT);
    return queue_usage;
}

/* Connects and sends one request line; returns the socket as a stream. */
static FILE *request(const char *sock, const char *line, char *err, size_t errlen)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        snprintf(err, errlen, "cannot reach the daemon at %s: %s (is 'sluice serve' running?)",
                 sock, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    size_t ll = strlen(line);
    if (write(fd, line, ll) != (ssize_t)ll || write(fd, "\n", 1) != 1) {
        snprintf(err, errlen, "write to control socket: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        snprintf(err, errlen, "control socket: %s", strerror(errno));
        close(fd);
    }
    return f;
}

static void fmt_time(json_int_t t, char *buf, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%SZ", &tm);
}

static void print_msg_line(json_t *m)
{
    char rt[32];
    fmt_time(json_integer_value(json_object_get(m, "received")), rt, sizeof rt);
    json_t *rc = json_object_get(m, "recipients");
    const char *s = json_string_value(json_object_get(m, "sender"));
    printf("%s  %-6s %8lld  %s  <%s>  %zu rcpt  attempts %lld\n",
           json_string_value(json_object_get(m, "id")),
           json_string_value(json_object_get(m, "state")),
           (long long)json_integer_value(json_object_get(m, "size")), rt, s ? s : "",
           json_array_size(rc), (long long)json_integer_value(json_object_get(m, "attempts")));
    const char *lr = json_string_value(json_object_get(m, "last_reply"));
    if (lr)
        printf("    last: %s\n", lr);
}

/* A listing arrives one message per line between a head and a tail line
 * (see control.c), so it is printed as it streams, whatever its length. */
static int print_listing(FILE *f, char *first, bool json, const char *verb, const char *state)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    size_t count = 0;
    int rc = 2;
    if (json)
        fputs(first, stdout);
    while ((n = getline(&line, &cap, f)) > 0) {
        if (json)
            fputs(line, stdout);
        const char *p = line[0] == ',' ? line + 1 : line;
        if (*p == '{') {
            json_t *m = json_loads(p, 0, NULL);
            if (!m)
                break;
            if (!json)
                print_msg_line(m);
            json_decref(m);
            count++;
        } else if (*p == ']') {
            /* the tail: `],"next":...,"count":N}` closes the document */
            char *doc = NULL;
            if (asprintf(&doc, "{\"data\":[%s", p) < 0)
                break;
            json_t *t = json_loads(doc, 0, NULL);
            free(doc);
            if (!t)
                break;
            const char *next = json_string_value(json_object_get(t, "next"));
            if (!json) {
                printf("%zu message(s)\n", count);
                if (next)
                    printf("more: sluice queue %s%s%s --after %s\n", verb,
                           *state ? " --state " : "", state, next);
            }
            json_decref(t);
            rc = 0;
            break;
        }
    }
    free(line);
    if (rc)
        fprintf(stderr, "sluice queue: the listing from the daemon ended early\n");
    return rc;
}

static void print_data(json_t *data)
{
    if (json_is_object(data) && json_object_get(data, "recipients")) {
        print_msg_line(data);
        const char *up = json_string_value(json_object_get(data, "upstream_reply"));
        printf("    upstream reply: %s\n", up ? up : "none yet");
        size_t k;
        json_t *x;
        json_array_foreach(json_object_get(data, "recipients"), k, x)
            printf("    to <%s>: %s\n", json_string_value(json_object_get(x, "address")),
                   json_string_value(json_object_get(x, "state")));
        const char *key;
        json_t *v;
        json_object_foreach(json_object_get(data, "meta"), key, v)
            printf("    %s: %s\n", key, json_string_value(v));
    } else if (json_is_object(data)) {
        const char *key;
        json_t *v;
        json_object_foreach(data, key, v)
        {
            if (json_is_integer(v))
                printf("%-16s %lld\n", key, (long long)json_integer_value(v));
        }
        size_t k;
        json_t *u;
        json_array_foreach(json_object_get(data, "upstreams"), k, u)
            printf("upstream %-12s %-9s conns %lld queued %lld %s\n",
                   json_string_value(json_object_get(u, "name")),
                   json_string_value(json_object_get(u, "health")),
                   (long long)json_integer_value(json_object_get(u, "connections")),
                   (long long)json_integer_value(json_object_get(u, "queued")),
                   json_string_value(json_object_get(u, "last_error")));
    } else {
        printf("ok\n");
    }
}

int cli_queue(const struct cli *cli, int argc, char **argv)
{
    bool json = cli->json, all = false, dead = false, keep = false;
    const char *state = "", *limit = NULL, *after = NULL, *id = NULL;
    const char *verb = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (cli->help)
            break;
        if (strcmp(a, "--state") == 0 && more)
            state = argv[++i];
        else if (strcmp(a, "--limit") == 0 && more)
            limit = argv[++i];
        else if (strcmp(a, "--after") == 0 && more)
            after = argv[++i];
        else if (strcmp(a, "--all") == 0)
            all = true;
        else if (strcmp(a, "--dead") == 0)
            dead = true;
        else if (strcmp(a, "--keep") == 0)
            keep = true;
        else if (a[0] == '-')
            return cli_usage_error(cli, usage_text(),
                                   strcmp(a, "--state") && strcmp(a, "--limit") &&
                                           strcmp(a, "--after")
                                       ? "unknown option '%s'"
                                       : "%s needs a value",
                                   a);
        else if (!verb)
            verb = a;
        else if (!id)
            id = a;
        else
            return cli_usage_error(cli, usage_text(), "unexpected argument '%s'", a);
    }
    if (cli->help)
        return cli_help(usage_text());
    if (!verb)
        return cli_usage_error(cli, usage_text(), "which queue command?");
    bool transfer = strcmp(verb, "export") == 0 || strcmp(verb, "import") == 0;
    if (transfer && (!id || *state || limit || after || all || dead))
        return cli_usage_error(cli, usage_text(), "queue %s takes a file and nothing else%s", verb,
                               verb[0] == 'e' ? " but --keep" : "");
    if (keep && (!transfer || verb[0] != 'e'))
        return cli_usage_error(cli, usage_text(), "--keep goes with queue export only");
    if (strcmp(verb, "export") == 0)
        return cli_queue_export(cli, id, keep);
    char abs[PATH_MAX + 16];
    if (transfer) {
        char resolved[PATH_MAX];
        if (!realpath(id, resolved))
            return cli_fail(cli, CLI_ERR_NOT_FOUND, "%s: %s", id, strerror(errno));
        struct config *cfg = cli_load_config(cli);
        if (!cfg)
            return CLI_EXIT_FAILURE;
        int lock, rc;
        char err[512];
        int l = queue_lock_var_dir(cfg->var_dir, &lock, err, sizeof err);
        if (l == 0) { /* no daemon: straight into the spool, the lock held */
            rc = cli_queue_import_local(cli, cfg, resolved);
            close(lock);
            if (rc == CLI_EXIT_OK)
                rc = queue_mark_imported(cli, resolved);
        } else if (l < 0) {
            rc = cli_fail(cli, CLI_ERR_IO, "%s", err);
        } else {
            rc = -1;
        }
        config_free(cfg);
        if (rc >= 0)
            return rc;
        snprintf(abs, sizeof abs, "%s", resolved);
        id = abs;
    }
    bool listing = strcmp(verb, "list") == 0 || strcmp(verb, "dead") == 0;
    if ((!listing && (*state || limit || after)) || (listing && (id || all || dead)))
        return cli_usage_error(cli, usage_text(), "queue %s does not take those arguments", verb);
    char line[PATH_MAX + 32];
    if (transfer)
        snprintf(line, sizeof line, "import %s", id);
    else if (listing)
        snprintf(line, sizeof line, "%s%s%s%s%s%s%s", verb, *state ? " " : "", state,
                 limit ? " limit=" : "", limit ? limit : "", after ? " after=" : "",
                 after ? after : "");
    else
        snprintf(line, sizeof line, "%s%s%s%s", verb, id ? " " : "", id ? id : "",
                 all ? (dead ? " --all --dead" : " --all") : (dead ? " --dead" : ""));
    /* the daemon's own grammar checks the request before anything is sent */
    struct control_request req;
    const char *perr;
    if (control_request_parse(line, strlen(line), &req, &perr) < 0)
        return cli_usage_error(cli, usage_text(), "%s", perr);

    struct config *cfg = cli_load_config(cli);
    if (!cfg)
        return CLI_EXIT_FAILURE;
    char err[512];
    FILE *f = request(cfg->control_socket, line, err, sizeof err);
    config_free(cfg);
    if (!f)
        return cli_fail(cli, CLI_ERR_DAEMON, "%s (configuration: %s)", err, cli_config_origin(cli));
    char *first = NULL;
    size_t cap = 0;
    int rc = CLI_EXIT_FAILURE;
    if (getline(&first, &cap, f) <= 0) {
        cli_fail(cli, CLI_ERR_DAEMON, "no reply from the daemon");
    } else if (listing && strncmp(first, "{\"ok\":true,\"data\":[", 19) == 0) {
        rc = print_listing(f, first, json, verb, state);
    } else {
        json_t *o = json_loads(first, 0, NULL);
        if (!o) {
            cli_fail(cli, CLI_ERR_DAEMON, "bad reply from the daemon");
        } else if (json_is_true(json_object_get(o, "ok"))) {
            rc = CLI_EXIT_OK;
            if (json)
                fputs(first, stdout);
            else
                print_data(json_object_get(o, "data"));
        } else {
            const char *e = json_string_value(json_object_get(o, "error"));
            /* the daemon says "no such message" for an unknown queue id */
            rc = cli_fail(cli,
                          e && strncmp(e, "no such", 7) == 0 ? CLI_ERR_NOT_FOUND : CLI_ERR_DAEMON,
                          "%s", e ? e : "the daemon refused");
        }
        json_decref(o);
    }
    free(first);
    fclose(f);
    if (transfer && rc == CLI_EXIT_OK)
        rc = queue_mark_imported(cli, id);
    return rc;
}
