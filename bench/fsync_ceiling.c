/* The machine's group-commit ceiling: appends fixed-size records to a file and
 * calls fdatasync() after every N records, the way a group-commit spool makes a
 * batch durable. Records per second at N = 1, 10, 100 bound what any durable
 * relay can accept on this disk. Usage: fsync_ceiling DIR [SECONDS] [N...] */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { RECORD_SIZE = 10240, MAX_RECORDS = 40000 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One measurement: bounded by `seconds` and by MAX_RECORDS (400 MB) so a fast
 * disk cannot fill the file system. Returns 0 or -1 with errno set. */
static int measure(const char *path, int batch, double seconds, long *records, long *syncs,
                   double *elapsed)
{
    static char rec[RECORD_SIZE];
    memset(rec, 'r', sizeof rec);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    *records = 0;
    *syncs = 0;
    double t0 = now_s(), t = t0;
    while (t - t0 < seconds && *records < MAX_RECORDS) {
        for (int i = 0; i < batch; i++) {
            if (write(fd, rec, sizeof rec) != (ssize_t)sizeof rec) {
                close(fd);
                return -1;
            }
        }
        if (fdatasync(fd) < 0) {
            close(fd);
            return -1;
        }
        *records += batch;
        (*syncs)++;
        t = now_s();
    }
    *elapsed = t - t0;
    close(fd);
    unlink(path);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [SECONDS] [N...]\n", argv[0]);
        return 2;
    }
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    if (seconds <= 0 || seconds > 30)
        seconds = 2.0;
    static const int default_batches[] = {1, 10, 100};
    int nb = argc > 3 ? argc - 3 : 3;
    char path[4096];
    snprintf(path, sizeof path, "%s/fsync-ceiling.dat", argv[1]);
    printf("[");
    for (int i = 0; i < nb; i++) {
        int batch = argc > 3 ? atoi(argv[3 + i]) : default_batches[i];
        if (batch < 1 || batch > 10000) {
            fprintf(stderr, "bad batch size %s\n", argv[3 + i]);
            return 2;
        }
        long records, syncs;
        double elapsed;
        if (measure(path, batch, seconds, &records, &syncs, &elapsed) < 0) {
            fprintf(stderr, "%s: %s\n", path, strerror(errno));
            unlink(path);
            return 1;
        }
        printf("%s{\"batch\": %d, \"records\": %ld, \"fdatasyncs\": %ld, \"seconds\": %.3f, "
               "\"records_per_s\": %.0f, \"fdatasyncs_per_s\": %.0f}",
               i ? ", " : "", batch, records, syncs, elapsed, (double)records / elapsed,
               (double)syncs / elapsed);
    }
    printf("]\n");
    return 0;
}
