// How store.info(g, out) fills its Float64Array, as the device reads it to
// build struct tmem_info. The slots are the store's own constants, so the two
// cannot drift.
import type { InfoLayout } from './device.js';
import {
  INFO_CAPACITY_PAGES,
  INFO_EPHEMERAL_PAGES,
  INFO_LENGTH,
  INFO_MAX_POOLS,
  INFO_PERSISTENT_LIMIT_PAGES,
  INFO_PERSISTENT_PAGES,
} from './store/store.js';

export const INFO_LAYOUT: InfoLayout = {
  length: INFO_LENGTH,
  maxPools: INFO_MAX_POOLS,
  capacityPages: INFO_CAPACITY_PAGES,
  persistentLimitPages: INFO_PERSISTENT_LIMIT_PAGES,
  persistentPages: INFO_PERSISTENT_PAGES,
  ephemeralPages: INFO_EPHEMERAL_PAGES,
};
