/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tmem-loadgen: a userspace vhost-user front-end (QEMU + guest driver in one
 * process, like DPDK's virtio-user) that drives tmemd through real split
 * virtqueues in memfd guest RAM. Shares no code with the daemon.
 */
#ifndef LG_H
#define LG_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <pthread.h>

#include "../../shared/tmem_abi.h"
#include "vumsg.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the tmem ABI is little-endian; this load generator writes host-order integers"
#endif

/* ---- split virtqueue layout (virtio 1.x, 2.7) ---- */
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY 1

struct lg_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct lg_desc) == 16, "desc");

struct lg_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[]; /* [num], then used_event */
};
struct lg_used_elem {
	uint32_t id;
	uint32_t len;
};
struct lg_used {
	uint16_t flags;
	uint16_t idx;
	struct lg_used_elem ring[]; /* [num], then avail_event (u16) */
};

/* ---- configuration (flags) ---- */
struct cfg {
	const char *mode;
	const char *socket;
	uint64_t ram;
	int queues;
	int depth;
	uint64_t ops;
	uint64_t seed;
	int json;
	int indirect;
	int event_idx;
	int shared;      /* negotiate TMEM_F_SHARED */
	int two_regions; /* SET_MEM_TABLE with two regions and a hole */
	int one_thread;  /* one thread drives all queues */
	int qsize;
	int timeout_ms;
	int objects;     /* verify: objects per pool per queue */
	int indexes;     /* verify: pages per object */
	uint64_t bench_pages;
	uint64_t lat_ops;
	int64_t maxmem_pages;     /* rules: expected persistent_limit_pages, -1 unknown */
	const char *shared_expect; /* rules: "denied" or "allowed" */
	int no_reply_ack;
	int unsealed;    /* guest RAM memfd without seals (QEMU seals it) */
	const char *noise; /* noisy: long | split | valid */
	int nap_us;      /* noisy: pause between refills */
	int rate;        /* paced: requests per second */
	int cpu_pid;     /* paced: the daemon's pid, whose CPU is measured */
	int verbose;
};
extern struct cfg G;

/* ---- guest RAM and device (struct region: vumsg.h) ---- */
struct slot {
	uint8_t *page;        /* 4096, page aligned */
	uint8_t *hdr;         /* 48 */
	uint8_t *aux;         /* 64: NEW_POOL / INFO payload */
	uint8_t *resp;        /* 16 */
	struct lg_desc *itab; /* indirect table, SLOT_ITAB entries */
	uint16_t head;        /* first direct descriptor owned by this slot */
	/* caller bookkeeping (verify/bench) */
	uint8_t op, kind, excl, pad;
	uint32_t h;
	uint32_t ver;
	uint32_t expect;
	uint64_t t0;
};
#define SLOT_ITAB 16
#define SLOT_DESCS 4

struct vq {
	int index;
	uint16_t num;
	struct lg_desc *desc;
	struct lg_avail *avail;
	struct lg_used *used;
	uint16_t avail_idx; /* next free avail index (shadow of avail->idx) */
	uint16_t last_used;
	uint16_t notify_old; /* avail idx at the last notification decision */
	int kickfd, callfd, errfd;
	uint64_t kicks;
	uint64_t completed;
	int nslots;
	struct slot *slots;
	uint16_t *fifo; /* slot numbers in submission order */
	uint16_t fifo_head, fifo_count;
	uint8_t *scratch; /* 64 KiB of RAM for hand-built chains */
	size_t scratch_size;
};

struct lgdev {
	int memfd;
	uint8_t *ram;
	uint64_t ram_size;
	int nreg;
	struct region reg[2];
	uint64_t brk;
	struct vu_conn vu;
	uint64_t dev_features;   /* offered */
	uint64_t proto_features; /* offered */
	uint64_t features;       /* acked */
	uint64_t proto;          /* acked */
	uint32_t queue_num;      /* GET_QUEUE_NUM, or 1 */
	int event_idx, indirect, shared;
	int nq;
	struct vq *vq;
};

/* util.c */
/* lg_die(), now_ns(), mix64(), rng_next(): common.h */
void lg_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t parse_size(const char *s, const char *what);
void fill_page(uint8_t *p, uint32_t pool, const uint64_t oid[3], uint32_t index, uint64_t ver);
/* returns -1 when equal, else the first differing 8-byte word */
int check_page(const uint8_t *p, uint32_t pool, const uint64_t oid[3], uint32_t index, uint64_t ver);
void json_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* vu.c: the device (handshake over vumsg.c) and the guest side of the rings */
void dev_open(struct lgdev *d, int nq);
void dev_close(struct lgdev *d);
void *ram_alloc(struct lgdev *d, size_t size, size_t align);
uint64_t gpa_of(const struct lgdev *d, const void *p);
uint64_t gpa_end(const struct lgdev *d); /* first gpa after the last region */
int gpa_hole(const struct lgdev *d, uint64_t *start); /* 1 with the hole's start if two regions */

struct seg {
	uint64_t gpa;
	uint32_t len;
	uint16_t write;
};
/* Post a chain made of segs (direct at descriptor `first`, or through itab). */
void vq_post_chain(struct lgdev *d, struct vq *q, uint16_t first, struct lg_desc *itab, const struct seg *segs, int n);
/* Publish a prepared head in the avail ring (release). */
void vq_publish(struct vq *q, uint16_t head);
/* Kick if the device wants it (NO_NOTIFY / avail_event). */
void vq_notify(struct lgdev *d, struct vq *q);
/* One used element if any (acquire). */
int vq_poll(struct vq *q, uint32_t *id, uint32_t *len);
/* Waits up to timeout_ms for one used element; dies with EXIT_HANG otherwise. */
void vq_wait(struct lgdev *d, struct vq *q, uint32_t *id, uint32_t *len, const char *what);
void vq_update_used_event(struct lgdev *d, struct vq *q);
void cpu_relax(void);

/* Synchronous request helpers (depth 1, slot 0 of the queue). */
struct res {
	uint32_t len;
	int32_t status;
	uint32_t reserved;
	uint64_t value;
};
struct res req_sync(struct lgdev *d, int qi, uint32_t op, uint32_t flags, uint32_t pool, const uint64_t oid[3], uint32_t index,
		    const void *rd, uint32_t rd_len, void *wr, uint32_t wr_len);
/* A hand-made chain on queue qi: segs are device segments, resp points into RAM (may be NULL). */
struct res chain_sync(struct lgdev *d, int qi, const struct seg *segs, int n, int use_indirect, const uint8_t *resp);
/* The raw form: the caller already wrote descriptors; publish head and wait. */
uint32_t raw_sync(struct lgdev *d, int qi, uint16_t head, const char *what);

void put_hdr(uint8_t *dst, uint32_t op, uint32_t flags, uint32_t pool, const uint64_t oid[3], uint32_t index, uint64_t tag);

/* modes */
int mode_verify(void);
int mode_rules(void);
int mode_malformed(void);
int mode_bench(void);
int mode_latency(void);
int mode_noisy(void);
int mode_paced(void);

#endif
