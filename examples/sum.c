/*
 * The tutorial job in C: tasks 1 to 10, map adds one, reduce sums, and done
 * writes the total to the file `result` (65). Values are decimal text, as in
 * examples/sum.rs, so the two are interchangeable.
 *
 *   cc -shared -fPIC -O2 -I src/plugin -o sum_c.so examples/sum.c
 *   redmap run sum_c.so
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redmap_job.h"

#define TASKS 10

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

/* Parses decimal text; an empty buffer (the initial accumulator) is 0. */
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

static int32_t load_open(void **iter, redmap_buf *err) {
    long long *next = malloc(sizeof *next);
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
    if (*next > TASKS) {
        return REDMAP_END;
    }
    *out = number((*next)++);
    return REDMAP_OK;
}

static void load_close(void *iter) { free(iter); }

static int32_t map(const uint8_t *task, size_t len, redmap_buf *out) {
    long long n;
    if (!parse(task, len, &n)) {
        *out = text("task is not a number");
        return REDMAP_ERROR;
    }
    *out = number(n + 1);
    return REDMAP_OK;
}

static int32_t reduce(const uint8_t *acc, size_t acc_len, const uint8_t *cur, size_t cur_len,
                      redmap_buf *out) {
    long long a, c;
    if (!parse(acc, acc_len, &a) || !parse(cur, cur_len, &c)) {
        *out = text("value is not a number");
        return REDMAP_ERROR;
    }
    *out = number(a + c);
    return REDMAP_OK;
}

static int32_t done(const uint8_t *result, size_t len, redmap_buf *err) {
    FILE *f = fopen("result", "wb");
    if (!f || fwrite(result, 1, len, f) != len || fclose(f) != 0) {
        *err = text("cannot write the file result");
        return REDMAP_ERROR;
    }
    return REDMAP_OK;
}

static int32_t count(uint64_t *out) {
    *out = TASKS;
    return REDMAP_OK;
}

static void release(redmap_buf buf) { free(buf.ptr); }

static const redmap_job_entry_v1 ENTRY = {
    REDMAP_ABI_VERSION_1, sizeof(redmap_job_entry_v1), load_open, load_next, load_close, map, reduce,
    done, count, release,
};

const redmap_job_entry_v1 *redmap_job_entry(void) { return &ENTRY; }
