/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What both load generators, tmem-loadgen and blk-loadgen, share beside the
 * vhost-user socket (vumsg.h): exit codes, the clock, the PRNG and the memcpy
 * baseline (common.c). Each program supplies lg_die().
 */
#ifndef COMMON_H
#define COMMON_H

#include <stddef.h>
#include <stdint.h>

/* exit codes */
#define EXIT_MISMATCH 1 /* a check failed (data, status, len, rule) */
#define EXIT_ERROR 2    /* setup, socket, protocol or usage error */
#define EXIT_HANG 3     /* a request was not completed in time */

/* supplied by the program: util.c (tmem-loadgen), blk.c (blk-loadgen) */
void lg_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

uint64_t now_ns(void); /* CLOCK_MONOTONIC */
uint64_t mix64(uint64_t z);
uint64_t rng_next(uint64_t *s);
/* 4 KiB pages copied per second between two buffers of pages pages each (0.5 s, after one untimed pass) */
double memcpy_pages_per_sec(uint64_t pages);

#endif
