/*
 * A job in C against redmap_job.h's version-3 table (issue 12): tasks 1 to
 * 10, each multiplied by the job's one argument, summed; done writes the
 * total to `result` (55 x FACTOR). instance_new reads the arguments (u32
 * count, then u32 length and bytes each, big-endian) and refuses a missing
 * or non-numeric factor with a message for the user. Its table ends before
 * the optional batch calls (struct_size says so, as a table built before
 * they were appended would): the host calls it per task.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redmap_job.h"

typedef struct {
    long long factor;
} scaled;

static redmap_buf text(const char *s) {
    redmap_buf b;
    b.len = strlen(s);
    b.ptr = malloc(b.len ? b.len : 1);
    if (b.ptr) {
        memcpy(b.ptr, s, b.len);
    } else {
        b.len = 0;
    }
    return b;
}

static redmap_buf number(long long n) {
    char s[32];
    snprintf(s, sizeof s, "%lld", n);
    return text(s);
}

static int parse(const uint8_t *p, size_t len, long long *out) {
    char s[32];
    char *end;
    if (len == 0) {
        *out = 0;
        return 1;
    }
    if (len >= sizeof s) {
        return 0;
    }
    memcpy(s, p, len);
    s[len] = 0;
    *out = strtoll(s, &end, 10);
    return *end == 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int32_t instance_new(const uint8_t *args, size_t len, void **inst, redmap_buf *err) {
    scaled *job;
    long long factor;
    if (len < 8 || be32(args) != 1 || (size_t)be32(args + 4) != len - 8 ||
        !parse(args + 8, len - 8, &factor) || len == 8) {
        *err = text("usage: scaled.so -- FACTOR");
        return REDMAP_ERROR;
    }
    job = malloc(sizeof *job);
    if (!job) {
        *err = text("out of memory");
        return REDMAP_ERROR;
    }
    job->factor = factor;
    *inst = job;
    return REDMAP_OK;
}

static void instance_drop(void *inst) { free(inst); }

static int32_t load_open(void *inst, void **iter, redmap_buf *err) {
    long long *next = malloc(sizeof *next);
    (void)inst;
    if (!next) {
        *err = text("out of memory");
        return REDMAP_ERROR;
    }
    *next = 1;
    *iter = next;
    return REDMAP_OK;
}

static int32_t load_next(void *iter, redmap_buf *out) {
    long long *next = iter;
    if (*next > 10) {
        return REDMAP_END;
    }
    *out = number((*next)++);
    return REDMAP_OK;
}

static void load_close(void *iter) { free(iter); }

static int32_t map(void *inst, const uint8_t *task, size_t len, redmap_buf *out) {
    long long n;
    if (!parse(task, len, &n)) {
        *out = text("task is not a number");
        return REDMAP_ERROR;
    }
    *out = number(n * ((scaled *)inst)->factor);
    return REDMAP_OK;
}

static int32_t reduce(void *inst, const uint8_t *acc, size_t acc_len, const uint8_t *cur,
                      size_t cur_len, redmap_buf *out) {
    long long a, c;
    (void)inst;
    if (!parse(acc, acc_len, &a) || !parse(cur, cur_len, &c)) {
        *out = text("not a number");
        return REDMAP_ERROR;
    }
    *out = number(a + c);
    return REDMAP_OK;
}

static int32_t done(void *inst, const uint8_t *result, size_t len, redmap_buf *err) {
    FILE *f = fopen("result", "wb");
    (void)inst;
    if (!f || fwrite(result, 1, len, f) != len) {
        if (f) {
            fclose(f);
        }
        *err = text("cannot write result");
        return REDMAP_ERROR;
    }
    fclose(f);
    return REDMAP_OK;
}

static void release(redmap_buf buf) { free(buf.ptr); }

static const redmap_job_entry_v3 ENTRY = {
    REDMAP_ABI_VERSION,
    offsetof(redmap_job_entry_v3, fold_batch),
    NULL, load_next, load_close, NULL, NULL, NULL, NULL, release,
    REDMAP_KIND_BYTES,
    0,
    instance_new, instance_drop, load_open, NULL, map, reduce, done,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
};

const redmap_job_entry_v1 *redmap_job_entry(void) {
    return (const redmap_job_entry_v1 *)&ENTRY;
}
