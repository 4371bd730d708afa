/* Values of SLUICE_*_FILE variables: read once while the configuration loads,
 * with the checks a secret file gets. The read buffer is wiped, since these
 * files usually hold credentials. */
#include "core/env_file.h"

#include "core/secrets.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

long env_file_value(const char *buf, size_t len, char *err, size_t errlen)
{
    if (len && buf[len - 1] == '\n') {
        len--;
        if (len && buf[len - 1] == '\r')
            len--;
    }
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\0') {
            snprintf(err, errlen, "NUL byte in the file");
            return -1;
        }
        if (buf[i] == '\n' || buf[i] == '\r') {
            snprintf(err, errlen, "the value spans more than one line");
            return -1;
        }
    }
    return (long)len;
}

int env_file_read(const char *path, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!*path) {
        snprintf(err, errlen, "empty file name");
        return -1;
    }
    char why[1024];
    if (secret_file_check(path, "file", why, sizeof why) < 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size > ENV_FILE_MAX) {
        snprintf(err, errlen, "%s is larger than %d bytes", path, ENV_FILE_MAX);
        close(fd);
        return -1;
    }
    char *buf = malloc(ENV_FILE_MAX + 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        close(fd);
        return -1;
    }
    size_t len = 0;
    bool failed = false;
    for (;;) {
        ssize_t n = read(fd, buf + len, ENV_FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            failed = true;
            break;
        }
        len += (size_t)n;
        if (n == 0 || len > ENV_FILE_MAX)
            break;
    }
    close(fd);
    long vlen = -1;
    if (!failed && len > ENV_FILE_MAX)
        snprintf(err, errlen, "%s is larger than %d bytes", path, ENV_FILE_MAX);
    else if (!failed)
        vlen = env_file_value(buf, len, err, errlen);
    if (vlen >= 0) {
        *out = malloc((size_t)vlen + 1);
        if (*out) {
            memcpy(*out, buf, (size_t)vlen);
            (*out)[vlen] = '\0';
        } else {
            snprintf(err, errlen, "out of memory");
        }
    }
    explicit_bzero(buf, len);
    free(buf);
    return *out ? 0 : -1;
}
