// Lint: neostandard (standard's successor, with TypeScript) over src, test and bench; lines of 120 characters at most;
// type-aware promise rules over src.
import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, env: ['node'], ignores: ['dist/**', '.build/**', 'coverage/**', '.tap/**', 'node_modules/**'] }),
  {
    rules: {
      // Strings, template literals and URLs are left whole: a message split for the width is harder to find.
      '@stylistic/max-len': ['error', {
        code: 120, ignoreUrls: true, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreRegExpLiterals: true
      }],
      // `void promise` marks a promise deliberately left to run (the floating-promise rule's way out), as a
      // statement only.
      'no-void': ['error', { allowAsStatement: true }]
    }
  },
  {
    // Type-aware: a promise nobody awaits or handles, or one passed where a plain callback is expected, is a lost
    // error. Source only: in the tests tap's t.test() returns a promise that tap itself awaits.
    files: ['src/**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error'
    }
  }
]
