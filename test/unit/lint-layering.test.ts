import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ESLint } from 'eslint';
import { afterAll, describe, expect, it } from 'vitest';

// `npm run lint` is only worth having if it can fail. These cases run the project's own
// .dependency-cruiser.cjs (through the depcruise CLI, as the lint script does) over small fixture
// trees shaped like src/, each with one forbidden import, and the project's eslint.config.mjs
// over a fixture with real mistakes in it.

const ROOT = join(__dirname, '..', '..');
const DEPCRUISE = join(ROOT, 'node_modules', '.bin', 'depcruise');
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');

const tmp = mkdtempSync(join(tmpdir(), 'weft-lint-layering-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Every layer, importing only downwards: the tree the rules must accept. */
const CLEAN: Record<string, string> = {
  'tsconfig.json': JSON.stringify({ compilerOptions: { module: 'commonjs', moduleResolution: 'node', strict: true }, include: ['src/**/*.ts'] }),
  'src/util/clock.ts': 'export const now = (): number => 0;\n',
  'src/route/table.ts': "import { now } from '../util/clock';\nexport const TABLE = now();\n",
  'src/packet/x.ts': "import { TABLE } from '../route/table';\nexport const X = TABLE;\n",
  'src/io/tun.ts': "import { X } from '../packet/x';\nexport const TUN = X;\n",
  'src/datapath/y.ts': "import { X } from '../packet/x';\nimport { TUN } from '../io/tun';\nexport const Y = X + TUN;\n",
  'src/datapath/a.ts': "import { Y } from './y';\nexport const A = Y;\n",
  'src/daemon/b.ts': "import { A } from '../datapath/a';\nimport { now } from '../util/clock';\nexport const B = A + now();\n",
  'src/cli/main.ts': "import { B } from '../daemon/b';\nexport const MAIN = B;\n",
};

let trees = 0;

/** Writes CLEAN with `changes` applied into a fresh directory and runs depcruise there as `npm run lint` does. */
async function cruise(changes: Record<string, string>, roots = ['src']): Promise<{ code: number; output: string }> {
  const dir = join(tmp, `tree-${++trees}`);
  for (const [file, text] of Object.entries({ ...CLEAN, ...changes })) {
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    writeFileSync(join(dir, file), text);
  }
  return new Promise((resolve, reject) => {
    execFile(DEPCRUISE, [...roots, '--config', CONFIG, '--output-type', 'err'], { cwd: dir, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(new Error(`depcruise did not run: ${err.message}`, { cause: err }));
      resolve({ code: err ? (err.code as number) : 0, output: stdout + stderr });
    });
  });
}

describe('layering check (dependency-cruiser with .dependency-cruiser.cjs)', () => {
  it('passes the fixture tree whose imports all point down', async () => {
    const r = await cruise({});
    expect(r.output).not.toMatch(/error/);
    expect(r.code).toBe(0);
  });

  it('fails an upward import from packet/ into datapath/', async () => {
    const r = await cruise({
      'src/datapath/z.ts': 'export const Z = 1;\n',
      'src/packet/x.ts': "import { TABLE } from '../route/table';\nimport { Z } from '../datapath/z';\nexport const X = TABLE + Z;\n",
    });
    expect(r.code).not.toBe(0);
    expect(r.output).toContain('lower-layer-not-to-upper: src/packet/x.ts → src/datapath/z.ts');
    expect(r.output).not.toContain('no-circular');
  });

  it('fails an import from io/ into a program (control/)', async () => {
    const r = await cruise({
      'src/control/registry.ts': 'export interface Lease { subnet: string }\n',
      'src/io/tun.ts': "import { X } from '../packet/x';\nimport type { Lease } from '../control/registry';\nexport const TUN = X;\nexport type L = Lease;\n",
    });
    expect(r.code).not.toBe(0);
    expect(r.output).toContain('lower-layer-not-to-upper: src/io/tun.ts → src/control/registry.ts');
  });

  it('fails an import from datapath/ into daemon/', async () => {
    const r = await cruise({
      'src/daemon/peers.ts': 'export const PEERS = 2;\n',
      'src/datapath/a.ts': "import { Y } from './y';\nimport { PEERS } from '../daemon/peers';\nexport const A = Y + PEERS;\n",
    });
    expect(r.code).not.toBe(0);
    expect(r.output).toContain('datapath-not-to-programs: src/datapath/a.ts → src/daemon/peers.ts');
  });

  it('fails an import from route/ or datapath/ into cni/ (weft-cni is a program)', async () => {
    const r = await cruise({
      'src/cni/config.ts': "import { now } from '../util/clock';\nexport const DEFAULT = now();\n",
      'src/route/table.ts': "import { now } from '../util/clock';\nimport { DEFAULT } from '../cni/config';\nexport const TABLE = now() + DEFAULT;\n",
      'src/datapath/a.ts': "import { Y } from './y';\nimport { DEFAULT } from '../cni/config';\nexport const A = Y + DEFAULT;\n",
    });
    expect(r.code).not.toBe(0);
    expect(r.output).toContain('lower-layer-not-to-upper: src/route/table.ts → src/cni/config.ts');
    expect(r.output).toContain('datapath-not-to-programs: src/datapath/a.ts → src/cni/config.ts');
  });

  it('fails an import from datapath/ into control/, type-only included', async () => {
    const r = await cruise({
      'src/control/registry.ts': 'export interface Lease { subnet: string }\n',
      'src/datapath/a.ts': "import { Y } from './y';\nimport type { Lease } from '../control/registry';\nexport const A = Y;\nexport type L = Lease;\n",
    });
    expect(r.code).not.toBe(0);
    expect(r.output).toContain('datapath-not-to-control: src/datapath/a.ts → src/control/registry.ts');
  });

  it('fails a two-module cycle, even when one side imports only a type', async () => {
    const r = await cruise({
      'src/route/p.ts': "import { Q } from './q';\nexport interface P { q: typeof Q }\n",
      'src/route/q.ts': "import type { P } from './p';\nexport const Q = 1;\nexport type Qp = P;\n",
    });
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/no-circular: src\/route\/(p|q)\.ts → /);
    expect(r.output).toContain('src/route/p.ts');
    expect(r.output).toContain('src/route/q.ts');
  });

  it('fails an import from src/ into test/', async () => {
    const r = await cruise({
      'test/support/fake.ts': 'export const FAKE = 3;\n',
      'src/daemon/b.ts': "import { A } from '../datapath/a';\nimport { FAKE } from '../../test/support/fake';\nexport const B = A + FAKE;\n",
    });
    expect(r.code).not.toBe(0);
    expect(r.output).toContain('src-not-to-test-or-perf: src/daemon/b.ts → test/support/fake.ts');
  });

  it('fails an import from perf/ into test/ (perf/ is built into the compose image, test/ is not)', async () => {
    const r = await cruise(
      {
        'test/support/fake.ts': 'export const FAKE = 3;\n',
        'perf/micro.ts': "import { FAKE } from '../test/support/fake';\nexport const M = FAKE;\n",
      },
      ['src', 'perf'],
    );
    expect(r.code).not.toBe(0);
    expect(r.output).toContain('perf-not-to-test: perf/micro.ts → test/support/fake.ts');
  });
});

describe('eslint.config.mjs', () => {
  it('loads and reports real mistakes, type-aware ones included', async () => {
    // A path under test/unit/ that is not on disk: lintText lints the text as that file, with the
    // project's config; the type-aware rules get a default project for it.
    const filePath = join(ROOT, 'test', 'unit', 'lint-layering.virtual-fixture.ts');
    const eslint = new ESLint({
      cwd: ROOT,
      overrideConfig: {
        files: ['**/*.ts'],
        languageOptions: { parserOptions: { projectService: { allowDefaultProject: ['test/unit/lint-layering.virtual-fixture.ts'] } } },
      },
    });
    const code = [
      'export function f(a: number, _unusedOnPurpose: number): number {',
      '  const leftover = 1;',
      '  return a;',
      '}',
      'export async function g(send: () => Promise<void>): Promise<void> {',
      '  send();',
      '}',
      '',
    ].join('\n');
    const [result] = await eslint.lintText(code, { filePath });
    const found = result.messages.map((m) => `${m.line} ${m.ruleId}`);
    expect(found).toContain('2 @typescript-eslint/no-unused-vars');
    expect(found).toContain('6 @typescript-eslint/no-floating-promises');
    // `_`-prefixed parameters are deliberately unused.
    expect(found.filter((m) => m.startsWith('1 '))).toEqual([]);
  });
});
