// ESLint flat config: @eslint/js recommended + typescript-eslint recommended, plus a chosen set of
// type-aware rules, over src/, test/, perf/, bin/ and vitest.config.ts. Formatting is Prettier's
// job (.prettierrc.json) and layering dependency-cruiser's (.dependency-cruiser.cjs): this file is
// about mistakes. test/unit/lint-layering.test.ts proves it loads and reports them.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

/** Node's CommonJS globals, for the plain-JS files (bin/weft.js, *.cjs configs). */
const nodeCommonJsGlobals = {
  require: 'readonly',
  module: 'writable',
  exports: 'writable',
  __dirname: 'readonly',
  __filename: 'readonly',
  process: 'readonly',
  console: 'readonly',
  Buffer: 'readonly',
};

export default defineConfig(
  globalIgnores(['build/', 'dist/', 'node_modules/', 'perf/results/', 'test/fixtures/', 'native/', 'compose/', 'docs/']),
  {
    linterOptions: {
      // An eslint-disable comment that no longer disables anything is itself reported.
      reportUnusedDisableDirectives: 'error',
    },
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      // Type information from tsconfig.json (src/, perf/, test/, vitest.config.ts) for the
      // type-aware rules below: about 15 s of `eslint .` on an idle 2-CPU machine.
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // A chosen part of recommendedTypeChecked: the rules that find real bugs in an event-driven
      // daemon (a promise nobody awaits or catches, an async callback where a sync one is expected,
      // `${obj}` printing [object Object], a switch that forgot a backend). Left out because this
      // code does these on purpose: require-await (async functions that satisfy a
      // Promise-returning interface), unbound-method (the addon's function table, registry
      // methods destructured in the contract tests), restrict-template-expressions (`${x}` of a
      // value typed `never`, in checks of untrusted input), no-unsafe-* (JSON.parse results in
      // tests), no-unnecessary-type-assertion (`values.x!` after parseArgs defaults).
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/prefer-promise-reject-errors': 'error',
      '@typescript-eslint/no-for-in-array': 'error',
      '@typescript-eslint/no-implied-eval': 'error',
      '@typescript-eslint/no-array-delete': 'error',
      '@typescript-eslint/no-duplicate-type-constituents': 'error',
      '@typescript-eslint/no-base-to-string': 'error',
      '@typescript-eslint/restrict-plus-operands': ['error', { allowNumberAndString: true }],
      '@typescript-eslint/no-unsafe-unary-minus': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],

      // `_`-prefixed parameters, variables and caught errors are deliberately unused (interface
      // conformance, a field destructured away); anything else unused is a leftover.
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'after-used',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrors: 'all',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
      // `x!` after a check the compiler cannot follow (Map.get after has, typed-array reads in the
      // hot loops) is used on purpose. Not in recommended either; stated so nobody turns it on.
      '@typescript-eslint/no-non-null-assertion': 'off',
      // `import type` for what is only a type: the reader sees which dependencies are type-only
      // (tsc erases them; dependency-cruiser still counts them for cycles).
      '@typescript-eslint/consistent-type-imports': ['error', { prefer: 'type-imports', fixStyle: 'inline-type-imports' }],
      // `x == null` (null or undefined) is the one loose equality allowed.
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      // ignoreReadBeforeAssign: `let handle; const finish = () => handle?.close(); handle = watch(finish)`
      // is deliberate (the callback may run before the assignment, where a const would throw).
      'prefer-const': ['error', { destructuring: 'all', ignoreReadBeforeAssign: true }],
      'no-var': 'error',
    },
  },
  {
    // The native addon loader: require(computed path to build/Release/weft.node) is how CommonJS
    // output loads a .node file; everything else uses import.
    files: ['src/io/native.ts'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // bin/weft.js (the CommonJS entry point npm links as `weft`) and CommonJS config files.
    files: ['bin/**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: nodeCommonJsGlobals },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
