/*
 * redmap_job.h's version-3 table against the host's (issue 12): the layout
 * a C keyed job builds must be the one the loader reads. Compiled by the
 * plugin tests; it fails to compile if the header drifts.
 */
#include <stddef.h>

#include "redmap_job.h"

_Static_assert(offsetof(redmap_job_entry_v3, kind) == sizeof(redmap_job_entry_v1),
               "version 3 appends to version 1's fields");
_Static_assert(offsetof(redmap_job_entry_v3, free) == offsetof(redmap_job_entry_v1, free),
               "version 1's fields keep their places");
_Static_assert(sizeof(void *) != 8 || sizeof(redmap_job_entry_v1) == 72, "v1 is 72 bytes on 64-bit");
_Static_assert(sizeof(void *) != 8 || sizeof(redmap_job_entry_v3) == 200, "v3 is 200 bytes on 64-bit");
_Static_assert(sizeof(void *) != 8 || offsetof(redmap_job_entry_v3, instance_new) == 80,
               "instance_new right after kind and flags");
_Static_assert(offsetof(redmap_job_entry_v3, load_batch) + sizeof(void *) ==
                   sizeof(redmap_job_entry_v3),
               "load_batch is the last field");

/* A table that claims version 3 with a size between the two versions': a
 * loader must refuse it, not read `kind` from past its end. */
static const struct {
    uint32_t abi_version, struct_size;
    void *entries[11];
} HALF = {REDMAP_ABI_VERSION, 8 + 11 * sizeof(void *), {0}};

const redmap_job_entry_v1 *redmap_job_entry(void) {
    return (const redmap_job_entry_v1 *)&HALF;
}
