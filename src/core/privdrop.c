/* Leaving root after start-up (privdrop.h). What Sluice keeps and made as root
 * is handed to the user first so that it can go on writing its stores and
 * re-read its keys on SIGHUP: the stores wherever they are, the rest only
 * inside var_dir, and only entries root owns, never through a symlink. */
#include "core/privdrop.h"

#include "core/config.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Folders deeper than this under a store are not Sluice's making. */
#define CHOWN_MAX_DEPTH 8

int privdrop_plan(const struct config *cfg, struct privdrop *pd, char *err, size_t errlen)
{
    memset(pd, 0, sizeof *pd);
    if (geteuid() != 0)
        return 0;
    const char *name = cfg->server_user && *cfg->server_user ? cfg->server_user : "sluice";
    errno = 0;
    struct passwd *pw = getpwnam(name);
    if (!pw) {
        /* "not found" comes back as 0 or one of these, depending on the NSS module */
        if (errno && errno != ENOENT && errno != ESRCH && errno != EBADF && errno != EPERM) {
            snprintf(err, errlen, "[server] user = %s: cannot look the user up: %s", name,
                     strerror(errno));
            return -1;
        }
        snprintf(err, errlen,
                 "[server] user = %s: no such user on this system; create it (scripts/deps.sh "
                 "makes the 'sluice' system user), name another one, or set user = root to keep "
                 "running as root",
                 name);
        return -1;
    }
    snprintf(pd->user, sizeof pd->user, "%s", pw->pw_name);
    pd->uid = pw->pw_uid;
    pd->gid = pw->pw_gid;
    if (pw->pw_uid == 0)
        pd->stay_root = true;
    else
        pd->drop = true;
    return 0;
}

static bool under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return path && *path && strncmp(path, dir, n) == 0 && path[n] == '/';
}

/* Gives path (and, for a folder, what it holds down to depth levels) to
 * uid:gid where root owns it. Symlinks are neither followed nor changed. */
static int chown_tree(int dirfd, const char *name, uid_t uid, gid_t gid, int depth, char *err,
                      size_t errlen)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", name, strerror(errno)), -1);
    if (S_ISLNK(st.st_mode))
        return 0;
    if (st.st_uid == 0 && fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
        snprintf(err, errlen, "cannot hand %s to uid %u: %s", name, (unsigned)uid, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode) || depth == 0)
        return 0;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        snprintf(err, errlen, "%s: %s", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            rc = chown_tree(fd, de->d_name, uid, gid, depth - 1, err, errlen);
    closedir(d);
    return rc;
}

static int give(const char *path, const struct privdrop *pd, int depth, char *err, size_t errlen)
{
    if (!path || !*path)
        return 0;
    return chown_tree(AT_FDCWD, path, pd->uid, pd->gid, depth, err, errlen);
}

/* A file Sluice reads again on SIGHUP: handed over with its folder, inside
 * var_dir only (a key under /etc stays as the administrator set it). */
static int give_in_var(const struct config *cfg, const char *path, const struct privdrop *pd,
                       char *err, size_t errlen)
{
    if (!under(path, cfg->var_dir))
        return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if (strcmp(dir, cfg->var_dir) != 0 && give(dir, pd, 0, err, errlen) < 0)
            return -1;
    }
    return give(path, pd, 0, err, errlen);
}

static int give_state(const struct config *cfg, const struct privdrop *pd, char *err, size_t errlen)
{
    /* the stores it writes, wherever they are */
    char p[4096];
    const char *db_suffixes[] = {"", "-wal", "-shm", "-journal"};
    if (give(cfg->var_dir, pd, 0, err, errlen) < 0 ||
        give(cfg->spool_dir, pd, CHOWN_MAX_DEPTH, err, errlen) < 0 ||
        give(cfg->capture_dir, pd, CHOWN_MAX_DEPTH, err, errlen) < 0 ||
        give(cfg->control_socket, pd, 0, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < sizeof db_suffixes / sizeof db_suffixes[0]; i++) {
        snprintf(p, sizeof p, "%s%s", cfg->creds_db, db_suffixes[i]);
        if (give(p, pd, 0, err, errlen) < 0)
            return -1;
    }
    if (cfg->audit_file && *cfg->audit_file) {
        snprintf(p, sizeof p, "%s.1", cfg->audit_file);
        if (give(cfg->audit_file, pd, 0, err, errlen) < 0 || give(p, pd, 0, err, errlen) < 0)
            return -1;
    }
    snprintf(p, sizeof p, "%s/webhooks", cfg->var_dir);
    if (give(p, pd, CHOWN_MAX_DEPTH, err, errlen) < 0)
        return -1;
    /* what it reads again, inside var_dir */
    if (under(cfg->dkim_key_dir, cfg->var_dir) && give(cfg->dkim_key_dir, pd, 1, err, errlen) < 0)
        return -1;
    const char *files[] = {cfg->tls_key,
                           cfg->tls_cert,
                           cfg->users_file,
                           cfg->scram_secret_file,
                           cfg->log_privacy_key_file,
                           cfg->log_file,
                           cfg->audit_key_file,
                           cfg->webhook_secret_file};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (give_in_var(cfg, files[i], pd, err, errlen) < 0)
            return -1;
    return 0;
}

static int become(const struct privdrop *pd, char *err, size_t errlen)
{
    if (initgroups(pd->user, pd->gid) < 0) {
        snprintf(err, errlen, "initgroups(%s): %s", pd->user, strerror(errno));
        return -1;
    }
    if (setgid(pd->gid) < 0) {
        snprintf(err, errlen, "setgid(%u): %s", (unsigned)pd->gid, strerror(errno));
        return -1;
    }
    if (setuid(pd->uid) < 0) {
        snprintf(err, errlen, "setuid(%u): %s", (unsigned)pd->uid, strerror(errno));
        return -1;
    }
    if (getuid() != pd->uid || geteuid() != pd->uid || getgid() != pd->gid ||
        getegid() != pd->gid) {
        snprintf(err, errlen, "still uid %u/%u gid %u/%u after dropping to %s", (unsigned)getuid(),
                 (unsigned)geteuid(), (unsigned)getgid(), (unsigned)getegid(), pd->user);
        return -1;
    }
    /* a saved set-user-ID of 0 would let this succeed */
    if (setuid(0) == 0 || setgid(0) == 0) {
        snprintf(err, errlen, "root could be regained after dropping to %s", pd->user);
        return -1;
    }
    return 0;
}

static int harden(char *err, size_t errlen)
{
    struct rlimit no_core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &no_core) < 0) {
        snprintf(err, errlen, "setrlimit(RLIMIT_CORE, 0): %s", strerror(errno));
        return -1;
    }
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        snprintf(err, errlen, "prctl(PR_SET_DUMPABLE, 0): %s", strerror(errno));
        return -1;
    }
    return 0;
}

int privdrop_give_like_folder(const char *path, char *err, size_t errlen)
{
    if (geteuid() != 0 || !path || !*path)
        return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    struct stat folder, st;
    if (stat(dir, &folder) < 0 || lstat(path, &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (folder.st_uid == 0 || st.st_uid != 0 || S_ISLNK(st.st_mode))
        return 0;
    if (lchown(path, folder.st_uid, folder.st_gid) < 0) {
        snprintf(err, errlen, "cannot give %s to the owner of %s: %s", path, dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* After the drop: the folders written later must be reachable by path, which
 * a 0700 parent folder owned by root would prevent. */
static int check_reach(const struct config *cfg, const struct privdrop *pd, char *err,
                       size_t errlen)
{
    const char *dirs[] = {cfg->var_dir, cfg->spool_dir, cfg->capture_dir};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        struct stat st;
        if (!dirs[i] || !*dirs[i] || (stat(dirs[i], &st) < 0 && errno == ENOENT))
            continue;
        if (access(dirs[i], R_OK | W_OK | X_OK) < 0) {
            snprintf(err, errlen,
                     "user %s cannot use %s: %s (every parent folder must let it pass, e.g. "
                     "chmod o+x)",
                     pd->user, dirs[i], strerror(errno));
            return -1;
        }
    }
    return 0;
}

int privdrop_apply(const struct config *cfg, const struct privdrop *pd, char *err, size_t errlen)
{
    if (pd->drop && (give_state(cfg, pd, err, errlen) < 0 || become(pd, err, errlen) < 0 ||
                     check_reach(cfg, pd, err, errlen) < 0))
        return -1;
    if (harden(err, errlen) < 0)
        return -1;
    if (pd->stay_root)
        log_event(LOG_WARN, "server.running_as_root", "reason", "%s",
                  "[server] user names root; a flaw in Sluice would be a flaw of root", NULL);
    else if (pd->drop)
        log_event(LOG_INFO, "server.privileges_dropped", "user", "%s", pd->user, "uid", "#%u",
                  (unsigned)pd->uid, "gid", "#%u", (unsigned)pd->gid, NULL);
    return 0;
}
