// Layering of weft's sources, checked by `npm run lint` (depcruise src perf test --config .dependency-cruiser.cjs).
//
//   daemon/  control/  lab/  cli/  bench/     the programs: compose everything below
//   cni/                                      (cni/ is weft-cni, the CNI plugin, a program of its own)
//   datapath/                                 pipeline and backends: packets in, packets out
//   packet/  route/  io/                      wire formats, addresses and LPM, native addon wrappers
//   util/                                     leaf helpers anyone may import
//
// A module may import its own layer and the layers below it, never above. perf/ and test/ sit
// outside the layering and may import anything in src/; src/ never imports them.
// test/unit/lint-layering.test.ts proves each rule below can fail.

/** The program layers: nothing in packet/, route/ or io/ may import them. */
const PROGRAMS = '^src/(daemon|control|lab|cli|bench|cni)/';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment:
        'Import cycle. Cycles make module initialisation order matter (a CommonJS module can see a half-built ' +
        'export) and mean two modules cannot be understood or tested apart. Type-only imports count too: they ' +
        'still tie the two modules together. Move the shared piece into the lower module or a new one.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'lower-layer-not-to-upper',
      severity: 'error',
      comment:
        'packet/, route/ and io/ are the lower layers (wire formats, addresses and LPM, the native addon ' +
        'wrappers): they may import each other and util/ only, never datapath/ nor the programs ' +
        '(daemon/, control/, lab/, cli/, bench/). Move what they need down, or pass it in.',
      from: { path: '^src/(packet|route|io)/' },
      to: { path: ['^src/datapath/', PROGRAMS] },
    },
    {
      name: 'datapath-not-to-programs',
      severity: 'error',
      comment:
        'datapath/ (pipeline, backends) sits on packet/, route/ and io/ and is used by the programs; it must ' +
        "not import daemon/, lab/, cli/, bench/ or cni/ (e.g. the offline replay must not need the daemon's peer " +
        'bookkeeping). Move the shared code into datapath/ or below, or have the program pass it in.',
      from: { path: '^src/datapath/' },
      to: { path: '^src/(daemon|lab|cli|bench|cni)/' },
    },
    {
      name: 'datapath-not-to-control',
      severity: 'error',
      comment:
        'The control plane sits above the datapath: control/netconfig.ts validates Backend against the ' +
        'backend table in datapath/backends, and the datapath takes only what it declares itself (PeerLease, ' +
        'BackendConfig). An import the other way would make the two layers depend on each other.',
      from: { path: '^src/datapath/' },
      to: { path: '^src/control/' },
    },
    {
      name: 'util-is-a-leaf',
      severity: 'error',
      comment: 'util/ is importable from everywhere, so it may import nothing of weft outside util/.',
      from: { path: '^src/util/' },
      to: { path: '^src/', pathNot: '^src/util/' },
    },
    {
      name: 'src-not-to-test-or-perf',
      severity: 'error',
      comment:
        'Shipped code (src/) must not import tests, test support or benchmarks (test/, perf/): they are not ' +
        'built into the package and would drag test-only code into the daemon.',
      from: { path: '^src/' },
      to: { path: '^(test|perf)/' },
    },
    {
      name: 'perf-not-to-test',
      severity: 'error',
      comment:
        'perf/ is compiled into the compose image (tsconfig.build.json) and test/ is not copied there, so a ' +
        'benchmark that imports test support breaks the image build. Shared oracles live in perf/support/.',
      from: { path: '^perf/' },
      to: { path: '^test/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'An import that resolves to nothing: a typo or a module that was moved or deleted.',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'not-to-dev-dep',
      severity: 'error',
      comment:
        'src/ is what the package ships; a devDependency is not installed with it (npm install --omit=dev), so ' +
        'src/ may not import one. Tests and perf may.',
      from: { path: '^src/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist|build)/' },
    // TypeScript imports as written, before compilation: `import type` and type-only uses count
    // (tsc erases them, but they still tie modules together, and a type cycle is still a cycle).
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    moduleSystems: ['cjs', 'es6'],
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.json', '.d.ts'],
    },
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};
