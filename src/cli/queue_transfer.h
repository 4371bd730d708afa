/* `sluice queue export` and the local side of `sluice queue import`: moving
 * the spool of a stopped node to another (queue/transfer.h has the format). */
#ifndef SLUICE_CLI_QUEUE_TRANSFER_H
#define SLUICE_CLI_QUEUE_TRANSFER_H

#include <stdbool.h>
#include <stddef.h>

struct cli;
struct config;

/* Takes var_dir/sluice.lock, the lock `sluice serve` holds. Returns 0 with
 * *fd holding it (close it to let go), 1 when a daemon holds it, -1 with
 * err set. */
int queue_lock_var_dir(const char *var_dir, int *fd, char *err, size_t errlen);

/* Writes every message of the stopped node's spool to dest (a file, or a
 * folder to put sluice-queue-HOST-TIME.jsonl in), durably, then removes them
 * from the spool unless keep. Returns an exit status of cli.h. */
int cli_queue_export(const struct cli *cli, const char *dest, bool keep);

/* Imports path into cfg's spool while no daemon runs (the caller holds the
 * var_dir lock). Returns an exit status. */
int cli_queue_import_local(const struct cli *cli, const struct config *cfg, const char *path);

/* Renames an imported file to FILE.imported, so that importing FILE again
 * by mistake finds nothing (messages still queued would be skipped anyway,
 * delivered ones would not). Returns an exit status. */
int queue_mark_imported(const struct cli *cli, const char *path);

#endif
