// Sizes: the one parser and the one formatter of the repository (flags,
// config files, tmemctl, log lines, tables). Binary units throughout, as
// QEMU's -m and the kernel's memparse: "512M" is 512 MiB.

/** Bytes per unit letter (K = KiB ... P = PiB). */
const UNIT_BYTES: Readonly<Record<string, bigint>> = { '': 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n, P: 1n << 50n };
const U64_MAX = (1n << 64n) - 1n;

/** A size that does not parse; the message names the text, not where it came from (callers add that). */
export class SizeError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'SizeError';
  }
}

/**
 * "4096" (bytes), "512M", "2g", "2G", "2GB", "2GiB", "2 GiB", "1T": a whole
 * number with an optional binary unit K, M, G, T, P (case-insensitive,
 * optionally followed by B or iB). At most 2^64 - 1 bytes. Fractions are
 * refused: "1.5G" is not a whole number of anything an operator means.
 */
export function parseSize(s: string): bigint {
  const m = /^\s*(\d+)\s*([kKmMgGtTpP]?)(?:i?[bB])?\s*$/.exec(s);
  if (!m) throw new SizeError(`'${s}' is not a size (use bytes or a number with K, M, G, T, e.g. 512M or 2G)`);
  const v = BigInt(m[1]!) * UNIT_BYTES[m[2]!.toUpperCase()]!;
  if (v > U64_MAX) throw new SizeError(`'${s}' is too large`);
  return v;
}

const IEC = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

/**
 * Bytes for people: the largest binary unit that leaves at least 1, a whole
 * number when it divides exactly ("2 GiB", "4 KiB", "100 B"), else two
 * decimals, truncated so a value is never shown larger than it is ("1.50 KiB",
 * "23.54 GiB", "3.99 KiB", "4.00 KiB" for 4097 bytes). Exact values read back
 * through parseSize.
 */
export function formatSize(bytes: bigint | number): string {
  const b = typeof bytes === 'bigint' ? bytes : BigInt(Math.trunc(bytes));
  if (b < 0n) return `-${formatSize(-b)}`;
  let u = 0;
  while (u < IEC.length - 1 && b >= 1024n << BigInt(10 * u)) u++;
  const d = 1n << BigInt(10 * u);
  if (b % d === 0n) return `${b / d} ${IEC[u]}`;
  // inexact: always two decimals, so 4097 bytes is "4.00 KiB", never "4 KiB"
  const h = (b * 100n) / d;
  return `${h / 100n}.${String(h % 100n).padStart(2, '0')} ${IEC[u]}`;
}
