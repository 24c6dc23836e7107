// How store.info(g, out) fills its Float64Array (host/store/store.ts), as the
// device reads it to build struct tmem_info.
import type { InfoLayout } from '../device/tmem-device.js';

export const INFO_LAYOUT: InfoLayout = {
  length: 8,
  maxPools: 0,
  capacityPages: 1,
  persistentLimitPages: 2,
  persistentPages: 3,
  ephemeralPages: 4,
};
