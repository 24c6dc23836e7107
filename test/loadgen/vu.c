/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The vhost-user front-end (what QEMU does; the messages are vumsg.c) and the
 * guest side of the split virtqueues (what the guest driver does), in our own
 * memfd guest RAM.
 * Message sequence as QEMU 10.2+ sends it to vhost-user-test-device-pci
 * (../shared/docs/DESIGN.md): realize, then driver start.
 */
#define _GNU_SOURCE
#include "lg.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* ---------------- guest RAM ---------------- */

void *ram_alloc(struct lgdev *d, size_t size, size_t align)
{
	uint64_t off = (d->brk + align - 1) & ~(uint64_t)(align - 1);
	/* never straddle the two regions: a device buffer lies in one region */
	if (d->nreg == 2 && off < d->reg[1].off && off + size > d->reg[1].off)
		off = d->reg[1].off;
	if (off + size > d->ram_size || off + size < off)
		lg_die(EXIT_ERROR, "guest RAM exhausted (%llu bytes): raise --ram", (unsigned long long)d->ram_size);
	d->brk = off + size;
	return d->ram + off;
}

uint64_t gpa_of(const struct lgdev *d, const void *p)
{
	const uint8_t *b = p;
	if (b < d->ram || b >= d->ram + d->ram_size)
		lg_die(EXIT_ERROR, "internal: pointer outside guest RAM");
	uint64_t off = (uint64_t)(b - d->ram);
	for (int i = 0; i < d->nreg; i++)
		if (off >= d->reg[i].off && off < d->reg[i].off + d->reg[i].size)
			return d->reg[i].gpa + (off - d->reg[i].off);
	lg_die(EXIT_ERROR, "internal: offset outside the regions");
}

uint64_t gpa_end(const struct lgdev *d)
{
	const struct region *r = &d->reg[d->nreg - 1];
	return r->gpa + r->size;
}

int gpa_hole(const struct lgdev *d, uint64_t *start)
{
	if (d->nreg != 2)
		return 0;
	*start = d->reg[0].gpa + d->reg[0].size;
	return 1;
}

/* ---------------- rings ---------------- */

void vq_post_chain(struct lgdev *d, struct vq *q, uint16_t first, struct lg_desc *itab, const struct seg *segs, int n)
{
	if (n <= 0)
		lg_die(EXIT_ERROR, "internal: empty chain");
	if (itab) {
		if (n > SLOT_ITAB)
			lg_die(EXIT_ERROR, "internal: indirect chain too long");
		for (int i = 0; i < n; i++) {
			itab[i].addr = segs[i].gpa;
			itab[i].len = segs[i].len;
			itab[i].flags = (uint16_t)((segs[i].write ? VRING_DESC_F_WRITE : 0) | (i + 1 < n ? VRING_DESC_F_NEXT : 0));
			itab[i].next = (uint16_t)(i + 1 < n ? i + 1 : 0);
		}
		if (first >= q->num)
			lg_die(EXIT_ERROR, "internal: descriptor index");
		q->desc[first].addr = gpa_of(d, itab);
		q->desc[first].len = (uint32_t)(n * (int)sizeof(struct lg_desc));
		q->desc[first].flags = VRING_DESC_F_INDIRECT;
		q->desc[first].next = 0;
		return;
	}
	if ((int)first + n > q->num)
		lg_die(EXIT_ERROR, "internal: chain of %d descriptors does not fit the queue", n);
	for (int i = 0; i < n; i++) {
		struct lg_desc *e = &q->desc[first + i];
		e->addr = segs[i].gpa;
		e->len = segs[i].len;
		e->flags = (uint16_t)((segs[i].write ? VRING_DESC_F_WRITE : 0) | (i + 1 < n ? VRING_DESC_F_NEXT : 0));
		e->next = (uint16_t)(i + 1 < n ? first + i + 1 : 0);
	}
}

void vq_publish(struct vq *q, uint16_t head)
{
	q->avail->ring[q->avail_idx % q->num] = head;
	q->avail_idx++;
	/* descriptors and the ring entry before the index (virtio 2.7.13) */
	__atomic_store_n(&q->avail->idx, q->avail_idx, __ATOMIC_RELEASE);
}

void vq_notify(struct lgdev *d, struct vq *q)
{
	/* the index store before reading the device's suppression state */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint16_t nw = q->avail_idx, old = q->notify_old;
	q->notify_old = nw;
	if (nw == old)
		return;
	int need;
	if (d->event_idx) {
		uint16_t *ev = (uint16_t *)(void *)&q->used->ring[q->num]; /* avail_event */
		uint16_t e = __atomic_load_n(ev, __ATOMIC_ACQUIRE);
		need = (uint16_t)(nw - e - 1) < (uint16_t)(nw - old);
	} else {
		need = !(__atomic_load_n(&q->used->flags, __ATOMIC_ACQUIRE) & VRING_USED_F_NO_NOTIFY);
	}
	if (need) {
		uint64_t one = 1;
		if (write(q->kickfd, &one, 8) != 8)
			lg_die(EXIT_ERROR, "kick eventfd write: %s", strerror(errno));
		q->kicks++;
	}
}

void vq_update_used_event(struct lgdev *d, struct vq *q)
{
	if (d->event_idx) {
		/* we poll: ask for an interrupt only far in the future */
		uint16_t *ue = &q->avail->ring[q->num];
		__atomic_store_n(ue, (uint16_t)(q->last_used + 0x7fff), __ATOMIC_RELAXED);
	}
}

int vq_poll(struct vq *q, uint32_t *id, uint32_t *len)
{
	uint16_t ui = __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE);
	if (ui == q->last_used)
		return 0;
	if ((uint16_t)(ui - q->last_used) > q->num)
		lg_die(EXIT_MISMATCH, "queue %d: used idx jumped from %u to %u (more than the queue size %u)", q->index, q->last_used, ui, q->num);
	const struct lg_used_elem *e = &q->used->ring[q->last_used % q->num];
	*id = __atomic_load_n(&e->id, __ATOMIC_RELAXED);
	*len = __atomic_load_n(&e->len, __ATOMIC_RELAXED);
	q->last_used++;
	q->completed++;
	return 1;
}

void vq_wait(struct lgdev *d, struct vq *q, uint32_t *id, uint32_t *len, const char *what)
{
	uint64_t spins = 0, deadline = 0;
	for (;;) {
		if (vq_poll(q, id, len)) {
			vq_update_used_event(d, q);
			return;
		}
		spins++;
		if ((spins & 255) == 0) {
			uint64_t t = now_ns();
			if (!deadline)
				deadline = t + (uint64_t)G.timeout_ms * 1000000ull;
			else if (t > deadline)
				lg_die(EXIT_HANG, "queue %d: %s not completed within %d ms (avail idx %u, used idx %u)", q->index, what,
				       G.timeout_ms, q->avail_idx, __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE));
		}
		if (spins > 4096)
			sched_yield();
		else
			cpu_relax();
	}
}

void put_hdr(uint8_t *dst, uint32_t op, uint32_t flags, uint32_t pool, const uint64_t oid[3], uint32_t index, uint64_t tag)
{
	struct tmem_req r = { .op = op, .flags = flags, .pool_id = pool, .index = index, .tag = tag };
	if (oid)
		memcpy(r.oid, oid, sizeof(r.oid));
	memcpy(dst, &r, sizeof(r));
}

static struct res read_res(uint32_t len, const uint8_t *resp)
{
	struct res r = { .len = len };
	if (len > 0 && resp) {
		struct tmem_resp t;
		memcpy(&t, resp, sizeof(t));
		r.status = (int32_t)t.status;
		r.reserved = t.reserved;
		r.value = t.value;
	} else {
		r.status = 0x7fffffff; /* not answered */
	}
	return r;
}

uint32_t raw_sync(struct lgdev *d, int qi, uint16_t head, const char *what)
{
	struct vq *q = &d->vq[qi];
	if (q->fifo_count)
		lg_die(EXIT_ERROR, "internal: synchronous request with requests in flight");
	uint32_t id, len;
	vq_publish(q, head);
	vq_notify(d, q);
	vq_wait(d, q, &id, &len, what);
	if (id != head)
		lg_die(EXIT_MISMATCH, "queue %d: used id %u, expected the head %u", qi, id, head);
	return len;
}

struct res chain_sync(struct lgdev *d, int qi, const struct seg *segs, int n, int use_indirect, const uint8_t *resp)
{
	struct vq *q = &d->vq[qi];
	vq_post_chain(d, q, 0, use_indirect ? q->slots[0].itab : NULL, segs, n);
	uint32_t len = raw_sync(d, qi, 0, "a request");
	return read_res(len, resp);
}

struct res req_sync(struct lgdev *d, int qi, uint32_t op, uint32_t flags, uint32_t pool, const uint64_t oid[3], uint32_t index,
		    const void *rd, uint32_t rd_len, void *wr, uint32_t wr_len)
{
	struct vq *q = &d->vq[qi];
	struct slot *s = &q->slots[0];
	uint8_t *rdb = q->scratch, *wrb = q->scratch + 16384;
	struct seg segs[4];
	int n = 0;
	if (rd_len > 16384 || wr_len > 16384)
		lg_die(EXIT_ERROR, "internal: payload too large");
	put_hdr(s->hdr, op, flags, pool, oid, index, 0x10adull << 32 | op);
	segs[n++] = (struct seg){ gpa_of(d, s->hdr), TMEM_REQ_SIZE, 0 };
	if (rd_len) {
		memcpy(rdb, rd, rd_len);
		segs[n++] = (struct seg){ gpa_of(d, rdb), rd_len, 0 };
	}
	if (wr_len) {
		memset(wrb, 0xaa, wr_len);
		segs[n++] = (struct seg){ gpa_of(d, wrb), wr_len, 1 };
	}
	memset(s->resp, 0xee, TMEM_RESP_SIZE);
	segs[n++] = (struct seg){ gpa_of(d, s->resp), TMEM_RESP_SIZE, 1 };
	struct res r = chain_sync(d, qi, segs, n, d->indirect, s->resp);
	if (wr && wr_len)
		memcpy(wr, wrb, wr_len);
	return r;
}

/* ---------------- the handshake ---------------- */

static void setup_ram(struct lgdev *d)
{
	d->ram_size = G.ram;
	if (d->ram_size < (4u << 20) || d->ram_size % 8192)
		lg_die(EXIT_ERROR, "--ram must be at least 4M and a multiple of 8K");
	d->memfd = memfd_create("tmem-loadgen-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (d->memfd < 0)
		lg_die(EXIT_ERROR, "memfd_create: %s", strerror(errno));
	if (ftruncate(d->memfd, (off_t)d->ram_size) < 0)
		lg_die(EXIT_ERROR, "ftruncate guest RAM to %llu: %s", (unsigned long long)d->ram_size, strerror(errno));
	/* what QEMU's memory-backend-memfd does (seal=on, its default): the size is fixed for good */
	if (!G.unsealed && fcntl(d->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		lg_die(EXIT_ERROR, "sealing guest RAM (F_ADD_SEALS): %s", strerror(errno));
	void *p = mmap(NULL, d->ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, d->memfd, 0);
	if (p == MAP_FAILED)
		lg_die(EXIT_ERROR, "mmap guest RAM: %s", strerror(errno));
	d->ram = p;
	if (G.two_regions) {
		/* like QEMU's below-4G / above-4G split: a hole between the regions */
		uint64_t s0 = d->ram_size / 2;
		d->nreg = 2;
		d->reg[0] = (struct region){ .gpa = 0, .size = s0, .off = 0 };
		uint64_t g1 = s0 < 0xC0000000ull ? 0x100000000ull : ((s0 + 0x40000000ull) & ~0x3fffffffull) + 0x40000000ull;
		d->reg[1] = (struct region){ .gpa = g1, .size = d->ram_size - s0, .off = s0 };
	} else {
		d->nreg = 1;
		/* a non-zero base, so that a daemon mixing offsets and gpas is caught */
		d->reg[0] = (struct region){ .gpa = 0x40000000ull, .size = d->ram_size, .off = 0 };
	}
	d->brk = 0;
}

static void setup_queue(struct lgdev *d, struct vq *q, int index)
{
	memset(q, 0, sizeof(*q));
	q->index = index;
	q->num = (uint16_t)G.qsize;
	q->desc = ram_alloc(d, sizeof(struct lg_desc) * q->num, 4096);
	q->avail = ram_alloc(d, 6 + 2u * q->num, 64);
	q->used = ram_alloc(d, 6 + 8u * q->num, 4096);
	if (!d->event_idx)
		q->avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
	int per = d->indirect ? 1 : SLOT_DESCS;
	q->nslots = G.depth < q->num / per ? G.depth : q->num / per;
	if (q->nslots < 1)
		q->nslots = 1;
	q->slots = calloc((size_t)q->nslots, sizeof(*q->slots));
	q->fifo = calloc((size_t)q->nslots, sizeof(*q->fifo));
	if (!q->slots || !q->fifo)
		lg_die(EXIT_ERROR, "out of memory");
	for (int i = 0; i < q->nslots; i++) {
		struct slot *s = &q->slots[i];
		s->page = ram_alloc(d, TMEM_PAGE_SIZE, TMEM_PAGE_SIZE);
		uint8_t *small = ram_alloc(d, 512, 64);
		s->hdr = small;
		s->aux = small + 64;
		s->resp = small + 128;
		s->itab = (struct lg_desc *)(void *)(small + 256);
		s->head = (uint16_t)(i * per);
	}
	q->scratch_size = 65536;
	q->scratch = ram_alloc(d, q->scratch_size, 4096);
	q->kickfd = vu_eventfd();
	q->callfd = vu_eventfd();
	q->errfd = vu_eventfd();
}

void dev_open(struct lgdev *d, int nq)
{
	memset(d, 0, sizeof(*d));
	d->nq = nq;
	setup_ram(d);
	d->vu = (struct vu_conn){ .sock = -1, .timeout_ms = G.timeout_ms, .verbose = G.verbose, .peer = "the daemon" };
	vu_connect(&d->vu, G.socket);

	/* realize */
	d->dev_features = vu_get_u64(&d->vu, VU_GET_FEATURES);
	if (!(d->dev_features & (1ull << VIRTIO_F_VERSION_1)))
		lg_die(EXIT_ERROR, "the daemon does not offer VIRTIO_F_VERSION_1 (features 0x%llx); QEMU would exit", (unsigned long long)d->dev_features);
	if (!(d->dev_features & (1ull << VU_F_PROTOCOL_FEATURES)))
		lg_die(EXIT_ERROR, "the daemon does not offer VHOST_USER_F_PROTOCOL_FEATURES (features 0x%llx)", (unsigned long long)d->dev_features);
	d->proto_features = vu_get_u64(&d->vu, VU_GET_PROTOCOL_FEATURES);
	d->proto = d->proto_features & ((1ull << VU_PROTO_MQ) | (G.no_reply_ack ? 0 : (1ull << VU_PROTO_REPLY_ACK)));
	vu_send(&d->vu, VU_SET_PROTOCOL_FEATURES, 0, &d->proto, 8, NULL, 0);
	d->queue_num = 1;
	if (d->proto & (1ull << VU_PROTO_MQ))
		d->queue_num = (uint32_t)vu_get_u64(&d->vu, VU_GET_QUEUE_NUM);
	if ((uint32_t)nq > d->queue_num)
		lg_die(EXIT_ERROR, "--queues %d but the daemon offers %u queue(s)", nq, d->queue_num);
	d->vu.reply_ack = !!(d->proto & (1ull << VU_PROTO_REPLY_ACK));
	vu_set(&d->vu, VU_SET_OWNER, NULL, 0, NULL, 0);
	uint64_t f2 = vu_get_u64(&d->vu, VU_GET_FEATURES);
	if (f2 != d->dev_features)
		lg_die(EXIT_MISMATCH, "GET_FEATURES changed between two calls: 0x%llx then 0x%llx", (unsigned long long)d->dev_features,
		       (unsigned long long)f2);

	/* feature choice before the rings are laid out (indirect changes the slot layout) */
	uint64_t want = (1ull << VIRTIO_F_VERSION_1) | (1ull << VU_F_PROTOCOL_FEATURES);
	if (G.event_idx)
		want |= 1ull << VIRTIO_RING_F_EVENT_IDX;
	if (G.indirect)
		want |= 1ull << VIRTIO_RING_F_INDIRECT_DESC;
	if (G.shared)
		want |= 1ull << TMEM_F_SHARED;
	if ((want & d->dev_features) != want)
		lg_die(EXIT_ERROR, "asked for features 0x%llx, the daemon offers 0x%llx", (unsigned long long)want, (unsigned long long)d->dev_features);
	d->features = want;
	d->event_idx = G.event_idx;
	d->indirect = G.indirect;
	d->shared = G.shared;

	d->vq = calloc((size_t)nq, sizeof(*d->vq));
	if (!d->vq)
		lg_die(EXIT_ERROR, "out of memory");
	for (int i = 0; i < nq; i++)
		setup_queue(d, &d->vq[i], i);
	for (int i = 0; i < nq; i++) {
		vu_set_u64(&d->vu, VU_SET_VRING_CALL, (uint64_t)i, &d->vq[i].callfd, 1);
		vu_set_u64(&d->vu, VU_SET_VRING_ERR, (uint64_t)i, &d->vq[i].errfd, 1);
	}

	/* driver start (DRIVER_OK) */
	vu_set_u64(&d->vu, VU_SET_FEATURES, d->features, NULL, 0);
	vu_set_mem_table(&d->vu, d->memfd, d->ram, d->reg, d->nreg);
	for (int i = 0; i < nq; i++) {
		struct vq *q = &d->vq[i];
		vu_set_vring(&d->vu, i, q->num, q->desc, q->avail, q->used, q->kickfd, q->callfd);
		vu_set_u64(&d->vu, VU_SET_VRING_CALL, (uint64_t)i | VU_VRING_NOFD, NULL, 0);
	}
	/* The guest driver's first request (INFO at probe) is already in every
	 * ring and its kick already signalled before the rings are enabled, as
	 * QEMU does it: the daemon must scan each ring when it is enabled. */
	for (int i = 0; i < nq; i++) {
		struct vq *q = &d->vq[i];
		struct slot *s = &q->slots[0];
		put_hdr(s->hdr, TMEM_OP_INFO, 0, 0, NULL, 0, 0x1f0);
		memset(s->aux, 0xaa, TMEM_INFO_SIZE);
		memset(s->resp, 0xee, TMEM_RESP_SIZE);
		struct seg segs[3] = { { gpa_of(d, s->hdr), TMEM_REQ_SIZE, 0 }, { gpa_of(d, s->aux), TMEM_INFO_SIZE, 1 }, { gpa_of(d, s->resp), TMEM_RESP_SIZE, 1 } };
		vq_post_chain(d, q, s->head, d->indirect ? s->itab : NULL, segs, 3);
		vq_publish(q, s->head);
		uint64_t one = 1;
		if (write(q->kickfd, &one, 8) != 8)
			lg_die(EXIT_ERROR, "kick eventfd write: %s", strerror(errno));
		q->kicks++;
		q->notify_old = q->avail_idx;
	}
	for (int i = 0; i < nq; i++) {
		if (__atomic_load_n(&d->vq[i].used->idx, __ATOMIC_ACQUIRE) != 0)
			lg_die(EXIT_MISMATCH, "queue %d: the daemon completed a request before SET_VRING_ENABLE 1", i);
		vu_state(&d->vu, VU_SET_VRING_ENABLE, (uint32_t)i, 1);
	}
	for (int i = 0; i < nq; i++)
		vu_set_u64(&d->vu, VU_SET_VRING_CALL, (uint64_t)i, &d->vq[i].callfd, 1);
	for (int i = 0; i < nq; i++) {
		struct vq *q = &d->vq[i];
		struct slot *s = &q->slots[0];
		uint32_t id, len;
		vq_wait(d, q, &id, &len, "the INFO posted and kicked before SET_VRING_ENABLE");
		struct tmem_resp r;
		struct tmem_info inf;
		memcpy(&r, s->resp, sizeof(r));
		memcpy(&inf, s->aux, sizeof(inf));
		if (id != s->head || len != TMEM_INFO_SIZE + TMEM_RESP_SIZE || (int32_t)r.status != TMEM_S_OK || inf.abi_version != TMEM_ABI_VERSION)
			lg_die(EXIT_MISMATCH, "queue %d: INFO before enable: id %u len %u status %d abi %u (expected id %u len 80 status 0 abi 1)", i, id,
			       len, (int32_t)r.status, inf.abi_version, s->head);
	}
}

void dev_close(struct lgdev *d)
{
	for (int i = 0; i < d->nq; i++)
		vu_state(&d->vu, VU_SET_VRING_ENABLE, (uint32_t)i, 0);
	for (int i = 0; i < d->nq; i++) {
		struct vq *q = &d->vq[i];
		struct vu_state s = { (uint32_t)i, 0 }, r;
		vu_send(&d->vu, VU_GET_VRING_BASE, 0, &s, sizeof(s), NULL, 0);
		vu_recv(&d->vu, VU_GET_VRING_BASE, &r, sizeof(r));
		if (r.index != (uint32_t)i || r.num != q->avail_idx)
			lg_die(EXIT_MISMATCH, "GET_VRING_BASE queue %d: got index %u num %u, expected index %d num %u (our avail idx)", i, r.index, r.num,
			       i, q->avail_idx);
		if (q->last_used != q->avail_idx)
			lg_die(EXIT_MISMATCH, "queue %d: %u requests still not completed at close", i, (uint16_t)(q->avail_idx - q->last_used));
	}
	close(d->vu.sock);
	for (int i = 0; i < d->nq; i++) {
		struct vq *q = &d->vq[i];
		close(q->kickfd);
		close(q->callfd);
		close(q->errfd);
		free(q->slots);
		free(q->fifo);
	}
	free(d->vq);
	munmap(d->ram, d->ram_size);
	close(d->memfd);
	memset(d, 0, sizeof(*d));
	d->vu.sock = d->memfd = -1;
}
