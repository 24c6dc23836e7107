// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_tmem: the cleancache and frontswap backends.
 *
 * One small function per callback, each one tmem operation, mapped as in
 * ABI.md ("Guest-side mapping"), after drivers/xen/tmem.c.  The kernel's pool
 * ids (a cleancache pool id, a swap type) index our own pool tables, whose
 * entries name the device pool together with the generation of the device
 * that made it: after the device is removed and another one bound, a pool id
 * the kernel still holds reaches the new device only once re-created there,
 * never as a number the new device may have given to another pool.
 *
 * Calling contexts (Linux 5.10): cleancache put_page and invalidate_page run
 * with interrupts off under the page-cache lock; frontswap invalidate_page
 * under the swap spinlock: these spin, bounded by timeout_ms.  cleancache
 * get_page is treated the same way.  Frontswap store and load run in process
 * context (swap_writepage, swap_readpage) and may sleep while they wait.
 * Pool creation and destruction (init_fs, invalidate_fs, frontswap init and
 * invalidate_area) run in process context and take a mutex.
 *
 * Requests of unknown outcome (timed out, or never sent: see
 * vtmem_outcome_unknown()) are the heart of data safety here:
 *
 *  - frontswap store: a failed store leaves the offset out of frontswap's
 *    own bitmap (__frontswap_store() clears it before storing a duplicate
 *    and sets it only on success), and __frontswap_load() calls us only for
 *    offsets in that bitmap.  So a late PUT can only be returned after a
 *    later successful PUT of the same offset, which replaces it, provided
 *    the later PUT is not overtaken by the late one: stores are "ordered"
 *    (refused while any request of unknown outcome is outstanding, see
 *    vtmem_submit()).  A late FLUSH_PAGE is covered the same way.
 *  - frontswap load of a page that exists only in tmem (writethrough=0)
 *    never gives up while the device lives: failing it would make the
 *    kernel read a swap slot that was never written.
 *  - cleancache: a PUT or FLUSH whose outcome is unknown may leave an old
 *    copy on the device that a later GET would return as file contents.
 *    The pool is then "poisoned": gets miss, puts are refused, and a worker
 *    destroys and re-creates it once nothing of unknown outcome is left.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/uuid.h>
#include <linux/mm.h>
#include <linux/swap.h>
#include <linux/cleancache.h>
#include <linux/frontswap.h>
#include <linux/suspend.h>
#include <linux/workqueue.h>
#include <linux/delay.h>
#include <linux/srcu.h>
#include <linux/seq_file.h>
#include <linux/kthread.h>
#include <linux/sched/signal.h>

#include "virtio_tmem.h"

static bool use_cleancache = true;
module_param_named(cleancache, use_cleancache, bool, 0444);
MODULE_PARM_DESC(cleancache, "register the cleancache backend (default 1)");

static bool use_frontswap = true;
module_param_named(frontswap, use_frontswap, bool, 0444);
MODULE_PARM_DESC(frontswap, "register the frontswap backend (default 1)");

static bool exclusive_gets;
module_param(exclusive_gets, bool, 0444);
MODULE_PARM_DESC(exclusive_gets,
		 "frontswap loads take the page out of tmem (TMEM_REQF_EXCLUSIVE; default 0)");

static bool writethrough;
module_param(writethrough, bool, 0444);
MODULE_PARM_DESC(writethrough,
		 "frontswap also writes every stored page to the swap device (default 0)");

/*
 * A pool as the kernel knows it.  @handle and @state are read locklessly
 * by the page callbacks; everything else changes under vtmem_pool_lock.
 */
struct vtmem_pool {
	atomic64_t handle;	/* gen << 32 | device pool id; 0: no pool */
	unsigned long state;	/* VTMEM_POOL_* bits */
	bool used;		/* the kernel holds this pool id */
	u32 flags;		/* TMEM_POOL_* asked for */
	uuid_t uuid;		/* shared pools */
};

/*
 * Not to be trusted or used: the device may hold pages of it the kernel no
 * longer has, or its creation had to wait.  vtmem_repair() (re)creates it.
 */
#define VTMEM_POOL_POISONED	0

/* cleancache pool ids: one per mounted filesystem, so plenty. */
#define VTMEM_CC_POOLS	256

static struct vtmem_pool cc_pools[VTMEM_CC_POOLS];
static struct vtmem_pool fs_pools[MAX_SWAPFILES];
static DEFINE_MUTEX(vtmem_pool_lock);
/* Backends registered (with vtmem_probe_lock held by our caller). */
static bool vtmem_registered;
static bool vtmem_fs_registered;
/* Between PM_HIBERNATION_PREPARE and PM_POST_HIBERNATION. */
static bool vtmem_hibernation;
/* Frontswap stores running: hibernation waits for those that missed it. */
static atomic_t vtmem_fs_storing = ATOMIC_INIT(0);

/*
 * cleancache page callbacks read a pool handle and send their request
 * inside a read section of this SRCU: vtmem_repair() waits for them before
 * it re-creates a pool, so no request of the old pool reaches the new one.
 */
static struct srcu_struct vtmem_cc_srcu;

static void vtmem_repair(struct work_struct *work);
static DECLARE_DELAYED_WORK(vtmem_repair_work, vtmem_repair);
/* Retry period of vtmem_repair() while the device is still settling. */
#define VTMEM_REPAIR_RETRY_MS	1000

static u64 vtmem_handle(u32 gen, u32 pool_id)
{
	return (u64)gen << 32 | pool_id;
}

/*
 * Points @op at the device pool behind @p; false when there is none or it
 * is poisoned.  cleancache calls it inside vtmem_cc_srcu (see there);
 * frontswap pools are re-created only when they have no handle.
 */
static bool vtmem_pool_bind(struct vtmem_pool *p, struct vtmem_op *op)
{
	u64 h;

	if (test_bit(VTMEM_POOL_POISONED, &p->state))
		return false;
	/* Pairs with smp_mb__before_atomic() in vtmem_repair_one(). */
	smp_rmb();
	h = atomic64_read(&p->handle);
	if (!h)
		return false;
	op->gen = h >> 32;
	op->pool_id = (u32)h;
	return true;
}

static void vtmem_poison(struct vtmem_pool *p, enum vtmem_stat stat)
{
	if (!test_and_set_bit(VTMEM_POOL_POISONED, &p->state)) {
		vtmem_stat_inc(stat);
		/* Safe with interrupts off. */
		mod_delayed_work(system_wq, &vtmem_repair_work, 0);
	}
}

/*
 * NEW_POOL, ordered: refused (-EAGAIN) while a request of unknown outcome
 * is outstanding, since a late PUT of a destroyed pool must not land in a
 * new pool that got the same id.
 */
static int vtmem_new_pool(u32 flags, const uuid_t *uuid, u64 *handle)
{
	struct tmem_new_pool np = {
		.flags = cpu_to_le32(flags),
		.page_size = cpu_to_le32(TMEM_PAGE_SIZE),
	};
	struct vtmem_op op = {
		.op = TMEM_OP_NEW_POOL,
		.wait = VTMEM_WAIT_SLEEP,
		.ordered = true,
		.in = &np,
		.in_len = sizeof(np),
	};
	int err;

	if (flags & TMEM_POOL_SHARED)
		memcpy(np.uuid, uuid, TMEM_UUID_SIZE);
	err = vtmem_request(&op);
	if (err)
		return err;
	if (op.value > U32_MAX)
		return -EIO;
	*handle = vtmem_handle(op.gen, op.value);
	return 0;
}

/* NEW_POOL for @p on the bound device.  Called with vtmem_pool_lock. */
static int vtmem_pool_create(struct vtmem_pool *p)
{
	u64 handle = 0;
	int err = -EINVAL;

	/*
	 * A shared filesystem gets a private pool when the device has no
	 * shared pools or refuses this guest one, as Xen's tmem did: a
	 * private cache is always correct, only not shared.
	 */
	if ((p->flags & TMEM_POOL_SHARED) && vtmem_shared_pools())
		err = vtmem_new_pool(p->flags, &p->uuid, &handle);
	if (err == -EINVAL || err == TMEM_S_DENIED)
		err = vtmem_new_pool(p->flags & ~TMEM_POOL_SHARED, NULL,
				     &handle);
	atomic64_set(&p->handle, err ? 0 : handle);
	return err;
}

/*
 * DESTROY_POOL, if the pool lives on the bound device; the kernel's side
 * forgets it either way.  Returns the request's result (0 when there was
 * nothing to destroy).
 */
static int vtmem_pool_destroy(struct vtmem_pool *p)
{
	struct vtmem_op op = {
		.op = TMEM_OP_DESTROY_POOL,
		.wait = VTMEM_WAIT_SLEEP,
	};
	int err = 0;

	if (atomic64_read(&p->handle)) {
		op.gen = atomic64_read(&p->handle) >> 32;
		op.pool_id = (u32)atomic64_read(&p->handle);
		err = vtmem_request(&op);
	}
	atomic64_set(&p->handle, 0);
	return err;
}

static bool vtmem_pool_live(struct vtmem_pool *p)
{
	u64 h = atomic64_read(&p->handle);

	return h && h >> 32 == vtmem_device_gen();
}

/*
 * Creates the pool of a kernel id (cleancache init_fs, frontswap init, a new
 * device).  When the device is still settling (-EAGAIN) the pool is
 * poisoned instead, and vtmem_repair() creates it later.
 */
static void vtmem_pool_setup(struct vtmem_pool *p, enum vtmem_stat created,
			     enum vtmem_stat failed)
{
	int err = vtmem_pool_create(p);

	if (!err)
		vtmem_stat_inc(created);
	else if (err == -EAGAIN)
		vtmem_poison(p, failed);
	else
		vtmem_stat_inc(failed);
}

/*
 * Re-creates poisoned pool @p (vtmem_pool_lock held, the device settled):
 * DESTROY_POOL, then NEW_POOL.  -EAGAIN while the destroy's outcome is
 * unknown: the pool stays poisoned and is tried again.
 */
static int vtmem_repair_one(struct vtmem_pool *p, enum vtmem_stat failed)
{
	int err;

	if (!p->used || !vtmem_device_gen())
		goto clear;
	err = vtmem_pool_destroy(p);
	if (vtmem_outcome_unknown(err)) {
		/* Whatever it did, the old id is never named again. */
		return -EAGAIN;
	}
	err = vtmem_pool_create(p);
	if (err == -EAGAIN)
		return err;
	vtmem_stat_inc(err ? failed : VTMEM_STAT_POOLS_REPAIRED);
clear:
	/* The new handle is set before the pool is trusted again. */
	smp_mb__before_atomic();
	clear_bit(VTMEM_POOL_POISONED, &p->state);
	return 0;
}

/*
 * The worker behind poisoned pools.  Which pools it repairs is read first;
 * then synchronize_srcu() waits until every request that read their old
 * handles has ended (or is counted as of unknown outcome), and vtmem_settle() until
 * the device has executed all of those; only then can the old pool go and a
 * new one (possibly with the same device id) come without any late request
 * of the old one landing in it.
 */
static void vtmem_repair(struct work_struct *work)
{
	DECLARE_BITMAP(cc, VTMEM_CC_POOLS);
	DECLARE_BITMAP(fs, MAX_SWAPFILES);
	unsigned int i;
	int err = 0;

	for (i = 0; i < VTMEM_CC_POOLS; i++)
		__assign_bit(i, cc, test_bit(VTMEM_POOL_POISONED,
					     &cc_pools[i].state));
	for (i = 0; i < MAX_SWAPFILES; i++)
		__assign_bit(i, fs, test_bit(VTMEM_POOL_POISONED,
					     &fs_pools[i].state));
	if (bitmap_empty(cc, VTMEM_CC_POOLS) && bitmap_empty(fs, MAX_SWAPFILES))
		return;
	synchronize_srcu(&vtmem_cc_srcu);

	mutex_lock(&vtmem_pool_lock);
	if (vtmem_settle() == -EAGAIN) {
		err = -EAGAIN;
		goto out_unlock;
	}
	for_each_set_bit(i, cc, VTMEM_CC_POOLS) {
		err = vtmem_repair_one(&cc_pools[i],
				       VTMEM_STAT_CC_POOL_FAILURES);
		if (err)
			goto out_unlock;
	}
	for_each_set_bit(i, fs, MAX_SWAPFILES) {
		err = vtmem_repair_one(&fs_pools[i],
				       VTMEM_STAT_FS_POOL_FAILURES);
		if (err)
			goto out_unlock;
	}
out_unlock:
	mutex_unlock(&vtmem_pool_lock);
	if (err)
		mod_delayed_work(system_wq, &vtmem_repair_work,
				 msecs_to_jiffies(VTMEM_REPAIR_RETRY_MS));
}

#ifdef CONFIG_CLEANCACHE
/* Next cleancache id to try: ids are reused as late as possible. */
static unsigned int cc_next;

/* The 192-bit filekey is the object id, word by word (as Xen's tmem). */
static void vtmem_cc_key(struct vtmem_op *op, struct cleancache_filekey *key)
{
	BUILD_BUG_ON(sizeof(key->u.key) != sizeof(op->oid));
	op->oid[0] = (u64)key->u.key[1] << 32 | key->u.key[0];
	op->oid[1] = (u64)key->u.key[3] << 32 | key->u.key[2];
	op->oid[2] = (u64)key->u.key[5] << 32 | key->u.key[4];
}

/* The kernel's pool id @pool, or NULL when it is none of ours. */
static struct vtmem_pool *vtmem_cc_pool(int pool)
{
	if (pool < 0 || pool >= VTMEM_CC_POOLS)
		return NULL;
	return &cc_pools[pool];
}

/*
 * Sends @op for a page of pool @p; -ENODEV when there is no usable pool.
 * A PUT or FLUSH whose outcome is unknown poisons the pool: the device may
 * hold a copy the kernel has since changed or dropped.
 */
static int vtmem_cc_request(struct vtmem_pool *p, struct cleancache_filekey *key,
			    pgoff_t index, struct vtmem_op *op)
{
	int err = -ENODEV, idx;

	if (!p)
		return err;
	/* The ABI's page index is 32 bits; larger files go uncached. */
	op->index = index;
	if (op->index != index)
		return err;
	vtmem_cc_key(op, key);
	idx = srcu_read_lock(&vtmem_cc_srcu);
	if (vtmem_pool_bind(p, op))
		err = vtmem_request(op);
	srcu_read_unlock(&vtmem_cc_srcu, idx);
	if (op->op != TMEM_OP_GET_PAGE && vtmem_outcome_unknown(err))
		vtmem_poison(p, VTMEM_STAT_CC_POOLS_POISONED);
	return err;
}

static void vtmem_cc_put_page(int pool, struct cleancache_filekey key,
			      pgoff_t index, struct page *page)
{
	struct vtmem_op op = { .op = TMEM_OP_PUT_PAGE, .page = page };

	if (!vtmem_cc_request(vtmem_cc_pool(pool), &key, index, &op))
		vtmem_stat_inc(VTMEM_STAT_CC_PUTS_OK);
	else
		vtmem_stat_inc(VTMEM_STAT_CC_PUTS_REFUSED);
}

static int vtmem_cc_get_page(int pool, struct cleancache_filekey key,
			     pgoff_t index, struct page *page)
{
	struct vtmem_op op = { .op = TMEM_OP_GET_PAGE, .page = page };

	if (!vtmem_cc_request(vtmem_cc_pool(pool), &key, index, &op)) {
		vtmem_stat_inc(VTMEM_STAT_CC_GETS_HIT);
		return 0;
	}
	vtmem_stat_inc(VTMEM_STAT_CC_GETS_MISS);
	return -1;
}

static void vtmem_cc_invalidate_page(int pool, struct cleancache_filekey key,
				     pgoff_t index)
{
	struct vtmem_op op = { .op = TMEM_OP_FLUSH_PAGE };

	vtmem_cc_request(vtmem_cc_pool(pool), &key, index, &op);
	vtmem_stat_inc(VTMEM_STAT_CC_FLUSH_PAGE);
}

static void vtmem_cc_invalidate_inode(int pool, struct cleancache_filekey key)
{
	struct vtmem_op op = { .op = TMEM_OP_FLUSH_OBJECT };

	vtmem_cc_request(vtmem_cc_pool(pool), &key, 0, &op);
	vtmem_stat_inc(VTMEM_STAT_CC_FLUSH_INODE);
}

/*
 * umount.  A DESTROY_POOL of unknown outcome leaves a pool on the device
 * that nobody names any more (until RESET); a late request of it cannot
 * reach a new pool, which is created only once the device has settled.
 */
static void vtmem_cc_invalidate_fs(int pool)
{
	struct vtmem_pool *p = vtmem_cc_pool(pool);

	if (!p)
		return;
	mutex_lock(&vtmem_pool_lock);
	if (p->used) {
		vtmem_pool_destroy(p);
		p->used = false;
		clear_bit(VTMEM_POOL_POISONED, &p->state);
	}
	mutex_unlock(&vtmem_pool_lock);
	vtmem_stat_inc(VTMEM_STAT_CC_FLUSH_FS);
}

/*
 * A new kernel pool id and its device pool.  The id is handed out even
 * when no device pool can be made now (no device bound, device settling,
 * pool limit): cleancache would otherwise leave the filesystem uncached
 * until remount; the pool is made when a device comes (vtmem_backends_
 * device_up()) or the device settles (vtmem_repair()).  The callback does
 * not say which superblock it is for, so a remount that initialises the
 * same superblock again (ext4, ro to rw) gets a new, empty pool; the old
 * one is orphaned until RESET (README.md).
 */
static int vtmem_cc_new_pool(size_t pagesize, u32 flags, const uuid_t *uuid)
{
	struct vtmem_pool *p;
	unsigned int i, n;
	int id = -1;

	if (pagesize != TMEM_PAGE_SIZE)
		return -1;

	mutex_lock(&vtmem_pool_lock);
	for (i = 0; i < VTMEM_CC_POOLS; i++) {
		n = (cc_next + i) % VTMEM_CC_POOLS;
		if (!cc_pools[n].used)
			break;
	}
	if (i == VTMEM_CC_POOLS) {
		pr_warn("cleancache: all %d pool ids in use\n", VTMEM_CC_POOLS);
		goto out_unlock;
	}
	p = &cc_pools[n];
	p->flags = flags;
	if (uuid)
		uuid_copy(&p->uuid, uuid);
	else
		uuid_copy(&p->uuid, &uuid_null);
	p->used = true;
	if (vtmem_device_gen())
		vtmem_pool_setup(p, VTMEM_STAT_CC_POOLS_CREATED,
				 VTMEM_STAT_CC_POOL_FAILURES);
	cc_next = n + 1;
	id = n;
out_unlock:
	mutex_unlock(&vtmem_pool_lock);
	return id;
}

static int vtmem_cc_init_fs(size_t pagesize)
{
	return vtmem_cc_new_pool(pagesize, 0, NULL);
}

static int vtmem_cc_init_shared_fs(uuid_t *uuid, size_t pagesize)
{
	return vtmem_cc_new_pool(pagesize, TMEM_POOL_SHARED, uuid);
}

static const struct cleancache_ops vtmem_cleancache_ops = {
	.init_fs		= vtmem_cc_init_fs,
	.init_shared_fs		= vtmem_cc_init_shared_fs,
	.get_page		= vtmem_cc_get_page,
	.put_page		= vtmem_cc_put_page,
	.invalidate_page	= vtmem_cc_invalidate_page,
	.invalidate_inode	= vtmem_cc_invalidate_inode,
	.invalidate_fs		= vtmem_cc_invalidate_fs,
};
#endif /* CONFIG_CLEANCACHE */

#ifdef CONFIG_FRONTSWAP
/* ABI.md: oid[0] = offset >> 12, index = offset & 4095, one pool per type. */
static bool vtmem_fs_bind(unsigned int type, pgoff_t offset,
			  struct vtmem_op *op)
{
	if (type >= MAX_SWAPFILES)
		return false;
	op->oid[0] = offset >> 12;
	op->index = offset & 4095;
	return vtmem_pool_bind(&fs_pools[type], op);
}

/*
 * swap_writepage() hands us a whole transparent huge page (THP_SWAP) as its
 * head page; storing 4 KiB of it and saying yes would lose the other 511
 * subpages, so such pages are refused, as zswap does, and go to the swap
 * device.  Stores are ordered (see the top of this file) and refused while
 * the device is leaving or the guest hibernates.
 */
static int vtmem_fs_store(unsigned int type, pgoff_t offset,
			  struct page *page)
{
	struct vtmem_op op = {
		.op = TMEM_OP_PUT_PAGE,
		.wait = VTMEM_WAIT_SLEEP,
		.ordered = true,
		.page = page,
	};
	int err = -ENODEV;

	if (PageCompound(page)) {
		vtmem_stat_inc(VTMEM_STAT_FS_STORES_HUGE);
		goto refused;
	}
	atomic_inc(&vtmem_fs_storing);
	/* Pairs with smp_mb() in vtmem_pm_notify(). */
	smp_mb__after_atomic();
	if (READ_ONCE(vtmem_hibernation))
		vtmem_stat_inc(VTMEM_STAT_FS_STORES_BLOCKED);
	else if (vtmem_fs_bind(type, offset, &op))
		err = vtmem_request(&op);
	atomic_dec(&vtmem_fs_storing);
	if (!err) {
		vtmem_stat_inc(VTMEM_STAT_FS_STORES_OK);
		return 0;
	}
refused:
	vtmem_stat_inc(VTMEM_STAT_FS_STORES_REFUSED);
	return -1;
}

/*
 * Without writethrough the page is nowhere else, so the load waits for the
 * device as long as it lives (VTMEM_WAIT_FOREVER); with writethrough a
 * slow device only costs a read from the swap device.
 */
static int vtmem_fs_load(unsigned int type, pgoff_t offset,
			 struct page *page)
{
	struct vtmem_op op = {
		.op = TMEM_OP_GET_PAGE,
		.flags = exclusive_gets ? TMEM_REQF_EXCLUSIVE : 0,
		.wait = writethrough ? VTMEM_WAIT_SLEEP : VTMEM_WAIT_FOREVER,
		.page = page,
	};
	int err = -ENODEV;

	if (vtmem_fs_bind(type, offset, &op))
		err = vtmem_request(&op);
	if (!err) {
		vtmem_stat_inc(VTMEM_STAT_FS_LOADS_HIT);
		return 0;
	}
	vtmem_stat_inc(VTMEM_STAT_FS_LOADS_MISS);
	/*
	 * The kernel asks only for pages a frontswap backend stored.  Unless
	 * writethrough put them on the swap device too, a page we cannot
	 * return is gone; say so rather than let it pass silently.
	 */
	if (!writethrough) {
		vtmem_stat_inc(VTMEM_STAT_FS_LOADS_LOST);
		pr_err_ratelimited("frontswap: type %u offset %lu not returned (%d): that swapped-out page is lost\n",
				   type, offset, err);
	}
	return -1;
}

/*
 * Under the swap lock: spins.  A flush that does not happen leaves a page
 * the kernel forgot on the device: never returned (the offset left
 * frontswap's bitmap), only counted until the offset is stored again or
 * the swap area goes.
 */
static void vtmem_fs_invalidate_page(unsigned int type, pgoff_t offset)
{
	struct vtmem_op op = { .op = TMEM_OP_FLUSH_PAGE };

	if (vtmem_fs_bind(type, offset, &op))
		vtmem_request(&op);
	vtmem_stat_inc(VTMEM_STAT_FS_FLUSH_PAGE);
}

static void vtmem_fs_invalidate_area(unsigned int type)
{
	struct vtmem_pool *p;

	if (type >= MAX_SWAPFILES)
		return;
	p = &fs_pools[type];
	mutex_lock(&vtmem_pool_lock);
	vtmem_pool_destroy(p);
	p->used = false;
	clear_bit(VTMEM_POOL_POISONED, &p->state);
	mutex_unlock(&vtmem_pool_lock);
	vtmem_stat_inc(VTMEM_STAT_FS_FLUSH_AREA);
}

/*
 * swapon of @type.  A pool still alive for the type is kept: the kernel
 * loads only offsets it stored after this swapon, and every store replaces
 * its handle, so nothing stale is ever returned from it.
 */
static void vtmem_fs_init(unsigned int type)
{
	struct vtmem_pool *p;

	if (type >= MAX_SWAPFILES)
		return;
	p = &fs_pools[type];
	mutex_lock(&vtmem_pool_lock);
	p->used = true;
	p->flags = TMEM_POOL_PERSIST;
	if (!vtmem_pool_live(p) && vtmem_device_gen())
		vtmem_pool_setup(p, VTMEM_STAT_FS_POOLS_CREATED,
				 VTMEM_STAT_FS_POOL_FAILURES);
	mutex_unlock(&vtmem_pool_lock);
}

static struct frontswap_ops vtmem_frontswap_ops = {
	.init			= vtmem_fs_init,
	.store			= vtmem_fs_store,
	.load			= vtmem_fs_load,
	.invalidate_page	= vtmem_fs_invalidate_page,
	.invalidate_area	= vtmem_fs_invalidate_area,
};

static bool vtmem_register_frontswap(void)
{
	if (!use_frontswap)
		return false;
	if (writethrough)
		frontswap_writethrough(true);
	if (exclusive_gets)
		frontswap_tmem_exclusive_gets(true);
	frontswap_register_ops(&vtmem_frontswap_ops);
	pr_info("frontswap enabled%s%s\n",
		writethrough ? ", writethrough" : "",
		exclusive_gets ? ", exclusive gets" : "");
	return true;
}

/* Frontswap pages that exist only in tmem. */
static unsigned long vtmem_fs_held(void)
{
	return vtmem_fs_registered && !writethrough ? frontswap_curr_pages() : 0;
}

/*
 * Bringing frontswap pages back into guest memory (unbind, hibernation).
 *
 * Linux 5.10's frontswap_shrink(0) asks try_to_unuse() to unuse "all"
 * frontswap pages of one swap area, and that loop retries until the whole
 * area is empty (si->inuse_pages) or signal_pending(current): with pages
 * frontswap refused on the swap device it never returns by itself.  So it
 * runs in a kthread that accepts SIGKILL; the caller (process context)
 * watches frontswap_curr_pages() and, once it is 0 (every frontswap page
 * unused: the rest of the loop only meets swap-device pages), kills the
 * thread, whose try_to_unuse() then returns -EINTR at its next check.
 * Stores are refused by then, so the count can only fall.  A partial
 * shrink (a target of 1 page) would return, but leaves a page behind.
 *
 * Each frontswap_shrink() call picks one swap area (the first active one),
 * so the thread calls it until no frontswap page is left.
 */
#define VTMEM_UNUSE_POLL_MS	10
/* No page came back for this long: the device or the guest cannot serve. */
#define VTMEM_UNUSE_STALL_MS	60000

static int vtmem_fs_unuse_fn(void *unused)
{
	unsigned long before;

	allow_signal(SIGKILL);
	while (!signal_pending(current) && !kthread_should_stop()) {
		before = frontswap_curr_pages();
		if (!before)
			break;
		frontswap_shrink(0);
		/* Nothing came back (no memory, an empty first area): pause. */
		if (frontswap_curr_pages() >= before)
			msleep_interruptible(VTMEM_UNUSE_POLL_MS);
	}
	/*
	 * Only kthread_stop() ends the thread, so that its caller needs no
	 * task reference.  TASK_IDLE: a pending SIGKILL does not wake it.
	 */
	for (;;) {
		set_current_state(TASK_IDLE);
		if (kthread_should_stop())
			break;
		schedule();
	}
	__set_current_state(TASK_RUNNING);
	return 0;
}

/*
 * A bring-back at device removal that did not finish: its thread may wait
 * in a frontswap load that only the device's end can stop, so it is
 * stopped in vtmem_backends_device_gone().
 */
static struct task_struct *vtmem_unuse_leftover;

/*
 * Brings every frontswap page that exists only in tmem back into guest
 * memory (with writethrough the swap device has them all); returns how many
 * are still held.  With @defer, a thread that may still be inside a load is
 * left in vtmem_unuse_leftover instead of being waited for.
 */
static unsigned long vtmem_fs_bring_back(const char *why, bool defer)
{
	unsigned long start, left, now;
	struct task_struct *task;
	unsigned long progress;

	start = vtmem_fs_held();
	if (!start)
		return 0;
	pr_info("%s: bringing %lu frontswap page(s) back from tmem\n", why,
		start);
	task = kthread_run(vtmem_fs_unuse_fn, NULL, "vtmem_unuse");
	if (IS_ERR(task)) {
		pr_err("%s: cannot start the unuse thread (%ld)\n", why,
		       PTR_ERR(task));
		return start;
	}
	left = start;
	progress = jiffies;
	for (;;) {
		now = frontswap_curr_pages();
		if (!now)
			break;
		if (now < left) {
			left = now;
			progress = jiffies;
		} else if (time_after(jiffies, progress +
				      msecs_to_jiffies(VTMEM_UNUSE_STALL_MS))) {
			pr_err("%s: no frontswap page came back in %u s (%lu left): giving up\n",
			       why, VTMEM_UNUSE_STALL_MS / 1000, now);
			break;
		}
		if (!vtmem_device_usable()) {
			pr_err("%s: the device broke while bringing frontswap pages back (%lu left)\n",
			       why, now);
			break;
		}
		msleep(VTMEM_UNUSE_POLL_MS);
	}
	send_sig(SIGKILL, task, 1);
	if (now && defer)
		vtmem_unuse_leftover = task;
	else
		kthread_stop(task);
	left = vtmem_fs_held();
	if (start > left) {
		this_cpu_add(vtmem_stats->cnt[VTMEM_STAT_FS_PAGES_BROUGHT_BACK],
			     start - left);
	}
	pr_info("%s: %lu frontswap page(s) brought back, %lu left\n", why,
		start - min(start, left), left);
	return left;
}

static void vtmem_fs_unuse_reap(void)
{
	if (vtmem_unuse_leftover) {
		kthread_stop(vtmem_unuse_leftover);
		vtmem_unuse_leftover = NULL;
	}
}
#else
static bool vtmem_register_frontswap(void)
{
	if (use_frontswap)
		pr_warn("frontswap: kernel built without CONFIG_FRONTSWAP\n");
	return false;
}

static unsigned long vtmem_fs_held(void)
{
	return 0;
}

static unsigned long vtmem_fs_bring_back(const char *why, bool defer)
{
	return 0;
}

static void vtmem_fs_unuse_reap(void)
{
}
#endif

#ifdef CONFIG_CLEANCACHE
static bool vtmem_register_cleancache(void)
{
	int err;

	if (!use_cleancache)
		return false;
	/* -EBUSY: cleancache takes one backend only, and has one. */
	err = cleancache_register_ops(&vtmem_cleancache_ops);
	if (err) {
		pr_warn("cleancache: not registered (%d), another backend holds it\n",
			err);
		return false;
	}
	pr_info("cleancache enabled\n");
	return true;
}
#else
static bool vtmem_register_cleancache(void)
{
	if (use_cleancache)
		pr_warn("cleancache: kernel built without CONFIG_CLEANCACHE\n");
	return false;
}
#endif

/*
 * Registration is for good: neither cleancache nor frontswap can drop a
 * backend.  The module pins itself first, so that it can never be unloaded
 * under the kernel's feet; callbacks that arrive with no device bound fail
 * safely (puts refused, gets miss).  A module already being unloaded
 * (rmmod racing the first probe) cannot be pinned: it registers nothing.
 */
static void vtmem_register(void)
{
	bool cc;

	vtmem_registered = true;
	if (!try_module_get(THIS_MODULE)) {
		pr_warn("module is being unloaded: backends not registered\n");
		return;
	}
	vtmem_fs_registered = vtmem_register_frontswap();
	cc = vtmem_register_cleancache();
	if (vtmem_fs_registered || cc)
		pr_info("backends registered: the module cannot be unloaded\n");
	else
		module_put(THIS_MODULE);
}

static void vtmem_pools_recreate(struct vtmem_pool *pools, unsigned int n,
				 enum vtmem_stat created, enum vtmem_stat failed)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		if (!pools[i].used || vtmem_pool_live(&pools[i]))
			continue;
		clear_bit(VTMEM_POOL_POISONED, &pools[i].state);
		vtmem_pool_setup(&pools[i], created, failed);
	}
}

/*
 * A device was bound and published (vtmem_probe_lock held).  The first one
 * registers the backends, whose init callbacks then create the pools; a
 * later one re-creates the pools the kernel still holds, empty, since the
 * new device started with RESET.
 */
void vtmem_backends_device_up(u32 gen)
{
	mutex_lock(&vtmem_pool_lock);
	vtmem_pools_recreate(cc_pools, VTMEM_CC_POOLS,
			     VTMEM_STAT_CC_POOLS_CREATED,
			     VTMEM_STAT_CC_POOL_FAILURES);
	vtmem_pools_recreate(fs_pools, MAX_SWAPFILES,
			     VTMEM_STAT_FS_POOLS_CREATED,
			     VTMEM_STAT_FS_POOL_FAILURES);
	mutex_unlock(&vtmem_pool_lock);

	/* Not under vtmem_pool_lock: registration calls the init callbacks. */
	if (!vtmem_registered)
		vtmem_register();
}

/*
 * The bound device is about to be removed (new stores are refused already):
 * frontswap pages that exist only there come back into guest memory first,
 * unless the device is broken (then each load would fail at once).
 */
void vtmem_backends_device_leaving(bool usable)
{
	unsigned long left;

	if (usable)
		left = vtmem_fs_bring_back("device removal", true);
	else
		left = vtmem_fs_held();
	if (left)
		pr_err("device removal: %lu frontswap page(s) could not be brought back (not enough memory, the device broke or stopped answering): they exist only in tmem and are lost with the device\n",
		       left);
}

/* The device of generation @gen is gone; no callback can reach it now. */
void vtmem_backends_device_gone(u32 gen)
{
	unsigned int i;

	/* Its load, if any, ended with the device (waits see it dying). */
	vtmem_fs_unuse_reap();
	mutex_lock(&vtmem_pool_lock);
	for (i = 0; i < VTMEM_CC_POOLS; i++)
		if (atomic64_read(&cc_pools[i].handle) >> 32 == gen)
			atomic64_set(&cc_pools[i].handle, 0);
	for (i = 0; i < MAX_SWAPFILES; i++)
		if (atomic64_read(&fs_pools[i].handle) >> 32 == gen)
			atomic64_set(&fs_pools[i].handle, 0);
	mutex_unlock(&vtmem_pool_lock);
}

unsigned int vtmem_backends_live_pools(u32 gen)
{
	unsigned int i, n = 0;

	if (!gen)
		return 0;
	for (i = 0; i < VTMEM_CC_POOLS; i++)
		n += atomic64_read(&cc_pools[i].handle) >> 32 == gen;
	for (i = 0; i < MAX_SWAPFILES; i++)
		n += atomic64_read(&fs_pools[i].handle) >> 32 == gen;
	return n;
}

bool vtmem_backends_hibernating(void)
{
	return READ_ONCE(vtmem_hibernation);
}

/*
 * Hibernation powers the guest off: whatever tmem holds is gone when the
 * image comes back (another QEMU, another connection).  So from
 * PM_HIBERNATION_PREPARE on, stores are refused, and frontswap pages that
 * exist only in tmem are brought back into memory (they then go into the
 * image); if some cannot be, hibernation is refused, loudly.  .restore
 * starts the device afresh (RESET, pools re-created) when this flag is set.
 */
static int vtmem_pm_notify(struct notifier_block *nb, unsigned long action,
			   void *data)
{
	unsigned long left;

	switch (action) {
	case PM_HIBERNATION_PREPARE:
		WRITE_ONCE(vtmem_hibernation, true);
		/* Every store that did not see the flag ends (timeout_ms). */
		smp_mb();
		while (atomic_read(&vtmem_fs_storing))
			usleep_range(100, 200);
		left = vtmem_fs_bring_back("hibernation", false);
		if (!left)
			return NOTIFY_OK;
		/* The PM core sends no PM_POST_HIBERNATION to a veto. */
		WRITE_ONCE(vtmem_hibernation, false);
		vtmem_stat_inc(VTMEM_STAT_HIBERNATION_REFUSED);
		pr_err("hibernation refused: %lu frontswap page(s) exist only in tmem (writethrough=0) and could not be brought back into memory\n",
		       left);
		return NOTIFY_BAD;
	case PM_POST_HIBERNATION:
		WRITE_ONCE(vtmem_hibernation, false);
		return NOTIFY_OK;
	}
	return NOTIFY_DONE;
}

static struct notifier_block vtmem_pm_nb = {
	.notifier_call = vtmem_pm_notify,
};

int vtmem_backends_init(void)
{
	int err;

	err = init_srcu_struct(&vtmem_cc_srcu);
	if (err)
		return err;
	err = register_pm_notifier(&vtmem_pm_nb);
	if (err)
		cleanup_srcu_struct(&vtmem_cc_srcu);
	return err;
}

void vtmem_backends_exit(void)
{
	unregister_pm_notifier(&vtmem_pm_nb);
	cancel_delayed_work_sync(&vtmem_repair_work);
	cleanup_srcu_struct(&vtmem_cc_srcu);
}

static void vtmem_pools_show_one(struct seq_file *m, const char *backend,
				 unsigned int id, struct vtmem_pool *p)
{
	u64 h = atomic64_read(&p->handle);

	if (!p->used)
		return;
	if (h)
		seq_printf(m, "%s %u %u %u", backend, id, (u32)h,
			   (u32)(h >> 32));
	else
		seq_printf(m, "%s %u - -", backend, id);
	seq_printf(m, " %s%s%s\n",
		   p->flags & TMEM_POOL_PERSIST ? "persistent" : "ephemeral",
		   p->flags & TMEM_POOL_SHARED ? ",shared" : "",
		   test_bit(VTMEM_POOL_POISONED, &p->state) ? ",poisoned" : "");
}

/* "backend kernel_id device_pool_id generation kind", one pool a line. */
static int vtmem_pools_show(struct seq_file *m, void *v)
{
	unsigned int i;

	mutex_lock(&vtmem_pool_lock);
	for (i = 0; i < VTMEM_CC_POOLS; i++)
		vtmem_pools_show_one(m, "cleancache", i, &cc_pools[i]);
	for (i = 0; i < MAX_SWAPFILES; i++)
		vtmem_pools_show_one(m, "frontswap", i, &fs_pools[i]);
	mutex_unlock(&vtmem_pool_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vtmem_pools);

void vtmem_backends_debugfs(struct dentry *dir)
{
	debugfs_create_file("pools", 0444, dir, NULL, &vtmem_pools_fops);
}
