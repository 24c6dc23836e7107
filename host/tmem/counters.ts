// The tmem device's counters, per connection (host/counters.ts has the table
// shape). Ops by opcode, answers by status.
import { type CounterBlock, counterIndex } from '../counters.js';

export const TMEM_COUNTERS = [
  { name: 'opNewPool', help: 'NEW_POOL requests', kind: 'counter', unit: 'requests' },
  { name: 'opDestroyPool', help: 'DESTROY_POOL requests', kind: 'counter', unit: 'requests' },
  { name: 'opPutPage', help: 'PUT_PAGE requests', kind: 'counter', unit: 'requests' },
  { name: 'opGetPage', help: 'GET_PAGE requests', kind: 'counter', unit: 'requests' },
  { name: 'opFlushPage', help: 'FLUSH_PAGE requests', kind: 'counter', unit: 'requests' },
  { name: 'opFlushObject', help: 'FLUSH_OBJECT requests', kind: 'counter', unit: 'requests' },
  { name: 'opInfo', help: 'INFO requests', kind: 'counter', unit: 'requests' },
  { name: 'opReset', help: 'RESET requests', kind: 'counter', unit: 'requests' },
  { name: 'opUnknown', help: 'requests with an unknown op or too short to name one', kind: 'counter', unit: 'requests' },
  { name: 'statusOk', help: 'requests answered TMEM_S_OK', kind: 'counter', unit: 'requests' },
  { name: 'statusMiss', help: 'requests answered TMEM_S_MISS', kind: 'counter', unit: 'requests' },
  { name: 'statusInvalid', help: 'requests answered TMEM_S_INVALID', kind: 'counter', unit: 'requests' },
  { name: 'statusNoSpace', help: 'requests answered TMEM_S_NOSPACE', kind: 'counter', unit: 'requests' },
  { name: 'statusDenied', help: 'requests answered TMEM_S_DENIED', kind: 'counter', unit: 'requests' },
  { name: 'statusFrozen', help: 'requests answered TMEM_S_FROZEN', kind: 'counter', unit: 'requests' },
  { name: 'statusUnsupported', help: 'requests answered TMEM_S_UNSUPPORTED', kind: 'counter', unit: 'requests' },
  { name: 'putsGathered', help: 'PUTs whose page spanned several descriptors (copied through a scratch page)', kind: 'counter', unit: 'requests' },
  { name: 'getsScattered', help: 'GETs whose page area spanned several descriptors', kind: 'counter', unit: 'requests' },
] as const;
export const TC = counterIndex(TMEM_COUNTERS);

export const TMEM_COUNTER_BLOCK: CounterBlock = { subsystem: 'tmem', scope: 'instance', counters: TMEM_COUNTERS };
