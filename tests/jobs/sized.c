/*
 * A C job for the field-fault tests, shaped at compile time with -D:
 *   TASKS     tasks 1..TASKS (default 10); map of task n gives "1", reduce
 *             adds, so the result counts the tasks mapped and folded
 *   FAIL_LEN  if set, every map fails with a message of this many bytes
 *   BIG_TASK, BIG_LEN
 *             task BIG_TASK's value is "1" padded with spaces to BIG_LEN bytes
 *   FAIL_TASK if set, this task's map fails with "I don't like N"
 *   BAD_VALUE_TASK
 *             if set, this task's value is "x", which reduce cannot fold
 *   BIG_INPUT_TASK, BIG_INPUT_LEN
 *             task BIG_INPUT_TASK's payload is its number padded with
 *             spaces to BIG_INPUT_LEN bytes
 *   SLOW_MS   if set, every map sleeps this many milliseconds first
 *   WIDE      if set, a value counting n tasks is padded to n * WIDE bytes,
 *             so a batch's folded value grows with the tasks in it
 *   PAD_BYTES if set, the library carries this many bytes of data (a large
 *             library, for what holding one costs)
 * done writes the result to the file `result`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "redmap_job.h"

#ifndef TASKS
#define TASKS 10
#endif
#ifndef WIDE
#define WIDE 0
#endif

#ifdef PAD_BYTES
/* Initialised, so the bytes are in the file; used, so they are kept. */
const volatile unsigned char redmap_test_pad[PAD_BYTES] = {1};
#endif

static redmap_buf sized(const char *s, size_t len) {
    redmap_buf b;
    b.len = len;
    b.ptr = malloc(len ? len : 1);
    if (b.ptr) {
        size_t n = strlen(s) < len ? strlen(s) : len;
        memset(b.ptr, ' ', len);
        memcpy(b.ptr, s, n);
    } else {
        b.len = 0;
    }
    return b;
}

static redmap_buf text(const char *s) { return sized(s, strlen(s)); }

static redmap_buf number(long long n) {
    char s[32];
    snprintf(s, sizeof s, "%lld", n);
    return text(s);
}

/* Decimal digits, then only spaces; empty (the initial accumulator) is 0. */
static int parse(const uint8_t *p, size_t len, long long *out) {
    size_t i = 0;
    *out = 0;
    for (; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
        *out = *out * 10 + (p[i] - '0');
    }
    for (; i < len; i++) {
        if (p[i] != ' ') {
            return 0;
        }
    }
    return 1;
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
#ifdef BIG_INPUT_TASK
    if (*next == BIG_INPUT_TASK) {
        char s[32];
        snprintf(s, sizeof s, "%lld", (*next)++);
        *out = sized(s, BIG_INPUT_LEN);
        return REDMAP_OK;
    }
#endif
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
#ifdef SLOW_MS
    usleep(SLOW_MS * 1000);
#endif
#ifdef FAIL_LEN
    *out = sized("this task failed with a very long message: ", FAIL_LEN);
    memset(out->ptr + 44, 'x', FAIL_LEN > 44 ? FAIL_LEN - 44 : 0);
    return REDMAP_ERROR;
#endif
#ifdef FAIL_TASK
    if (n == FAIL_TASK) {
        char s[64];
        snprintf(s, sizeof s, "I don't like %lld", n);
        *out = text(s);
        return REDMAP_ERROR;
    }
#endif
#ifdef BAD_VALUE_TASK
    if (n == BAD_VALUE_TASK) {
        *out = text("x");
        return REDMAP_OK;
    }
#endif
#ifdef BIG_TASK
    if (n == BIG_TASK) {
        *out = sized("1", BIG_LEN);
        return REDMAP_OK;
    }
#endif
    *out = WIDE ? sized("1", WIDE) : text("1");
    return REDMAP_OK;
}

static int32_t reduce(const uint8_t *acc, size_t acc_len, const uint8_t *cur, size_t cur_len,
                      redmap_buf *out) {
    long long a, c;
    if (!parse(acc, acc_len, &a) || !parse(cur, cur_len, &c)) {
        *out = text("value is not a number");
        return REDMAP_ERROR;
    }
    if (WIDE) {
        char s[32];
        snprintf(s, sizeof s, "%lld", a + c);
        *out = sized(s, (size_t)(a + c) * WIDE);
    } else {
        *out = number(a + c);
    }
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
