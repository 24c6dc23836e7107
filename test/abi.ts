// The ABI in one place: the generated TS module and the generated C header
// must agree with each other and with the hand-written byte vectors of
// shared/abi.json. A C program compiled with the machine's gcc reports what
// the C side believes; any drift fails here.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as abi from '../shared/abi.js';
import { decodeStruct, encodeStruct, type StructValues } from '../shared/codec.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const abiJson = JSON.parse(readFileSync(join(root, 'shared/abi.json'), 'utf8'));
const hexBytes = (hex: string) => Uint8Array.from(Buffer.from(hex.replace(/\s+/g, ''), 'hex'));

/** Turns a vector's JSON values into codec values using the struct's layout. */
function vectorValues(v: abi.AbiVector): StructValues {
  const layout = abi.STRUCTS[v.struct]!;
  const out: StructValues = {};
  for (const f of layout.fields) {
    const raw = v.values[f.name];
    if (raw === undefined) throw new Error(`vector ${v.struct} lacks ${f.name}`);
    if (f.type === 'u8') out[f.name] = hexBytes(raw as string);
    else if (Array.isArray(raw)) out[f.name] = raw.map((x) => BigInt(x));
    else out[f.name] = BigInt(raw as number | string);
  }
  return out;
}

/** C statements that fill a struct from a vector and compare it with the bytes. */
function cVectorCheck(v: abi.AbiVector, n: number): string {
  const layout = abi.STRUCTS[v.struct]!;
  const lines = [`\t{\n\t\tstruct ${v.struct} s;\n\t\tmemset(&s, 0, sizeof(s));`];
  for (const f of layout.fields) {
    const raw = v.values[f.name]!;
    if (f.type === 'u8') {
      const bytes = [...hexBytes(raw as string)].map((b) => `0x${b.toString(16)}`).join(', ');
      lines.push(`\t\t{ static const unsigned char b[] = { ${bytes} }; memcpy(s.${f.name}, b, sizeof(b)); }`);
    } else if (Array.isArray(raw)) {
      raw.forEach((x, i) => lines.push(`\t\ts.${f.name}[${i}] = ${BigInt(x)}ULL;`));
    } else {
      const val = BigInt(raw as number | string);
      lines.push(`\t\ts.${f.name} = ${val < 0n ? `(${f.type === 'le32' ? '__le32' : '__le64'})(${val})` : `${val}ULL`};`);
    }
  }
  const want = [...hexBytes(v.hex)].map((b) => `0x${b.toString(16)}`).join(', ');
  lines.push(`\t\tstatic const unsigned char want${n}[] = { ${want} };`);
  lines.push(`\t\tif (sizeof(want${n}) != sizeof(s) || memcmp(&s, want${n}, sizeof(s))) {`);
  lines.push(`\t\t\tfprintf(stderr, "vector ${n} (${v.struct}) differs\\n");\n\t\t\tbad++;\n\t\t}\n\t}`);
  return lines.join('\n');
}

t.test('generated files are up to date with shared/abi.json', async (t) => {
  const r = spawnSync(process.execPath, [join(root, 'shared/gen-abi.mjs'), '--check'], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
});

t.test('TS encodes every vector to exactly its bytes, and decodes them back', async (t) => {
  t.ok(abi.VECTORS.length >= 4, 'a vector for each struct');
  for (const v of abi.VECTORS) {
    const values = vectorValues(v);
    const bytes = encodeStruct(v.struct, values);
    t.equal(Buffer.from(bytes).toString('hex'), v.hex.replace(/\s+/g, ''), `${v.struct} encodes`);
    const back = decodeStruct(v.struct, hexBytes(v.hex));
    for (const f of abi.STRUCTS[v.struct]!.fields) {
      const want = values[f.name]!;
      const got = back[f.name]!;
      // Signed fields (status) decode unsigned: compare modulo the field width.
      const norm = (x: bigint) => BigInt.asUintN(f.type === 'le32' ? 32 : 64, x);
      if (want instanceof Uint8Array) t.same([...(got as Uint8Array)], [...want], `${v.struct}.${f.name}`);
      else if (Array.isArray(want)) t.same((got as bigint[]).map(norm), want.map(norm), `${v.struct}.${f.name}`);
      else t.equal(norm(got as bigint), norm(want), `${v.struct}.${f.name}`);
    }
  }
});

t.test('the C header agrees with the TS module: sizes, offsets, constants, vectors', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tmem-abi-'));
  const checks = abi.VECTORS.map((v, i) => cVectorCheck(v, i)).join('\n');
  writeFileSync(join(dir, 'abi_vectors.h'),
    `static int check_vectors(void)\n{\n\tint bad = 0;\n${checks}\n\treturn bad;\n}\n`);
  const exe = join(dir, 'abi-check');
  try {
    execFileSync('gcc', ['-std=gnu11', '-Wall', '-Wextra', '-Werror', '-I', join(root, 'shared'), '-I', dir,
      '-o', exe, join(root, 'test/abi/abi-check.c')], { stdio: 'pipe' });
  } catch (e) {
    t.fail(`gcc could not build the ABI check: ${(e as { stderr?: Buffer }).stderr?.toString() ?? e}`);
    return;
  }
  const run = spawnSync(exe, { encoding: 'utf8' });
  t.equal(run.status, 0, `C vector check: ${run.stderr}`);
  const c = JSON.parse(run.stdout);
  t.equal(c.vectorFailures, 0, 'C encodes every vector to exactly its bytes');
  for (const s of Object.values(abi.STRUCTS)) {
    t.equal(c.sizes[s.name], s.size, `sizeof(struct ${s.name})`);
    for (const f of s.fields) {
      const width = { le32: 4, le64: 8, u8: 1 }[f.type] * f.count;
      t.same(c.fields[`${s.name}.${f.name}`], [f.offset, width], `${s.name}.${f.name} offset and width`);
    }
  }
  const ts = abi as unknown as Record<string, unknown>;
  const names = Object.keys(c.constants).filter((k) => k !== 'end');
  t.ok(names.length >= 26, 'every constant is compared');
  for (const name of names) {
    if (name.startsWith('TMEM_PAYLOAD_')) {
      const [, dir2, op] = /^TMEM_PAYLOAD_(RD|WR)_(.*)$/.exec(name)!;
      const pair = abi.OP_PAYLOAD[ts[`TMEM_OP_${op}`] as number]!;
      t.equal(c.constants[name], pair[dir2 === 'RD' ? 0 : 1], name);
    } else {
      t.equal(c.constants[name], ts[name], name);
    }
  }
  // Every constant of abi.json reaches C: none was left out of the program.
  const declared = abiJson.constants.flatMap((g: { items: [string][] }) => g.items.map((i) => i[0]));
  t.same(declared.filter((n: string) => !(n in c.constants)), [], 'no constant missing from the C check');
});
