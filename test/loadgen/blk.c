// SPDX-License-Identifier: GPL-2.0
/*
 * blk-loadgen: a userspace vhost-user front-end for a vhost-user-blk backend
 * (what QEMU's vhost-user-blk-pci and the guest's virtio_blk do together), in
 * one process: memfd guest RAM, split virtqueues, one thread per queue. It
 * drives tmemd's tmem-blk socket or qemu-storage-daemon's vhost-user-blk
 * export with 4 KiB random reads and writes at a given depth per queue and
 * verifies every read against what it wrote. Shares no code with the daemon;
 * the vhost-user messages are vumsg.c, shared with tmem-loadgen.
 *
 *   blk-loadgen --socket PATH [--queues N] [--depth D] [--seconds S]
 *               [--read-pct P] [--span-mib M] [--qsize Q] [--seed S]
 *               [--max-pages N] [--one-seg] [--indirect] [--event-idx] [--poll]
 *               [--timeout-ms T] [--json] [--memcpy]
 *
 * Phases: handshake (as QEMU: features, protocol features CONFIG and MQ,
 * GET_CONFIG for capacity, blk_size and num_queues, memory table, rings);
 * prefill (every block of the span written once, not timed, so that every
 * later read has a known content and reads data the backend holds); the
 * timed phase (each request a random block of the queue's own share of the
 * span: a read with probability P percent, else a write of a new version;
 * never two requests on one block at once); a final read-back of every block.
 * With --max-pages N a request covers 1 to N consecutive blocks (random), one
 * data descriptor per 4 KiB page (--one-seg: one descriptor for the whole
 * request, as the guest's block layer sends physically contiguous pages).
 * --indirect puts each chain in an indirect table, --event-idx negotiates
 * VIRTIO_RING_F_EVENT_IDX (kicks by avail_event, calls asked by used_event),
 * as Linux's virtio_blk does when the device offers them.
 * Completions are waited for on the call eventfd (interrupts, as a guest
 * does) or, with --poll, by spinning on the used ring.
 *
 * Output: one line of JSON with --json (requests/s, p50/p99/p99.9 latency in
 * microseconds, reads, writes, mismatches), else text. --memcpy adds the
 * same-run memcpy baseline (4 KiB pages/s between two buffers as large as the
 * span). Exit 0 when every read matched and every status was OK; 1 on a
 * mismatch or an error status; 2 on setup/protocol errors; 3 on a hang.
 */
#define _GNU_SOURCE
#include "vumsg.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096u
#define SECTORS_PER_BLK (BLK / 512u)

#define F_VERSION_1 32

/* virtio-blk (VIRTIO 1.2, 5.2) */
#define BLK_F_SIZE_MAX 1
#define BLK_F_SEG_MAX 2
#define BLK_F_BLK_SIZE 6
#define BLK_F_FLUSH 9
#define BLK_F_MQ 12
#define BLK_F_DISCARD 13
#define BLK_F_WRITE_ZEROES 14
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_DISCARD 11
#define BLK_S_OK 0

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define DESC_F_INDIRECT 4
#define RING_F_INDIRECT_DESC 28
#define RING_F_EVENT_IDX 29

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

/* one request in flight: its own descriptors (header, one per page, status), header, data and status */
struct slot {
	struct blk_hdr *hdr;
	uint8_t *data;   /* max_pages x 4 KiB */
	uint8_t *status;
	uint32_t *vers;  /* per block of the request: the version written or expected */
	struct desc *itab; /* --indirect: the chain's table (max_pages + 2 entries) */
	uint64_t block;  /* the first block */
	uint64_t t0;
	uint32_t nblocks;
	uint8_t write;
	uint8_t busy;
};

struct queue {
	int index;
	uint16_t num;
	struct desc *desc;
	uint16_t *avail; /* flags, idx, ring[num], used_event */
	uint8_t *used;   /* flags, idx, {id, len}[num], avail_event */
	uint16_t avail_idx, last_used, kicked_idx;
	int kickfd, callfd;
	struct slot *slots;
	uint16_t *free_slots;
	int nfree;
	uint64_t rng;
	/* the timed phase */
	uint64_t *lat;
	uint64_t nlat, cap_lat;
	uint64_t reads, writes, pages, mismatches, bad_status, kicks, waits;
	int phase; /* 0 prefill, 1 timed, 2 final read */
	pthread_t thread;
};

static struct {
	const char *socket;
	int queues, depth, seconds, read_pct, qsize, poll, timeout_ms, json, memcpy_base, max_pages, one_seg, indirect, event_idx, discard_first;
	int two_regions;
	uint64_t span_mib, seed;
} opt = { .max_pages = 1, .queues = 2, .depth = 32, .seconds = 3, .read_pct = 50, .qsize = 256, .timeout_ms = 20000, .span_mib = 256, .seed = 1 };

static struct vu_conn vu = { .sock = -1, .peer = "the backend" };
static int memfd = -1;
static uint8_t *ram;
static uint64_t ram_size, brk_off, span_blocks, capacity_sectors;
static uint32_t *version; /* per block: the version last written (0 = none) */
static struct queue *qs;
static uint64_t features, proto;
static uint32_t blk_size_cfg;
static uint16_t num_queues_cfg;
static uint32_t max_discard_sectors;
static volatile int phase_stop;

/* descriptors per slot: header, one per page, status */
#define SLOT_DESCS ((unsigned int)opt.max_pages + 2u)

void lg_die(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("blk-loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(code);
}

/* the content of a block at a version: 512 words from (seed, block, version) */
static void fill_block(uint8_t *p, uint64_t block, uint32_t ver)
{
	uint64_t *w = (uint64_t *)(void *)p;
	uint64_t base = mix64(opt.seed ^ (block << 20) ^ ((uint64_t)ver << 52));

	for (unsigned int i = 0; i < BLK / 8; i++)
		w[i] = base + i * 0x9e3779b97f4a7c15ull;
	w[0] = block;
	w[1] = ver;
}

static int check_block(const uint8_t *p, uint64_t block, uint32_t ver)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	uint64_t base = mix64(opt.seed ^ (block << 20) ^ ((uint64_t)ver << 52));

	if (w[0] != block || w[1] != ver)
		return 0;
	for (unsigned int i = 2; i < BLK / 8; i++)
		if (w[i] != base + i * 0x9e3779b97f4a7c15ull)
			return 0;
	return 1;
}

static void *ram_alloc(size_t size, size_t align)
{
	uint64_t off = (brk_off + align - 1) & ~(uint64_t)(align - 1);

	if (off + size > ram_size)
		lg_die(EXIT_ERROR, "internal: guest RAM exhausted");
	brk_off = off + size;
	return ram + off;
}

/* guest-physical address = offset in the one region (gpa 0) */
static uint64_t gpa(const void *p)
{
	return (uint64_t)((const uint8_t *)p - ram);
}

/* ---------------- handshake ---------------- */

static void handshake(void)
{
	uint64_t want, offered;
	uint32_t cfg[3 + 15];
	uint8_t *c;
	struct region reg[2];

	vu.timeout_ms = opt.timeout_ms;
	vu_connect(&vu, opt.socket);
	offered = vu_get_u64(&vu, VU_GET_FEATURES);
	if (!(offered & (1ull << F_VERSION_1)) || !(offered & (1ull << VU_F_PROTOCOL_FEATURES)))
		lg_die(EXIT_ERROR, "the backend offers features 0x%llx without VERSION_1 or PROTOCOL_FEATURES", (unsigned long long)offered);
	proto = vu_get_u64(&vu, VU_GET_PROTOCOL_FEATURES);
	if (!(proto & (1ull << VU_PROTO_CONFIG)))
		lg_die(EXIT_ERROR, "the backend offers no CONFIG protocol feature (0x%llx): QEMU's vhost-user-blk needs it", (unsigned long long)proto);
	proto &= (1ull << VU_PROTO_MQ) | (1ull << VU_PROTO_CONFIG);
	vu_set_u64(&vu, VU_SET_PROTOCOL_FEATURES, proto, NULL, 0);
	if (proto & (1ull << VU_PROTO_MQ)) {
		uint64_t n = vu_get_u64(&vu, VU_GET_QUEUE_NUM);

		if (n < (uint64_t)opt.queues)
			lg_die(EXIT_ERROR, "the backend has %llu queues, --queues %d asked", (unsigned long long)n, opt.queues);
	} else if (opt.queues > 1) {
		lg_die(EXIT_ERROR, "the backend offers no MQ protocol feature: --queues 1 only");
	}
	vu_set(&vu, VU_SET_OWNER, NULL, 0, NULL, 0);

	/* config space: the whole virtio_blk_config (60 bytes) */
	memset(cfg, 0, sizeof(cfg));
	cfg[0] = 0;  /* offset */
	cfg[1] = 60; /* size */
	cfg[2] = 0;  /* flags */
	vu_send(&vu, VU_GET_CONFIG, 0, cfg, 12 + 60, NULL, 0);
	vu_recv(&vu, VU_GET_CONFIG, cfg, 12 + 60);
	c = (uint8_t *)&cfg[3];
	memcpy(&capacity_sectors, c + 0, 8);
	memcpy(&blk_size_cfg, c + 20, 4);
	memcpy(&num_queues_cfg, c + 34, 2);
	memcpy(&max_discard_sectors, c + 36, 4);

	want = (1ull << F_VERSION_1) | (1ull << VU_F_PROTOCOL_FEATURES) | (1ull << BLK_F_BLK_SIZE) |
	       (1ull << BLK_F_SEG_MAX) | (1ull << BLK_F_SIZE_MAX) | (1ull << BLK_F_FLUSH) |
	       (1ull << BLK_F_DISCARD) | (1ull << BLK_F_WRITE_ZEROES);
	if (opt.indirect) {
		if (!(offered & (1ull << RING_F_INDIRECT_DESC)))
			lg_die(EXIT_ERROR, "--indirect: the backend does not offer VIRTIO_RING_F_INDIRECT_DESC");
		want |= 1ull << RING_F_INDIRECT_DESC;
	}
	if (opt.event_idx) {
		if (!(offered & (1ull << RING_F_EVENT_IDX)))
			lg_die(EXIT_ERROR, "--event-idx: the backend does not offer VIRTIO_RING_F_EVENT_IDX");
		want |= 1ull << RING_F_EVENT_IDX;
	}
	if (opt.queues > 1)
		want |= 1ull << BLK_F_MQ;
	if (opt.queues > 1 && !(offered & (1ull << BLK_F_MQ)))
		lg_die(EXIT_ERROR, "the backend does not offer VIRTIO_BLK_F_MQ: --queues 1 only");
	features = offered & want;
	if (!(features & (1ull << BLK_F_MQ)))
		num_queues_cfg = 1;
	if ((int)num_queues_cfg < opt.queues)
		lg_die(EXIT_ERROR, "the device has num_queues %u, --queues %d asked", num_queues_cfg, opt.queues);
	if (capacity_sectors < SECTORS_PER_BLK)
		lg_die(EXIT_ERROR, "the device's capacity is %llu sectors", (unsigned long long)capacity_sectors);
	span_blocks = opt.span_mib * (1024 * 1024 / BLK);
	if (span_blocks > capacity_sectors / SECTORS_PER_BLK)
		span_blocks = capacity_sectors / SECTORS_PER_BLK;
	if (span_blocks < (uint64_t)opt.queues * (uint64_t)opt.depth * (uint64_t)opt.max_pages * 2)
		lg_die(EXIT_ERROR, "span of %llu blocks is too small for %d queues of depth %d", (unsigned long long)span_blocks, opt.queues, opt.depth);
	vu_set_u64(&vu, VU_SET_FEATURES, features, NULL, 0);

	reg[0] = (struct region){ .gpa = 0, .size = ram_size, .off = 0 };
	if (opt.two_regions) {
		/*
		 * as QEMU's table of a PC guest: [0, 640K) and [768K, end) of one
		 * memfd (the VGA hole left out); guest-physical = memfd offset, and
		 * every buffer lies above 768K (ram_alloc starts there)
		 */
		reg[0].size = 0xa0000;
		reg[1] = (struct region){ .gpa = 0xc0000, .size = ram_size - 0xc0000, .off = 0xc0000 };
	}
	vu_set_mem_table(&vu, memfd, ram, reg, opt.two_regions ? 2 : 1);
}

static void setup_queue(struct queue *q)
{
	uint16_t n = (uint16_t)opt.qsize;

	q->num = n;
	q->desc = ram_alloc(16u * n, 4096);
	q->avail = ram_alloc(6u + 2u * n, 4096);
	q->used = ram_alloc(6u + 8u * n, 4096);
	q->kickfd = vu_eventfd();
	q->callfd = vu_eventfd();
	/* ring addresses are front-end virtual addresses (translated through uaddr) */
	vu_set_vring(&vu, q->index, n, q->desc, q->avail, q->used, q->kickfd, q->callfd);

	q->slots = calloc((size_t)opt.depth, sizeof(*q->slots));
	q->free_slots = calloc((size_t)opt.depth, sizeof(*q->free_slots));
	if (!q->slots || !q->free_slots)
		lg_die(EXIT_ERROR, "out of memory");
	for (int i = 0; i < opt.depth; i++) {
		struct slot *s = &q->slots[i];

		s->data = ram_alloc((size_t)BLK * (size_t)opt.max_pages, BLK);
		s->hdr = ram_alloc(sizeof(*s->hdr), 16);
		s->status = ram_alloc(1, 1);
		s->vers = calloc((size_t)opt.max_pages, sizeof(*s->vers));
		if (opt.indirect)
			s->itab = ram_alloc(sizeof(struct desc) * (opt.max_pages + 2u), 16);
		if (!s->vers)
			lg_die(EXIT_ERROR, "out of memory");
		q->free_slots[q->nfree++] = (uint16_t)i;
		/* the chain is written at submit: its length depends on the request */
	}
	q->rng = opt.seed * 1000003u + (uint64_t)q->index;
}

/* ---------------- requests ---------------- */

static void submit(struct queue *q, int si, uint64_t block, uint32_t n, int write)
{
	struct slot *s = &q->slots[si];
	uint16_t head = (uint16_t)(SLOT_DESCS * (unsigned int)si);
	struct desc *d = &q->desc[head];
	uint16_t link = head; /* "next" indexes: ring positions, or table positions (indirect) */

	s->block = block;
	s->nblocks = n;
	s->write = (uint8_t)write;
	s->hdr->type = write ? BLK_T_OUT : BLK_T_IN;
	s->hdr->reserved = 0;
	s->hdr->sector = block * SECTORS_PER_BLK;
	*s->status = 0xff;
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *p = s->data + (size_t)i * BLK;

		if (write) {
			s->vers[i] = version[block + i] + 1;
			fill_block(p, block + i, s->vers[i]);
		} else {
			s->vers[i] = version[block + i];
			memset(p, 0xa5, 64); /* a stale buffer must not pass the check */
		}
	}
	/* header, one descriptor per page (--one-seg: one for the whole request), status */
	uint32_t nd = opt.one_seg ? 1 : n;

	if (opt.indirect) {
		/* the ring holds one descriptor pointing at the slot's table */
		q->desc[head].addr = gpa(s->itab);
		q->desc[head].len = (uint32_t)sizeof(struct desc) * (nd + 2);
		q->desc[head].flags = DESC_F_INDIRECT;
		q->desc[head].next = 0;
		d = s->itab;
		link = 0;
	}
	d[0].addr = gpa(s->hdr);
	d[0].len = sizeof(*s->hdr);
	d[0].flags = DESC_F_NEXT;
	d[0].next = (uint16_t)(link + 1);
	for (uint32_t i = 0; i < nd; i++) {
		d[1 + i].addr = gpa(s->data + (size_t)i * BLK);
		d[1 + i].len = opt.one_seg ? n * BLK : BLK;
		d[1 + i].flags = (uint16_t)(DESC_F_NEXT | (write ? 0 : DESC_F_WRITE));
		d[1 + i].next = (uint16_t)(link + 2 + i);
	}
	d[1 + nd].addr = gpa(s->status);
	d[1 + nd].len = 1;
	d[1 + nd].flags = DESC_F_WRITE;
	d[1 + nd].next = 0;
	s->busy = 1;
	s->t0 = now_ns();
	q->avail[2 + q->avail_idx % q->num] = head;
	q->avail_idx++;
	__atomic_store_n(&q->avail[1], q->avail_idx, __ATOMIC_RELEASE);
}

static void kick(struct queue *q)
{
	uint64_t one = 1;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (opt.event_idx) {
		/* vring_need_event(avail_event, new, old) */
		uint16_t ev = __atomic_load_n((uint16_t *)(void *)(q->used + 4 + 8u * q->num), __ATOMIC_ACQUIRE);
		uint16_t nw = q->avail_idx, old = q->kicked_idx;

		q->kicked_idx = nw;
		if (!((uint16_t)(nw - ev - 1) < (uint16_t)(nw - old)))
			return;
	} else if (__atomic_load_n((uint16_t *)(void *)q->used, __ATOMIC_ACQUIRE) & 1) { /* VRING_USED_F_NO_NOTIFY */
		return;
	}
	if (write(q->kickfd, &one, 8) != 8)
		lg_die(EXIT_ERROR, "kick: %s", strerror(errno));
	q->kicks++;
}

/* One used element, or -1. */
static int harvest(struct queue *q, uint32_t *len)
{
	uint16_t ui = __atomic_load_n((uint16_t *)(void *)(q->used + 2), __ATOMIC_ACQUIRE);
	uint32_t id;
	const uint8_t *e;

	if (ui == q->last_used)
		return -1;
	if ((uint16_t)(ui - q->last_used) > q->num)
		lg_die(EXIT_MISMATCH, "queue %d: used idx jumped from %u to %u", q->index, q->last_used, ui);
	e = q->used + 4 + 8u * (q->last_used % q->num);
	memcpy(&id, e, 4);
	memcpy(len, e + 4, 4);
	q->last_used++;
	if (id % SLOT_DESCS || id / SLOT_DESCS >= (uint32_t)opt.depth || !q->slots[id / SLOT_DESCS].busy)
		lg_die(EXIT_MISMATCH, "queue %d: used id %u is not a request in flight", q->index, id);
	return (int)(id / SLOT_DESCS);
}

/* Wait for completions: spin (--poll) or sleep on the call eventfd. */
static void wait_some(struct queue *q)
{
	uint64_t deadline = now_ns() + (uint64_t)opt.timeout_ms * 1000000ull;
	uint16_t ui;

	for (;;) {
		ui = __atomic_load_n((uint16_t *)(void *)(q->used + 2), __ATOMIC_ACQUIRE);
		if (ui != q->last_used)
			return;
		if (opt.poll) {
			__builtin_ia32_pause();
		} else {
			if (opt.event_idx) {
				/* used_event: a call when the device passes last_used; then look again before sleeping */
				__atomic_store_n(&q->avail[2 + q->num], q->last_used, __ATOMIC_RELEASE);
				__atomic_thread_fence(__ATOMIC_SEQ_CST);
				if (__atomic_load_n((uint16_t *)(void *)(q->used + 2), __ATOMIC_ACQUIRE) != q->last_used)
					return;
			}
			struct pollfd p = { .fd = q->callfd, .events = POLLIN };
			uint64_t v;

			q->waits++;
			if (poll(&p, 1, 100) > 0 && read(q->callfd, &v, 8) < 0 && errno != EAGAIN)
				lg_die(EXIT_ERROR, "call eventfd: %s", strerror(errno));
		}
		if (now_ns() > deadline)
			lg_die(EXIT_HANG, "queue %d: no completion within %d ms (avail %u, used %u)", q->index, opt.timeout_ms,
			    q->avail_idx, __atomic_load_n((uint16_t *)(void *)(q->used + 2), __ATOMIC_ACQUIRE));
	}
}

/* Complete one slot: check status, length and (reads) the data. */
static void complete(struct queue *q, int si, uint32_t len, int timed)
{
	struct slot *s = &q->slots[si];
	uint64_t t = now_ns();

	s->busy = 0;
	q->free_slots[q->nfree++] = (uint16_t)si;
	if (*s->status != BLK_S_OK) {
		q->bad_status++;
		fprintf(stderr, "blk-loadgen: queue %d: %s of block %llu: status %u\n", q->index, s->write ? "write" : "read",
			(unsigned long long)s->block, *s->status);
	} else if (s->write) {
		for (uint32_t i = 0; i < s->nblocks; i++)
			version[s->block + i] = s->vers[i];
	} else {
		for (uint32_t i = 0; i < s->nblocks; i++) {
			const uint8_t *p = s->data + (size_t)i * BLK;

			if (check_block(p, s->block + i, s->vers[i]))
				continue;
			q->mismatches++;
			if (q->mismatches <= 20)
				fprintf(stderr, "blk-loadgen: queue %d: block %llu read back wrong (version %u, page %u of a %u-page read; got block %llu version %llu)\n",
					q->index, (unsigned long long)(s->block + i), s->vers[i], i, s->nblocks,
					(unsigned long long)((const uint64_t *)(const void *)p)[0],
					(unsigned long long)((const uint64_t *)(const void *)p)[1]);
		}
	}
	/* used len: the bytes the device wrote (data + status for a read, status for a write); QEMU does not check it */
	(void)len;
	if (timed) {
		if (s->write)
			q->writes++;
		else
			q->reads++;
		q->pages += s->nblocks;
		if (q->nlat == q->cap_lat) {
			q->cap_lat = q->cap_lat ? q->cap_lat * 2 : 65536;
			q->lat = realloc(q->lat, q->cap_lat * sizeof(*q->lat));
			if (!q->lat)
				lg_die(EXIT_ERROR, "out of memory");
		}
		q->lat[q->nlat++] = t - s->t0;
	}
}

/*
 * --discard-first: discard the whole disk (from block 1, as swapon --discard
 * does after mkswap) in requests of max_discard_sectors, on queue 0, one at
 * a time, before the prefill; every status must be OK.
 */
static void discard_all(struct queue *q)
{
	struct slot *s = &q->slots[0];
	uint16_t head = 0;
	struct desc *d = &q->desc[0];
	uint64_t sector = SECTORS_PER_BLK, end = capacity_sectors;
	uint32_t chunk;

	if (!(features & (1ull << BLK_F_DISCARD)) || !max_discard_sectors)
		lg_die(EXIT_ERROR, "--discard-first: the device offers no discard");
	chunk = max_discard_sectors & ~(SECTORS_PER_BLK - 1);
	while (sector < end) {
		uint32_t n = (uint32_t)(end - sector < chunk ? end - sector : chunk);
		uint64_t range[2] = { sector, n }; /* sector; num_sectors (u32), flags (u32) = 0 */
		uint32_t len;

		s->hdr->type = BLK_T_DISCARD;
		s->hdr->reserved = 0;
		s->hdr->sector = 0;
		memcpy(s->data, range, 16);
		*s->status = 0xff;
		d[0] = (struct desc){ gpa(s->hdr), sizeof(*s->hdr), DESC_F_NEXT, 1 };
		d[1] = (struct desc){ gpa(s->data), 16, DESC_F_NEXT, 2 };
		d[2] = (struct desc){ gpa(s->status), 1, DESC_F_WRITE, 0 };
		s->busy = 1;
		q->avail[2 + q->avail_idx % q->num] = head;
		q->avail_idx++;
		__atomic_store_n(&q->avail[1], q->avail_idx, __ATOMIC_RELEASE);
		kick(q);
		wait_some(q);
		if (harvest(q, &len) != 0)
			lg_die(EXIT_MISMATCH, "discard: unexpected completion");
		s->busy = 0;
		if (*s->status != BLK_S_OK)
			lg_die(EXIT_MISMATCH, "discard of sectors %llu+%u: status %u", (unsigned long long)sector, n, *s->status);
		sector += n;
	}
}

static void drain(struct queue *q, int timed)
{
	uint32_t len;
	int si;

	while ((si = harvest(q, &len)) >= 0)
		complete(q, si, len, timed);
}

/* a run of n blocks of this queue's share (a contiguous range) that no request in flight overlaps */
static uint64_t pick_run(struct queue *q, uint32_t n)
{
	uint64_t share = span_blocks / (uint64_t)opt.queues, base = share * (uint64_t)q->index;

	for (;;) {
		uint64_t b = base + rng_next(&q->rng) % (share - n + 1);
		int held = 0;

		for (int i = 0; i < opt.depth; i++) {
			const struct slot *s = &q->slots[i];

			if (s->busy && s->block < b + n && b < s->block + s->nblocks) {
				held = 1;
				break;
			}
		}
		if (!held)
			return b;
	}
}

/* every block of the share in order, one request each: write (prefill) or read (final check) */
static void sweep(struct queue *q, int write)
{
	uint64_t share = span_blocks / (uint64_t)opt.queues, base = share * (uint64_t)q->index, next = 0;

	while (next < share || q->nfree < opt.depth) {
		int n = 0;

		while (q->nfree && next < share) {
			uint32_t k = (uint32_t)(share - next < (uint64_t)opt.max_pages ? share - next : (uint64_t)opt.max_pages);

			submit(q, q->free_slots[--q->nfree], base + next, k, write);
			next += k;
			n++;
		}
		if (n)
			kick(q);
		if (q->nfree < opt.depth) {
			wait_some(q);
			drain(q, 0);
		}
	}
}

static void *run_queue(void *arg)
{
	struct queue *q = arg;

	if (q->phase == 0) {
		sweep(q, 1);
	} else if (q->phase == 2) {
		sweep(q, 0);
	} else {
		while (!__atomic_load_n(&phase_stop, __ATOMIC_RELAXED)) {
			int n = 0;

			while (q->nfree) {
				int w = (int)(rng_next(&q->rng) % 100) >= opt.read_pct;
				uint32_t k = 1 + (uint32_t)(rng_next(&q->rng) % (uint64_t)opt.max_pages);

				submit(q, q->free_slots[--q->nfree], pick_run(q, k), k, w);
				n++;
			}
			if (n)
				kick(q);
			wait_some(q);
			drain(q, 1);
		}
		while (q->nfree < opt.depth) {
			wait_some(q);
			drain(q, 1);
		}
	}
	return NULL;
}

static void run_phase(int phase, double *seconds)
{
	uint64_t t0 = now_ns();

	phase_stop = 0;
	for (int i = 0; i < opt.queues; i++) {
		qs[i].phase = phase;
		if (pthread_create(&qs[i].thread, NULL, run_queue, &qs[i]))
			lg_die(EXIT_ERROR, "pthread_create failed");
	}
	if (phase == 1) {
		struct timespec ts = { .tv_sec = opt.seconds };

		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
		__atomic_store_n(&phase_stop, 1, __ATOMIC_RELAXED);
	}
	for (int i = 0; i < opt.queues; i++)
		pthread_join(qs[i].thread, NULL);
	*seconds = (double)(now_ns() - t0) / 1e9;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static long num_arg(const char *flag, const char *v, long min, long max)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || *end || end == v || n < min || n > max)
		lg_die(EXIT_ERROR, "%s: '%s' is not a whole number from %ld to %ld", flag, v, min, max);
	return n;
}

/* the flags without a value */
static const struct {
	const char *name;
	int *on;
} switches[] = {
	{ "--json", &opt.json }, { "--poll", &opt.poll }, { "--two-regions", &opt.two_regions },
	{ "--discard-first", &opt.discard_first }, { "--indirect", &opt.indirect }, { "--event-idx", &opt.event_idx },
	{ "--one-seg", &opt.one_seg }, { "--memcpy", &opt.memcpy_base },
};

/* the flags with a whole number from min to max: into i (an int) or u */
static const struct {
	const char *name;
	long min, max;
	int *i;
	uint64_t *u;
} numbers[] = {
	{ "--queues", 1, 64, &opt.queues, NULL },
	{ "--depth", 1, 1024, &opt.depth, NULL },
	{ "--seconds", 1, 3600, &opt.seconds, NULL },
	{ "--read-pct", 0, 100, &opt.read_pct, NULL },
	{ "--span-mib", 1, 1 << 20, NULL, &opt.span_mib },
	{ "--qsize", 4, 32768, &opt.qsize, NULL },
	{ "--seed", 0, 1L << 40, NULL, &opt.seed },
	{ "--max-pages", 1, 256, &opt.max_pages, NULL },
	{ "--timeout-ms", 1, 3600000, &opt.timeout_ms, NULL },
};

static int set_switch(const char *a)
{
	for (size_t k = 0; k < sizeof(switches) / sizeof(switches[0]); k++) {
		if (!strcmp(a, switches[k].name)) {
			*switches[k].on = 1;
			return 1;
		}
	}
	return 0;
}

static int set_number(const char *a, const char *v)
{
	for (size_t k = 0; k < sizeof(numbers) / sizeof(numbers[0]); k++) {
		if (strcmp(a, numbers[k].name))
			continue;
		if (numbers[k].i)
			*numbers[k].i = (int)num_arg(a, v, numbers[k].min, numbers[k].max);
		else
			*numbers[k].u = (uint64_t)num_arg(a, v, numbers[k].min, numbers[k].max);
		return 1;
	}
	return 0;
}

static void usage(void)
{
	fputs("usage: blk-loadgen --socket PATH [--queues N] [--depth D] [--seconds S] [--read-pct P] [--span-mib M]\n"
	      "                   [--qsize Q] [--seed S] [--max-pages N] [--one-seg] [--indirect] [--event-idx]\n"
	      "                   [--discard-first] [--two-regions]\n"
	      "                   [--poll] [--timeout-ms T] [--json] [--memcpy]\n", stderr);
	exit(EXIT_ERROR);
}

int main(int argc, char **argv)
{
	double prefill_s, timed_s, check_s, mc = 0;
	uint64_t reads = 0, writes = 0, pages = 0, mism = 0, bad = 0, kicks = 0, waits = 0, n = 0, *all;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (set_switch(a))
			continue;
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--socket"))
			opt.socket = v;
		else if (!set_number(a, v))
			usage();
	}
	if (!opt.socket)
		usage();
	if (opt.qsize & (opt.qsize - 1))
		lg_die(EXIT_ERROR, "--qsize %d: a power of two", opt.qsize);
	if ((long)SLOT_DESCS * opt.depth > opt.qsize)
		lg_die(EXIT_ERROR, "--depth %d needs %ld descriptors: raise --qsize (%d)", opt.depth, (long)SLOT_DESCS * opt.depth, opt.qsize);

	/* guest RAM: rings and slots, in a sealed memfd as QEMU's memory-backend-memfd makes it */
	ram_size = ((uint64_t)opt.queues * ((uint64_t)opt.depth * ((uint64_t)BLK * (uint64_t)opt.max_pages + 4096) + 3 * 4096 + 32u * (uint64_t)opt.qsize) + (1 << 20) + 0x1fffff) & ~0x1fffffull;
	memfd = memfd_create("blk-loadgen-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (memfd < 0 || ftruncate(memfd, (off_t)ram_size))
		lg_die(EXIT_ERROR, "memfd: %s", strerror(errno));
	if (fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		lg_die(EXIT_ERROR, "memfd seals: %s", strerror(errno));
	ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (ram == MAP_FAILED)
		lg_die(EXIT_ERROR, "mmap: %s", strerror(errno));

	if (opt.two_regions)
		brk_off = 0xc0000;
	handshake();
	version = calloc(span_blocks, sizeof(*version));
	qs = calloc((size_t)opt.queues, sizeof(*qs));
	if (!version || !qs)
		lg_die(EXIT_ERROR, "out of memory");
	for (int i = 0; i < opt.queues; i++) {
		qs[i].index = i;
		setup_queue(&qs[i]);
	}
	/* rings start disabled when PROTOCOL_FEATURES is negotiated */
	for (int i = 0; i < opt.queues; i++)
		vu_state(&vu, VU_SET_VRING_ENABLE, (uint32_t)i, 1);
	/* a synchronous round trip: everything above was taken (GET_FEATURES has a reply) */
	(void)vu_get_u64(&vu, VU_GET_FEATURES);

	if (opt.memcpy_base)
		mc = memcpy_pages_per_sec(span_blocks);
	if (opt.discard_first)
		discard_all(&qs[0]);
	run_phase(0, &prefill_s);
	run_phase(1, &timed_s);
	for (int i = 0; i < opt.queues; i++) {
		reads += qs[i].reads;
		writes += qs[i].writes;
		mism += qs[i].mismatches;
		bad += qs[i].bad_status;
		kicks += qs[i].kicks;
		waits += qs[i].waits;
		pages += qs[i].pages;
		n += qs[i].nlat;
		qs[i].mismatches = 0;
		qs[i].bad_status = 0;
	}
	all = malloc((n ? n : 1) * sizeof(*all));
	if (!all)
		lg_die(EXIT_ERROR, "out of memory");
	n = 0;
	for (int i = 0; i < opt.queues; i++) {
		memcpy(all + n, qs[i].lat, qs[i].nlat * sizeof(*all));
		n += qs[i].nlat;
	}
	qsort(all, n, sizeof(*all), cmp_u64);
	/* the final read of every block (mismatches and statuses counted as before) */
	run_phase(2, &check_s);
	for (int i = 0; i < opt.queues; i++) {
		mism += qs[i].mismatches;
		bad += qs[i].bad_status;
		free(qs[i].lat);
	}
	{
		double rps = (double)(reads + writes) / timed_s;
		double p50 = n ? (double)all[n / 2] / 1000.0 : 0;
		double p99 = n ? (double)all[(n * 99) / 100] / 1000.0 : 0;
		double p999 = n ? (double)all[(n * 999) / 1000] / 1000.0 : 0;
		double mx = n ? (double)all[n - 1] / 1000.0 : 0;

		if (opt.json) {
			printf("{\"maxPages\":%d,\"pages\":%llu,\"queues\":%d,\"depth\":%d,\"readPct\":%d,\"poll\":%s,\"spanBlocks\":%llu,\"capacitySectors\":%llu,"
			       "\"blkSize\":%u,\"numQueues\":%u,\"features\":\"0x%llx\",\"protocolFeatures\":\"0x%llx\","
			       "\"prefillS\":%.3f,\"seconds\":%.3f,\"requests\":%llu,\"reads\":%llu,\"writes\":%llu,"
			       "\"requestsPerSec\":%.0f,\"p50Us\":%.1f,\"p99Us\":%.1f,\"p999Us\":%.1f,\"maxUs\":%.1f,"
			       "\"kicks\":%llu,\"callWaits\":%llu,\"memcpyPagesPerSec\":%.0f,\"finalCheckS\":%.3f,"
			       "\"mismatches\":%llu,\"badStatus\":%llu,\"ok\":%s}\n",
			       opt.max_pages, (unsigned long long)pages, opt.queues, opt.depth, opt.read_pct, opt.poll ? "true" : "false", (unsigned long long)span_blocks,
			       (unsigned long long)capacity_sectors, blk_size_cfg, num_queues_cfg, (unsigned long long)features,
			       (unsigned long long)proto, prefill_s, timed_s, (unsigned long long)(reads + writes),
			       (unsigned long long)reads, (unsigned long long)writes, rps, p50, p99, p999, mx,
			       (unsigned long long)kicks, (unsigned long long)waits, mc, check_s, (unsigned long long)mism,
			       (unsigned long long)bad, mism || bad ? "false" : "true");
		} else {
			printf("blk-loadgen: %d queue(s) x depth %d, %d%% reads, %llu blocks of 4 KiB; prefill %.2f s\n", opt.queues,
			       opt.depth, opt.read_pct, (unsigned long long)span_blocks, prefill_s);
			printf("  %llu requests in %.2f s: %.0f requests/s; latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n",
			       (unsigned long long)(reads + writes), timed_s, rps, p50, p99, p999, mx);
			if (opt.memcpy_base)
				printf("  memcpy baseline: %.0f pages/s\n", mc);
			printf("  final read of every block: %.2f s; mismatches %llu, bad status %llu\n", check_s,
			       (unsigned long long)mism, (unsigned long long)bad);
		}
	}
	free(all);
	return mism || bad ? EXIT_MISMATCH : 0;
}
