// Every counter block of the daemon in one list (host/counters.ts has the
// shape): what `tmemctl stats` and metrics (host/metrics/) iterate. A new
// device adds its block here.
import type { CounterBlock } from './counters.js';
import { BLK_COUNTER_BLOCK } from './blk/counters.js';
import { TMEM_COUNTER_BLOCK } from './tmem/counters.js';
import { STORE_COUNTER_BLOCK } from './tmem/store/accounting.js';
import { VRING_COUNTER_BLOCK, WORKER_COUNTER_BLOCK } from './vhost-user/counters.js';

export const COUNTER_TABLE: readonly CounterBlock[] = [WORKER_COUNTER_BLOCK, VRING_COUNTER_BLOCK, TMEM_COUNTER_BLOCK, STORE_COUNTER_BLOCK, BLK_COUNTER_BLOCK];
