/* Request lines of the control protocol: a pure parser over bytes, shared by
 * the daemon's control socket and its tests and fuzz target. */
#include "queue/control_request.h"

#include "spool/spool.h"

#include <string.h>

#define MAX_WORDS 4
#define MAX_WORD 32

struct words {
    char w[MAX_WORDS][MAX_WORD + 1];
    size_t n;
};

/* Splits on spaces; fails on too many or too long words and on control bytes. */
static int split(const char *line, size_t len, struct words *ws, const char **err)
{
    ws->n = 0;
    size_t i = 0;
    while (i < len) {
        if (line[i] == ' ') {
            i++;
            continue;
        }
        size_t start = i;
        while (i < len && line[i] != ' ') {
            unsigned char ch = (unsigned char)line[i];
            if (ch < 0x20 || ch == 0x7f) {
                *err = "control characters in request";
                return -1;
            }
            i++;
        }
        if (ws->n == MAX_WORDS) {
            *err = "too many words in request";
            return -1;
        }
        if (i - start > MAX_WORD) {
            *err = "word too long in request";
            return -1;
        }
        memcpy(ws->w[ws->n], line + start, i - start);
        ws->w[ws->n][i - start] = 0;
        ws->n++;
    }
    return 0;
}

static int parse_state(const char *s, int *state)
{
    static const struct {
        const char *name;
        int state;
    } names[] = {{"all", CONTROL_STATE_ANY},
                 {"active", SPOOL_MSG_ACTIVE},
                 {"held", SPOOL_MSG_HELD},
                 {"dead", SPOOL_MSG_DEAD}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            *state = names[i].state;
            return 0;
        }
    return -1;
}

static int parse_limit(const char *s, uint32_t *out)
{
    if (!*s)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int parse_list(struct words *ws, size_t first, struct control_request *r, const char **err)
{
    bool have_state = false;
    for (size_t i = first; i < ws->n; i++) {
        const char *w = ws->w[i];
        if (strncmp(w, "limit=", 6) == 0) {
            if (parse_limit(w + 6, &r->limit) < 0) {
                *err = "bad limit (expected a number; 0 for no limit)";
                return -1;
            }
        } else if (strncmp(w, "after=", 6) == 0) {
            if (spool_id_parse(w + 6, &r->after) < 0) {
                *err = "bad cursor (expected a message id of 16 hex digits)";
                return -1;
            }
        } else if (!have_state && parse_state(w, &r->state) == 0) {
            have_state = true;
        } else {
            *err = "unknown list argument; use active, held, dead or all, limit=N, after=ID";
            return -1;
        }
    }
    return 0;
}

/* ID, or --all (with --dead for retry). */
static int parse_target(struct words *ws, struct control_request *r, bool all_ok, bool dead_ok,
                        const char **err)
{
    if (ws->n < 2) {
        *err =
            all_ok ? "this request needs a message id or --all" : "this request needs a message id";
        return -1;
    }
    if (all_ok && strcmp(ws->w[1], "--all") == 0) {
        r->all = true;
        for (size_t i = 2; i < ws->n; i++) {
            if (dead_ok && strcmp(ws->w[i], "--dead") == 0 && !r->dead) {
                r->dead = true;
            } else {
                *err = dead_ok ? "unexpected argument; retry --all takes only --dead"
                               : "unexpected argument after --all";
                return -1;
            }
        }
        return 0;
    }
    if (ws->n > 2) {
        *err = "unexpected argument after the message id";
        return -1;
    }
    if (spool_id_parse(ws->w[1], &r->id) < 0) {
        *err = "bad message id (expected 16 hex digits)";
        return -1;
    }
    return 0;
}

int control_request_parse(const char *line, size_t len, struct control_request *out,
                          const char **err)
{
    struct words ws;
    *out =
        (struct control_request){.state = CONTROL_STATE_ANY, .limit = CONTROL_LIST_DEFAULT_LIMIT};
    /* import takes a path, which may be longer than a word and hold spaces */
    if (len >= 6 && memcmp(line, "import", 6) == 0 && (len == 6 || line[6] == ' ')) {
        out->verb = CONTROL_IMPORT;
        size_t i = 6;
        while (i < len && line[i] == ' ')
            i++;
        if (i == len || line[i] != '/') {
            *err = "import needs an absolute path";
            return -1;
        }
        if (len - i > CONTROL_PATH_MAX) {
            *err = "path too long in request";
            return -1;
        }
        for (size_t k = i; k < len; k++)
            if ((unsigned char)line[k] < 0x20 || line[k] == 0x7f) {
                *err = "control characters in request";
                return -1;
            }
        out->path_off = i;
        out->path_len = len - i;
        return 0;
    }
    if (split(line, len, &ws, err) < 0)
        return -1;
    if (ws.n == 0) {
        *err = "empty request";
        return -1;
    }
    const char *v = ws.w[0];
    if (strcmp(v, "list") == 0) {
        out->verb = CONTROL_LIST;
        return parse_list(&ws, 1, out, err);
    }
    if (strcmp(v, "dead") == 0) {
        out->verb = CONTROL_LIST;
        int rc = parse_list(&ws, 1, out, err);
        if (rc == 0 && out->state != CONTROL_STATE_ANY && out->state != SPOOL_MSG_DEAD) {
            *err = "dead lists dead letters only";
            return -1;
        }
        out->state = SPOOL_MSG_DEAD;
        return rc;
    }
    if (strcmp(v, "flush") == 0 || strcmp(v, "stats") == 0) {
        out->verb = v[0] == 'f' ? CONTROL_FLUSH : CONTROL_STATS;
        if (ws.n > 1) {
            *err = "this request takes no arguments";
            return -1;
        }
        return 0;
    }
    static const struct {
        const char *name;
        enum control_verb verb;
        bool all_ok, dead_ok;
    } targeted[] = {{"show", CONTROL_SHOW, false, false},
                    {"retry", CONTROL_RETRY, true, true},
                    {"hold", CONTROL_HOLD, false, false},
                    {"release", CONTROL_RELEASE, true, false},
                    {"delete", CONTROL_DELETE, false, false}};
    for (size_t i = 0; i < sizeof targeted / sizeof targeted[0]; i++)
        if (strcmp(v, targeted[i].name) == 0) {
            out->verb = targeted[i].verb;
            return parse_target(&ws, out, targeted[i].all_ok, targeted[i].dead_ok, err);
        }
    *err = "unknown request; use list, show, retry, hold, release, delete, dead, flush, stats or "
           "import";
    return -1;
}
