// Encode and decode ABI structs by their generated layouts. Used by tests and
// the control path; the hot path reads fields in place through the *_OFF_*
// constants instead, to avoid allocating a JS object per request.
import { STRUCTS, type StructLayout } from './abi.js';

export type FieldValue = bigint | bigint[] | Uint8Array;
export type StructValues = Record<string, FieldValue>;

function layoutOf(name: string): StructLayout {
  const layout = STRUCTS[name];
  if (!layout) throw new Error(`unknown ABI struct ${name}`);
  return layout;
}

/** Writes `values` into a new buffer of the struct's size; missing fields are zero. */
export function encodeStruct(name: string, values: StructValues): Uint8Array {
  const layout = layoutOf(name);
  const bytes = new Uint8Array(layout.size);
  const view = new DataView(bytes.buffer);
  for (const f of layout.fields) {
    const v = values[f.name];
    if (v === undefined) continue;
    if (f.type === 'u8') {
      if (!(v instanceof Uint8Array) || v.length !== f.count) throw new Error(`${name}.${f.name}: need ${f.count} bytes`);
      bytes.set(v, f.offset);
      continue;
    }
    const list = Array.isArray(v) ? v : [v];
    if (list.length !== f.count || list.some((x) => typeof x !== 'bigint')) {
      throw new Error(`${name}.${f.name}: need ${f.count} bigint value(s)`);
    }
    const width = f.type === 'le32' ? 4 : 8;
    list.forEach((x, i) => {
      const at = f.offset + i * width;
      // BigInt.asUintN makes negative statuses encode as two's complement.
      if (width === 4) view.setUint32(at, Number(BigInt.asUintN(32, x as bigint)), true);
      else view.setBigUint64(at, BigInt.asUintN(64, x as bigint), true);
    });
  }
  return bytes;
}

/** Reads a struct from `bytes` at `offset`; integers as unsigned bigints. */
export function decodeStruct(name: string, bytes: Uint8Array, offset = 0): StructValues {
  const layout = layoutOf(name);
  if (offset < 0 || offset + layout.size > bytes.length) throw new Error(`${name}: buffer too short`);
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, layout.size);
  const out: StructValues = {};
  for (const f of layout.fields) {
    if (f.type === 'u8') {
      out[f.name] = bytes.slice(offset + f.offset, offset + f.offset + f.count);
      continue;
    }
    const width = f.type === 'le32' ? 4 : 8;
    const list: bigint[] = [];
    for (let i = 0; i < f.count; i++) {
      const at = f.offset + i * width;
      list.push(width === 4 ? BigInt(view.getUint32(at, true)) : view.getBigUint64(at, true));
    }
    out[f.name] = f.count === 1 ? list[0]! : list;
  }
  return out;
}
