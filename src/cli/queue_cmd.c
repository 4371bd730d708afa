/* `sluice queue ...`: asks the running daemon over its control socket and
 * prints the answer for people, or as JSON with --json. */
#include "cli/cli.h"

#include "core/config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int usage(void)
{
    fprintf(stderr, "usage: sluice queue [--json] [-c CONFIG] COMMAND\n"
                    "  list [--state active|held|dead|all]   messages in the queue\n"
                    "  show ID                                one message in detail\n"
                    "  retry ID | retry --all                 attempt now (revives dead/held)\n"
                    "  hold ID | release ID                   stop / resume attempts\n"
                    "  delete ID                              remove for good\n"
                    "  dead                                   the dead-letter list\n"
                    "  flush                                  attempt every active message now\n"
                    "  stats                                  counters and queue depth\n");
    return 2;
}

static char *request(const char *sock, const char *line, char *err, size_t errlen)
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
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    return buf;
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

int cli_queue(int argc, char **argv)
{
    bool json = false;
    const char *cpath = NULL;
    char line[256] = "";
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            cpath = argv[++i];
        else
            return usage();
    }
    if (i >= argc)
        return usage();
    const char *verb = argv[i++];
    const char *arg = "";
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            arg = argv[++i];
        else if (!*arg)
            arg = argv[i];
        else
            return usage();
    }
    static const char *const verbs[] = {"list",   "show", "retry", "hold", "release",
                                        "delete", "dead", "flush", "stats"};
    bool known = false;
    for (size_t k = 0; k < sizeof verbs / sizeof verbs[0]; k++)
        known |= strcmp(verb, verbs[k]) == 0;
    if (!known)
        return usage();
    snprintf(line, sizeof line, "%s %s", verb, arg);

    struct config *cfg = cli_load_config("queue", cpath);
    if (!cfg)
        return 2;
    char err[512];
    char *resp = request(cfg->control_socket, line, err, sizeof err);
    config_free(cfg);
    if (!resp) {
        fprintf(stderr, "sluice: %s\n", err);
        return 2;
    }
    json_error_t je;
    json_t *o = json_loads(resp, 0, &je);
    if (!o) {
        fprintf(stderr, "sluice: bad reply from daemon\n");
        free(resp);
        return 2;
    }
    int rc = json_is_true(json_object_get(o, "ok")) ? 0 : 1;
    if (json) {
        fputs(resp, stdout);
    } else if (rc) {
        fprintf(stderr, "sluice: %s\n", json_string_value(json_object_get(o, "error")));
    } else {
        json_t *data = json_object_get(o, "data");
        if (json_is_array(data)) {
            size_t k;
            json_t *m;
            json_array_foreach(data, k, m) print_msg_line(m);
            printf("%zu message(s)\n", json_array_size(data));
        } else if (json_is_object(data) && json_object_get(data, "recipients")) {
            print_msg_line(data);
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
    json_decref(o);
    free(resp);
    return rc;
}
