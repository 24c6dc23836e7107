/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virtio_tmem: transcendent memory over a virtio device.
 *
 * Shared between the virtio part (virtio_tmem.c: queues, requests, probe,
 * statistics) and the kernel-facing part (tmem_backends.c: cleancache and
 * frontswap callbacks and the pool tables).
 */
#ifndef _VIRTIO_TMEM_H
#define _VIRTIO_TMEM_H

#include <linux/types.h>
#include <linux/percpu.h>
#include <linux/debugfs.h>

#include "tmem_abi.h"

/*
 * How a request may wait for its answer.  The whole call (finding a free
 * queue included) is bounded by timeout_ms except for VTMEM_WAIT_FOREVER.
 */
enum vtmem_wait {
	VTMEM_WAIT_ATOMIC,	/* spin: IRQs may be off, locks may be held */
	VTMEM_WAIT_SLEEP,	/* process context: poll, rescheduling */
	/*
	 * Process context, no bound: only a removed or broken device ends
	 * the wait.  For a frontswap load of a page that exists nowhere
	 * else: failing it would hand the kernel a swap slot never written.
	 */
	VTMEM_WAIT_FOREVER,
};

/*
 * One tmem operation as the backends see it: the fields of struct tmem_req
 * in CPU order, the data page of PUT/GET, and the small payloads of NEW_POOL
 * (in) and INFO (out).  vtmem_request() turns it into one descriptor chain.
 */
struct vtmem_op {
	u32 op;			/* TMEM_OP_* */
	u32 flags;		/* TMEM_REQF_* */
	u32 pool_id;		/* device pool id */
	u32 index;
	u64 oid[3];
	/*
	 * Device generation the pool id belongs to (0: any device).  Pool ids
	 * of a removed device must never reach its successor, which may have
	 * handed out the same number for another pool.  Set on return to the
	 * generation that answered.
	 */
	u32 gen;
	enum vtmem_wait wait;
	/*
	 * Refuse (-EAGAIN) while a request of unknown outcome may still be
	 * executed by the device: a frontswap PUT must not be overtaken by an
	 * older PUT or FLUSH of the same handle (see vtmem_submit()).
	 */
	bool ordered;
	struct page *page;	/* PUT_PAGE source, GET_PAGE destination */
	const void *in;		/* NEW_POOL payload */
	unsigned int in_len;
	void *out;		/* INFO payload */
	unsigned int out_len;
	u64 value;		/* struct tmem_resp.value on success */
};

/*
 * Returns 0 (TMEM_S_OK), a negative TMEM_S_* status from the device (these
 * are negative errnos: -ENOENT for MISS, -ENOSPC for NOSPACE, -EBUSY for
 * FROZEN, ...), or a driver error:
 *  -ENODEV     no device, a broken or removed one, or a pool of another
 *              device: nothing reached a device that could act on it later;
 *  -EAGAIN     not sent: no free queue in time, device suspended, or
 *              (ordered) requests of unknown outcome outstanding;
 *  -ETIMEDOUT  sent, not answered in time: the device may still execute it;
 *  -EIO        the device answered outside the ABI (it is now broken).
 */
int vtmem_request(struct vtmem_op *op);

/*
 * True when @err leaves the device's state for that handle unknown or
 * unchanged although the caller wanted it changed (a flush or a put that
 * may not have happened, or may happen late): the caller must stop
 * trusting what the device holds for that pool.
 */
static inline bool vtmem_outcome_unknown(int err)
{
	return err == -EAGAIN || err == -ETIMEDOUT || err == -EIO;
}

/*
 * Reaps answered requests of unknown outcome on the bound device; 0 when
 * none is left (nothing the device may still execute), else -EAGAIN, or
 * -ENODEV when no usable device is bound.
 */
int vtmem_settle(void);

/* Generation of the bound device, 0 when none is bound. */
u32 vtmem_device_gen(void);

/* True when a device is bound and not broken (it may be being removed). */
bool vtmem_device_usable(void);

/* True when the bound device negotiated TMEM_F_SHARED. */
bool vtmem_shared_pools(void);

/* Statistics: per-cpu counters, safe in any context (IRQs off included). */
enum vtmem_stat {
	VTMEM_STAT_STATUS_OK,
	VTMEM_STAT_STATUS_MISS,
	VTMEM_STAT_STATUS_NOSPACE,
	VTMEM_STAT_STATUS_INVALID,
	VTMEM_STAT_STATUS_DENIED,
	VTMEM_STAT_STATUS_FROZEN,
	VTMEM_STAT_STATUS_UNSUPPORTED,
	VTMEM_STAT_STATUS_OTHER,
	VTMEM_STAT_ERR_PROTOCOL,
	VTMEM_STAT_ERR_SUBMIT,
	VTMEM_STAT_TIMEOUTS,
	VTMEM_STAT_NO_DEVICE,
	VTMEM_STAT_NO_QUEUE,
	VTMEM_STAT_QUEUE_WAITS,
	VTMEM_STAT_ORPHANS_REAPED,
	VTMEM_STAT_ORPHAN_FLUSHES,
	VTMEM_STAT_UNORDERED,
	VTMEM_STAT_SLOW_WAITS,
	VTMEM_STAT_SUSPENDED,
	VTMEM_STAT_POOLS_REPAIRED,
	VTMEM_STAT_CC_PUTS_OK,
	VTMEM_STAT_CC_PUTS_REFUSED,
	VTMEM_STAT_CC_GETS_HIT,
	VTMEM_STAT_CC_GETS_MISS,
	VTMEM_STAT_CC_FLUSH_PAGE,
	VTMEM_STAT_CC_FLUSH_INODE,
	VTMEM_STAT_CC_FLUSH_FS,
	VTMEM_STAT_CC_POOLS_CREATED,
	VTMEM_STAT_CC_POOL_FAILURES,
	VTMEM_STAT_CC_POOLS_POISONED,

	VTMEM_STAT_FS_STORES_OK,
	VTMEM_STAT_FS_STORES_REFUSED,
	VTMEM_STAT_FS_STORES_HUGE,
	VTMEM_STAT_FS_STORES_BLOCKED,
	VTMEM_STAT_FS_LOADS_HIT,
	VTMEM_STAT_FS_LOADS_MISS,
	VTMEM_STAT_FS_LOADS_LOST,
	VTMEM_STAT_FS_FLUSH_PAGE,
	VTMEM_STAT_FS_FLUSH_AREA,
	VTMEM_STAT_FS_POOLS_CREATED,
	VTMEM_STAT_FS_POOL_FAILURES,
	VTMEM_STAT_FS_PAGES_BROUGHT_BACK,
	VTMEM_STAT_HIBERNATION_REFUSED,
	VTMEM_NR_STATS
};

/* Latency histogram: bucket i counts requests that took [2^i, 2^(i+1)) ns. */
#define VTMEM_LAT_BUCKETS	32
#define VTMEM_NR_OPS		(TMEM_OP_RESET + 1)

struct vtmem_stats {
	u64 cnt[VTMEM_NR_STATS];
	u64 req[VTMEM_NR_OPS];
	u64 lat_sum_ns[VTMEM_NR_OPS];
	u64 lat[VTMEM_NR_OPS][VTMEM_LAT_BUCKETS];
};

extern struct vtmem_stats __percpu *vtmem_stats;

static inline void vtmem_stat_inc(enum vtmem_stat s)
{
	this_cpu_inc(vtmem_stats->cnt[s]);
}

u64 vtmem_stat_sum(enum vtmem_stat s);

/* tmem_backends.c */
void vtmem_backends_device_up(u32 gen);
void vtmem_backends_device_leaving(bool usable);
void vtmem_backends_device_gone(u32 gen);
bool vtmem_backends_hibernating(void);
int vtmem_backends_init(void);
void vtmem_backends_exit(void);
unsigned int vtmem_backends_live_pools(u32 gen);
void vtmem_backends_debugfs(struct dentry *dir);

#endif /* _VIRTIO_TMEM_H */
