/* Leaving root: `sluice serve` started as root opens its listeners, stores and
 * keys first, then becomes [server] user. Either way the process is made
 * non-dumpable and gets no core files, so its memory (keys, passwords in
 * flight) does not end up on disk or in another process of the same user. */
#ifndef SLUICE_CORE_PRIVDROP_H
#define SLUICE_CORE_PRIVDROP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct config;

struct privdrop {
    bool drop;      /* started as root and [server] user is not root */
    bool stay_root; /* started as root and [server] user = root */
    uid_t uid;
    gid_t gid;
    char user[256];
};

/* Decides, before anything is opened, whom the daemon becomes. Returns 0, or
 * -1 with err when started as root and [server] user does not exist. */
int privdrop_plan(const struct config *cfg, struct privdrop *pd, char *err, size_t errlen);

/* Once everything privileged is open: hands what Sluice keeps (see
 * docs/SECURITY.md) to the user, sets the supplementary groups, gid and uid,
 * checks that root cannot be regained, then sets RLIMIT_CORE to 0 and clears
 * the dumpable flag (after setuid, which would set it again). Returns 0 or -1
 * with err; the caller must not run on after -1. */
int privdrop_apply(const struct config *cfg, const struct privdrop *pd, char *err, size_t errlen);

/* For commands run as root next to a daemon that left root: gives path (made
 * by root just now) to the owner of the folder it is in when that is not
 * root, so the daemon can read it on SIGHUP. 0 when nothing was to do. */
int privdrop_give_like_folder(const char *path, char *err, size_t errlen);

#endif
