/* The control protocol's request line, parsed without I/O: one verb and its
 * arguments, words separated by spaces. The daemon's control socket and the
 * `sluice queue` CLI agree on this grammar (docs/DELIVERY.md). */
#ifndef SLUICE_QUEUE_CONTROL_REQUEST_H
#define SLUICE_QUEUE_CONTROL_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum control_verb {
    CONTROL_LIST, /* list [active|held|dead|all] [limit=N] [after=ID]; "dead" = list dead */
    CONTROL_SHOW,
    CONTROL_RETRY, /* retry ID | retry --all [--dead] */
    CONTROL_HOLD,
    CONTROL_RELEASE, /* release ID | release --all */
    CONTROL_DELETE,
    CONTROL_FLUSH,
    CONTROL_STATS,
    CONTROL_IMPORT, /* import /ABSOLUTE/PATH: messages of a `sluice queue export` file */
};

/* Longest path an import request may name. */
#define CONTROL_PATH_MAX 4000

/* Messages per page when a list request names no limit. */
#define CONTROL_LIST_DEFAULT_LIMIT 1000u

#define CONTROL_STATE_ANY (-1)

struct control_request {
    enum control_verb verb;
    int state;                 /* list: CONTROL_STATE_ANY or an enum spool_msg_state */
    uint32_t limit;            /* list: messages at most; 0 streams every match */
    uint64_t after;            /* list: only ids strictly greater (the cursor); 0 from the start */
    uint64_t id;               /* show, retry, hold, release, delete (unless all) */
    bool all;                  /* retry --all, release --all */
    bool dead;                 /* retry --all --dead: dead letters too */
    size_t path_off, path_len; /* import: the path, as bytes of the request line */
};

/* Parses one request line of len bytes (no line terminator). Returns 0, or
 * -1 with *err set to a static message for the operator. */
int control_request_parse(const char *line, size_t len, struct control_request *out,
                          const char **err);

#endif
