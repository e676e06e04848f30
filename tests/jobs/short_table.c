/*
 * A job library whose entry table is shorter than version 1 says: only
 * abi_version and struct_size (8 bytes, struct_size = 8). The loader must
 * refuse it from those two fields alone, reading nothing past them.
 *
 * To show that it reads nothing more, the 8 bytes are placed at the very
 * end of a readable page whose next page is mapped PROT_NONE: a loader
 * that looked at the rest of a full-size table (or made a reference the
 * compiler could read through) would die of SIGSEGV instead of refusing.
 */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "redmap_job.h"

const redmap_job_entry_v1 *redmap_job_entry(void) {
    static const uint32_t short_table[2] = {REDMAP_ABI_VERSION, 8};
    static void *table;
    if (!table) {
        long page = sysconf(_SC_PAGESIZE);
        char *pages = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (pages == MAP_FAILED) {
            return NULL;
        }
        char *end = pages + page - sizeof short_table;
        memcpy(end, short_table, sizeof short_table);
        if (mprotect(pages + page, page, PROT_NONE) != 0) {
            return NULL;
        }
        table = end;
    }
    return (const redmap_job_entry_v1 *)table;
}
