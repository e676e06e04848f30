/*
 * redmap_job.h - the C ABI of a redmap job library, version 3.
 *
 * A job library exports one function, redmap_job_entry, returning a pointer
 * to a static table of entry points. The host reads abi_version first and
 * refuses versions it does not speak, then checks struct_size and that every
 * required entry is non-null, before calling anything else.
 *
 * Memory: every redmap_buf the job returns is allocated by the job and
 * released by the host through the table's `free` entry. Input pointers
 * passed to the job are valid only during the call.
 *
 * Threads: map and reduce (and their version-3 forms, and map_batch) may be
 * called from many threads at once, also on one instance.
 * load_open, load_next and load_close are called from one thread at a time.
 * done is called once. count may be called at any time.
 *
 * See protocol.md, "Writing a job in C", for the full contract.
 */
#ifndef REDMAP_JOB_H
#define REDMAP_JOB_H

#include <stddef.h>
#include <stdint.h>

#define REDMAP_ABI_VERSION 3
/* What a byte-level job's table (redmap_job_entry_v1) says: version 1,
 * so hosts that speak only version 1 load it too. */
#define REDMAP_ABI_VERSION_1 1

/* redmap_job_entry_v3's kind. */
#define REDMAP_KIND_BYTES 0 /* the byte-level job: map, reduce, done */
#define REDMAP_KIND_KEYED 1 /* a keyed job: map_batch, the reducer, format */

/* Status codes returned by the entries. */
#define REDMAP_OK 0    /* success; an output buffer holds the value        */
#define REDMAP_ERROR 1 /* failure; the output buffer holds a UTF-8 message */
#define REDMAP_END 2   /* load_next: no more tasks; count: no estimate      */
#define REDMAP_PANIC 3 /* the job crashed in a recoverable way (a message)  */

typedef struct redmap_buf {
    uint8_t *ptr; /* may be NULL when len is 0 */
    size_t len;
} redmap_buf;

typedef struct redmap_job_entry_v1 {
    uint32_t abi_version; /* REDMAP_ABI_VERSION_1; always the first field */
    uint32_t struct_size; /* sizeof(redmap_job_entry_v1) */

    /* Starts loading: stores an iterator handle in *iter (may be NULL if the
     * job needs none). On REDMAP_ERROR, *err holds the message. */
    int32_t (*load_open)(void **iter, redmap_buf *err);
    /* Next task: REDMAP_OK with the task in *out, REDMAP_ERROR with a load
     * error in *out (loading goes on), or REDMAP_END. */
    int32_t (*load_next)(void *iter, redmap_buf *out);
    /* Releases the iterator handle. */
    void (*load_close)(void *iter);

    /* Maps one task: REDMAP_OK with the value in *out, or REDMAP_ERROR. */
    int32_t (*map)(const uint8_t *task, size_t len, redmap_buf *out);
    /* Folds cur into acc (acc starts empty; cur may be a partial
     * accumulator, so reduce must be associative). */
    int32_t (*reduce)(const uint8_t *acc, size_t acc_len, const uint8_t *cur, size_t cur_len,
                      redmap_buf *out);
    /* Receives the final accumulator once. */
    int32_t (*done)(const uint8_t *result, size_t len, redmap_buf *err);
    /* Optional (may be NULL): REDMAP_OK with an estimate of the number of
     * tasks in *out, or REDMAP_END for none. */
    int32_t (*count)(uint64_t *out);
    /* Releases a buffer this library returned. */
    void (*free)(redmap_buf buf);
} redmap_job_entry_v1;

/* Version 3: version 1's fields, then these. A table whose struct_size is
 * version 1's is a byte-level job whatever its abi_version; a size between
 * version 1's and version 3's is refused. A version-3 host calls only
 * load_next, load_close and free of version 1's fields (the others may be
 * NULL); every other call goes to an instance that instance_new built from
 * the job's arguments. */
typedef struct redmap_job_entry_v3 {
    uint32_t abi_version; /* REDMAP_ABI_VERSION */
    uint32_t struct_size; /* sizeof(redmap_job_entry_v3) */
    int32_t (*load_open)(void **iter, redmap_buf *err);
    int32_t (*load_next)(void *iter, redmap_buf *out);
    void (*load_close)(void *iter);
    int32_t (*map)(const uint8_t *task, size_t len, redmap_buf *out);
    int32_t (*reduce)(const uint8_t *acc, size_t acc_len, const uint8_t *cur, size_t cur_len,
                      redmap_buf *out);
    int32_t (*done)(const uint8_t *result, size_t len, redmap_buf *err);
    int32_t (*count)(uint64_t *out);
    void (*free)(redmap_buf buf);

    uint32_t kind;  /* REDMAP_KIND_BYTES or REDMAP_KIND_KEYED */
    uint32_t flags; /* 0 */
    /* Builds an instance from the job's arguments (u32 count, then u32
     * length and bytes each, big-endian): REDMAP_OK with it in *inst, or
     * REDMAP_ERROR with why in *err (shown to the user). */
    int32_t (*instance_new)(const uint8_t *args, size_t len, void **inst, redmap_buf *err);
    /* Frees an instance, after its last call. */
    void (*instance_drop)(void *inst);
    /* Version 1's load_open, count, map, reduce and done, on an instance;
     * map_v3 and reduce_v3 are NULL for a keyed job; done_v3 gets a keyed
     * job's output (one run of pairs, sorted by key). */
    int32_t (*load_open_v3)(void *inst, void **iter, redmap_buf *err);
    int32_t (*count_v3)(void *inst, uint64_t *out);
    int32_t (*map_v3)(void *inst, const uint8_t *task, size_t len, redmap_buf *out);
    int32_t (*reduce_v3)(void *inst, const uint8_t *acc, size_t acc_len, const uint8_t *cur,
                         size_t cur_len, redmap_buf *out);
    int32_t (*done_v3)(void *inst, const uint8_t *result, size_t len, redmap_buf *err);
    /* Keyed jobs (NULL for a byte-level one). Maps a task list (u32 count,
     * then u32 length and bytes each, big-endian) and combines its pairs:
     * REDMAP_OK with the mapped batch in *out (protocol.md, "Keyed jobs"). */
    int32_t (*map_batch)(void *inst, const uint8_t *tasks, size_t len, redmap_buf *out);
    /* A new reducer handle of the instance, or NULL on a crash. */
    void *(*reducer_new)(void *inst);
    /* Combines a run of pairs into the reducer. */
    int32_t (*reducer_add)(void *reducer, const uint8_t *run, size_t len, redmap_buf *err);
    /* The output, one run sorted by key, in *out; frees the reducer. */
    int32_t (*reducer_finish)(void *reducer, redmap_buf *out);
    /* Frees a reducer that is not finished. */
    void (*reducer_free)(void *reducer);
    /* The text of the whole pairs at the front of run (one key TAB value
     * line each) in *out, and the bytes they took in *used. */
    int32_t (*format)(void *inst, const uint8_t *run, size_t len, size_t *used, redmap_buf *out);
    /* Byte-level jobs, optional (NULL: the host calls map_v3 and reduce_v3
     * per task). Maps a task list and folds its values, the accumulator
     * within limit bytes (whose, UTF-8, names the limit for its errors):
     * REDMAP_OK with the folded batch in *out (protocol.md, "Batch calls"). */
    int32_t (*fold_batch)(void *inst, const uint8_t *tasks, size_t len, size_t limit,
                          const uint8_t *whose, size_t whose_len, redmap_buf *out);
    /* Optional (NULL: the host calls load_next per item). Up to max_tasks
     * items of load (fewer past max_bytes of tasks) in *out, each a u8 kind
     * (0 task, 1 load error, 2 panic: loading stops, 3 end), a big-endian
     * u32 length and the bytes; no end item means: call again. */
    int32_t (*load_batch)(void *iter, uint32_t max_tasks, size_t max_bytes, redmap_buf *out);
} redmap_job_entry_v3;

/* The one exported symbol (a redmap_job_entry_v3 for a version-3 job). */
const redmap_job_entry_v1 *redmap_job_entry(void);

#endif /* REDMAP_JOB_H */
